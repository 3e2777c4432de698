"""NetServ nodes on Mininet: an OVS switch that brings its node agent, and a quiet host."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mininet.log import warn
from mininet.node import Host, OVSSwitch, RemoteController, Switch

from controller import keyfiles
from topo.cmd import (
    CommandError,
    disable_ipv6,
    disable_tx_offload,
    link_exists,
    run,
)
from topo.controller import DEFAULT_RUNDIR, REPO_ROOT, module_path_arg
from topo.datapath import detect_datapath
from topo.ports import (
    AFPACKET,
    AFXDP,
    DEFAULT_PORT_TYPE,
    OVS_AFXDP_TYPE,
    PORT_RCVBUF,
    SYSTEM,
    afxdp_failed,
    check_port_type,
    ovs_iface_types,
    planned_type,
    summary,
)
from topo.topos import AGENT_IFACE_SUFFIX, AGENT_PORT_SUFFIX

AGENT_STOP_TIMEOUT = 5.0
DEFAULT_MTU = 1500
_RMEM_DEFAULT = Path("/proc/sys/net/core/rmem_default")
_RMEM_LOCK = Path("/run/netserv-rmem_default.lock")


class NetServHost(Host):
    """A Mininet host whose namespace has IPv6 off before any interface is added.

    Interfaces moved in later inherit `default.disable_ipv6=1`, so no router
    solicitations or MLD reports ever reach the switch.
    """

    def __init__(self, name: str, **params: object) -> None:
        super().__init__(name, **params)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


class NetServController(RemoteController):
    """A remote controller whose reachability check connects and reads nothing.

    Mininet's own check pipes `telnet` through the controller node's shell; when the
    controller's binary OpenFlow HELLO comes back in time, Mininet fails to decode it
    as text and the whole build raises (seen on a loaded machine).
    """

    def isListening(self, ip: str, port: int) -> bool:  # noqa: N802 (Mininet's name)
        """Return True when a TCP connection to ip:port succeeds within a second."""
        try:
            with socket.create_connection((ip, port), timeout=1.0):
                return True
        except OSError:
            warn(f"Unable to contact the remote controller at {ip}:{port}\n")
            return False


class NetServSwitch(OVSSwitch):
    """An OpenFlow 1.3 OVS bridge that, when `netserv` is true, is a NetServ node.

    A NetServ node gets a veth pair on start(): `<name>-ns` is a port of the
    bridge and `<name>-na` stays in the root namespace for the node agent. With
    `agent_url` set (the controller's REST URL) the agent's supervisor is started
    on that interface (it runs the agent, reports its death or hang to the
    controller and starts it again: `nodes/supervisor.py`); without it only the
    plumbing is made. `agent_args` are added to the agent's command line (e.g.
    `["--hang-after", "5"]`). `module_path` is the
    agent's module search path (None: $NETSERV_MODULE_PATH, read when the switch
    is made); give the controller the same one. The node's key is made in the
    secrets folder `secrets` (None: $NETSERV_SECRETS, else run/secrets) before the
    agent starts, if the node has none; the agent is given its path, never the key.

    `port_type` says how a userspace bridge reads its ports (`topo.ports`): "system"
    (packet sockets with a 4 MiB receive buffer), "afxdp" (AF_XDP where the OVS build
    has it; a port where XDP cannot attach stays a system port) or "afpacket" (system
    ports with the machine's default buffer, to compare). `port_types` holds
    what each port got; the agent reports their summary to the controller.
    """

    def __init__(
        self,
        name: str,
        netserv: bool = False,
        agent_url: str | None = None,
        rundir: str | os.PathLike[str] | None = None,
        datapath: str | None = None,
        failMode: str = "secure",
        module_path: str | Iterable[str | os.PathLike[str]] | None = None,
        secrets: str | os.PathLike[str] | None = None,
        agent_args: Sequence[str] = (),
        port_type: str = DEFAULT_PORT_TYPE,
        **params: object,
    ) -> None:
        # Mininet's buildFromTopo asks for batch startup, which would create the
        # bridge only after start() returns; the agent port needs it in start().
        params.pop("batch", None)
        params.pop("protocols", None)
        super().__init__(
            name,
            failMode=failMode,
            datapath=datapath or detect_datapath(),
            protocols="OpenFlow13",
            batch=False,
            **params,
        )
        self.netserv = bool(netserv)
        self.port_type = check_port_type(port_type)
        self.port_types: dict[str, str] = {}
        self.agent_url = agent_url
        self.module_path = module_path_arg(module_path) if self.netserv and agent_url else ""
        self.rundir = Path(rundir) if rundir is not None else DEFAULT_RUNDIR
        self.secrets = keyfiles.secrets_dir(secrets)
        self.key_file = keyfiles.node_key_path(self.secrets, self.dpid_int)
        self.agent_port_name: str | None = name + AGENT_PORT_SUFFIX if self.netserv else None
        self.agent_iface: str | None = name + AGENT_IFACE_SUFFIX if self.netserv else None
        self.agent_log: Path | None = None
        self.agent_args = list(agent_args)
        self.agent_pid_file = self.rundir / f"{name}-agent.pid"
        self.bridge_made = False
        self._agent: subprocess.Popen[bytes] | None = None
        self._agent_veth_made = False

    @property
    def supervisor_pid(self) -> int | None:
        """Return the pid of the agent's supervisor, or None when none was started."""
        return self._agent.pid if self._agent is not None else None

    @property
    def agent_pid(self) -> int | None:
        """Return the pid of the node agent its supervisor runs now (it changes when the
        supervisor starts it again), or None when no supervisor runs. Waits up to
        AGENT_STOP_TIMEOUT for the supervisor to start the first one."""
        if self._agent is None:
            return None
        deadline = time.monotonic() + AGENT_STOP_TIMEOUT
        while True:
            try:
                return int(self.agent_pid_file.read_text())
            except (FileNotFoundError, ValueError):
                if self._agent.poll() is not None or time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    @property
    def dpid_int(self) -> int:
        """Return the datapath id as an int (Mininet keeps it as 16 hex digits)."""
        return int(self.dpid, 16)

    def start(self, controllers: Sequence[object]) -> None:
        """Create the bridge, tune its ports, and plumb and start the agent if any."""
        # From here on the bridge name is ours to remove, even if creation fails halfway.
        self.bridge_made = True
        with _rmem_default(self._port_rcvbuf()):
            super().start(controllers)
        # Mininet runs ovs-vsctl through the node's shell and ignores its errors.
        if run(["ovs-vsctl", "--timeout=10", "br-exists", self.name], check=False) is None:
            raise CommandError(f"OVS bridge {self.name} was not created (see ovs-vswitchd.log)")
        for intf in self.intfList():
            if self.ports.get(intf):  # port 0 is the loopback control "interface"
                self._tune(intf.name)
                self._set_port_type(intf.name)
        if self.netserv:
            self._plumb_agent()
            if self.agent_url:
                self._start_agent()

    def attach(self, intf: object) -> None:
        """Add a port after start (net.addLink at run time), tuned like the others.

        The agent's link grows to the new port's MTU if that is larger, so frames
        the port takes in can still be detoured.
        """
        with _rmem_default(self._port_rcvbuf()):
            super().attach(intf)
        self._tune(str(intf))
        self._set_port_type(str(intf))
        mtu = link_mtu(str(intf))
        if self._agent_veth_made and mtu > link_mtu(str(self.agent_iface)):
            for name in (str(self.agent_iface), str(self.agent_port_name)):
                run(["ip", "link", "set", name, "mtu", str(mtu)])

    def agent_argv(self) -> list[str]:
        """Return the command line of this node's agent (override to run another)."""
        return [
            sys.executable,
            "-m",
            "nodes",
            "--dpid",
            f"{self.dpid_int:x}",
            "--iface",
            str(self.agent_iface),
            "--switch-port",
            str(self.agent_port_name),
            "--controller",
            str(self.agent_url),
            "--module-path",
            self.module_path,
            "--key-file",
            str(self.key_file),
            "--agent-pid-file",
            str(self.agent_pid_file),
            "--port-type",
            summary(self.port_types) or SYSTEM,
            *self.agent_args,
        ]

    def stop(self, deleteIntfs: bool = True) -> None:
        """Stop the agent, remove its veth pair, then remove the bridge and ports."""
        try:
            self.stop_agent()
        finally:
            try:
                self.remove_agent_veth()
            finally:
                if self.bridge_made:
                    super().stop(deleteIntfs)
                else:  # never started: a bridge by this name is not ours to delete
                    Switch.stop(self, deleteIntfs)
                self.bridge_made = False

    def _running_agent_pid(self) -> int | None:
        """Return the pid in the agent's pid file now, without waiting, or None."""
        try:
            return int(self.agent_pid_file.read_text())
        except (OSError, ValueError):
            return None

    def stop_agent(self, timeout: float = AGENT_STOP_TIMEOUT) -> int | None:
        """Stop the agent and its supervisor (SIGTERM, then SIGKILL after `timeout` s)
        and return the supervisor's exit code.

        Returns None when no agent was started. The supervisor runs in its own
        session, so the signal goes to its process group: the agent and the helpers
        it spawned (sandboxed modules) go with it, and nothing else does.
        """
        agent = self._running_agent_pid()
        proc, self._agent = self._agent, None
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # The supervisor may end before the agent it ran (same group, same signal):
        # wait for the agent too, so that "stopped" means no process of the node runs.
        if agent is not None and not _ended(agent, timeout):
            _signal_group(proc.pid, signal.SIGKILL)
            _ended(agent, timeout)
        self.agent_pid_file.unlink(missing_ok=True)
        return proc.returncode

    @classmethod
    def batchStartup(cls, switches: Sequence[NetServSwitch], run: object = None) -> Sequence:
        """Return `switches`: each one was already started on its own in start()."""
        return switches

    @classmethod
    def batchShutdown(cls, switches: Sequence[NetServSwitch], run: object = None) -> list:
        """Return no switch, so that Mininet calls stop() on each and agents go too."""
        return []

    def _tune(self, ifname: str) -> None:
        disable_ipv6(ifname)
        disable_tx_offload(ifname)

    def _port_rcvbuf(self) -> int | None:
        # The kernel datapath reads its ports in the kernel: no socket to size.
        return PORT_RCVBUF if self.datapath == "user" and self.port_type != AFPACKET else None

    def _set_port_type(self, ifname: str) -> None:
        """Make port `ifname` (added as a system port) what `port_type` asks for, falling
        back to a system port with the large buffer; record it in `port_types`."""
        if self.port_type == AFXDP:
            types = run(["ovs-vsctl", "--timeout=10", "get", "Open_vSwitch", ".", "iface_types"])
            if planned_type(AFXDP, self.datapath, ovs_iface_types(types or "")) == AFXDP:
                iface = ["ovs-vsctl", "--timeout=10", "get", "Interface", ifname]
                made = ["set", "Interface", ifname, f"type={OVS_AFXDP_TYPE}"]
                run(["ovs-vsctl", "--timeout=10", *made], check=False)
                ovs_type = run([*iface, "type"], check=False) or ""
                error = run([*iface, "error"], check=False) or ""
                if not afxdp_failed(ovs_type, error):
                    self.port_types[ifname] = AFXDP
                    return
                warn(f"{ifname}: AF_XDP port failed ({error.strip() or ovs_type}); system port\n")
                with _rmem_default(self._port_rcvbuf()):
                    run(["ovs-vsctl", "--timeout=10", "set", "Interface", ifname, "type=system"])
        self.port_types[ifname] = AFPACKET if self.port_type == AFPACKET else SYSTEM

    def _plumb_agent(self) -> None:
        port, iface = str(self.agent_port_name), str(self.agent_iface)
        for name in (port, iface):
            if link_exists(name):
                raise CommandError(
                    f"interface {name} already exists (left by an earlier run, or another "
                    f"network uses the same names); remove it with `ip link del {name}` "
                    "or use another prefix"
                )
        # The agent's link takes the largest frame any port takes in (the kernel lets
        # the session's tag exceed the MTU), else the switch cannot hand it over.
        mtus = [link_mtu(intf.name) for intf in self.intfList() if self.ports.get(intf)]
        mtu = str(max([DEFAULT_MTU, *mtus]))
        run(
            ["ip", "link", "add", iface, "mtu", mtu, "type", "veth"]
            + ["peer", "name", port, "mtu", mtu]
        )
        self._agent_veth_made = True
        # IPv6 off before the links go up, so not even one solicitation is sent.
        for name in (iface, port):
            disable_ipv6(name)
            disable_tx_offload(name)
        with _rmem_default(self._port_rcvbuf()):
            run(["ovs-vsctl", "--timeout=10", "add-port", self.name, port])
        for name in (iface, port):
            run(["ip", "link", "set", name, "up"])
        self._set_port_type(port)

    def remove_agent_veth(self) -> None:
        """Detach and delete the agent's veth pair if this switch made it; return None."""
        if not self._agent_veth_made:
            return  # an interface by these names may exist, but it is not ours
        port, iface = str(self.agent_port_name), str(self.agent_iface)
        try:
            run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-port", self.name, port])
        finally:
            # Deleting one end of a veth pair deletes both.
            for name in (iface, port):
                if link_exists(name):
                    run(["ip", "link", "del", name])
            self._agent_veth_made = False

    def start_agent(self) -> None:
        """Start the node's agent (after `stop_agent`, a restart); return at once.

        The node's key is made first if it has none.
        """
        if self._agent is not None and self._agent.poll() is None:
            raise CommandError(f"the agent of {self.name} runs already (pid {self._agent.pid})")
        self._start_agent()

    def _start_agent(self) -> None:
        keyfiles.provision_node_key(self.secrets, self.dpid_int)
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.agent_pid_file.unlink(missing_ok=True)
        self.agent_log = self.rundir / f"{self.name}-agent.log"
        with open(self.agent_log, "ab") as log:
            self._agent = subprocess.Popen(
                self.agent_argv(),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def link_mtu(ifname: str) -> int:
    """Return the MTU of a root-namespace interface."""
    return int(Path("/sys/class/net", ifname, "mtu").read_text())


@contextmanager
def _rmem_default(size: int | None) -> Iterator[None]:
    """Raise net.core.rmem_default to `size` for the duration (None: leave it).

    It is a machine-wide default, so it is held only while one port is added and
    put back after, under a lock so that two networks built at once restore it right.
    """
    if size is None:
        yield
        return
    with open(_RMEM_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = _RMEM_DEFAULT.read_text().strip()
        if int(old) >= size:
            yield
            return
        try:
            _RMEM_DEFAULT.write_text(f"{size}\n")
        except OSError as exc:
            # Read-only outside the first network namespace (e.g. an OVS run in a
            # namespace of its own): the port keeps the default buffer, which drops
            # frames coming back from the agent under full-rate traffic.
            warn(
                f"cannot raise {_RMEM_DEFAULT} for the agent port ({exc.strerror}); "
                "its receive buffer stays at the default\n"
            )
            yield
            return
        try:
            yield
        finally:
            _RMEM_DEFAULT.write_text(f"{old}\n")


def _ended(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for process `pid` to end; return True when it has (a
    zombie has ended: only its parent's wait is left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[:1] == ["Z"]:
            return True
        time.sleep(0.02)
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
