"""`netserv bench agent`'s pure parts: the frame it sends, a trial's numbers, the
summary over repeats, the tables and the Markdown section.

No network and no processes here; `tools.bench_agent` does the I/O.

Two numbers per trial, both of frames received and returned by the process under
test while the generator offers more than it can take:
- `rate`: frames returned per second of wall-clock time;
- `per_cpu`: frames returned per second of CPU time the process got (user, system,
  and the softirq work that runs in its context). On a shared machine the process
  does not always get a whole core, and this number, which is the rate it would
  reach with one, varies much less from trial to trial.
"""

from __future__ import annotations

import statistics
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from agentproto.tags import tag_tci
from tools.mlffr import render_markdown_table, render_text

HEADERS = 14 + 20 + 8  # Ethernet + IPv4 + UDP
# path -> (worker role, its options); the agent paths run the real NodeAgent loop.
PATHS: dict[str, tuple[str, dict[str, object]]] = {
    "reflector": ("reflect", {}),
    "agent": ("agent", {"chain": 1, "io": "batch"}),
    "agent-chain5": ("agent", {"chain": 5, "io": "batch"}),
    "agent-one-frame": ("agent", {"chain": 1, "io": "one-frame"}),
    "agent-isolated": ("agent", {"chain": 1, "io": "batch", "tier": "isolated"}),
}
# (numerator, denominator, what it says, target): ratios of rates, higher is better
# for the numerator. agent/agent-chain5 is what a chain of 5 costs over a chain of 1.
RATIOS = (
    ("agent", "reflector", "the agent (null) of a bare batched reflector", ">= 0.60"),
    ("agent", "agent-chain5", "cost of a chain of 5 null over a chain of 1", "<= 1.20"),
    ("agent-one-frame", "reflector", "before: one frame per system call", ""),
    ("agent", "agent-one-frame", "gain of batching: batched / one frame per call", ""),
    (
        "agent",
        "agent-isolated",
        "cost of the isolated tier: null in the agent / in its own process",
        "",
    ),
)
METRICS = ("rate", "per_cpu")
BOUND = 0.97  # returned >= this share of offered: the generator, not the path, was the limit


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tagged_frame(size: int, tag: int) -> bytes:
    """Return an IPv4/UDP frame of `size` bytes (no FCS) with an 802.1Q header carrying
    session tag `tag` after the MAC addresses, as the switch sends a detoured frame to
    the agent (`agentproto/tags.py`).

    `size` is the frame as the agent's modules see it, untagged; the veth carries
    4 bytes more. Raises ValueError outside 60..1514 bytes or for a number that is no tag.
    """
    if not 60 <= size <= 1514:
        raise ValueError(f"frame size {size} is outside 60..1514 bytes")
    pcp, vid = tag_tci(tag)
    payload = size - HEADERS
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
    udp = struct.pack("!HHHH", 40000, 9000, 8 + payload, 0)  # checksum 0: none (IPv4)
    macs = bytes.fromhex("020000000002" + "020000000001")  # to, from
    header = struct.pack("!HH", 0x8100, pcp << 13 | vid)
    return macs + header + b"\x08\x00" + ip + udp + bytes(payload)


def trial_numbers(window: Mapping[str, float], worker: Mapping[str, int]) -> dict[str, Any]:
    """Return a trial's numbers from the generator's window, {"seconds", "sent",
    "returned", "worker_cpu_seconds"} (frames it sent, frames that came back, CPU
    time the process under test got, all in the same window), and the process's own
    counters over its life, {"received", "batches"}.

    Returns offered and returned frames per second, `per_cpu` (returned per CPU
    second; None without CPU time), the process's CPU share, `batch` (frames per
    non-empty receive) and `bound` (True when nearly everything offered came back:
    the generator was the limit).
    """
    seconds, cpu = window["seconds"], window["worker_cpu_seconds"]
    offered = window["sent"] / seconds
    rate = window["returned"] / seconds
    return {
        "offered": offered,
        "rate": rate,
        "per_cpu": window["returned"] / cpu if cpu > 0 else None,
        "cpu_share": cpu / seconds,
        "batch": worker["received"] / worker["batches"] if worker.get("batches") else None,
        "bound": rate >= BOUND * offered,
    }


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """Return {"min", "median", "max"} of `values` (all None when there are none)."""
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(trials: Sequence[Mapping[str, Any]], repeats: int) -> dict[str, Any]:
    """Summarize trials (dicts with path, repeat and trial_numbers()' keys).

    Returns {"paths": {path: {metric: spread + "runs", "offered", "cpu_share",
    "bound"}}, "ratios": {"a/b": {metric: {"of_medians", "paired"}}}}: "runs" holds one
    value per repeat (None: not measured); a paired ratio divides the two paths'
    values of the same repeat, and "paired" is their spread.
    """
    paths: dict[str, Any] = {}
    for path in PATHS:
        mine = [t for t in trials if t["path"] == path]
        if not mine:
            continue
        entry: dict[str, Any] = {}
        for metric in METRICS:
            runs: list[float | None] = [None] * repeats
            for t in mine:
                runs[t["repeat"]] = t[metric]
            entry[metric] = {**spread([v for v in runs if v is not None]), "runs": runs}
        entry["offered"] = statistics.median(t["offered"] for t in mine)
        entry["cpu_share"] = statistics.median(t["cpu_share"] for t in mine)
        batches = [t["batch"] for t in mine if t.get("batch") is not None]
        entry["batch"] = statistics.median(batches) if batches else None
        entry["bound"] = sum(bool(t["bound"]) for t in mine)
        paths[path] = entry
    ratios: dict[str, Any] = {}
    for num, den, _what, _target in RATIOS:
        if num not in paths or den not in paths:
            continue
        ratios[f"{num}/{den}"] = {
            metric: _ratio(paths[num][metric], paths[den][metric]) for metric in METRICS
        }
    return {"paths": paths, "ratios": ratios}


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    paired = [x / y for x, y in zip(a["runs"], b["runs"], strict=True) if x is not None and y]
    return {
        "of_medians": a["median"] / b["median"] if a["median"] and b["median"] else None,
        "paired": spread(paired),
    }


def _kpps(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _trio(s: Mapping[str, Any], fmt: Any) -> str:
    return " / ".join(fmt(s[k]) for k in ("min", "median", "max"))


PATH_HEADER = (
    "path",
    "returned kpps min / median / max",
    "offered kpps",
    "CPU %",
    "frames per batch",
    "kpps per CPU-s min / median / max",
)
RATIO_HEADER = (
    "ratio",
    "what",
    "rate: of medians",
    "rate: paired min / median / max",
    "per CPU-s: of medians",
    "per CPU-s: paired min / median / max",
    "target",
)


def path_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Return the per-path table as rows of cells, a header row first.

    A `*` marks a path that returned nearly all that was offered in some repeat: the
    generator was its limit there, so its rate is a lower bound.
    """
    rows = [list(PATH_HEADER)]
    for path, p in summary["paths"].items():
        rows.append(
            [
                path + ("*" if p["bound"] else ""),
                _trio(p["rate"], _kpps),
                _kpps(p["offered"]),
                f"{100 * p['cpu_share']:.0f}",
                "-" if p["batch"] is None else f"{p['batch']:.1f}",
                _trio(p["per_cpu"], _kpps),
            ]
        )
    return rows


def ratio_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Return the ratio table as rows of cells, a header row first."""
    rows = [list(RATIO_HEADER)]
    for num, den, what, target in RATIOS:
        r = summary["ratios"].get(f"{num}/{den}")
        if r is None:
            continue
        rate, cpu = r["rate"], r["per_cpu"]
        rows.append(
            [
                f"{num}/{den}",
                what,
                _r(rate["of_medians"]),
                _trio(rate["paired"], _r),
                _r(cpu["of_medians"]),
                _trio(cpu["paired"], _r),
                target,
            ]
        )
    return rows


def render_report_text(summary: Mapping[str, Any]) -> str:
    """Return both tables as aligned plain text."""
    return render_text(path_rows(summary)) + "\n\n" + render_text(ratio_rows(summary))


SECTION = "## The agent alone: NodeAgent vs a bare batched reflector"


def _headline(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for num, den, what, target in RATIOS:
        r = summary["ratios"].get(f"{num}/{den}")
        if r is None:
            continue
        rate, cpu = r["rate"], r["per_cpu"]
        lines.append(
            f"- **{num}/{den} = {_r(cpu['of_medians'])}** per CPU-second "
            f"({_r(rate['of_medians'])} in frames per second), {what}"
            + (f"; target {target}" if target else "")
        )
    return lines


def render_section(report: Mapping[str, Any]) -> str:
    """Return the BENCHMARKS.md section for `report` (the JSON run_agent_bench writes)."""
    m, p, summary = report["machine"], report["parameters"], report["summary"]
    gen = report.get("generator_alone") or {}
    gen_line = (
        f"{_kpps(gen.get('rate'))} kpps offered\n  with nothing reading the far end"
        if gen
        else "not measured in this run"
    )
    command = (
        f"./netserv bench agent --repeats {p['repeats']} --seconds {p['seconds']} "
        f"--size {p['size']}{' --pin' if p.get('cpus') else ''} --markdown BENCHMARKS.md"
    )
    return f"""{SECTION}

The node agent's own packet path, without the switch: a veth pair in a namespace
of its own, a generator on one end sending {p["size"]}-byte frames (+ a 4-byte
802.1Q tag naming the session) as fast as it can, and on the other end either the
real `NodeAgent` packet loop (dispatch, module API, the `null` module; a chain of
1 or 5) or a bare batched reflector (recvmmsg, then sendmmsg of the same buffers,
nothing else), {p["repeats"]} repeats of every path interleaved in one run,
{report["date"]}.

{chr(10).join(_headline(summary))}

{render_markdown_table(path_rows(summary))}

{render_markdown_table(ratio_rows(summary))}

What is measured: frames that came back to the generator's end (the veth's own
receive counter) over a window of {p["seconds"]} s after {p["warmup"]} s of warm-up, while
the generator offers more than the path takes (the socket's queue overflows: this is
its capacity, not a loss-free rate). "kpps per CPU-s" divides them by the CPU time the
process under test got in the window (from /proc/PID/schedstat; it includes the
kernel's work for its system calls and the softirq work run in its context, such as
the far end's receive of what it sends): its rate with a core to itself, and the
steadier number on a shared machine, so the ratios in bold use it. Ratios are taken
of the medians and of the two paths' values within each repeat ("paired"). "frames
per batch" is the median over trials of frames per non-empty receive: a process that
catches up with its queue takes smaller batches and pays more per frame. A `*` marks
a path that returned ≥ {BOUND:.0%} of what was offered in some repeat (the generator
was the limit there). `agent-one-frame` is the packet loop on the one-frame socket
(`OneFramePacketSocket`, the fallback), which is what the agent used before batching.
`agent-isolated` runs the same `null` in the isolated tier (`netserv agent --trusted
none`): in a confined process of its own, handed each batch over a socket pair; its CPU
time is the agent's and that process's together.

Reproduce (as root, from the repository; this run took {report["minutes"]} minutes):

```sh
{command}
```

### Conditions
- {m["nproc"]}-core VM ({m["cpu"]}), shared with other people's work during the run
  (load average {" ".join(m["loadavg_at_start"])} at its start): read the ratios, not
  the absolute rates. Kernel {m["kernel"]}; Python {m["python"]}.
- Generator: `tools/bench_agent_worker.py generate`, one frame sent over and
  over with sendmmsg in batches of 64 through ctypes; {gen_line}.
- CPUs: {p["pinning"]}.
- Every trial is in `tools/out/agent.json` (gitignored).
"""
