"""`netserv topo up/down` on the shipped example files: every host reaches every other,
the nodes are ready, placement is on the way frames take (in a ring too), and `down`
removes everything, beside a live `up` and after `up` crashed.

docs/topologies.md runs `mn --custom topo/topos.py` with NetServ nodes and the
environment's own `ryu-manager` with controller.app beside ryu.app.ofctl_rest
(tests/integration/test_docs.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from signaling.client import NetServClient
from topo.controller import free_port, stop_process
from topo.file import load
from topo.updown import UP_STOP_TIMEOUT, started_at

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"netserv" * 4, (sys.argv[1], 9000))
"""


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.2)
    return value


def _ours(prefix: str) -> tuple[list[str], list[str]]:
    bridges = subprocess.run(
        ["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True
    ).stdout.split()
    return (
        [b for b in bridges if b.startswith(prefix)],
        sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix)),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].startswith(" Z")


def _in_host(pid: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True, timeout=30
    )


def test_two_paths_file_up_places_on_the_way_frames_take_and_down_after_a_crash(
    unique_prefix: str, tmp_path: Path
) -> None:
    p, state = unique_prefix, tmp_path / "topo.json"
    env = os.environ | {"NETSERV_SECRETS": str(tmp_path / "secrets")}
    argv = [str(VENV_BIN / "netserv"), "topo", "up", "topo/examples/two-paths.yaml"]
    argv += ["--no-cli", "--prefix", p, "--state", str(state)]
    argv += ["--of-port", str(free_port()), "--rest-port", str(free_port())]
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = _wait("the network", lambda: _ready(state, up), timeout=45)
        url, token = ready["url"], (tmp_path / "secrets" / "rest.token").read_text().strip()
        h1, h2 = (entry[0] for entry in ready["hosts"])
        # a ring: a flood that went round it would never end, and ping would drown
        assert " 0% packet loss" in _in_host(h1, "ping", "-c", "3", "-i", "0.2", "10.0.0.2").stdout
        status, path = _get(f"{url}/netserv/topology/path?src=10.0.0.1&dst=10.0.0.2")
        assert [hop["dpid"][-1] for hop in path["path"]] == ["3", "2", "1", "4"], path
        match = {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2", "udp_dst": 9000}
        first = NetServClient(url, token=token).setup(match, module="counter")
        assert first["node"] == "0000000000000002"  # s2: on the way frames take, not s4
        _in_host(h1, sys.executable, "-c", SENDER, "10.0.0.2", "30")
        stats = _wait("30 frames counted", lambda: _counted(url, token, first["id"], 30), 10)
        assert stats == 30
        # a crash: nothing of the network is taken down by `up` itself
        up.send_signal(signal.SIGKILL)
        up.wait()
        assert _ours(p)[0] == [f"{p}s{i}" for i in range(1, 5)]
        pids = [e[0] for kind in ("controller", "agents") for e in ready[kind]]
        assert all(_alive(pid) for pid in pids)
        down = subprocess.run(
            [str(VENV_BIN / "netserv"), "topo", "down", "--state", str(state)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert down.returncode == 0, down.stderr
        assert "two-paths.yaml is down (agent supervisor" in down.stdout
        assert _ours(p) == ([], [])
        assert [pid for pid in pids if _alive(pid)] == []
        assert not state.exists()
    finally:
        stop_process(up)
        if state.exists():
            subprocess.run([str(VENV_BIN / "netserv"), "topo", "down", "--state", str(state)])


def _ready(state: Path, up: subprocess.Popen) -> dict | None:
    assert up.poll() is None, f"netserv topo up exited {up.returncode}"
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("ready") else None


def _counted(url: str, token: str, session: int, want: int) -> int | None:
    status, body = _get(f"{url}/netserv/sessions/{session}/stats", token)
    packets = body["stats"]["modules"][0]["stats"]["packets"] if status == 200 else None
    return packets if packets == want else None


EXAMPLES = [
    # file, the flow (from, to), the NetServ node it crosses first (dpid's last digit)
    ("single.yaml", ("h1", "h2"), "1"),
    ("linear.yaml", ("h1", "h3"), "2"),
    ("tree.yaml", ("h1", "h3"), "2"),
]


@pytest.mark.parametrize(("name", "flow", "node"), EXAMPLES, ids=[e[0][:-5] for e in EXAMPLES])
def test_example_file_up_reaches_every_host_places_on_its_node_and_down_leaves_nothing(
    name: str, flow: tuple[str, str], node: str, unique_prefix: str, tmp_path: Path
) -> None:
    p, state = unique_prefix, tmp_path / "topo.json"
    spec = load(REPO / "topo" / "examples" / name, prefix=p)
    env = os.environ | {"NETSERV_SECRETS": str(tmp_path / "secrets")}
    argv = [str(VENV_BIN / "netserv"), "topo", "up", f"topo/examples/{name}"]
    argv += ["--no-cli", "--prefix", p, "--state", str(state)]
    argv += ["--of-port", str(free_port()), "--rest-port", str(free_port())]
    with open(tmp_path / "up.log", "wb") as log:
        up = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    netns_fds: list[int] = []
    try:
        ready = _wait("the network", lambda: _ready(state, up), timeout=45)
        url, token = ready["url"], (tmp_path / "secrets" / "rest.token").read_text().strip()
        hosts = {_host_name(pid).removeprefix(p): pid for pid, _ in ready["hosts"]}
        ips = {h.name.removeprefix(p): h.ip.partition("/")[0] for h in spec.hosts}
        assert sorted(hosts) == sorted(ips)
        assert _pingall(hosts, ips) == []
        client = NetServClient(url, token=token)
        declared = {f"{s.dpid:016x}" for s in spec.netserv()}
        assert {n["dpid"] for n in client.nodes() if n["ready"]} == declared
        src, dst = flow
        status, path = _get(f"{url}/netserv/topology/path?src={ips[src]}&dst={ips[dst]}")
        assert f"{int(node):016x}" in path["netserv_nodes"], path
        match = {"ipv4_src": ips[src], "ipv4_dst": ips[dst], "udp_dst": 9000}
        session = client.setup(match, module="counter")
        assert session["node"] == f"{int(node):016x}"
        _in_host(hosts[src], sys.executable, "-c", SENDER, ips[dst], "30")
        assert _wait("30 frames counted", lambda: _counted(url, token, session["id"], 30), 10)
        # everything `up` started, down to the agents its supervisors run
        ours = _descendants(up.pid)
        # held open, the hosts' namespaces keep their inode numbers (none is given anew)
        netns_fds += [os.open(f"/proc/{pid}/ns/net", os.O_RDONLY) for pid in hosts.values()]
        assert _ours(p)[0] and len(ours) > len(hosts) + 1
        asked = time.monotonic()
        down = subprocess.run(
            [str(VENV_BIN / "netserv"), "topo", "down", "--state", str(state)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert down.returncode == 0, down.stderr
        # `up` stopped when asked and took its network down itself: nothing left to sweep
        assert time.monotonic() - asked < UP_STOP_TIMEOUT
        assert up.wait(timeout=5) == 0
        assert down.stdout.strip().endswith(f"{name} is down"), down.stdout
        assert _ours(p) == ([], [])
        assert [pid for pid, start in ours if started_at(pid) == start] == []
        assert _in_namespaces({os.fstat(fd).st_ino for fd in netns_fds}) == []
        assert not state.exists()
    finally:
        for fd in netns_fds:
            os.close(fd)
        stop_process(up)
        if state.exists():
            subprocess.run([str(VENV_BIN / "netserv"), "topo", "down", "--state", str(state)])


def _host_name(pid: int) -> str:
    # a Mininet host's shell: mnexec ... bash --norc --noediting -is mininet:NAME
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode().split(":")[1]


def _pingall(hosts: dict[str, int], ips: dict[str, str]) -> list[str]:
    """Return what failed when every host pings every other once (as Mininet's pingall)."""
    pings = {
        (a, b): subprocess.Popen(
            ["nsenter", "-t", str(pid), "-n", "ping", "-c", "1", "-W", "2", ips[b]],
            stdout=subprocess.DEVNULL,
        )
        for a, pid in hosts.items()
        for b in hosts
        if a != b
    }
    return [f"{a} -> {b}" for (a, b), ping in pings.items() if ping.wait(timeout=10) != 0]


def _descendants(root: int) -> list[tuple[int, int]]:
    """Return (pid, start time) of every process below `root`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            parents[int(entry.name)] = (int(fields[1]), int(fields[19]))
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent:
                found.append((pid, start))
                todo.append(pid)
    return found


def _in_namespaces(inodes: set[int]) -> list[int]:
    """Return the processes in any of the network namespaces with these inode numbers."""
    inside = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.stat(entry / "ns" / "net").st_ino in inodes:
                inside.append(int(entry.name))
        except OSError:
            continue
    return inside
