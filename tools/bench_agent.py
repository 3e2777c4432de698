"""`netserv bench agent`: the node agent's own packet path against a bare batched reflector.

A namespace made for the run holds one veth pair. On one end the generator
(`tools.bench_agent_worker generate`) sends a tagged frame over and over, flat out;
on the other end one of the paths of `tools.bench_agent_stats.PATHS` answers: the
bare reflector, or the real `NodeAgent` packet loop with a session whose chain is 1
or 5 `null` modules (on the batched socket, or on the one-frame socket it used
before). Repeats are interleaved (reflector, agent, agent-chain5, ..., then again,
each repeat starting one path later) so that a noisy neighbour disturbs every path
alike. Each trial starts its worker afresh, waits for "ready", runs the generator
for a warm-up and a window, and stops the worker.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench_agent_stats import (
    PATHS,
    render_report_text,
    render_section,
    summarize,
    trial_numbers,
)
from tools.bench_markdown import write_section
from tools.procs import REPO, python_env, stop_process

TAG = 5
READY_TIMEOUT = 30.0


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


@contextmanager
def veth_namespace(name: str) -> Iterator[tuple[str, str]]:
    """Make namespace `name` with a veth pair (gen, dut), up, IPv6 off; yield the two
    ends' names; always delete the namespace (and so the pair)."""
    _ip("netns", "add", name)
    try:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            check=True,
        )
        _ip("-n", name, "link", "add", "gen", "type", "veth", "peer", "name", "dut")
        for end in ("gen", "dut"):
            _ip("-n", name, "link", "set", end, "up")
        yield "gen", "dut"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _worker(ns: str, role: str, options: dict[str, object], cpu: int | None) -> list[str]:
    """Return the command that runs worker `role` in namespace `ns` with `options`."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "tools.bench_agent_worker", role]
    argv += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    return argv + ([f"--cpu={cpu}"] if cpu is not None else [])


def generate(
    ns: str, iface: str, size: int, seconds: float, warmup: float, cpu: int | None, pid: int = 0
) -> dict[str, float]:
    """Run the generator for a warm-up and a window; return its JSON (see the worker)."""
    options = {
        "iface": iface,
        "size": size,
        "tag": TAG,
        "seconds": seconds,
        "warmup": warmup,
        "worker_pid": pid,
    }
    proc = subprocess.run(
        _worker(ns, "generate", options, cpu),
        capture_output=True,
        text=True,
        env=python_env(),
        cwd=REPO,
        timeout=seconds + warmup + 60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the generator failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


@contextmanager
def serving(ns: str, iface: str, path: str, cpu: int | None) -> Iterator[tuple[int, dict]]:
    """Start `path`'s worker on `iface`; yield (its pid, a dict that holds its final
    counters once the block ends); always stop it."""
    role, options = PATHS[path]
    options = {"iface": iface, **options} | ({"tag": TAG} if role == "agent" else {})
    with worker_process(_worker(ns, role, options, cpu), path) as started:
        yield started


@contextmanager
def worker_process(argv: list[str], what: str) -> Iterator[tuple[int, dict]]:
    """Start the serving worker `argv` (a `tools.bench_agent_worker` role other than
    `generate`, run directly or through `ip netns exec`, which execs); wait for its
    "ready"; yield (its pid, a dict that holds its final counters once the block
    ends); always stop it. Raise RuntimeError, naming it `what`, when it does not
    start or ends with an error."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(),
        cwd=REPO,
    )
    final: dict[str, Any] = {}
    started = False
    try:
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        started = bool(ready) and proc.stdout.readline().strip() == "ready"
        if started:
            yield proc.pid, final  # `ip netns exec` execs: the pid is the worker's
    finally:
        # Stopped before its pipes are read: a worker that hangs would block the read.
        code = stop_process(proc)
        out, err = proc.stdout.read(), proc.stderr.read()
    # Reached only when the block did not raise: its exception is the one to see.
    if not started:
        raise RuntimeError(f"{what} did not start ({code}): {err.strip()[-500:]}")
    if code != 0:
        raise RuntimeError(f"{what} exited with {code}: {err.strip()[-500:]}")
    if out.strip():
        final.update(json.loads(out.strip().splitlines()[-1]))


def trial(
    ns: str,
    ends: tuple[str, str],
    path: str,
    size: int,
    seconds: float,
    warmup: float,
    cpus: tuple[int, int] | None,
) -> dict[str, Any]:
    """Return one trial of `path`: trial_numbers() with the window and the worker's
    own counters."""
    gen_cpu, dut_cpu = cpus if cpus else (None, None)
    with serving(ns, ends[1], path, dut_cpu) as (pid, counters):
        window = generate(ns, ends[0], size, seconds, warmup, gen_cpu, pid)
    return {**trial_numbers(window, counters), "window": window, "worker": counters}


def schedule(paths: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """Return (repeat, path) in run order: every path once per repeat, each repeat
    starting one path later, so no path always follows the same one."""
    return [(r, paths[(r + i) % len(paths)]) for r in range(repeats) for i in range(len(paths))]


class Progress:
    """Progress lines on stderr, with the minutes elapsed since the run began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60

    def __call__(self, text: str) -> None:
        print(f"[{self.minutes():5.1f} min] {text}", file=sys.stderr, flush=True)


def _describe(t: dict[str, Any]) -> str:
    per_cpu = "-" if t["per_cpu"] is None else f"{t['per_cpu'] / 1e3:,.0f}"
    return (
        f"returned {t['rate'] / 1e3:,.1f} kpps of {t['offered'] / 1e3:,.1f} offered, "
        f"CPU {100 * t['cpu_share']:.0f}%, {per_cpu} kpps per CPU-s, "
        f"{t['batch'] or 0:.1f} frames per batch"
    )


def run_agent_bench(
    paths: Sequence[str] = tuple(PATHS),
    repeats: int = 7,
    seconds: float = 3.0,
    warmup: float = 0.5,
    size: int = 64,
    pin: bool = False,
    out: Path | None = REPO / "tools" / "out" / "agent.json",
    markdown: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run the agent benchmark, print the tables, write JSON (and the Markdown
    section); return 0, or 2 (saying why on stderr) for bad parameters or without root.
    """
    try:
        if unknown := set(paths) - set(PATHS):
            raise ValueError(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
        if repeats < 1 or seconds <= 0 or warmup < 0 or not 60 <= size <= 1514:
            raise ValueError("need repeats >= 1, seconds > 0, warmup >= 0, size 60..1514")
        if os.geteuid() != 0:
            raise ValueError("needs root (it creates a namespace and a veth pair)")
    except ValueError as exc:
        print(f"netserv bench agent: {exc}", file=sys.stderr)
        return 2
    from tools.bench_mlffr import machine_info

    log = log or Progress()
    paths = [p for p in PATHS if p in paths]
    # Pinned, the generator and the process under test never share a CPU, but
    # cannot move away from other work on theirs either.
    cpus = (0, 1) if pin and (os.cpu_count() or 1) >= 2 else None
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "parameters": {
            "paths": paths,
            "repeats": repeats,
            "seconds": seconds,
            "warmup": warmup,
            "size": size,
            "tag": TAG,
            "cpus": cpus,
            "pinning": (
                "the generator pinned to CPU 0, the process under test to CPU 1"
                if cpus
                else "neither pinned to a CPU"
            ),
        },
        "trials": [],
    }
    ns = "nsb" + secrets.token_hex(3)
    log(f"{len(paths) * repeats} trials of {warmup + seconds:.1f} s in namespace {ns}")
    with veth_namespace(ns) as ends:
        gen = generate(ns, ends[0], size, seconds, warmup, cpus[0] if cpus else None)
        report["generator_alone"] = {"rate": gen["sent"] / gen["seconds"], "window": gen}
        log(f"generator alone: {gen['sent'] / gen['seconds'] / 1e3:,.1f} kpps")
        for repeat, path in schedule(paths, repeats):
            t = trial(ns, ends, path, size, seconds, warmup, cpus)
            report["trials"].append({"path": path, "repeat": repeat, **t})
            log(f"repeat {repeat + 1}/{repeats} {path}: {_describe(t)}")
    report["summary"] = summarize(report["trials"], repeats)
    report["minutes"] = round(log.minutes(), 1) if isinstance(log, Progress) else None
    print(render_report_text(report["summary"]))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {out}")
    if markdown:
        write_section(markdown, render_section(report))
        log(f"wrote {markdown}")
    return 0
