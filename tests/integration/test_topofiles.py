"""`netserv topo up/down` on a topology file with two paths between its hosts: placement on
the way frames take, and everything removed after `up` crashed.

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

from signaling.client import NetServClient
from topo.controller import free_port, stop_process

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
