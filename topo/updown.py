"""`netserv topo up FILE` and `netserv topo down`: a topology file made real with its
controller and agents, and everything it made removed again, even after a crash.

`up` writes a state file (run/topo.json unless told otherwise) before it builds anything:
the bridges and interfaces it is about to make, then each process as it starts (with the
start time the kernel gives it, so that a pid used again by another process is never
taken for ours). A clean exit removes what it made and then the file; `down` reads the
file, asks a live `up` to stop, and removes whatever is left by the names and pids in it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mininet.cli import CLI
from mininet.link import Link, TCLink
from mininet.net import Mininet

from controller.errors import PolicyError
from controller.policy import load_policy
from topo.cmd import link_exists, run
from topo.controller import DEFAULT_RUNDIR, ControllerProcess, wait_ready
from topo.file import FileTopo, Spec, TopologyFileError, policy_toml, shaping_problems
from topo.net import netserv_network, planned_names, refuse_name_clashes, wait_connected

DEFAULT_STATE = DEFAULT_RUNDIR / "topo.json"
UP_STOP_TIMEOUT = 30.0
DISCOVERY_TIMEOUT = 20.0
QDISCS = ("htb", "netem")  # what Mininet's TCLink uses for bandwidth and for delay


class TopologyUpError(RuntimeError):
    """`netserv topo up` cannot go on; the message says why."""


def qdiscs_available(names: tuple[str, ...] = QDISCS) -> set[str]:
    """Return which of the tc queueing disciplines `names` this kernel has, by trying
    each on a veth pair made for it and removed again."""
    a, b = f"nsq{os.getpid() % 100000}a", f"nsq{os.getpid() % 100000}b"
    run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    found = set()
    try:
        for name in names:
            args = {"htb": ["htb"], "netem": ["netem", "delay", "1ms"]}.get(name, [name])
            if run(["tc", "qdisc", "add", "dev", a, "root", *args], check=False) is not None:
                found.add(name)
                run(["tc", "qdisc", "del", "dev", a, "root"], check=False)
    finally:
        run(["ip", "link", "del", a], check=False)
    return found


def started_at(pid: int) -> int | None:
    """Return the start time (clock ticks since boot) of process `pid`, None if there is none
    or it has exited (a zombie its parent has not reaped yet, as `up` run by a supervisor)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _same(entry: list[int] | None) -> bool:
    """Return True when the (pid, start time) `entry` still names the process it named."""
    return entry is not None and started_at(entry[0]) == entry[1]


def _entry(pid: int | None) -> list[int] | None:
    start = started_at(pid) if pid is not None else None
    return [pid, start] if pid is not None and start is not None else None


class State:
    """The state file: what `up` made, written again after each change."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)

    def add(self, kind: str, pid: int | None) -> None:
        entry = _entry(pid)
        if entry is not None and entry not in self.data[kind]:
            self.data[kind].append(entry)
            self.save()


def _policy(spec: Spec, rundir: Path) -> Path | None:
    if not spec.requesters:
        return None
    path = rundir / "policy.toml"
    path.unlink(missing_ok=True)
    # It may hold keys (base64:, hex:): the controller takes it only if no one else can read it.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(policy_toml(spec.requesters))
    try:
        load_policy(path)
    except PolicyError as exc:
        raise TopologyFileError(f"{spec.path}: requesters: {exc}") from None
    return path


def _wait_links(url: str, wires: int, timeout: float = DISCOVERY_TIMEOUT) -> None:
    """Wait until the controller knows every wire between switches, both ways."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url + "/netserv/topology", timeout=5) as resp:
            links = json.load(resp)["links"]
        if len(links) >= 2 * wires:
            return
        if time.monotonic() > deadline:
            raise TopologyUpError(
                f"the controller found {len(links)} of the {2 * wires} links (both ways) "
                f"within {timeout:g} s"
            )
        time.sleep(0.2)


def up(
    spec: Spec,
    state_path: Path = DEFAULT_STATE,
    of_port: int | None = None,
    rest_port: int | None = None,
    script: str | None = None,
    cli: bool = True,
    secrets: str | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Make `spec` real beside its own controller; open Mininet's CLI (`cli`), or run the
    CLI script `script`, or hold until SIGTERM or SIGINT; take it all down; return 0.

    Raise TopologyUpError when a network of this state file is up already or the
    machine cannot shape a link as asked, TopologyFileError for bad requesters,
    CommandError when names the topology needs are taken; nothing is built then.
    """
    if state_path.exists():
        raise TopologyUpError(
            f"{state_path} says a network is up already; `netserv topo down"
            f"{'' if state_path == DEFAULT_STATE else ' --state ' + str(state_path)}` first"
        )
    shaped = any(k.shaped for k in spec.links)
    if shaped:
        problems = shaping_problems(spec, qdiscs_available())
        if problems:
            raise TopologyUpError("\n".join(problems))
    topo = FileTopo(spec=spec)
    refuse_name_clashes(topo)
    rundir = state_path.with_suffix("")
    rundir.mkdir(parents=True, exist_ok=True)
    policy = _policy(spec, rundir)
    bridges = [s.name for s in spec.switches]
    state = State(
        state_path,
        {
            "file": str(spec.path),
            "up": _entry(os.getpid()),
            "rundir": str(rundir),
            "bridges": bridges,
            "interfaces": sorted(planned_names(topo) - set(bridges)),
            "controller": [],
            "agents": [],
            "hosts": [],
            "ready": False,
        },
    )
    state.save()
    # Ctrl-C in Mininet's CLI stops the command at hand, as in mn; held, it stops `up`.
    _stop_on(signal.SIGTERM, signal.SIGHUP, *(() if cli or script else (signal.SIGINT,)))
    try:
        ctl = ControllerProcess(
            rundir / "controller.log",
            module_path=list(spec.all_module_folders()) or None,
            of_port=of_port,
            rest_port=rest_port,
            secrets=secrets,
            policy=policy,
        )
        with ctl:
            state.add("controller", ctl.pid)
            with netserv_network(
                topo,
                controller=ctl.of_addr,
                rest_url=ctl.url,
                rundir=rundir,
                module_path=list(spec.module_path) or None,
                secrets=secrets,
                link=TCLink if shaped else Link,
            ) as net:
                _record(state, net)
                wait_connected(net)
                wait_ready(ctl.client(), [f"{s.dpid:016x}" for s in spec.netserv()])
                _wait_links(ctl.url, len(spec.wires()))
                state.data.update(ready=True, url=ctl.url, of_port=ctl.of_port)
                state.save()
                os.environ["NETSERV_URL"] = ctl.url  # for the CLI's `sh` commands
                say(_summary(spec, ctl))
                if script is not None:
                    CLI(net, script=script)
                elif cli:
                    CLI(net)
                else:
                    signal.pause()
    except _Stop:
        pass
    finally:
        state_path.unlink(missing_ok=True)
    return 0


class _Stop(Exception):
    """SIGTERM, SIGHUP: leave the network's context managers, which take it down."""


def _stop_on(*signums: signal.Signals) -> None:
    def stop(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)  # once is enough: let the teardown finish
        raise _Stop()

    for signum in signums:
        signal.signal(signum, stop)


def _record(state: State, net: Mininet) -> None:
    for host in net.hosts:
        state.add("hosts", host.pid)
    for switch in net.switches:
        state.add("agents", getattr(switch, "supervisor_pid", None))


def _summary(spec: Spec, ctl: ControllerProcess) -> str:
    nodes = ", ".join(s.name for s in spec.netserv()) or "none"
    return (
        f"*** {spec.path}: {len(spec.switches)} switches (NetServ nodes: {nodes}), "
        f"{len(spec.hosts)} hosts\n"
        f"*** controller: REST {ctl.url} (also $NETSERV_URL), OpenFlow {ctl.of_port}, "
        f"log {ctl.logfile}"
    )


def down(state_path: Path = DEFAULT_STATE, say: Callable[[str], None] = print) -> int:
    """Take down the network `state_path` describes; return 0, or 1 when there is none.

    A live `up` is asked to stop (SIGTERM) and given UP_STOP_TIMEOUT s to take its
    network down itself; then whatever is left by the file's pids and names goes:
    agents (with their supervisors), the controller, host shells (and so their
    namespaces), bridges and interfaces. Processes are ended only when their pid still
    names the process that was recorded.
    """
    try:
        data = json.loads(state_path.read_text())
    except FileNotFoundError:
        say(f"netserv topo down: no network is up ({state_path} does not exist)")
        return 1
    if _same(data.get("up")):
        os.kill(data["up"][0], signal.SIGTERM)
        deadline = time.monotonic() + UP_STOP_TIMEOUT
        while _same(data["up"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    removed = _sweep(data)
    state_path.unlink(missing_ok=True)
    say(f"netserv topo down: {data['file']} is down" + (f" ({removed})" if removed else ""))
    return 0


def _sweep(data: dict) -> str:
    """Remove what the state `data` names and is still there; return what that was."""
    gone: list[str] = []
    for entry in data.get("agents", []):
        if _same(entry):
            _kill_group(entry[0])
            gone.append(f"agent supervisor {entry[0]}")
    for pid_file in Path(data["rundir"]).glob("*-agent.pid"):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if started_at(pid) is not None and _cmdline(pid).find(" -m nodes") >= 0:
            _kill_group(os.getpgid(pid))
            gone.append(f"agent {pid}")
        pid_file.unlink(missing_ok=True)
    for kind in ("controller", "hosts"):
        for entry in data.get(kind, []):
            if _same(entry):
                os.kill(entry[0], signal.SIGKILL)
                gone.append(f"{kind.rstrip('s')} {entry[0]}")
    present = set((run(["ovs-vsctl", "--timeout=10", "list-br"]) or "").split())
    for bridge in data.get("bridges", []):
        if bridge in present:
            run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge], check=False)
            gone.append(f"bridge {bridge}")
    for name in data.get("interfaces", []):
        if link_exists(name):
            run(["ip", "link", "del", name], check=False)
            gone.append(f"interface {name}")
    return ", ".join(gone)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
