"""`netserv bench control`: the control plane at scale, on one node of real parts.

A controller, a `SingleSwitchTopo` of two hosts and the node's agent, made for the
run. In one run, in this order:

- setups per second with 1 and with 8 clients, each setup's time (p50, p99), on an
  empty node; frames of unrelated traffic delivered at a fixed offered load;
- setup → first frame processed: a host sends to a port without a session, the
  session is asked for with `rewrite` moving the flow to another port, and the first
  frame the receiver gets on that port marks the module's first frame (p50, p99);
- the node filled to 100, 1,000 and 10,000 sessions (8 clients, each block's rate
  kept), the agent's CPU time per detoured frame measured at 1, 100, 1,000 and
  10,000 sessions, and its CPU time at rest (no traffic: its background work); at
  10,000 the setup rates and times and the unrelated traffic again, so each is a
  ratio to the empty node measured side by side;
- REST's p99 (GET /netserv/nodes) alone and while signaling datagrams flood the
  switch at 10 times the punt meter's rate;
- the 10,000 sessions torn down (its rate), the empty node's setup rates again (the
  ratios take the mean of both), then setup/teardown cycles, with flows, RSS, open fds
  and threads of controller and agent before and after.

`--quick` takes 1,000 sessions and fewer repeats. `--parts` runs some of it: `empty`
(the empty node's measures), `frame-cost` (the node filled, the agent's CPU per frame at
each level), `full` (the measures at the full node) and `teardown` (the teardown and
the cycles); any but `empty` fills the node. Rates are min/median/max over the repeats.
Prints a table, writes JSON and, with `--markdown` (every part only), BENCHMARKS.md's
section.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.tables import SIGNALING_RATE
from signaling.wire import SIGNALING_PORT
from tools.bench_markdown import write_section
from tools.procs import REPO, python_env, stop_process

MEASURED_PORT = 9000  # the measured session's flow
UNRELATED_PORT = 7000  # traffic no session claims
FIRST_FRAME_PORTS = 30000  # setup → first frame: the flows' ports from here ...
REWRITTEN = 1000  # ... and rewritten to this much higher
FILL_LEVELS = (1, 100, 1000, 10_000)
PARTS = ("empty", "frame-cost", "full", "teardown")
OFFERED = 5000.0  # frames a second: the measured flow's and the unrelated traffic's


def filler_match(i: int) -> dict[str, object]:
    """Return the match of the `i`-th filler session: a flow no test traffic sends."""
    return {"ipv4_src": f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", "udp_dst": 9000}


def probe_match(i: int) -> dict[str, object]:
    """Return the match of the `i`-th session of a rate measure (then torn down)."""
    return {"ipv4_src": f"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", "udp_dst": 9000}


def percentile(values: Sequence[float], q: float) -> float:
    """Return the `q` quantile (0..1) of `values`, the nearest rank."""
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)  # the smallest with q of the values at or below
    return ordered[min(len(ordered), max(1, rank)) - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Return min, median and max of `values`."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# --- the processes -----------------------------------------------------------------
def process_view(pid: int) -> dict[str, int]:
    """Return RSS (KiB), open file descriptors and threads of process `pid`."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time process `pid` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid: int) -> float:
    """Return the time the threads of process `pid` have run on a CPU, in seconds, to
    the nanosecond (the scheduler's count: `cpu_seconds` counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total / 1e9


def at_rest(pid: int, seconds: float) -> float:
    """Return the CPU milliseconds a second process `pid` uses over `seconds` while no
    test traffic flows: its background work (for the agent, heartbeats and expiry)."""
    before = run_seconds(pid)
    time.sleep(seconds)
    return (run_seconds(pid) - before) / seconds * 1e3


# --- the sender in a host ----------------------------------------------------------
def spray(to: str, rate: float) -> None:
    """Send small UDP datagrams to `to` at `rate` a second, to the port last read from
    stdin (none while it is 0); at end of input print how many went to each port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port, gap, due, pending = 0, 1.0 / rate, time.monotonic(), b""
    sent: dict[int, int] = {}
    print("ready", flush=True)
    while True:
        wait = max(0.0, due - time.monotonic()) if port else None
        if select.select([0], [], [], wait)[0]:
            chunk = os.read(0, 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            port = int(lines[-1]) if lines else port
            due = time.monotonic()
            continue
        try:
            sock.sendto(sent.get(port, 0).to_bytes(4, "big") + bytes(14), (to, port))
            sent[port] = sent.get(port, 0) + 1
        except OSError:
            pass  # a full queue: the next one goes
        due += gap
    print(json.dumps(sent), flush=True)


class Sprayer:
    """`spray` run in a host: `aim` points it at a port (0: pause), `close` stops it
    and returns how many datagrams went to each port."""

    def __init__(self, host: Any, to: str, rate: float) -> None:
        self.proc = host.popen(
            [sys.executable, "-m", "tools.bench_control", "spray", to, str(rate)],
            cwd=str(REPO),
            env=python_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            stop_process(self.proc)
            raise RuntimeError("the sender did not start")

    def aim(self, port: int) -> None:
        self.proc.stdin.write(f"{port}\n")
        self.proc.stdin.flush()

    def close(self) -> dict[int, int]:
        try:
            out, _ = self.proc.communicate(timeout=10)
        finally:
            stop_process(self.proc)
        return {int(k): v for k, v in json.loads(out).items()}


@contextmanager
def sprayer(host: Any, to: str, rate: float) -> Iterator[Sprayer]:
    """Run a Sprayer in `host` for the block; stop it whatever happens."""
    sender = Sprayer(host, to, rate)
    try:
        yield sender
    finally:
        if sender.proc.poll() is None:
            stop_process(sender.proc)


def sprayed(host: Any, to: str, rate: float, port: int, seconds: float) -> int:
    """Send to `to`:`port` from `host` at `rate` for `seconds`; return how many were sent."""
    with sprayer(host, to, rate) as sender:
        sender.aim(port)
        time.sleep(seconds)
        return sender.close().get(port, 0)


# --- sessions ----------------------------------------------------------------------
class Sessions:
    """Sets sessions up and tears them down with `clients` concurrent REST clients.

    A call the controller answers with 503 (the switch or the agent did not answer in
    time: a machine too busy) is counted in `unavailable` and made again, up to
    RETRIES times; the time it took counts.
    """

    RETRIES = 3

    def __init__(self, make_client: Callable[[], Any]) -> None:
        self.make_client = make_client
        self.unavailable = 0

    def _again(self, call: Callable[[], Any]) -> Any:
        from signaling.client import ClientError

        for attempt in range(self.RETRIES + 1):
            try:
                return call()
            except ClientError as exc:
                if exc.status != 503 or attempt == self.RETRIES:
                    raise
                self.unavailable += 1
        raise AssertionError("unreachable")

    def setup(
        self, matches: Sequence[dict[str, object]], clients: int, module: str = "null", **kw: Any
    ) -> tuple[list[int], list[float], float]:
        """Set up a session per match; return (ids, seconds each took, seconds in all)."""

        def one(match: dict[str, object]) -> tuple[int, float]:
            client = self.make_client()
            start = time.perf_counter()
            made = self._again(lambda: client.setup(match, module=module, lifetime=3600, **kw))
            return made["id"], time.perf_counter() - start

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(one, matches))
        return [i for i, _ in done], [t for _, t in done], time.perf_counter() - start

    def teardown(self, ids: Sequence[int], clients: int) -> float:
        """Tear sessions `ids` down; return the seconds it took."""

        def one(session_id: int) -> None:
            client = self.make_client()
            self._again(lambda: client.teardown(session_id))

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, ids))
        return time.perf_counter() - start

    def cycles(self, count: int, clients: int) -> float:
        """Set up and tear down `count` sessions, each at once after its setup; return
        the seconds it took."""

        def one(i: int) -> None:
            client = self.make_client()
            made = self._again(lambda: client.setup(probe_match(i), module="null", lifetime=3600))
            self._again(lambda: client.teardown(made["id"]))

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(count)))
        return time.perf_counter() - start


def setup_rates(
    sessions: Sessions, per_trial: int, repeats: int, first: int, pids: dict[str, int]
) -> dict[str, Any]:
    """Return setups per second with 1 and 8 clients (`repeats` trials of `per_trial`
    setups each, each torn down after), the setup times of the 8-client trials, and
    the CPU time a setup cost each of the processes `pids` (name → pid)."""
    rates: dict[int, list[float]] = {1: [], 8: []}
    times: list[float] = []
    cpu = dict.fromkeys(pids, 0.0)
    n = first
    for _ in range(repeats):
        for clients in (1, 8):
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            ids, took, seconds = sessions.setup(
                [probe_match(i) for i in range(n, n + per_trial)], clients
            )
            for name, pid in pids.items():
                cpu[name] += cpu_seconds(pid) - before[name]
            n += per_trial
            rates[clients].append(per_trial / seconds)
            if clients == 8:
                times += took
            sessions.teardown(ids, 8)
    return {
        "setups_per_s_1_client": spread(rates[1]),
        "setups_per_s_8_clients": spread(rates[8]),
        "setup_ms_8_clients": {
            "p50": percentile(times, 0.5) * 1e3,
            "p99": percentile(times, 0.99) * 1e3,
        },
        "cpu_ms_per_setup": {name: t / (n - first) * 1e3 for name, t in cpu.items()},
    }


# --- traffic -----------------------------------------------------------------------
def first_frames(net: Any, sessions: Sessions, trials: int) -> dict[str, float]:
    """Return p50 and p99 (ms) from asking for a session to its first frame processed."""
    from tools.scenario import Receiver

    h1, h2 = net.hosts
    posted: list[tuple[int, float]] = []
    ids = []
    with Receiver(h2, arrivals=True) as rx, sprayer(h1, h2.IP(), 5000) as sender:
        for t in range(trials):
            port = FIRST_FRAME_PORTS + t
            sender.aim(port)
            time.sleep(0.2)  # the flow runs before its session is asked for
            match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": port}
            posted.append((port, time.time()))
            made, _, _ = sessions.setup([match], 1, "rewrite", params={"dport": port + REWRITTEN})
            ids += made
            time.sleep(0.1)
        sender.close()
    sessions.teardown(ids, 8)
    latencies = []
    for port, at in posted:
        arrivals = rx.arrived(h1, port + REWRITTEN)
        if not arrivals:
            raise RuntimeError(f"no frame of the flow to port {port} came through its session")
        latencies.append(arrivals[0][0] - at)
    return {
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "trials": trials,
    }


def frame_cost(net: Any, client: Any, session_id: int, seconds: float) -> float:
    """Return the agent's CPU microseconds per frame of the measured session's flow,
    sent at OFFERED frames a second for `seconds`."""
    switch, (h1, h2) = net.switches[0], net.hosts
    pid = switch.agent_pid
    before = client.stats(session_id)["stats"]["packets"]
    cpu = cpu_seconds(pid)
    sprayed(h1, h2.IP(), OFFERED, MEASURED_PORT, seconds)
    time.sleep(0.3)  # the last frames through the agent
    used = cpu_seconds(pid) - cpu
    got = client.stats(session_id)["stats"]["packets"] - before
    if got <= 0:
        raise RuntimeError("no frame of the measured session reached its module")
    return used / got * 1e6


def unrelated(net: Any, seconds: float) -> dict[str, float]:
    """Return how many frames no session claims, offered at OFFERED a second for
    `seconds`, arrived."""
    from tools.scenario import Receiver

    h1, h2 = net.hosts
    with Receiver(h2) as rx:
        sent = sprayed(h1, h2.IP(), OFFERED, UNRELATED_PORT, seconds)
    got = rx.got(h1, UNRELATED_PORT)
    return {"sent": sent, "delivered": got, "ratio": got / sent, "offered_pps": OFFERED}


def rest_latency(client: Any, calls: int) -> dict[str, float]:
    """Return p50 and p99 (ms) of GET /netserv/nodes, `calls` times in a row."""
    took = []
    for _ in range(calls):
        start = time.perf_counter()
        client.nodes()
        took.append(time.perf_counter() - start)
    return {"p50_ms": percentile(took, 0.5) * 1e3, "p99_ms": percentile(took, 0.99) * 1e3}


def under_flood(net: Any, client: Any, calls: int) -> dict[str, Any]:
    """Return REST's latency alone and while signaling datagrams flood the switch at
    10 times the punt meter's rate."""
    h1, h2 = net.hosts
    quiet = rest_latency(client, calls)
    rate = 10 * SIGNALING_RATE
    with sprayer(h1, h2.IP(), rate) as sender:
        sender.aim(SIGNALING_PORT)
        time.sleep(0.5)
        flooded = rest_latency(client, calls)
        sent = sender.close()[SIGNALING_PORT]
    return {"flood_pps": rate, "flood_sent": sent, "quiet": quiet, "flooded": flooded}


# --- the run -----------------------------------------------------------------------
def snapshot(controller_pid: int, agent_pid: int, bridge: str) -> dict[str, Any]:
    from tools.ovs import dump_flows

    return {
        "flows": len(dump_flows(bridge)),
        "controller": process_view(controller_pid),
        "agent": process_view(agent_pid),
    }


def measure(
    net: Any,
    ctl: Any,
    quick: bool,
    log: Callable[[str], None],
    parts: Sequence[str] = PARTS,
) -> dict[str, Any]:
    switch, (h1, h2) = net.switches[0], net.hosts
    client = ctl.client(timeout=30)
    sessions = Sessions(lambda: ctl.client(timeout=30))
    top = 1000 if quick else 10_000
    levels = [n for n in FILL_LEVELS if n <= top]
    repeats = 2 if quick else 3
    trials = 2 if quick else 5  # setup-rate trials: short, so more of them for a steady median
    per_trial = 100 if quick else 400
    window = 1.0 if quick else 3.0  # seconds of traffic per measure
    pids = {"controller": ctl.pid, "agent": switch.agent_pid}
    result: dict[str, Any] = {
        "sessions": top,
        "repeats": repeats,
        "rate_trials": trials,
        "per_trial": per_trial,
        "parts": list(parts),
    }

    # Not measured: the first setups of a controller also pay for its first requests
    # (lazy imports, caches filled, connections opened), which made the empty node's
    # first trial, and so its rates, slower than the full node's.
    ids, _, _ = sessions.setup([probe_match(i) for i in range(50_000, 50_000 + per_trial)], 8)
    sessions.teardown(ids, 8)
    if "empty" in parts:
        log("setup rates on an empty node")
        result["empty"] = setup_rates(sessions, per_trial, trials, 0, pids)
        log(f"  {json.dumps(result['empty'])}")
        result["unrelated_none"] = unrelated(net, window)
        log(f"unrelated traffic, no session: {result['unrelated_none']}")
        result["first_frame"] = first_frames(net, sessions, 20 if quick else 50)
        log(f"setup → first frame: {result['first_frame']}")
    if parts == ["empty"]:
        return result

    measured = client.setup(
        {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": MEASURED_PORT},
        module="null",
        lifetime=3600,
    )["id"]
    held, cost, rest, fill = 1, {}, {}, []
    for level in levels:
        if level > held:
            ids, _, seconds = sessions.setup(
                [filler_match(i) for i in range(held - 1, level - 1)], 8
            )
            fill.append({"from": held, "to": level, "setups_per_s": len(ids) / seconds})
            log(f"filled to {level}: {len(ids) / seconds:.0f} setups/s")
            held = level
        if "frame-cost" in parts:
            costs = [frame_cost(net, client, measured, window) for _ in range(repeats)]
            cost[str(level)] = spread(costs)
            log(f"agent CPU per frame at {level} sessions: {cost[str(level)]}")
            # Two heartbeats or more in each window.
            idle = [at_rest(switch.agent_pid, window + 2) for _ in range(repeats)]
            rest[str(level)] = spread(idle)
            log(f"agent CPU at rest at {level} sessions, ms/s: {rest[str(level)]}")
    result["fill"], result["frame_cost_us"], result["rest_cpu_ms_per_s"] = fill, cost, rest
    if "full" in parts:
        result["full"] = setup_rates(sessions, per_trial, trials, 100_000, pids)
        log(f"setup rates at {top} sessions: {json.dumps(result['full'])}")
        result["unrelated_full"] = unrelated(net, window)
        log(f"unrelated traffic, {top} sessions: {result['unrelated_full']}")
        result["rest"] = under_flood(net, client, 100 if quick else 300)
        log(f"REST under a signaling flood: {result['rest']}")
    if "teardown" not in parts:
        return result

    everyone = [s["id"] for s in client.sessions()]
    seconds = sessions.teardown(everyone, 8)
    result["teardown_per_s"] = len(everyone) / seconds
    log(f"tore {len(everyone)} down: {len(everyone) / seconds:.0f}/s")
    # The empty node again, so that the full node's rates compare with the mean of one
    # measure before and one after them: the machine's speed drifts over the minutes
    # between, and a drift that runs one way cancels.
    result["empty_after"] = setup_rates(sessions, per_trial, trials, 200_000, pids)
    log(f"setup rates on the empty node again: {json.dumps(result['empty_after'])}")
    cycles = top
    before = snapshot(ctl.pid, switch.agent_pid, switch.name)
    seconds = sessions.cycles(cycles, 8)
    time.sleep(1.0)
    after = snapshot(ctl.pid, switch.agent_pid, switch.name)
    result["cycles"] = {
        "count": cycles,
        "per_s": cycles / seconds,
        "before": before,
        "after": after,
    }
    log(f"{cycles} setup/teardown cycles: {json.dumps(result['cycles'])}")
    result["unavailable"] = sessions.unavailable
    return result


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Return the headline ratios: each at the full node over the empty one (for setup
    rates, the mean of the empty node's before and, when measured, after)."""
    top = str(r["sessions"])

    def empty(key: str) -> float:
        medians = [r[part][key]["median"] for part in ("empty", "empty_after") if part in r]
        return sum(medians) / len(medians)

    return {
        "setups_1_client": r["full"]["setups_per_s_1_client"]["median"]
        / empty("setups_per_s_1_client"),
        "setups_8_clients": r["full"]["setups_per_s_8_clients"]["median"]
        / empty("setups_per_s_8_clients"),
        "frame_cost": r["frame_cost_us"][top]["median"] / r["frame_cost_us"]["1"]["median"],
        "unrelated_delivered": r["unrelated_full"]["ratio"] / r["unrelated_none"]["ratio"],
        "rest_p99_flooded": r["rest"]["flooded"]["p99_ms"] / r["rest"]["quiet"]["p99_ms"],
    }


def frame_cost_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (measure, value) rows of the agent's CPU per frame at each level, the
    ratio of the highest level to one session's, and its CPU at rest at each level."""
    rows = [
        (
            f"agent CPU per frame, {int(level):,} session{'s' if int(level) > 1 else ''}",
            f"{c['median']:.1f} µs ({c['min']:.1f}–{c['max']:.1f})",
        )
        for level, c in r["frame_cost_us"].items()
    ]
    top = str(r["sessions"])
    if top in r["frame_cost_us"]:
        ratio = r["frame_cost_us"][top]["median"] / r["frame_cost_us"]["1"]["median"]
        rows.append((f"  ratio, {int(top):,} sessions / 1", f"{ratio:.2f}"))
    rows += [  # absent from runs made before it was measured
        (
            f"agent CPU at rest, {int(level):,} session{'s' if int(level) > 1 else ''}",
            f"{c['median']:.2f} ms/s ({c['min']:.2f}–{c['max']:.2f})",
        )
        for level, c in r.get("rest_cpu_ms_per_s", {}).items()
    ]
    return rows


def render_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (measure, value) rows for the text table and the Markdown section."""
    top, q = r["sessions"], ratios(r)

    def rate(x: dict[str, float]) -> str:
        return f"{x['median']:,.0f} ({x['min']:,.0f}–{x['max']:,.0f})"

    again = "empty_after" in r
    rows = []
    for clients, key, ratio in (
        ("1 client", "setups_per_s_1_client", q["setups_1_client"]),
        ("8 clients", "setups_per_s_8_clients", q["setups_8_clients"]),
    ):
        rows.append((f"setups/s, {clients}, empty node", rate(r["empty"][key])))
        rows.append((f"setups/s, {clients}, {top:,} sessions", rate(r["full"][key])))
        if again:
            rows.append((f"setups/s, {clients}, empty node again", rate(r["empty_after"][key])))
        name = "the empty node's, before and after" if again else "empty"
        rows.append((f"  ratio, {top:,} sessions / {name}", f"{ratio:.2f}"))
    for name, part in (("empty node", "empty"), (f"{top:,} sessions", "full")):
        ms = r[part]["setup_ms_8_clients"]
        rows.append(
            (f"setup time, 8 clients, {name}", f"p50 {ms['p50']:.1f} ms, p99 {ms['p99']:.1f} ms")
        )
        cpu = r[part]["cpu_ms_per_setup"]
        rows.append(
            (
                f"CPU per setup, {name}",
                f"controller {cpu['controller']:.2f} ms, agent {cpu['agent']:.2f} ms",
            )
        )
    ff = r["first_frame"]
    rows.append(
        ("setup → first frame processed", f"p50 {ff['p50_ms']:.1f} ms, p99 {ff['p99_ms']:.1f} ms")
    )
    for f in r["fill"]:
        rows.append(
            (
                f"filling {f['from']:,} → {f['to']:,} (8 clients)",
                f"{f['setups_per_s']:,.0f} setups/s",
            )
        )
    rows += frame_cost_rows(r)
    for name, part in (("no session", "unrelated_none"), (f"{top:,} sessions", "unrelated_full")):
        u = r[part]
        rows.append(
            (
                f"unrelated traffic delivered, {name}",
                f"{u['ratio']:.4f} of {u['sent']:,} at {u['offered_pps']:,.0f} pps",
            )
        )
    rows.append((f"  ratio, {top:,} sessions / none", f"{q['unrelated_delivered']:.3f}"))
    rest = r["rest"]
    rows.append(
        (
            "REST GET /netserv/nodes",
            f"p50 {rest['quiet']['p50_ms']:.1f} ms, p99 {rest['quiet']['p99_ms']:.1f} ms",
        )
    )
    rows.append(
        (
            f"  while signaling floods at {rest['flood_pps']} pps",
            f"p50 {rest['flooded']['p50_ms']:.1f} ms, p99 {rest['flooded']['p99_ms']:.1f} ms",
        )
    )
    rows.append((f"teardown of {top:,} (8 clients)", f"{r['teardown_per_s']:,.0f}/s"))
    rows.append(("calls answered 503 and made again", str(r.get("unavailable", 0))))
    c = r["cycles"]
    rows.append((f"{c['count']:,} setup/teardown cycles (8 clients)", f"{c['per_s']:,.0f}/s"))
    for when in ("before", "after"):
        s = c[when]
        for who in ("controller", "agent"):
            p = s[who]
            rows.append(
                (
                    f"  {when}: {who}",
                    f"RSS {p['rss_kib'] / 1024:.1f} MiB, {p['fds']} fds, {p['threads']} threads",
                )
            )
        rows.append((f"  {when}: flows in the switch", str(s["flows"])))
    return rows


def render_section(report: dict[str, Any]) -> str:
    """Return BENCHMARKS.md's section for `report`."""
    r = report["results"]
    q = ratios(r)
    lines = [
        "## The control plane at scale: setups, 10,000 sessions on one node",
        "",
        f"`{report['command']}` on {report['date']}: "
        + ", ".join(
            f"{k} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in report["machine"].items()
            if k != "other_bridges_at_start"
        )
        + ".",
        "",
        "Headline ratios, each at the full node over the empty one, measured in one run"
        " (setup rates over the mean of the empty node's before the filling and after the"
        " teardown):",
        "",
        f"- setups per second: {q['setups_1_client']:.2f} with 1 client, "
        f"{q['setups_8_clients']:.2f} with 8",
        f"- the agent's CPU time per detoured frame: {q['frame_cost']:.2f}",
        f"- unrelated traffic delivered: {q['unrelated_delivered']:.3f}",
        f"- REST p99 while signaling floods at 10× the punt meter's rate, over quiet: "
        f"{q['rest_p99_flooded']:.2f}",
        "",
        f"Setup rates are the median (min–max) of {r.get('rate_trials', 3)} trials"
        f" of {r.get('per_trial', 200)} setups each (then torn down), after as many set up"
        f" and torn down unmeasured; the other figures of {r.get('repeats', 3)} repeats.",
        "",
        "| measure | value |",
        "| --- | --- |",
        *(f"| {name.strip()} | {value} |" for name, value in render_rows(r)),
        "",
    ]
    return "\n".join(lines)


def run_control_bench(
    quick: bool = False,
    out: Path | None = REPO / "tools" / "out" / "control.json",
    markdown: Path | None = None,
    log: Callable[[str], None] | None = None,
    parts: Sequence[str] = PARTS,
) -> int:
    """Run the benchmark's `parts` (PARTS: all of it), print the table, write JSON (and
    the Markdown section); return 0, or 2 (saying why on stderr) without root or when
    the Markdown section is asked of a partial run."""
    parts = [p for p in PARTS if p in parts]
    if os.geteuid() != 0:
        print("netserv bench control: needs root (namespaces, OVS bridges)", file=sys.stderr)
        return 2
    if markdown and len(parts) != len(PARTS):
        print("netserv bench control: --markdown needs every part", file=sys.stderr)
        return 2
    from tools.bench_mlffr import machine_info
    from tools.scenario import warm_up
    from topo.controller import ControllerProcess, wait_ready
    from topo.net import netserv_network, wait_connected
    from topo.topos import SingleSwitchTopo

    started = time.monotonic()
    log = log or (lambda text: print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True))
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "command": "netserv bench control"
        + (" --quick" if quick else "")
        + (f" --parts {','.join(parts)}" if len(parts) != len(PARTS) else ""),
    }
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        with ControllerProcess(Path(tmp) / "controller.log") as ctl:
            prefix = "c" + secrets.token_hex(2)[:3]
            topo = SingleSwitchTopo(prefix=prefix, k=2)
            with netserv_network(topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp) as net:
                wait_connected(net)
                wait_ready(ctl.client(), [net.switches[0].dpid])
                warm_up((net.hosts[0], net.hosts[1]))
                report["results"] = measure(net, ctl, quick, log, parts)
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    results = report["results"]
    if len(parts) == len(PARTS):
        rows = render_rows(results)
    else:  # a partial run's JSON holds what it measured; the table, its frame costs
        rows = frame_cost_rows(results) if results.get("frame_cost_us") else []
    width = max((len(name) for name, _ in rows), default=0)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {out}")
    if markdown:
        write_section(markdown, render_section(report))
        log(f"wrote {markdown}")
    return 0


if __name__ == "__main__":  # the sender a host runs: python -m tools.bench_control spray TO RATE
    if sys.argv[1:2] == ["spray"]:
        spray(sys.argv[2], float(sys.argv[3]))
