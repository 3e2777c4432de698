"""`netserv bench`: the paper's MLFFR experiment (Figure 3), measured side by side here.

Three paths are measured in one run, their repeats interleaved (linux, ovs, ovs+null,
linux, ...) so that a noisy neighbour disturbs all of them alike:

- `linux`: h1 - router namespace (ip_forward=1) - h2, plain veths, no OVS;
- `ovs`: h1 - NetServ bridge - h2, no session: learned L2 forwarding in the datapath;
- `ovs+null`: the same bridge with a session asking for the `null` module on exactly
  the benchmark flow, so every frame detours through the node agent and back.

Per path, size and repeat: one iperf3 probe at its top rate, then a binary search
(`tools.mlffr`, where the definitions live) over paced iperf3 UDP trials. Loss is what
the receiving iperf3 counts: gaps in the sequence numbers, over frames sent. Frames
still in flight when it stops reading are not losses: its end-of-test message goes over
TCP, which no session detours, so it can overtake the last UDP frames queued in the
agent (up to ~150 below the MLFFR, as measured here).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench_markdown import write_section
from tools.mlffr import (
    PATHS,
    Trial,
    first_loss_sites,
    parse_iperf3,
    parse_socket_drops,
    parse_udp_rcvbuf_errors,
    render_markdown,
    render_text,
    search_mlffr,
    summarize,
    table_rows,
    udp_payload,
)
from tools.procs import REPO, stop_process

PORT = 5201
PACING_US = 100  # iperf3's default 1 ms timer sends bursts of a millisecond's worth
SOCKET_BUFFER = "4M"  # else the receiving iperf3 socket, not the path, drops bursts
SETTLE = 0.5  # seconds between trials, so queues of the last one have drained


def _router_topo(prefix: str) -> Any:
    from mininet.topo import Topo

    class RouterTopo(Topo):
        """h1 (10.1.0.1/24) - r - h2 (10.2.0.1/24); r forwards between its two links."""

        def build(self) -> None:
            h1 = self.addHost(f"{prefix}h1", ip="10.1.0.1/24", defaultRoute="via 10.1.0.254")
            h2 = self.addHost(f"{prefix}h2", ip="10.2.0.1/24", defaultRoute="via 10.2.0.254")
            # r's first interface is its default one, which Mininet gives the host's `ip`.
            r = self.addHost(f"{prefix}r", ip="10.1.0.254/24")
            for host, port, addr in ((h1, 1, "10.1.0.254/24"), (h2, 2, "10.2.0.254/24")):
                self.addLink(
                    host,
                    r,
                    intfName1=f"{host}-eth0",
                    intfName2=f"{prefix}r-eth{port}",
                    params2={"ip": addr},
                )

    return RouterTopo()


@contextmanager
def linux_router(prefix: str) -> Iterator[tuple[Any, Any]]:
    """Build h1 - router - h2 in namespaces; yield (h1, h2); always remove it all."""
    from mininet.net import Mininet

    from topo.node import NetServHost

    net = Mininet(
        topo=_router_topo(prefix),
        host=NetServHost,
        controller=None,
        build=False,
        cleanup=False,
        autoSetMacs=False,
        waitConnected=False,
    )
    try:
        net.build()
        net.start()
        for host in net.hosts:
            for intf in host.intfList():
                if intf.name != "lo":  # the same sender work as on the OVS path
                    _check(host.pexec("ethtool", "-K", intf.name, "tx", "off"), host)
        _check(net.get(f"{prefix}r").pexec("sysctl", "-qw", "net.ipv4.ip_forward=1"), "r")
        yield net.get(f"{prefix}h1", f"{prefix}h2")
    finally:
        try:
            net.stop()
        finally:
            for host in net.hosts:  # idempotent; ends each namespace's shell
                host.terminate()


def _check(result: tuple[str, str, int], where: object) -> None:
    out, err, code = result
    if code != 0:
        raise RuntimeError(f"command in {where} failed ({code}): {err.strip() or out.strip()}")


@dataclass
class OvsPaths:
    """The started NetServ network: hosts, the bridge, and the controller's client."""

    h1: Any
    h2: Any
    switch: Any
    client: Any


@contextmanager
def ovs_network(prefix: str, rundir: Path) -> Iterator[OvsPaths]:
    """Start a controller and h1 - NetServ bridge - h2; yield it warmed up; remove it all."""
    from signaling.client import NetServClient
    from tools.scenario import warm_up
    from topo.controller import ControllerProcess, wait_ready
    from topo.net import netserv_network, wait_connected
    from topo.topos import SingleSwitchTopo

    with ControllerProcess(rundir / "controller.log") as ctl:
        client = NetServClient(ctl.url)
        topo = SingleSwitchTopo(k=2, prefix=prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=rundir) as net:
            h1, h2 = net.get(f"{prefix}h1", f"{prefix}h2")
            switch = net.get(f"{prefix}s1")
            wait_connected(net)
            wait_ready(client, [switch.dpid])
            warm_up((h1, h2), (h2, h1))  # MACs learned: no frame of a trial is flooded
            yield OvsPaths(h1, h2, switch, client)


@contextmanager
def null_session(net: OvsPaths, lifetime: int) -> Iterator[dict[str, Any]]:
    """Detour exactly the benchmark flow through the `null` module; yield the session."""
    session = net.client.setup(
        match={"ipv4_src": net.h1.IP(), "ipv4_dst": net.h2.IP(), "udp_dst": PORT},
        module="null",
        lifetime=lifetime,
    )
    try:
        yield session
    finally:
        net.client.teardown(session["id"])


def iperf3_trial(src: Any, dst: Any, frame: int, pps: float | None, seconds: int) -> Trial:
    """Send UDP frames of `frame` bytes from `src` to `dst` at `pps` (None: flat out).

    Returns the Trial; raises RuntimeError when iperf3 fails or its server does not start.
    """
    payload = udp_payload(frame)
    bits = "0" if pps is None else str(round(pps * payload * 8))  # -b counts payload bits
    server = dst.popen(
        ["iperf3", "-s", "-1", "-p", str(PORT), "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "Server listening" not in line:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError(f"the iperf3 server in {dst.name} did not start")
        client = src.popen(
            f"iperf3 -c {dst.IP()} -p {PORT} -u -b {bits} -l {payload} -t {seconds} "
            f"-w {SOCKET_BUFFER} --pacing-timer {PACING_US} -J".split(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = client.communicate(timeout=seconds + 30)
        finally:
            stop_process(client)
        try:
            doc = json.loads(out)
        except ValueError:
            raise RuntimeError(f"iperf3 gave no JSON: {err.strip() or out[:200]}") from None
        return parse_iperf3(doc, pps)
    finally:
        stop_process(server)


def drop_counters(places: Mapping[str, str], receiver: Any) -> dict[str, int]:
    """Return the drop counters now: {place: frames} for each packet socket in `places`
    ({place: interface}, root namespace), and "receiver" for the UDP sockets of host
    `receiver`. They only grow; a trial's drops are the difference.
    """
    by_iface = parse_socket_drops(_run(["ss", "-0", "-m", "-a"]))
    counts = {place: by_iface.get(iface, 0) for place, iface in places.items()}
    counts["receiver"] = parse_udp_rcvbuf_errors(receiver.cmd("cat /proc/net/snmp"))
    return counts


def counted_trial(
    src: Any, dst: Any, frame: int, pps: float | None, seconds: int, places: Mapping[str, str]
) -> Trial:
    """Return iperf3_trial()'s Trial with `drops`: where its frames were dropped."""
    before = drop_counters(places, dst)
    trial = iperf3_trial(src, dst, frame, pps, seconds)
    after = drop_counters(places, dst)
    return replace(trial, drops={k: after[k] - before[k] for k in after if after[k] > before[k]})


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


def machine_info() -> dict[str, Any]:
    """Return what the numbers depend on: cores, CPU, kernel, OVS, datapath, load."""
    from topo.datapath import detect_datapath

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    datapath = detect_datapath(try_modprobe=False)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "ovs": _run(["ovs-vsctl", "--version"]).splitlines()[0],
        "datapath": "netdev" if datapath == "user" else "system",
        "iperf3": _run(["iperf3", "--version"]).splitlines()[0],
        "python": platform.python_version(),
        "rmem_default": Path("/proc/sys/net/core/rmem_default").read_text().strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "other_bridges_at_start": _run(["ovs-vsctl", "list-br"]).split(),
    }


class Progress:
    """Progress lines on stderr, with the minutes elapsed since the run began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60

    def __call__(self, text: str) -> None:
        print(f"[{self.minutes():5.1f} min] {text}", file=sys.stderr, flush=True)


def measure(
    send: Callable[[float | None], Trial],
    max_loss: float,
    tolerance: float,
    max_trials: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Probe at the generator's top rate, then binary-search the MLFFR with `send`.

    Returns {"mlffr_pps", "generator_bound", "converged", "overload_pps", "trials": [...]};
    the MLFFR is the rate the sender achieved in the best passing trial, overload_pps the
    rate that arrived during the probe.
    """
    trials: list[Trial] = []

    def run(rate: float | None) -> Trial:
        trial = send(rate)
        trials.append(trial)
        drops = ", ".join(f"{k} {n:,}" for k, n in trial.drops.items())
        log(
            f"  {'probe' if rate is None else f'{rate:9,.0f} pps'}: sent {trial.sent:,} "
            f"at {trial.offered_pps:,.0f} pps, lost {trial.lost:,} ({trial.loss:.2%})"
            + (f"; dropped at {drops}" if drops else "")
        )
        time.sleep(SETTLE)
        return trial

    probe = run(None)
    if probe.loss <= max_loss:  # the path kept up with iperf3: report iperf3's rate
        mlffr, bound, converged = probe.offered_pps, True, True
    else:
        search = search_mlffr(
            lambda rate: run(rate).loss,
            hi=probe.offered_pps,
            max_loss=max_loss,
            tolerance=tolerance,
            max_trials=max_trials - 1,
            first=0.95 * probe.delivered_pps,  # a guess: what got through at overload
        )
        best = [t for t in trials if t.requested == search.mlffr and search.mlffr > 0]
        mlffr, bound, converged = (best[0].offered_pps if best else 0.0), False, search.converged
    return {
        "mlffr_pps": mlffr,
        "generator_bound": bound,
        "converged": converged,
        "overload_pps": probe.delivered_pps,
        "trials": [
            {**asdict(t), "drops": dict(t.drops), "loss": t.loss, "offered_pps": t.offered_pps}
            for t in trials
        ],
    }


def _measure_path(
    path: str,
    size: int,
    seconds: int,
    linux: tuple[Any, Any] | None,
    ovs: OvsPaths | None,
    max_loss: float,
    tolerance: float,
    max_trials: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Return measure()'s result for one path, plus the agent port's frame counts."""
    from tools import ovs as ovs_counters
    from topo.topos import switch_intf_name

    if path == "linux":
        h1, h2 = linux
        return measure(
            lambda r: counted_trial(h1, h2, size, r, seconds, {}),
            max_loss,
            tolerance,
            max_trials,
            log,
        )
    sw = ovs.switch
    places = {"ovs_in": switch_intf_name(sw.name, 1)}  # OVS's socket on h1's port
    if path == "ovs+null":
        places |= {"agent_in": sw.agent_iface, "ovs_from_agent": sw.agent_port_name}
    with ExitStack() as stack:
        if path == "ovs+null":
            # Lifetime: longer than any search; the session is torn down right after it.
            stack.enter_context(null_session(ovs, lifetime=int(max_trials * (seconds + 5)) + 60))
        before = ovs_counters.port_counters(sw.name, sw.agent_port_name)
        result = measure(
            lambda r: counted_trial(ovs.h1, ovs.h2, size, r, seconds, places),
            max_loss,
            tolerance,
            max_trials,
            log,
        )
        after = ovs_counters.port_counters(sw.name, sw.agent_port_name)
    arrived = sum(t["seen"] - t["lost"] for t in result["trials"])
    to_agent = after["tx_packets"] - before["tx_packets"]
    # Every frame that arrived took the measured path: all through the agent, or none.
    detoured = to_agent >= arrived if path == "ovs+null" else to_agent < arrived // 100
    if not detoured:
        raise RuntimeError(f"{path}: the agent port got {to_agent} frames, h2 {arrived}")
    return {
        **result,
        "frames_to_agent": to_agent,
        "frames_from_agent": after["rx_packets"] - before["rx_packets"],
    }


def run_bench(
    sizes: Sequence[int] = (64, 1500),
    repeats: int = 3,
    seconds: float = 2.0,
    max_loss: float = 0.0,
    out: Path | None = REPO / "tools" / "out" / "mlffr.json",
    markdown: Path | None = None,
    paths: Sequence[str] = PATHS,
    max_trials: int = 10,
    tolerance: float = 0.03,
    max_minutes: float = 30.0,
) -> int:
    """Run the MLFFR benchmark, print the table, write JSON (and Markdown); return 0.

    Returns 2 (saying why on stderr) for bad parameters or without root, 1 when the
    time budget ran out before every search was done (the partial results are written).
    """
    try:
        for size in sizes:
            udp_payload(size)
        if unknown := set(paths) - set(PATHS):
            raise ValueError(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
        if seconds < 1 or not float(seconds).is_integer():
            raise ValueError(f"seconds must be a whole number >= 1 (iperf3's -t), got {seconds}")
        if repeats < 1 or not 0 <= max_loss < 1 or max_trials < 2:
            raise ValueError("need repeats >= 1, 0 <= loss < 1 and max-trials >= 2")
        if os.geteuid() != 0:
            raise ValueError("needs root (it creates namespaces, veths and an OVS bridge)")
    except ValueError as exc:
        print(f"netserv bench: {exc}", file=sys.stderr)
        return 2
    log = Progress()
    prefix = "b" + secrets.token_hex(2)[:3]  # unique names: other networks may exist
    rundir = Path(tempfile.mkdtemp(prefix="netserv-bench-"))
    paths = [p for p in PATHS if p in paths]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "parameters": {
            "sizes": list(sizes),
            "repeats": repeats,
            "seconds": seconds,
            "loss": max_loss,
            "paths": paths,
            "max_trials": max_trials,
            "tolerance": tolerance,
            "pacing_us": PACING_US,
            "socket_buffer": SOCKET_BUFFER,
            "frame_size": "Ethernet frame without FCS = UDP payload + 42",
        },
        "searches": [],
    }
    complete = True
    log(f"{len(paths) * len(sizes) * repeats} searches, logs in {rundir}; prefix {prefix}")
    with ExitStack() as stack:
        linux = stack.enter_context(linux_router(prefix)) if "linux" in paths else None
        if linux:
            from tools.scenario import warm_up

            warm_up(linux, linux[::-1])
        ovs = None
        if {"ovs", "ovs+null"} & set(paths):
            ovs = stack.enter_context(ovs_network(prefix, rundir))
        # Paths innermost: a disturbance of a few minutes hits every path, not one.
        for repeat, size, path in itertools.product(range(repeats), sizes, paths):
            if log.minutes() > max_minutes:
                complete = False
                break
            log(f"repeat {repeat + 1}/{repeats}, {size} bytes, {path}")
            result = _measure_path(
                path, size, int(seconds), linux, ovs, max_loss, tolerance, max_trials, log
            )
            report["searches"].append({"path": path, "size": size, "repeat": repeat, **result})
            log(f"  MLFFR {result['mlffr_pps']:,.0f} pps")
    report["summary"] = summarize(report["searches"], repeats)
    report["first_loss_sites"] = first_loss_sites(report["searches"])
    report["complete"] = complete
    report["minutes"] = round(log.minutes(), 1)
    print(render_text(table_rows(report["summary"])))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {out}")
    if markdown:
        page = render_markdown(report)  # the whole page: keep only its own section
        write_section(markdown, page[page.index("\n## ") + 1 :])
        log(f"wrote {markdown}")
    if not complete:
        log(f"stopped after {max_minutes} minutes: some searches were not run")
    return 0 if complete else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.bench_mlffr [options]`: the same as `netserv bench [options]`."""
    from tools.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
