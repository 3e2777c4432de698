"""What an operator used to Mininet and Ryu runs: `netserv topo up/down` on a topology file
with two paths, `mn --custom topo/topos.py` with NetServ nodes, and the environment's own
`ryu-manager` with controller.app beside ryu.app.ofctl_rest."""

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
from topo.controller import ControllerProcess, free_port, stop_process

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


def test_mn_custom_file_gives_netserv_nodes_with_their_agents(
    unique_prefix: str, tmp_path: Path
) -> None:
    p = unique_prefix
    secrets = tmp_path / "secrets"
    with ControllerProcess(tmp_path / "controller.log", secrets=secrets) as ctl:
        env = os.environ | {"NETSERV_URL": ctl.url, "NETSERV_SECRETS": str(secrets)}
        env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
        mn = subprocess.run(
            [str(VENV_BIN / "mn"), "--custom", "topo/topos.py"]
            + ["--topo", f"netserv_linear,2,1,true,{p}"]
            + ["--controller", f"remote,ip=127.0.0.1,port={ctl.of_port}"]
            + ["--test", "netserv+pingall"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = mn.stdout + mn.stderr
        assert mn.returncode == 0, out
        assert f"*** NetServ nodes ready: {p}s1 {p}s2" in out, out
        assert "*** Results: 0% dropped (2/2 received)" in out, out
        # once mn is done, the nodes' agents are gone: the controller hears them stop
        nodes = _wait("the agents' stop", lambda: _stopped(ctl.client().nodes()), 15)
        assert [n["dpid"] for n in nodes] == ["0000000000000001", "0000000000000002"]
    assert _ours(p) == ([], [])


def _stopped(nodes: list[dict]) -> list[dict] | None:
    return nodes if nodes and not any(n["agent"]["alive"] for n in nodes) else None


def test_plain_ryu_manager_runs_netserv_beside_ofctl_rest(
    unique_prefix: str, tmp_path: Path
) -> None:
    of_port, rest_port = free_port(), free_port()
    url = f"http://127.0.0.1:{rest_port}"
    argv = [str(VENV_BIN / "ryu-manager"), "--ofp-tcp-listen-port", str(of_port)]
    argv += ["--wsapi-host", "127.0.0.1", "--wsapi-port", str(rest_port)]
    argv += ["--netserv-store", str(tmp_path / "s.sqlite"), "--netserv-secrets", str(tmp_path)]
    argv += ["controller.app", "ryu.app.ofctl_rest"]
    bridge = f"{unique_prefix}b"
    with open(tmp_path / "ryu.log", "wb") as log:
        ryu = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        subprocess.run(
            ["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge]
            + [
                "datapath_type=netdev",
                "protocols=OpenFlow13",
                "other-config:datapath-id=00000000000000ab",
            ]
            + ["--", "set-controller", bridge, f"tcp:127.0.0.1:{of_port}"]
            + ["--", "set-fail-mode", bridge, "secure"],
            check=True,
        )
        switches = _wait("ofctl_rest's switch", lambda: _answer(ryu, f"{url}/stats/switches"))
        assert switches == [0xAB]
        nodes = _wait("NetServ's node", lambda: _answer(ryu, f"{url}/netserv/nodes"))
        assert [(n["dpid"], n["connected"]) for n in nodes] == [("00000000000000ab", True)]
        # both apps' flows on one switch: NetServ's base flows, read through ofctl_rest
        flows = _answer(ryu, f"{url}/stats/flow/{0xAB}")[str(0xAB)]
        assert any(f["cookie"] >> 48 == 0x4E53 for f in flows)
        # NetServ's hardening covers the whole REST server: a JSON 404, no traceback
        status, body = _get(f"{url}/no/such/thing")
        assert status == 404 and "error" in body
        assert (tmp_path / "rest.token").exists()  # the secrets folder it was given
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
        stop_process(ryu)
    assert "cannot import name" not in (tmp_path / "ryu.log").read_text()


def _answer(proc: subprocess.Popen, url: str) -> Any:
    assert proc.poll() is None, f"ryu-manager exited {proc.returncode}"
    try:
        status, body = _get(url)
    except (OSError, ValueError):
        return None
    return body if status == 200 and body else None
