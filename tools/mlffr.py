"""The MLFFR benchmark's pure parts: frame sizes, iperf3 results, the search, statistics
and rendering. No network and no processes here; `tools.bench_mlffr` does the I/O.

MLFFR (maximum loss-free forwarding rate, Figure 3 of the paper) is the highest offered
rate, in frames per second, that a path forwards with a loss ratio of at most a bound
(0: none, the paper's definition). Frame sizes are Ethernet frames as a veth carries
them, without FCS: UDP payload + 8 (UDP) + 20 (IPv4) + 14 (Ethernet). The paper's
64-byte frames count the FCS, so theirs carry 4 bytes less payload.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PATHS = ("linux", "ovs", "ovs+null")
RATIOS = (("ovs", "linux"), ("ovs+null", "ovs"))
HEADERS = 14 + 20 + 8  # Ethernet + IPv4 + UDP, no FCS
MIN_PAYLOAD = 16  # iperf3 writes a 12 to 16-byte sequence header into every datagram
MAX_FRAME = 1514  # a 1500-byte MTU
PAPER = {  # Figure 3 of the paper, frames per second
    64: {"bare Linux": 115_000, "plain Click": 36_500, "Click + NetServ": 27_900},
    1500: {"bare Linux": 8_200, "plain Click": 8_200, "Click + NetServ": 8_200},
}
PAPER_RATIO = 27_900 / 36_500
PLACES = {  # where a frame can be dropped, as bench_mlffr counts it
    "ovs_in": "OVS's packet socket on h1's port",
    "agent_in": "the agent's packet socket",
    "ovs_from_agent": "OVS's packet socket on the agent's port",
    "receiver": "h2's UDP socket",
    "unaccounted": "no counter (a veth backlog, a failed send)",
}
TABLE_HEADER = ("size", "path", "min kpps", "median kpps", "max kpps", "overload kpps", "ratio",
                "of medians", "paired min / median / max")  # fmt: skip


def udp_payload(frame: int) -> int:
    """Return the UDP payload length that makes an Ethernet frame of `frame` bytes (no FCS).

    Raises ValueError when iperf3 cannot make that frame.
    """
    payload = frame - HEADERS
    if payload < MIN_PAYLOAD or frame > MAX_FRAME:
        raise ValueError(
            f"frame size {frame} is outside {HEADERS + MIN_PAYLOAD}..{MAX_FRAME} bytes "
            "(iperf3 needs a 16-byte payload; the MTU is 1500)"
        )
    return payload


@dataclass(frozen=True)
class Trial:
    """One iperf3 run: `requested` pps (None: as fast as iperf3 can), what it counted."""

    requested: float | None
    sent: int
    lost: int  # gaps in the sequence numbers the receiver saw
    seen: int  # highest sequence number the receiver saw; sent - seen were still in flight
    seconds: float
    drops: Mapping[str, int] = field(default_factory=dict)  # frames dropped, by place

    @property
    def loss(self) -> float:
        """Return the loss ratio lost/sent (1.0 when nothing was sent or nothing arrived)."""
        if self.sent <= 0 or self.seen <= 0:
            return 1.0
        return self.lost / self.sent

    @property
    def offered_pps(self) -> float:
        """Return the rate the sender achieved, frames per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered_pps(self) -> float:
        """Return the rate at which frames arrived, frames per second."""
        return (self.seen - self.lost) / self.seconds if self.seconds > 0 else 0.0


def parse_iperf3(doc: Mapping[str, Any], requested: float | None) -> Trial:
    """Return the Trial in an iperf3 client's `-J` output; raise RuntimeError on its error."""
    if "error" in doc:
        raise RuntimeError(f"iperf3: {doc['error']}")
    sent, got = doc["end"]["sum_sent"], doc["end"]["sum_received"]
    return Trial(
        requested=requested,
        sent=int(sent["packets"]),
        lost=int(got["lost_packets"]),
        seen=int(got["packets"]),
        seconds=float(sent["seconds"]),
    )


@dataclass
class Search:
    """A binary search's outcome: the highest passing rate (0.0: none) and each step."""

    mlffr: float
    steps: list[tuple[float, float]] = field(default_factory=list)  # (rate, loss)
    converged: bool = False


def search_mlffr(
    trial: Callable[[float], float],
    hi: float,
    max_loss: float = 0.0,
    tolerance: float = 0.03,
    max_trials: int = 10,
    first: float | None = None,
) -> Search:
    """Binary-search the highest rate in (0, hi) whose `trial(rate)` loss is <= `max_loss`.

    `hi` is a rate known to lose too much (the caller's probe). The first trial is at
    `first` when it lies inside (0, hi), else at hi/2. The search stops when the passing
    and failing rates are within `tolerance` of the failing one, or after `max_trials`.
    Returns a Search whose `mlffr` is the highest rate that passed (0.0 if none did).
    """
    good, bad = 0.0, hi
    rate = first if first is not None and 0 < first < hi else hi / 2
    search = Search(mlffr=0.0)
    while len(search.steps) < max_trials:
        loss = trial(rate)
        search.steps.append((rate, loss))
        if loss <= max_loss:
            good = rate
        else:
            bad = rate
        if bad - good <= tolerance * bad:
            search.converged = True
            break
        rate = (good + bad) / 2
    search.mlffr = good
    return search


_SS_LINE = re.compile(r"^p_raw\s.*?\*:(\S+)\s.*skmem:\(.*\bd(\d+)\)")


def parse_socket_drops(ss_text: str) -> dict[str, int]:
    """Return {interface: frames dropped} of the packet sockets in `ss -0 -m -a` output.

    A packet socket drops a frame when its receive buffer is full: this is where a
    userspace switch or agent that falls behind loses frames. Sockets bound to no
    interface are left out; several sockets on one interface are summed.
    """
    drops: dict[str, int] = {}
    for line in ss_text.splitlines():
        if m := _SS_LINE.match(line):
            drops[m.group(1)] = drops.get(m.group(1), 0) + int(m.group(2))
    return drops


def parse_udp_rcvbuf_errors(snmp_text: str) -> int:
    """Return Udp RcvbufErrors from /proc/net/snmp text: datagrams a full socket dropped."""
    rows = [line.split()[1:] for line in snmp_text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        raise ValueError("no Udp: header and values in /proc/net/snmp text")
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def first_loss_sites(searches: Sequence[Mapping[str, Any]], below: float = 0.01) -> dict:
    """Return where frames were dropped in the trials that lost a little (0 < loss < `below`).

    Those trials sit just above the MLFFR, so their drops show what limits it (the
    probes and far-off trials drown in overload). Returns {size: {path: {place: frames}}},
    sizes as strings; "unaccounted" is the loss no counter explains.
    """
    out: dict[str, dict[str, dict[str, int]]] = {}
    for s in searches:
        for t in s["trials"]:
            if t["requested"] is None or not 0 < t["loss"] < below:
                continue
            sites = out.setdefault(str(s["size"]), {}).setdefault(s["path"], {})
            for place, n in {**t["drops"], "lost": t["lost"]}.items():
                sites[place] = sites.get(place, 0) + n
    for paths in out.values():
        for sites in paths.values():
            counted = sum(n for place, n in sites.items() if place != "lost")
            sites["unaccounted"] = max(0, sites.pop("lost") - counted)
    return out


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Return {"min", "median", "max"} of `values` (all None when there are none)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(searches: Sequence[Mapping[str, Any]], repeats: int) -> dict[str, Any]:
    """Summarize search results: dicts with path, size, repeat (0-based), mlffr_pps,
    generator_bound and overload_pps, as run_bench records them.

    Returns {size: {"paths": {path: {"min", "median", "max", "runs", "generator_bound",
    "overload_median"}}, "ratios": {"a/b": {"of_medians", "paired"}}}}, sizes as strings
    (JSON keys); "runs" has one MLFFR per repeat (None: not measured). Paired ratios
    divide the two paths' results of the same repeat; "paired" is their spread().
    """
    out: dict[str, Any] = {}
    for size in sorted({s["size"] for s in searches}):
        paths: dict[str, Any] = {}
        for path in PATHS:
            mine = [s for s in searches if s["size"] == size and s["path"] == path]
            if not mine:
                continue
            runs: list[float | None] = [None] * repeats
            for s in mine:
                runs[s["repeat"]] = s["mlffr_pps"]
            paths[path] = {
                **spread([v for v in runs if v is not None]),
                "runs": runs,
                "generator_bound": sum(bool(s["generator_bound"]) for s in mine),
                "overload_median": statistics.median(s["overload_pps"] for s in mine),
            }
        ratios: dict[str, Any] = {}
        for num, den in RATIOS:
            if num not in paths or den not in paths:
                continue
            a, b = paths[num]["runs"], paths[den]["runs"]
            paired = [x / y for x, y in zip(a, b, strict=True) if x is not None and y]
            med_b = paths[den]["median"]
            ratios[f"{num}/{den}"] = {
                "of_medians": paths[num]["median"] / med_b if med_b else None,
                "paired": spread(paired),
            }
        out[str(size)] = {"paths": paths, "ratios": ratios}
    return out


def _kpps(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Return the result table as rows of cells, a header row first.

    A `*` marks a path that lost nothing at the generator's top rate in some repeat:
    its MLFFR is at least that (iperf3 was the limit, not the path). "overload" is the
    median rate that arrived while iperf3 sent flat out (throughput, not loss-free).
    """
    rows = [list(TABLE_HEADER)]
    for size, entry in summary.items():
        ratio_of = {
            num: (f"{num}/{den}", entry["ratios"].get(f"{num}/{den}")) for num, den in RATIOS
        }
        for path, s in entry["paths"].items():
            mark = "*" if s["generator_bound"] else ""
            name, r = ratio_of.get(path, ("", None))
            cells = [size, path + mark]
            cells += [_kpps(s[k]) for k in ("min", "median", "max", "overload_median")]
            if r is None:
                cells += ["", "", ""]
            else:
                p = r["paired"]
                paired = " / ".join(_ratio(p[k]) for k in ("min", "median", "max"))
                cells += [name, _ratio(r["of_medians"]), paired]
            rows.append(cells)
    return rows


def render_text(rows: Sequence[Sequence[str]]) -> str:
    """Return `rows` as an aligned plain-text table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def render_markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Return `rows` as a Markdown table (the first row is the header)."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Return BENCHMARKS.md for `report` (the JSON that run_bench writes)."""
    m, p, summary = report["machine"], report["parameters"], report["summary"]
    ours = {size: e["ratios"].get("ovs+null/ovs", {}) for size, e in summary.items()}
    ratio_lines = [
        f"- {size} bytes: ovs+null/ovs = {_ratio(r['of_medians'])} of medians "
        f"(paired per repeat: {_ratio(r['paired']['min'])} to {_ratio(r['paired']['max'])})"
        for size, r in ours.items()
        if r
    ]
    footnote = ""
    if any(s["generator_bound"] for e in summary.values() for s in e["paths"].values()):
        footnote = (
            "\n\n`*`: in at least one repeat the path lost nothing at iperf3's top rate, so\n"
            "that repeat's value is the generator's limit, a lower bound on the path's MLFFR,\n"
            "and a ratio over it is an upper bound. On the `linux` path the kernel forwards\n"
            "each frame on the sending CPU (a veth hands frames over in the sender's\n"
            "softirq), so iperf3 and the whole router share one core there."
        )
    sites = [
        f"- {size} bytes, {path}: "
        + ", ".join(f"{PLACES.get(k, k)} {n:,}" for k, n in places.items() if n)
        for size, paths in report.get("first_loss_sites", {}).items()
        for path, places in paths.items()
        if any(places.values())
    ]
    paper_rows = [["frame", *PAPER[64].keys()]]
    paper_rows += [[f"{size} bytes", *(f"{v:,}" for v in PAPER[size].values())] for size in PAPER]
    return f"""# Benchmarks

## MLFFR: Linux forwarding vs OVS vs OVS + a NetServ detour

The paper's Figure 3 experiment (maximum loss-free forwarding rate), measured on this
machine by `netserv bench`, {p["repeats"]} repeats of each path interleaved in one run,
{report["date"]}.

{render_markdown_table(table_rows(summary))}

kpps: thousands of frames per second, min / median / max of the MLFFR over repeats;
"overload": the median rate that still arrived while iperf3 sent as fast as it could
(throughput, with loss). Ratios are computed from the medians ("of medians") and from
the two paths' results within each repeat ("paired").{footnote}

**Comparable ratio.** The paper's detour cost is Click+NetServ / plain Click =
27.9 / 36.5 = {PAPER_RATIO:.2f} at 64 bytes; ours is ovs+null / ovs:

{chr(10).join(ratio_lines)}

**Where the first frames were lost.** Frames dropped, summed over the trials that lost
a little (0 < loss < 1%, just above the MLFFR), by the counter that saw them:

{chr(10).join(sites) or "- (no such trial)"}

Reproduce (as root, from the repository; this run took {report["minutes"]} minutes):

```sh
./netserv bench --sizes {",".join(str(s) for s in p["sizes"])} --repeats {p["repeats"]} \\
    --seconds {p["seconds"]} --loss {p["loss"]} --markdown BENCHMARKS.md
```

### Conditions
- {m["nproc"]}-core VM ({m["cpu"]}), noisy: read the ratios, not the absolute rates.
  Kernel {m["kernel"]}; {m["ovs"]}; datapath `{m["datapath"]}`
  (userspace) with the veth ports as plain AF_PACKET netdevs;
  `net.core.rmem_default` {m["rmem_default"]} (each packet socket's receive buffer).
- Paths: `linux` h1 - router namespace (ip_forward=1) - h2 on veths; `ovs` h1 - NetServ
  bridge - h2, the pipeline's learned L2 forwarding; `ovs+null` the same with a session
  that detours exactly the benchmark flow through the node agent's `null` module.
- Generator: {m["iperf3"]}, UDP, one stream, `--pacing-timer {p["pacing_us"]}`
  (microseconds), socket buffers `-w {p["socket_buffer"]}`; frame = payload + 42 bytes
  (Ethernet + IPv4 + UDP, no FCS: the paper's 64-byte frames include the 4-byte FCS).
  Sender, receiver, OVS and the agent share the {m["nproc"]} cores.
- Each trial sends for {p["seconds"]} s (the paper: 20 s per rate); loss = sequence gaps
  seen by the receiving iperf3 / frames sent (frames still queued when it stops are
  not lost); a trial passes at loss <= {p["loss"]}.
  Per path, size and repeat: a probe at iperf3's top rate, then a binary search to
  within {p["tolerance"]:.0%}, at most {p["max_trials"]} trials in all.
- Every trial is in `tools/out/mlffr.json` (gitignored).

### The paper, for comparison (Figure 3, 100 Mb/s Ethernet, frames per second)

{render_markdown_table(paper_rows)}

At 1500 bytes all three were limited by the 100 Mb/s links (about 8,200 frames per second).
"""
