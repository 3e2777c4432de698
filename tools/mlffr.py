"""The MLFFR benchmark's pure parts: paths, trials, the search, statistics, where frames
were lost, and rendering. No network and no processes here; `tools.bench_mlffr` does
the I/O.

MLFFR (maximum loss-free forwarding rate, Figure 3 of the paper) is the highest offered
rate, in frames per second, that a path forwards with a loss ratio of at most a bound
(0: none, the paper's definition); the benchmark reports it and the rate at 0.1 % loss.
Frame sizes are Ethernet frames as a veth carries them, without FCS (the paper's 64-byte
frames count the FCS, so theirs carry 4 bytes less).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Path -> what it is. The OVS paths run on bridges our topologies build; the port type of
# each bridge (topo.ports) is in its name where it is not the default.
PATHS = {
    "linux": "h1 - router namespace (ip_forward=1) - h2, Linux kernel forwarding",
    "ovs-afpacket": "plain OVS, AF_PACKET ports with the default receive buffer (before)",
    "ovs": "plain OVS as our topologies build it (system ports, 4 MiB buffers)",
    "ovs-afxdp": "plain OVS with AF_XDP ports (afxdp-nonpmd)",
    "ovs+null": "detour through the agent's `null` (trusted tier)",
    "ovs+reflector": "the same detour, the agent's link served by a bare batched reflector",
    "ovs-afxdp+null": "detour through `null` on the AF_XDP bridge",
    "ovs+null-isolated": "detour through `null` in the isolated tier",
    "ovs+monitor": "observe-only: a copy to the `monitor` module, the frame goes on",
    "ovs-afxdp+monitor": "observe-only through `monitor` on the AF_XDP bridge",
    "ovs+null5": "detour through a chain of 5 `null`",
}
# Which network each OVS path runs on (bench_mlffr builds one per name), and its chain.
NETWORKS = {
    "ovs-afpacket": "afpacket",
    "ovs": "system",
    "ovs-afxdp": "afxdp",
    "ovs+null": "system",
    "ovs+reflector": "reflector",
    "ovs-afxdp+null": "afxdp",
    "ovs+null-isolated": "isolated",
    "ovs+monitor": "system",
    "ovs-afxdp+monitor": "afxdp",
    "ovs+null5": "system",
}
CHAINS = {
    "ovs+null": ["null"],
    "ovs+reflector": ["null"],
    "ovs-afxdp+null": ["null"],
    "ovs+null-isolated": ["null"],
    "ovs+monitor": ["monitor"],
    "ovs-afxdp+monitor": ["monitor"],
    "ovs+null5": ["null"] * 5,
}
# Paths whose session (its chain above) is set up once, through the controller and the
# agent as for any other, and then pinned: the controller is taken off the bridge and the
# agent replaced by a bare batched reflector, so that the switch does exactly the work
# of the detour and the agent's end of it costs as little as it can.
REFLECTED = frozenset({"ovs+reflector"})
RATIOS = (  # (numerator, denominator, what it says), paired per repeat
    ("ovs", "linux", "plain OVS of Linux forwarding (target >= 0.50 at 64 bytes)"),
    ("ovs-afpacket", "linux", "before: default AF_PACKET buffers"),
    ("ovs-afxdp", "linux", "AF_XDP ports"),
    ("ovs+null", "ovs", "detour through null of plain OVS (target >= 0.40)"),
    ("ovs+reflector", "ovs", "a bare batched reflector on the detour of plain OVS"),
    (
        "ovs+null",
        "ovs+reflector",
        "detour through null of a bare batched reflector on the same detour (target >= 0.95)",
    ),
    ("ovs-afxdp+null", "ovs-afxdp", "the same on AF_XDP ports"),
    ("ovs+null-isolated", "ovs", "detour in the isolated tier of plain OVS"),
    ("ovs+monitor", "ovs", "observe-only of plain OVS (target >= 0.75)"),
    ("ovs-afxdp+monitor", "ovs-afxdp", "observe-only of plain OVS, both on AF_XDP ports"),
    ("ovs+null5", "ovs+null", "a chain of 5 null of a chain of 1"),
)
MIN_FRAME, MAX_FRAME = 60, 1514
LOSS_BOUND = 0.001  # the second rate reported: at most 0.1 % lost
PLACES = {  # where a frame can be lost, as bench_mlffr counts it
    "generator": "the generator (failed sends, h1's veth)",
    "ovs_in": "OVS's port from h1",
    "router": "the router namespace",
    "agent": "the agent's packet socket",
    "ovs_from_agent": "OVS's port from the agent",
    "ovs_out": "OVS's sends (to h2 or the agent) that failed",
    "receiver": "h2's veth",
    "unaccounted": "no counter (a backlog, a queue)",
}
PAPER = {  # Figure 3 of the paper, frames per second
    64: {"bare Linux": 115_000, "plain Click": 36_500, "Click + NetServ": 27_900},
    1500: {"bare Linux": 8_200, "plain Click": 8_200, "Click + NetServ": 8_200},
}


def check_frame(frame: int) -> int:
    """Return `frame` if the generator can make an Ethernet frame that size; else raise
    ValueError."""
    if not MIN_FRAME <= frame <= MAX_FRAME:
        raise ValueError(f"frame size {frame} is outside {MIN_FRAME}..{MAX_FRAME} bytes")
    return frame


@dataclass(frozen=True)
class Trial:
    """One generator run: `requested` pps (0: flat out), frames sent and received."""

    requested: float
    sent: int
    received: int
    seconds: float
    drops: Mapping[str, int] = field(default_factory=dict)  # frames dropped, by place
    detoured: int = 0  # frames the switch sent to the agent's port

    @property
    def lost(self) -> int:
        """Return the frames sent that did not arrive (never below 0)."""
        return max(0, self.sent - self.received)

    @property
    def loss(self) -> float:
        """Return the loss ratio lost/sent (1.0 when nothing was sent)."""
        return self.lost / self.sent if self.sent > 0 else 1.0

    @property
    def offered_pps(self) -> float:
        """Return the rate the generator achieved, frames per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered_pps(self) -> float:
        """Return the rate at which frames arrived, frames per second."""
        return min(self.received, self.sent) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the trial with its derived numbers, JSON-ready."""
        return {
            "requested": self.requested,
            "sent": self.sent,
            "received": self.received,
            "seconds": self.seconds,
            "drops": dict(self.drops),
            "detoured": self.detoured,
            "loss": self.loss,
            "offered_pps": self.offered_pps,
            "delivered_pps": self.delivered_pps,
        }


@dataclass
class Search:
    """A binary search's outcome: the highest passing rate (0.0: none) and each step."""

    best: float
    steps: list[tuple[float, float]] = field(default_factory=list)  # (rate, loss)
    converged: bool = False


def search_rate(
    trial: Callable[[float], float],
    hi: float,
    max_loss: float = 0.0,
    tolerance: float = 0.03,
    max_trials: int = 10,
    lo: float = 0.0,
) -> Search:
    """Binary-search the highest rate in (lo, hi) whose `trial(rate)` loss is <= `max_loss`.

    `hi` is a rate known to lose too much, `lo` one known to pass (0: none known). The
    search stops when the passing and failing rates are within `tolerance` of the
    failing one, or after `max_trials`. Returns a Search whose `best` is the highest rate
    that passed, `lo` if none did.
    """
    good, bad = lo, hi
    search = Search(best=lo)
    while len(search.steps) < max_trials and bad - good > tolerance * bad:
        rate = (good + bad) / 2
        loss = trial(rate)
        search.steps.append((rate, loss))
        if loss <= max_loss:
            good = rate
        else:
            bad = rate
    search.converged = bad - good <= tolerance * bad
    search.best = good
    return search


def bracket(steps: Sequence[tuple[float, float]], max_loss: float) -> tuple[float, float | None]:
    """Return (highest rate that passed, lowest rate that failed: None if none) among
    (rate, loss) `steps` for the bound `max_loss`: where a search for it can start."""
    passed = [r for r, loss in steps if loss <= max_loss]
    failed = [r for r, loss in steps if loss > max_loss]
    return (max(passed, default=0.0), min(failed, default=None))


_SS_LINE = re.compile(r"^p_raw\s.*?\*:(\S+)\s.*skmem:\(.*\bd(\d+)\)")


def parse_socket_drops(ss_text: str) -> dict[str, int]:
    """Return {interface: frames dropped} of the packet sockets in `ss -0 -m -a` output
    (a full receive buffer: where a userspace switch or agent that falls behind loses
    frames). Sockets bound to no interface are left out; several on one are summed."""
    drops: dict[str, int] = {}
    for line in ss_text.splitlines():
        if m := _SS_LINE.match(line):
            drops[m.group(1)] = drops.get(m.group(1), 0) + int(m.group(2))
    return drops


def parse_netdev(text: str) -> dict[str, dict[str, int]]:
    """Return {interface: {"rx_packets", "rx_dropped", "tx_packets", "tx_dropped"}} from
    /proc/net/dev text."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        if len(v) >= 16:
            out[name.strip()] = {
                "rx_packets": v[1],
                "rx_dropped": v[3],
                "tx_packets": v[9],
                "tx_dropped": v[11],
            }
    return out


_TIMERS = re.compile(r"\b(?:idle|hard)_timeout=\d+,\s*")


def untimed(flow: str) -> str | None:
    """Return the flow of a `ovs-ofctl dump-flows --no-stats` line without its idle and
    hard timeouts, as `ovs-ofctl add-flow` takes it (adding it replaces the flow, timer
    and all); None when the flow has no timer."""
    text = flow.strip()
    bare = _TIMERS.sub("", text)
    return bare if bare != text else None


_PORT_COUNTS = re.compile(r"\b(rx|tx) pkts=(\d+), bytes=\d+, drop=(\d+|\?)")


def parse_dump_ports(text: str) -> dict[str, int]:
    """Return {"rx_packets", "rx_dropped", "tx_packets", "tx_dropped"} of the one port in
    `ovs-ofctl dump-ports BRIDGE PORT` output (the datapath's live counters; a drop
    counter the port type does not keep, "?", reads 0)."""
    out = {}
    for way, packets, dropped in _PORT_COUNTS.findall(text):
        out[f"{way}_packets"] = int(packets)
        out[f"{way}_dropped"] = int(dropped) if dropped.isdigit() else 0
    if len(out) != 4:
        raise ValueError(f"no rx and tx counters in: {text!r}")
    return out


def lost_where(drops: Mapping[str, int], lost: int) -> dict[str, int]:
    """Return {place: frames} for a trial: its counted drops, and "unaccounted" for the
    loss no counter explains (never below 0)."""
    out = {place: n for place, n in drops.items() if n > 0}
    unaccounted = lost - sum(out.values())
    if unaccounted > 0:
        out["unaccounted"] = unaccounted
    return out


def first_loss(trials: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Return where the first frames were lost: the drops of the lowest-rate trial that
    lost any (the one just above the loss-free rate), as lost_where() puts them; {} when
    no paced trial lost a frame."""
    lossy = [t for t in trials if t["requested"] > 0 and t["sent"] > t["received"]]
    if not lossy:
        return {}
    t = min(lossy, key=lambda t: t["offered_pps"])
    return lost_where(t["drops"], t["sent"] - t["received"])


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Return {"min", "median", "max"} of `values` (all None when there are none)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(searches: Sequence[Mapping[str, Any]], repeats: int) -> dict[str, Any]:
    """Summarize measured paths: dicts with path, size, repeat (0-based), lossfree_pps,
    bound_pps (at LOSS_BOUND), generator_bound, and optionally "unavailable" (why).

    Returns {size: {"paths": {path: {"lossfree", "at_bound": spread(), "runs",
    "runs_bound", "generator_bound"} or {"unavailable": why}}, "ratios": {"a/b":
    {"what", "paired", "paired_bound", "of_medians"}}}}, sizes as strings. "paired"
    spreads the two paths' loss-free ratios within each repeat.
    """
    out: dict[str, Any] = {}
    for size in sorted({s["size"] for s in searches}):
        paths: dict[str, Any] = {}
        for path in PATHS:
            mine = [s for s in searches if s["size"] == size and s["path"] == path]
            if not mine:
                continue
            if why := next((s["unavailable"] for s in mine if s.get("unavailable")), None):
                paths[path] = {"unavailable": why}
                continue
            runs: list[float | None] = [None] * repeats
            bound: list[float | None] = [None] * repeats
            for s in mine:
                runs[s["repeat"]], bound[s["repeat"]] = s["lossfree_pps"], s["bound_pps"]
            paths[path] = {
                "lossfree": spread([v for v in runs if v is not None]),
                "at_bound": spread([v for v in bound if v is not None]),
                "runs": runs,
                "runs_bound": bound,
                "generator_bound": sum(bool(s["generator_bound"]) for s in mine),
            }
        ratios: dict[str, Any] = {}
        for num, den, what in RATIOS:
            a, b = paths.get(num, {}), paths.get(den, {})
            if "runs" not in a or "runs" not in b:
                continue
            ratios[f"{num}/{den}"] = {
                "what": what,
                "paired": spread(_paired(a["runs"], b["runs"])),
                "paired_bound": spread(_paired(a["runs_bound"], b["runs_bound"])),
                "of_medians": _div(a["lossfree"]["median"], b["lossfree"]["median"]),
            }
        out[str(size)] = {"paths": paths, "ratios": ratios}
    return out


def _paired(a: Sequence[float | None], b: Sequence[float | None]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True) if x is not None and y]


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _kpps(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _trio(s: Mapping[str, float | None], fmt: Callable[[float | None], str]) -> str:
    return " / ".join(fmt(s[k]) for k in ("min", "median", "max"))


def table_rows(summary: Mapping[str, Any], first: Mapping[str, Any]) -> list[list[str]]:
    """Return the path table as rows of cells, a header row first: per size and path,
    kpps loss-free and at 0.1 % loss (min / median / max), and where the first frames
    were lost (`first`: {size: {path: {place: frames}}}). A `*` marks a path that lost
    nothing at the generator's top rate in some repeat (a lower bound)."""
    rows = [["size", "path", "loss-free kpps", "at 0.1 % loss kpps", "first lost at"]]
    for size, entry in summary.items():
        for path, s in entry["paths"].items():
            if "unavailable" in s:
                rows.append([size, path, "unavailable: " + s["unavailable"], "", ""])
                continue
            sites = first.get(size, {}).get(path, {})
            where = ", ".join(f"{k} {n:,}" for k, n in sorted(sites.items(), key=lambda i: -i[1]))
            mark = "*" if s["generator_bound"] else ""
            rows.append(
                [size, path + mark, _trio(s["lossfree"], _kpps), _trio(s["at_bound"], _kpps)]
                + [where or "-"]
            )
    return rows


def ratio_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Return the ratio table (the headline) as rows of cells, a header row first."""
    rows = [["size", "ratio", "loss-free, paired min / median / max", "at 0.1 %", "what"]]
    for size, entry in summary.items():
        for name, r in entry["ratios"].items():
            rows.append(
                [size, name, _trio(r["paired"], _ratio), _trio(r["paired_bound"], _ratio)]
                + [r["what"]]
            )
    return rows


def render_text(rows: Sequence[Sequence[str]]) -> str:
    """Return `rows` as an aligned plain-text table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def render_markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Return `rows` as a Markdown table (the first row is the header)."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def render_markdown(report: Mapping[str, Any]) -> str:
    """Return the MLFFR section of BENCHMARKS.md for `report` (the JSON run_bench writes)."""
    m, p, summary = report["machine"], report["parameters"], report["summary"]
    gen = report.get("generator_limit", {})
    gen_line = ", ".join(f"{size} bytes {_kpps(v)} kpps" for size, v in gen.items()) or "-"
    quick = " --quick" if p.get("quick") else ""
    paper_rows = [["frame", *PAPER[64].keys()]]
    paper_rows += [[f"{size} bytes", *(f"{v:,}" for v in PAPER[size].values())] for size in PAPER]
    paths = "\n".join(f"- `{name}`: {what}" for name, what in PATHS.items() if name in p["paths"])
    return f"""## MLFFR: Linux forwarding vs OVS vs OVS + a NetServ detour

The paper's Figure 3 experiment (maximum loss-free forwarding rate) on this machine,
`netserv bench mlffr`, {p["repeats"]} repeat(s) of every path interleaved in one run,
{report["date"]}; the plot of offered against delivered rate is `{report.get("png") or "-"}`.

**Ratios (the headline), paired per repeat:**

{render_markdown_table(ratio_rows(summary))}

**Paths:**

{render_markdown_table(table_rows(summary, report.get("first_loss", {})))}

kpps: thousands of frames per second, min / median / max over repeats, of the loss-free
rate and of the rate at 0.1 % loss, each found by binary search on the offered rate.
"first lost at": where the frames went in the lowest-rate trial that lost any (the
one just above the loss-free rate), by the counter that saw them, summed over repeats.
`*`: the path lost nothing at the generator's top rate in some repeat (a lower bound).

Generator limit on a direct veth pair (nothing but a veth between it and the
counter): {gen_line}.

{paths}

Reproduce (as root, from the repository; this run took {report["minutes"]} minutes):

```sh
./netserv bench mlffr{quick} --sizes {",".join(str(s) for s in p["sizes"])} \\
    --repeats {p["repeats"]} --seconds {p["seconds"]} --markdown BENCHMARKS.md
```

### Conditions
- {m["nproc"]}-core VM ({m["cpu"]}), shared with other work (load average
  {" ".join(m["loadavg_at_start"])} at the start): read the ratios, not the absolute rates.
  Kernel {m["kernel"]}; {m["ovs"]}; datapath `{m["datapath"]}`.
- Generator: `netserv-pktgen` (`tools/pktgen.c`, built by `tools/setup.sh`): one UDP
  flow from h1 through a packet socket, sendmmsg batches of up to 64, paced by a
  schedule; loss = frames sent - frames h2's veth received, read {p["drain"]} s after the
  generator stops. Each trial sends for {p["seconds"]} s (the paper: 20 s per rate);
  per path, size and repeat: one trial flat out, then binary searches to within
  {p["tolerance"]:.0%} for 0.1 % loss and for none, at most {p["max_trials"]} trials.
- Every trial is in `tools/out/mlffr.json` (gitignored).

### The paper, for comparison (Figure 3, 100 Mb/s Ethernet, frames per second)

{render_markdown_table(paper_rows)}

At 1500 bytes all three were limited by the 100 Mb/s links (about 8,200 frames per second).
"""
