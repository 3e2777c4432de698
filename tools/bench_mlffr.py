"""`netserv bench mlffr`: the paper's MLFFR experiment (Figure 3), every path side by side.

Paths (`tools.mlffr.PATHS`): Linux kernel forwarding between namespaces; plain OVS on
bridges our topologies build (each port type on a bridge of its own, every bridge with
its own controller and agent); detours through `null` (trusted and isolated tier, a chain
of 5, on AF_XDP ports), and observe-only through `monitor` when the module exists. The
same detour served by a bare batched reflector instead of the agent (`ovs+reflector`,
`tools.mlffr.REFLECTED`) has a bridge of its own: its session is set up through the
controller and the agent as for `ovs+null`, then its flows are pinned (the bridge, in
fail mode secure, is pointed at an address where no controller listens, and the timers
are taken off the flows) and the agent is replaced by the reflector of
`tools.bench_agent_worker` on the agent's link. Repeats are interleaved (every path of a
size, then the next size, then the next repeat) so that a noisy neighbour disturbs all
of them alike.

Per path, size and repeat: one trial with the generator flat out, then a binary search
for the rate at 0.1 % loss and one for the loss-free rate, started from what the first
found. A trial runs `netserv-pktgen` (tools/pktgen.c) in h1 at a rate and counts what
h2's veth received; the drop counters on the way say where the rest went.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.bench_markdown import write_section
from tools.mlffr import (
    CHAINS,
    LOSS_BOUND,
    NETWORKS,
    PATHS,
    REFLECTED,
    Trial,
    bracket,
    check_frame,
    first_loss,
    parse_dump_ports,
    parse_netdev,
    parse_socket_drops,
    ratio_rows,
    render_markdown,
    render_text,
    search_rate,
    summarize,
    table_rows,
    untimed,
)
from tools.procs import REPO, stop_process
from topo.cmd import run

PORT = 5201
DRAIN = 0.1  # seconds after the generator stops before h2's counter is read
SETTLE = 0.1  # seconds between trials, so queues of the last one have drained
PKTGEN = "netserv-pktgen"
OBSERVER = "monitor"  # the observe-only module, when the module path has one


def pktgen_path() -> str:
    """Return the generator's path (next to this Python, else on PATH); raise
    FileNotFoundError saying how to build it."""
    here = Path(sys.executable).parent / PKTGEN
    if here.exists():
        return str(here)
    found = shutil.which(PKTGEN)
    if not found:
        raise FileNotFoundError(f"{PKTGEN} is not built: run tools/setup.sh (it needs gcc)")
    return found


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


@dataclass
class Path_:
    """Where a path's frames go: sender, receiver, the MAC h1 sends to, and the counters."""

    h1: Any
    h2: Any
    dst_mac: str
    router: Any = None  # the linux path's router host
    switch: Any = None  # the OVS paths' NetServ switch
    client: Any = None
    session: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def linux_router(prefix: str) -> Iterator[Path_]:
    """Build h1 - router - h2 in namespaces; yield its Path_; always remove it all."""
    from mininet.net import Mininet

    from tools.scenario import warm_up
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
        r = net.get(f"{prefix}r")
        _check(r.pexec("sysctl", "-qw", "net.ipv4.ip_forward=1"), "r")
        h1, h2 = net.get(f"{prefix}h1", f"{prefix}h2")
        warm_up((h1, h2), (h2, h1))
        yield Path_(h1, h2, dst_mac=r.intf(f"{prefix}r-eth1").MAC(), router=r)
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


def start_controllers(stack: ExitStack, rundirs: Sequence[Path]) -> list[Any]:
    """Start one controller per folder, all at once (each takes seconds to start); stop
    them when `stack` closes, even those that failed to start. Return them in order."""
    from topo.controller import ControllerProcess

    ctls = [ControllerProcess(rundir / "controller.log") for rundir in rundirs]
    for ctl in ctls:
        stack.callback(ctl.__exit__, None, None, None)
    with ThreadPoolExecutor(max(1, len(ctls))) as pool:
        list(pool.map(ControllerProcess.start, ctls))
    return ctls


@contextmanager
def ovs_network(
    ctl: Any, prefix: str, rundir: Path, port_type: str, agent_args: Sequence[str]
) -> Iterator[Path_]:
    """Build h1 - NetServ bridge - h2 with `port_type` ports on the started controller
    `ctl`; yield its Path_ at once (its agent may still be starting: `ready()` waits);
    remove it all."""
    from signaling.client import NetServClient
    from topo.net import netserv_network
    from topo.topos import SingleSwitchTopo

    client = NetServClient(ctl.url)
    topo = SingleSwitchTopo(k=2, prefix=prefix)
    with netserv_network(
        topo,
        ctl.of_addr,
        rest_url=ctl.url,
        rundir=rundir,
        port_type=port_type,
        agent_args=agent_args,
    ) as net:
        h1, h2 = net.get(f"{prefix}h1", f"{prefix}h2")
        switch = net.get(f"{prefix}s1")
        yield Path_(h1, h2, dst_mac=h2.MAC(), switch=switch, client=client, extra={"net": net})


def ready(path: Path_) -> None:
    """Wait until the network of `path` (from ovs_network) is connected and its node
    ready, then teach the switch both hosts, so that no frame of a trial is flooded."""
    from tools.scenario import warm_up
    from topo.controller import wait_ready
    from topo.net import wait_connected

    wait_connected(path.extra["net"])
    wait_ready(path.client, [path.switch.dpid])
    warm_up((path.h1, path.h2), (path.h2, path.h1))


def setup(net: Path_, modules: Sequence[str], lifetime: int) -> dict[str, Any]:
    """Ask the controller of `net` to detour exactly the benchmark flow through `modules`;
    return the session it made."""
    return net.client.setup(
        match={"ipv4_src": net.h1.IP(), "ipv4_dst": net.h2.IP(), "udp_dst": PORT},
        modules=[{"name": name, "params": {}} for name in modules],
        lifetime=lifetime,
    )


@contextmanager
def detour(net: Path_, modules: Sequence[str], lifetime: int) -> Iterator[Path_]:
    """Detour exactly the benchmark flow through `modules`; yield `net` with the session."""
    session = setup(net, modules, lifetime)
    try:
        yield Path_(**{**net.__dict__, "session": session})
    finally:
        net.client.teardown(session["id"])


def _flows(bridge: str) -> list[str]:
    text = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "--no-stats", bridge]) or ""
    return [line.strip() for line in text.splitlines() if line.strip()]


# Where a pinned bridge's controller is moved: the discard port. No OpenFlow controller
# listens there, and it lies below the ephemeral range that free ports (the controllers'
# of other networks and runs, `topo.controller.free_port`) are taken from.
NOWHERE = "tcp:127.0.0.1:9"


def pin(bridge: str, cookie: str) -> list[str]:
    """Keep the flows of `bridge` as they are, whatever its controller and agent do next,
    and return them (`ovs-ofctl dump-flows --no-stats` lines).

    The bridge's controller is moved to NOWHERE, so it is never connected again, and in
    fail mode secure a switch without a connected controller keeps its flows and adds
    none of its own. (Deleting the controller instead would make Open vSwitch flush
    every flow: it does so whenever a bridge gains or loses its last controller.) Each
    flow with a timer (the detour's hard timeout, the learned hosts' idle timeout) is
    added again without it, as nobody is left to re-arm or relearn it; the switch's
    work per frame is the same. Raise RuntimeError when the fail mode is not secure or
    the session whose `cookie` (as the controller reports it, 0x and 16 hex digits) is
    given has no flow left.
    """
    mode = (run(["ovs-vsctl", "--timeout=10", "get-fail-mode", bridge]) or "").strip()
    if mode != "secure":
        raise RuntimeError(f"{bridge}: fail mode {mode or 'standalone'}, not secure")
    run(["ovs-vsctl", "--timeout=10", "set-controller", bridge, NOWHERE])
    for flow in _flows(bridge):
        if (bare := untimed(flow)) is not None:
            run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", bridge, bare])
    flows = _flows(bridge)
    if not any(flow.startswith(f"cookie={cookie},") for flow in flows):
        raise RuntimeError(f"{bridge}: the detour (cookie {cookie}) is gone: {flows}")
    return flows


@contextmanager
def reflected(net: Path_, modules: Sequence[str], lifetime: int) -> Iterator[Path_]:
    """Detour the benchmark flow of `net` through `modules` as `detour` does, pin the
    flows (`pin`), stop the agent and serve its link with the bare batched reflector;
    yield `net` with the session, the pinned flows in extra["flows"] and, once the
    block ends, the reflector's counters in extra["reflector"]. The reflector is
    stopped on exit; the session dies with the network (nothing can remove its flows).
    """
    from tools.bench_agent import worker_process

    session = setup(net, modules, lifetime)
    flows = pin(net.switch.name, session["cookie"])
    net.switch.stop_agent()
    argv = [sys.executable, "-m", "tools.bench_agent_worker", "reflect"]
    argv += ["--iface", str(net.switch.agent_iface)]
    with worker_process(argv, "the reflector") as (_pid, final):
        extra = {**net.extra, "flows": flows, "reflector": final}
        yield Path_(**{**net.__dict__, "session": session, "extra": extra})


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


def counters(path: Path_) -> dict[str, int]:
    """Return every counter a trial reads now, by name; they only grow."""
    h1 = parse_netdev(path.h1.cmd("cat /proc/net/dev"))[path.h1.defaultIntf().name]
    h2 = parse_netdev(path.h2.cmd("cat /proc/net/dev"))[path.h2.defaultIntf().name]
    out = {
        "h1_tx_dropped": h1["tx_dropped"],
        "h2_rx": h2["rx_packets"],
        "h2_rx_dropped": h2["rx_dropped"],
    }
    if path.router is not None:
        r = parse_netdev(path.router.cmd("cat /proc/net/dev"))
        out["router"] = sum(v["rx_dropped"] + v["tx_dropped"] for k, v in r.items() if k != "lo")
    if path.switch is not None:
        sw = path.switch
        socks = parse_socket_drops(_run(["ss", "-0", "-m", "-a"]))
        in_port, agent_port = f"{sw.name}-eth1", sw.agent_port_name
        out["ovs_in"] = socks.get(in_port, 0) + _ports(sw.name, in_port)["rx_dropped"]
        agent, out_port = _ports(sw.name, agent_port), _ports(sw.name, f"{sw.name}-eth2")
        out["ovs_from_agent"] = socks.get(agent_port, 0) + agent["rx_dropped"]
        # A send to a veth whose far end's backlog is full fails in the switch.
        out["ovs_out"] = agent["tx_dropped"] + out_port["tx_dropped"]
        out["agent"] = socks.get(sw.agent_iface, 0)
        out["to_agent"] = agent["tx_packets"]
    return out


def _ports(bridge: str, port: str) -> dict[str, int]:
    return parse_dump_ports(_run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", bridge, port]))


def trial(path: Path_, size: int, pps: float, seconds: float) -> Trial:
    """Send `size`-byte frames from h1 to h2 at `pps` (0: flat out) for `seconds`;
    return the Trial with what arrived and where the rest was dropped."""
    before = counters(path)
    proc = path.h1.popen(
        [pktgen_path(), path.h1.defaultIntf().name, path.h1.MAC(), path.dst_mac]
        + [path.h1.IP(), path.h2.IP(), str(PORT), str(size), str(pps), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=seconds + 30)
    finally:
        stop_process(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{PKTGEN} failed: {err.strip()}")
    sent = json.loads(out)
    time.sleep(DRAIN)
    after = counters(path)
    d = {k: after[k] - before[k] for k in after}
    drops = {
        "generator": sent["failed"] + d["h1_tx_dropped"],
        "receiver": d["h2_rx_dropped"],
        **{k: d[k] for k in ("router", "ovs_in", "agent", "ovs_from_agent", "ovs_out") if k in d},
    }
    return Trial(
        requested=pps,
        sent=sent["sent"],
        received=d["h2_rx"],
        seconds=sent["seconds"],
        drops={k: v for k, v in drops.items() if v > 0},
        detoured=d.get("to_agent", 0),
    )


def generator_limit(size: int, seconds: float) -> float:
    """Return the frames per second the generator got across a bare veth pair in a
    namespace of its own (received at the far end), flat out."""
    from tools.bench_agent import veth_namespace

    name = "nsgen" + secrets.token_hex(3)
    with veth_namespace(name) as (gen, dut):

        def rx() -> int:
            text = _run(["ip", "netns", "exec", name, "cat", "/proc/net/dev"])
            return parse_netdev(text)[dut]["rx_packets"]

        before = rx()
        out = _run(["ip", "netns", "exec", name, pktgen_path(), gen, "02:00:00:00:00:01"]
                   + ["02:00:00:00:00:02", "10.0.0.1", "10.0.0.2", str(PORT), str(size), "0"]
                   + [str(seconds)])  # fmt: skip
        time.sleep(DRAIN)
        return (rx() - before) / json.loads(out)["seconds"]


def measure(
    send: Callable[[float], Trial],
    tolerance: float,
    max_trials: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Probe flat out, then binary-search the rate at LOSS_BOUND and the loss-free rate.

    Returns {"lossfree_pps", "bound_pps", "generator_bound", "trials": [...]}.
    """
    trials: list[Trial] = []

    def run(rate: float) -> float:
        t = send(rate)
        trials.append(t)
        where = ", ".join(f"{k} {n:,}" for k, n in t.drops.items())
        log(
            f"  {'flat out' if not rate else f'{rate:9,.0f} pps'}: sent {t.sent:,} at "
            f"{t.offered_pps:,.0f} pps, got {t.delivered_pps:,.0f} pps, lost {t.loss:.3%}"
            + (f" ({where})" if where else "")
        )
        time.sleep(SETTLE)
        return t.loss

    run(0)
    top = trials[0].offered_pps
    if trials[0].loss == 0:
        return _result(top, top, True, trials)
    budget = max_trials - 1
    steps = [(top, trials[0].loss)]
    if trials[0].loss <= LOSS_BOUND:
        bound = top
    else:
        s = search_rate(run, hi=top, max_loss=LOSS_BOUND, tolerance=tolerance,
                        max_trials=max(1, budget // 2 + 1))  # fmt: skip
        bound, steps = s.best, steps + s.steps
        budget -= len(s.steps)
    lo, hi = bracket(steps, 0.0)
    s = search_rate(run, hi=hi or top, lo=lo, tolerance=tolerance, max_trials=max(1, budget))
    # A rate that lost nothing also passes the looser bound (on a noisy machine the two
    # searches can disagree).
    return _result(s.best, max(bound, s.best), False, trials)


def _result(lossfree: float, bound: float, gen: bool, trials: list[Trial]) -> dict[str, Any]:
    return {
        "lossfree_pps": lossfree,
        "bound_pps": bound,
        "generator_bound": gen,
        "trials": [t.to_json() for t in trials],
    }


def machine_info() -> dict[str, Any]:
    """Return what the numbers depend on: cores, CPU, kernel, OVS, datapath, load."""
    from topo.datapath import detect_datapath

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "ovs": _run(["ovs-vsctl", "--version"]).splitlines()[0],
        "datapath": "netdev" if detect_datapath(try_modprobe=False) == "user" else "system",
        "iface_types": _run(["ovs-vsctl", "get", "Open_vSwitch", ".", "iface_types"]),
        "python": platform.python_version(),
        "rmem_default": Path("/proc/sys/net/core/rmem_default").read_text().strip(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


class Progress:
    """Progress lines on stderr, with the minutes elapsed since the run began."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def minutes(self) -> float:
        return (time.monotonic() - self.t0) / 60

    def __call__(self, text: str) -> None:
        print(f"[{self.minutes():5.1f} min] {text}", file=sys.stderr, flush=True)


NETWORK_ARGS = {  # network -> (port type, agent arguments)
    "system": ("system", ()),
    "reflector": ("system", ()),  # as "system" until its agent gives way to the reflector
    "afpacket": ("afpacket", ()),
    "afxdp": ("afxdp", ()),
    "isolated": ("system", ("--trusted", "none")),
}


def plot(report: Mapping[str, Any], png: Path) -> None:
    """Draw offered vs delivered rate per path, one panel per size (as Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    sizes = report["parameters"]["sizes"]
    # One colour a path, the same in every run: the default cycle has 10 for 12 paths.
    colours = dict(zip(PATHS, itertools.cycle(plt.get_cmap("tab20").colors), strict=False))
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        top = 0.0
        for path in PATHS:
            points = sorted(
                (t["offered_pps"] / 1000, t["delivered_pps"] / 1000)
                for s in report["searches"]
                if s["size"] == size and s["path"] == path
                for t in s.get("trials", [])
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker="o", markersize=3, linewidth=1, label=path, color=colours[path]
                )
                top = max(top, *xs)
        ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{size}-byte frames", xlabel="offered kpps", ylabel="delivered kpps")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _unavailable(path: str, modules: set[str]) -> str | None:
    missing = [m for m in CHAINS.get(path, []) if m not in modules]
    if OBSERVER in missing:
        return "no observe-only module"
    return f"no module {missing[0]}" if missing else None


def run_bench(
    sizes: Sequence[int] = (64, 1500),
    repeats: int = 3,
    seconds: float = 1.0,
    out: Path | None = REPO / "tools" / "out" / "mlffr.json",
    markdown: Path | None = None,
    png: Path | None = REPO / "tools" / "out" / "mlffr.png",
    paths: Sequence[str] = tuple(PATHS),
    max_trials: int = 10,
    tolerance: float = 0.03,
    max_minutes: float = 60.0,
    quick: bool = False,
) -> int:
    """Run the MLFFR benchmark, print the tables, write JSON, a PNG plot (and Markdown).

    Returns 0; 2 (saying why on stderr) for bad parameters, without root or without the
    generator; 1 when the time budget ran out first (the partial results are written).
    """
    try:
        for size in sizes:
            check_frame(size)
        if unknown := set(paths) - set(PATHS):
            raise ValueError(f"unknown paths {sorted(unknown)}; choose from {', '.join(PATHS)}")
        if repeats < 1 or seconds <= 0 or max_trials < 2 or not 0 < tolerance < 1:
            raise ValueError("need repeats >= 1, seconds > 0, max-trials >= 2")
        if os.geteuid() != 0:
            raise ValueError("needs root (it creates namespaces, veths and OVS bridges)")
        pktgen_path()
    except (ValueError, FileNotFoundError) as exc:
        print(f"netserv bench mlffr: {exc}", file=sys.stderr)
        return 2
    log = Progress()
    prefix = "m" + secrets.token_hex(2)[:3]  # unique names: other networks may exist
    rundir = Path(tempfile.mkdtemp(prefix="netserv-mlffr-"))
    paths = [p for p in PATHS if p in paths]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "parameters": {
            "sizes": list(sizes),
            "repeats": repeats,
            "seconds": seconds,
            "paths": paths,
            "max_trials": max_trials,
            "tolerance": tolerance,
            "loss_bound": LOSS_BOUND,
            "drain": DRAIN,
            "quick": quick,
            "frame_size": "Ethernet frame without FCS",
        },
        "generator_limit": {},
        "searches": [],
    }
    for size in sizes:
        limit = generator_limit(size, seconds)
        report["generator_limit"][str(size)] = limit
        log(f"generator on a direct veth pair, {size} bytes: {limit:,.0f} pps")
    complete = True
    log(f"{len(paths) * len(sizes) * repeats} searches, logs in {rundir}; prefix {prefix}")
    lifetime = int(repeats * len(sizes) * max_trials * (seconds + 2)) + 600
    with ExitStack() as stack:
        nets: dict[str, Path_] = {}
        if "linux" in paths:
            nets["linux"] = stack.enter_context(linux_router(prefix + "l"))
        names = sorted({NETWORKS[p] for p in paths if p in NETWORKS})
        log(f"starting {len(names)} controllers")
        ctls = start_controllers(stack, [rundir / name for name in names])
        for i, (name, ctl) in enumerate(zip(names, ctls, strict=True)):
            port_type, args = NETWORK_ARGS[name]
            log(f"building the {name} network ({port_type} ports)")
            nets[name] = stack.enter_context(
                ovs_network(ctl, f"{prefix}{i}", rundir / name, port_type, args)
            )
            log(f"  ports: {nets[name].switch.port_types}")
        for name in names:  # their agents started meanwhile
            ready(nets[name])
        where: dict[str, Path_] = {}
        pinned: dict[str, dict[str, Any]] = {}  # reflected path -> its flows, counters
        for p in paths:
            net = nets["linux" if p == "linux" else NETWORKS[p]]
            if p in CHAINS and (why := _unavailable(p, _module_names(net.client))):
                log(f"{p}: unavailable: {why}")
                report["searches"] += [
                    {"path": p, "size": s, "repeat": 0, "unavailable": why} for s in sizes
                ]
            elif p in REFLECTED:  # pinned once, for the whole run
                log(f"{p}: pinning the detour, the agent gives way to the reflector")
                where[p] = stack.enter_context(reflected(net, CHAINS[p], lifetime))
                pinned[p] = where[p].extra
            else:
                where[p] = net
        for repeat, size, path in itertools.product(range(repeats), sizes, where):
            if log.minutes() > max_minutes:
                complete = False
                break
            log(f"repeat {repeat + 1}/{repeats}, {size} bytes, {path}")
            # One session at a time: paths on one bridge detour the same flow.
            with (
                detour(where[path], CHAINS[path], lifetime)
                if path in CHAINS and path not in REFLECTED
                else _as_is(where[path]) as p
            ):
                result = measure(
                    lambda rate, p=p, z=size: trial(p, z, rate, seconds), tolerance, max_trials, log
                )
            to_agent = sum(t["detoured"] for t in result["trials"])
            got = sum(t["received"] for t in result["trials"])
            # Every frame that arrived was detoured (h2 may also see an ARP or two).
            if path in CHAINS and to_agent < got - 10:
                raise RuntimeError(f"{path}: the agent port got {to_agent} frames, h2 {got}")
            report["searches"].append({"path": path, "size": size, "repeat": repeat, **result})
            log(
                f"  loss-free {result['lossfree_pps']:,.0f} pps, at 0.1 % loss "
                f"{result['bound_pps']:,.0f} pps"
            )
    # The reflectors have stopped and reported what they did.
    report["reflected"] = {p: {k: e[k] for k in ("flows", "reflector")} for p, e in pinned.items()}
    report["summary"] = summarize(report["searches"], repeats)
    report["first_loss"] = _first_losses(report["searches"])
    report["complete"] = complete
    report["minutes"] = round(log.minutes(), 1)
    print(render_text(table_rows(report["summary"], report["first_loss"])))
    print()
    print(render_text(ratio_rows(report["summary"])))
    if png:
        plot(report, png)
        shown = png.resolve()
        report["png"] = str(shown.relative_to(REPO) if shown.is_relative_to(REPO) else shown)
        log(f"wrote {png}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {out}")
    if markdown:
        write_section(markdown, render_markdown(report))
        log(f"wrote {markdown}")
    if not complete:
        log(f"stopped after {max_minutes} minutes: some searches were not run")
    return 0 if complete else 1


@contextmanager
def _as_is(net: Path_) -> Iterator[Path_]:
    yield net


def _module_names(client: Any) -> set[str]:
    listed = client.modules()
    items = listed.get("modules", listed) if isinstance(listed, dict) else listed
    return {m["name"] for m in items if isinstance(m, dict) and "name" in m}


def _first_losses(searches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return {size: {path: {place: frames}}}: first_loss() of each search, summed."""
    out: dict[str, Any] = {}
    for s in searches:
        for place, n in first_loss(s.get("trials", [])).items():
            sites = out.setdefault(str(s["size"]), {}).setdefault(s["path"], {})
            sites[place] = sites.get(place, 0) + n
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.bench_mlffr [options]`: the same as `netserv bench mlffr [options]`."""
    from tools.cli import main as cli_main

    return cli_main(["bench", "mlffr", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
