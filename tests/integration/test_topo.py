"""topo/ on real OVS: forwarding through NetServ bridges, agent plumbing, clean teardown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mininet.net import Mininet

from topo.cmd import CommandError
from topo.net import netserv_network
from topo.node import NetServSwitch
from topo.topos import LinearTopo, SingleSwitchTopo

# A UDP and a TCP echo between two hosts. Checksums are verified by the
# receiving kernel, so both only pass when TX checksum offload was handled.
ECHO_SERVER = r"""
import socket, sys
ip = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((ip, 5005))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind((ip, 5006)); t.listen(1)
u.settimeout(10); t.settimeout(10)
print("ready", flush=True)
data, peer = u.recvfrom(2048); u.sendto(data.upper(), peer)
conn, _ = t.accept(); conn.settimeout(10); conn.sendall(conn.recv(2048).upper()); conn.close()
"""
ECHO_CLIENT = r"""
import socket, sys
ip = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
for _ in range(5):
    u.sendto(b"netserv-udp", (ip, 5005))
    try:
        print(u.recvfrom(2048)[0].decode()); break
    except socket.timeout:
        pass
t = socket.create_connection((ip, 5006), timeout=10); t.sendall(b"netserv-tcp")
print(t.recv(2048).decode())
"""


def _free_port() -> int:
    # A port nobody listens on: the bridges retry in the background, harmlessly.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _links_with(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))


def _bridges() -> list[str]:
    return subprocess.run(
        ["ovs-vsctl", "list-br"], check=True, capture_output=True, text=True
    ).stdout.split()


def _ports(bridge: str) -> list[str]:
    return subprocess.run(
        ["ovs-vsctl", "list-ports", bridge], check=True, capture_output=True, text=True
    ).stdout.split()


def _forward_normally(net: Mininet) -> None:
    # No controller in these tests: let each secure-mode bridge act as a learning switch.
    for switch in net.switches:
        subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "add-flow", switch.name, "actions=NORMAL"],
            check=True,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def _network(topo: object, **kwargs: object) -> Iterator[Mininet]:
    with netserv_network(topo, controller=("127.0.0.1", _free_port()), **kwargs) as net:
        yield net


def _our_mininet_shells() -> list[str]:
    """Return the command lines of Mininet node shells that are children of this process."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # not a process, or it ended meanwhile
        if f"\nPPid:\t{os.getpid()}\n" in status and "mininet:" in cmdline:
            found.append(cmdline.strip())
    return found


def _assert_all_gone(prefix: str, pids: list[int]) -> None:
    assert _links_with(prefix) == []
    assert [b for b in _bridges() if b.startswith(prefix)] == []
    # A host's namespace lives as long as its shell; a dead shell means no namespace.
    assert [pid for pid in pids if _alive(pid)] == []
    assert _our_mininet_shells() == []


def _ping(src: object, dst_ip: str) -> str:
    return src.cmd(f"ping -c 2 -W 2 {dst_ip}")


def test_single_switch_forwards_icmp_udp_tcp_and_cleans_up(unique_prefix: str) -> None:
    p = unique_prefix
    with _network(SingleSwitchTopo(k=3, prefix=p)) as net:
        switch = net.get(f"{p}s1")
        assert isinstance(switch, NetServSwitch)
        assert switch.agent_port_name == f"{p}s1-ns"
        assert switch.agent_iface == f"{p}s1-na"
        assert switch.agent_pid is None  # no rest_url, so no agent process
        assert os.path.exists(f"/sys/class/net/{p}s1-na")
        assert f"{p}s1-ns" in _ports(f"{p}s1")
        assert _links_with(f"{p}s1-n") == [f"{p}s1-na", f"{p}s1-ns"]
        pids = [h.pid for h in net.hosts] + [switch.pid]

        _forward_normally(net)
        h1, h2 = net.get(f"{p}h1", f"{p}h2")
        assert h1.IP() == "10.0.0.1" and h2.MAC() == "00:00:00:00:00:02"
        assert " 0% packet loss" in _ping(h1, "10.0.0.2")

        server = h2.popen(
            [sys.executable, "-c", ECHO_SERVER, "10.0.0.2"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout.readline().strip() == "ready"
            client = h1.popen(
                [sys.executable, "-c", ECHO_CLIENT, "10.0.0.2"],
                stdout=subprocess.PIPE,
                text=True,
            )
            out, err = client.communicate(timeout=30)
            assert out.split() == ["NETSERV-UDP", "NETSERV-TCP"], err
        finally:
            server.kill()
            server.wait()
        # No IPv6 in the namespaces: nothing but our traffic reaches the switch.
        assert "inet6" not in h1.cmd("ip -6 addr show")
    _assert_all_gone(p, pids)


def test_cleanup_when_body_raises(unique_prefix: str) -> None:
    p = unique_prefix
    with pytest.raises(RuntimeError, match="boom"):
        with _network(SingleSwitchTopo(k=2, prefix=p)) as net:
            assert p + "s1" in _bridges()
            assert os.path.exists(f"/sys/class/net/{p}s1-na")
            pids = [h.pid for h in net.hosts]
            raise RuntimeError("boom")
    _assert_all_gone(p, pids)


def test_linear_with_netserv_on_second_switch_only(unique_prefix: str) -> None:
    p = unique_prefix
    with _network(LinearTopo(n=2, k=1, netserv=[2], prefix=p)) as net:
        s1, s2 = net.get(f"{p}s1", f"{p}s2")
        assert not s1.netserv and s2.netserv
        assert [x for x in _ports(f"{p}s1") if x.endswith("-ns")] == []
        assert [x for x in _ports(f"{p}s2") if x.endswith("-ns")] == [f"{p}s2-ns"]
        assert s1.dpid == "0000000000000001" and s2.dpid == "0000000000000002"
        pids = [h.pid for h in net.hosts]
        _forward_normally(net)
        assert " 0% packet loss" in _ping(net.get(f"{p}h1"), "10.0.0.2")
    _assert_all_gone(p, pids)


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path} after {timeout} s"
        time.sleep(0.05)


def test_names_in_use_are_refused_and_left_alone(unique_prefix: str) -> None:
    p = unique_prefix
    # Someone else's interface has the name the agent veth wants, and someone else's
    # bridge the switch's name: the network must refuse to start and touch neither.
    subprocess.run(
        ["ip", "link", "add", f"{p}s1-na", "type", "veth", "peer", "name", f"{p}x0"], check=True
    )
    subprocess.run(
        ["ovs-vsctl", "add-br", f"{p}s1", "--", "set", "bridge", f"{p}s1", "datapath_type=netdev"],
        check=True,
    )
    try:
        with pytest.raises(CommandError, match=f"already exist: {p}s1, {p}s1-na"):
            with _network(SingleSwitchTopo(k=2, prefix=p)):
                pytest.fail("the network should not have started")
        assert _links_with(p) == [f"{p}s1", f"{p}s1-na", f"{p}x0"]
        assert [b for b in _bridges() if b.startswith(p)] == [f"{p}s1"]
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", f"{p}s1"], check=False)
        subprocess.run(["ip", "link", "del", f"{p}s1-na"], check=False)


AGENT_STUB = r"""
import signal, sys, time
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("agent", " ".join(sys.argv[1:]), flush=True)
time.sleep(300)
"""


def test_agent_process_started_logged_and_stopped(
    unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real agent is not needed here; a stub shows the process handling.
    real_argv = NetServSwitch.agent_argv

    def stub_argv(self: NetServSwitch) -> list[str]:
        extra = ["--ignore-term"] if self.name.endswith("s2") else []
        return [sys.executable, "-c", AGENT_STUB, *real_argv(self)[3:], *extra]

    monkeypatch.setattr(NetServSwitch, "agent_argv", stub_argv)
    p = unique_prefix
    topo = LinearTopo(n=2, k=1, prefix=p)
    with _network(topo, rest_url="http://127.0.0.1:1/", rundir=tmp_path) as net:
        s1, s2 = net.get(f"{p}s1", f"{p}s2")
        pid1 = s1.supervisor_pid  # the process the switch starts: here a stub agent
        assert pid1 is not None and _alive(pid1)
        assert s1.agent_log == tmp_path / f"{p}s1-agent.log"
        # An agent that ignores SIGTERM is killed after the timeout; the handler must be
        # in place first, which its log line says.
        _wait_for_text(s2.agent_log, "agent --dpid 2")
        assert s2.stop_agent(timeout=0.5) == -9
        assert s2.supervisor_pid is None and s2.agent_pid is None
    assert not _alive(pid1)
    logged = s1.agent_log.read_text()
    assert f"--dpid 1 --iface {p}s1-na --switch-port {p}s1-ns" in logged
    assert "--controller http://127.0.0.1:1/" in logged
    _assert_all_gone(p, [pid1])
