"""The six breaches, tried by an unprivileged local user (`nobody`), are refused.

Before keys and tokens, `nobody` on the controller's host created a session, read an
agent's status, replaced another session's chain at the agent, detached a chain
behind the controller's back, and registered a fake agent for a real node, after
which 400 of 400 frames of someone else's flow went out of another host's port, and
the redirect survived the real agent's next heartbeat.

Here a real controller, node (bridge + agent) and session on h1 → h2 UDP 9000 run as
root; each breach is a stdlib-only Python script run as nobody (`setpriv`), which
also tries what it can to get past the checks: guessed tokens, calls signed with
keys it made up (as docs/security.md says to sign), the secrets folder. Every
attempt must be refused (401, or EACCES for a file), and afterwards nothing may
have changed: the controller's sessions and its view of the node, the agent's
chains (read with the node's key, as the controller reads them), the switch's
flows, and the session's frames still go through the node's agent and arrive at h2,
none at h3.
"""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agentproto.limits import HEARTBEAT
from controller.auth import Signer, agent_key_id, controller_key_id
from controller.keyfiles import node_key_path, provision_node_key, read_secret
from controller.tables import KIND_LEARNED, KIND_SHIFT
from jsonhttp.client import ClientError, call_json
from signaling.client import NetServClient
from tests.agents import call_agent
from tools import ovs
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

FRAMES = 400  # as many as went out of the wrong port before
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env"]
PYTHON = "/usr/bin/python3"  # the system's: nobody cannot reach root's own Python

# The attacker: only the standard library, nothing of NetServ's, no secret.
ATTACKER = r"""
import hashlib, hmac, json, os, select, sys, threading, time, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

spec = json.loads(sys.argv[1])
rest, agent, sid, dpid = spec["rest"], spec["agent"], spec["session"], spec["dpid"]
out = {"attempts": [], "files": {}, "fake_agent_calls": 0}


def call(what, method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        status, raw = 0, str(exc).encode()
    text = raw.decode(errors="replace")[:400]
    out["attempts"].append({"what": what, "status": status, "body": text})


def forged(key_id, method, target, body=None):
    # Signed as docs/security.md says, with a key made up: nobody cannot read a real one.
    key, when, nonce = os.urandom(32), str(int(time.time() * 1000)), os.urandom(16).hex()
    digest = hashlib.sha256(b"" if body is None else json.dumps(body).encode()).hexdigest()
    text = "\n".join(["NetServ-HMAC-SHA256 request", key_id, method, target, when, nonce, digest])
    mac = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return {"X-NetServ-Key": key_id, "X-NetServ-Time": when, "X-NetServ-Nonce": nonce,
            "X-NetServ-MAC": mac}


def read(what, path):
    try:
        with open(path, "rb") as f:
            out["files"][what] = "read: " + f.read().decode(errors="replace")[:4000]
    except OSError as exc:
        out["files"][what] = exc.strerror


def listing(what, path):
    try:
        out["files"][what] = "listed: " + " ".join(os.listdir(path))
    except OSError as exc:
        out["files"][what] = exc.strerror


def create():
    body = {"match": spec["match"], "module": "null", "lifetime": 600, "node": dpid}
    for token in ("", "Bearer guess", "Bearer " + os.urandom(32).hex(), "Bearer " + "0" * 64):
        call("create a session " + token[:12], "POST", rest + "/netserv/sessions", body,
             {"Authorization": token} if token else {})
    call("create a session, signed", "POST", rest + "/netserv/sessions", body,
         forged("agent/" + dpid, "POST", "/netserv/sessions", body))


def read_status():
    for path in ("/health", "/sessions", "/sessions/%d" % sid):
        call("agent GET " + path, "GET", agent + path)
        call("agent GET %s, signed" % path, "GET", agent + path,
             headers=forged("controller/" + dpid, "GET", path))
    for path in ("", "/%d" % sid, "/%d/stats" % sid):
        call("REST GET sessions" + path, "GET", rest + "/netserv/sessions" + path)


def replace():
    path = "/sessions/%d" % sid
    body = {"tag": spec["tag"], "lifetime": 600, "modules": [{"name": "null"}]}
    call("replace the chain", "PUT", agent + path, body)
    call("replace the chain, signed", "PUT", agent + path, body,
         forged("controller/" + dpid, "PUT", path, body))


def detach():
    path = "/sessions/%d" % sid
    call("detach the chain", "DELETE", agent + path)
    call("detach the chain, signed", "DELETE", agent + path,
         headers=forged("controller/" + dpid, "DELETE", path))
    call("shorten the chain", "PATCH", agent + path, {"lifetime": 1})
    call("shorten the chain, signed", "PATCH", agent + path, {"lifetime": 1},
         forged("controller/" + dpid, "PATCH", path, {"lifetime": 1}))
    call("REST teardown", "DELETE", rest + "/netserv/sessions/%d" % sid)
    call("REST refresh", "POST", rest + "/netserv/sessions/%d/refresh" % sid, {"lifetime": 1})


def register():
    class Fake(BaseHTTPRequestHandler):  # answers as the node's agent would
        def do_ANY(self):
            out["fake_agent_calls"] += 1
            data = json.dumps({"boot_id": "f" * 32, "pid": os.getpid(), "sessions": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_PATCH = do_DELETE = do_ANY

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake_url = "http://127.0.0.1:%d" % server.server_address[1]
    with urllib.request.urlopen(rest + "/netserv/nodes", timeout=10) as resp:  # open to all
        (node,) = [n for n in json.loads(resp.read()) if n["dpid"] == dpid]
    fake = {"dpid": dpid, "switch_port": spec["port"], "url": fake_url, "boot_id": "f" * 32}
    moved = dict(fake, boot_id=node["agent"]["boot_id"])  # the real agent's, "moving"
    deadline, first = time.monotonic() + spec["wait"], True
    while True:
        for body in (fake, moved):
            call("register a fake agent", "POST", rest + "/netserv/nodes", body)
            call("register a fake agent, signed", "POST", rest + "/netserv/nodes", body,
                 forged("agent/" + dpid, "POST", "/netserv/nodes", body))
        if first:
            print("trying", flush=True)
            first = False
        if time.monotonic() >= deadline or select.select([sys.stdin], [], [], 0.3)[0]:
            break  # its time is up, or it is told to stop (a line on stdin)
    server.shutdown()


def secrets():
    folder = spec["secrets"]
    listing("the secrets folder", folder)
    listing("the nodes' keys", folder + "/nodes")
    read("the operator's token", folder + "/rest.token")
    read("the node's key", folder + "/nodes/" + dpid + ".key")
    for who, pid in spec["pids"].items():
        read(who + "'s command line", "/proc/%d/cmdline" % pid)
        read(who + "'s environment", "/proc/%d/environ" % pid)


{"create": create, "read": read_status, "replace": replace, "detach": detach,
 "register": register, "secrets": secrets}[spec["breach"]]()
print(json.dumps(out), flush=True)
"""


@dataclass
class World:
    ctl: ControllerProcess
    client: NetServClient  # the operator's, with its token
    net: Any
    switch: Any
    h1: Any
    h2: Any
    h3: Any
    session: dict[str, Any]

    def spec(self, breach: str, **extra: Any) -> dict[str, Any]:
        (node,) = self.client.nodes()
        h3_port = self.switch.connectionsTo(self.h3)[0][0].name  # the bridge's port to h3
        return {
            "breach": breach,
            "rest": self.ctl.url,
            "agent": node["agent"]["url"],
            "session": self.session["id"],
            "tag": self.session["tag"],
            "dpid": self.switch.dpid,
            "port": h3_port,
            "match": {"ipv4_src": self.h3.IP(), "ipv4_dst": self.h2.IP(), "udp_dst": 9000},
            "secrets": str(self.ctl.secrets),
            "pids": {"controller": self.ctl.pid, "agent": self.switch.agent_pid},
            "wait": 0,
            **extra,
        }

    def snapshot(self) -> dict[str, Any]:
        """Return what no refused call may change."""
        sessions = [
            {k: v for k, v in s.items() if k != "expires_in"} for s in self.client.sessions()
        ]
        (node,) = self.client.nodes()
        chains = [
            (c["session"], c["tag"], [m["name"] for m in c["modules"]])
            for c in call_agent(self.client, self.switch, "GET", "/sessions")
        ]
        health = call_agent(self.client, self.switch)
        return {
            "sessions": sessions,
            "node": {k: node["agent"][k] for k in ("url", "switch_port", "boot_id")}
            | {"agent_port": node["agent_port"], "ready": node["ready"]},
            "chains": chains,
            "agent": {k: health[k] for k in ("boot_id", "sessions", "modules_loaded")},
            "flows": flows(self.switch.name),
        }

    def assert_served(self, frames: int = FRAMES) -> None:
        """Send `frames` on the session's flow: all go through the agent's chain to h2,
        none out of another host's port."""
        sid, port = self.session["id"], self.switch.agent_port_name
        counted = self.counted(sid)
        to_agent = ovs.port_counters(self.switch.name, port)["tx_packets"]
        with Receiver(self.h2) as at_h2, Receiver(self.h3) as at_h3:
            send_udp(self.h1, self.h2, 9000, frames)
        assert at_h2.got(self.h1, 9000) == frames
        assert at_h3.got(self.h1, 9000) == 0
        assert self.counted(sid) - counted == frames
        assert ovs.port_counters(self.switch.name, port)["tx_packets"] - to_agent == frames

    def counted(self, session_id: int) -> int:
        return self.client.stats(session_id)["stats"]["modules"][0]["stats"]["packets"]


def untimed(flows: list[str]) -> list[str]:
    """Return `flows` without their hard timeouts."""
    return [" ".join(w for w in f.split() if not w.startswith("hard_timeout=")) for f in flows]


def flows(bridge: str) -> list[str]:
    """Return the bridge's flows without counters and ages, learned MAC flows left out."""
    out = []
    for line in ovs.dump_flows(bridge):
        words = [
            w.rstrip(",")
            for w in line.split()
            if not w.startswith(("duration", "n_packets", "n_bytes", "idle_age", "hard_age"))
        ]
        cookie = int(words[0].split("=")[1], 16)
        if (cookie >> KIND_SHIFT) & 0xFF != KIND_LEARNED:
            out.append(" ".join(words))
    return sorted(out)


def as_nobody(spec: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Run the attacker as nobody with `spec`; return what it reports."""
    argv = [*AS_NOBODY, PYTHON, "-I", "-c", ATTACKER, json.dumps(spec)]
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd="/", timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(report: dict[str, Any]) -> None:
    """Every call was answered 401, with nothing of the node's or the session's in it."""
    attempts = report["attempts"]
    assert attempts
    for attempt in attempts:
        assert attempt["status"] == 401, attempt
        body = json.loads(attempt["body"])
        assert set(body) <= {"error", "code"} and body.get("code", "unauthenticated") == (
            "unauthenticated"
        ), attempt
        for secret in ("boot_id", "counter", "modules", "tag"):
            assert secret not in attempt["body"], attempt


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("breaches")
    prefix = "b" + secrets.token_hex(2)[:3]
    with ControllerProcess(tmp / "controller.log") as ctl:
        topo = SingleSwitchTopo(k=3, prefix=prefix)
        with netserv_network(topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp) as net:
            client = ctl.client()
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            h1, h2, h3 = net.hosts
            warm_up((h1, h2), (h3, h2), (h1, h3))
            match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
            session = client.setup(match, module="counter", params={"log_every": 0}, lifetime=600)
            yield World(ctl, client, net, switch, h1, h2, h3, session)
            log = ctl.logfile.read_text(errors="replace")
            assert "internal error" not in log and "Traceback" not in log


def test_nobody_cannot_read_the_secrets(world: World) -> None:
    folder = world.ctl.secrets
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 0
    report = as_nobody(world.spec("secrets"))
    files = report["files"]
    denied = [
        "the secrets folder",
        "the nodes' keys",
        "the operator's token",
        "the node's key",
        "controller's environment",
        "agent's environment",
    ]
    assert {what: files[what] for what in denied} == dict.fromkeys(denied, "Permission denied")
    # Command lines are open to every user: they name the folder and the key's file only.
    token, key = world.ctl.token, read_secret(world.switch.key_file).hex()
    for who in ("controller", "agent"):
        cmdline = files[f"{who}'s command line"]
        assert cmdline.startswith("read: ") and token not in cmdline and key not in cmdline
    assert str(node_key_path(folder, world.switch.dpid_int)) in files["agent's command line"]


@pytest.mark.parametrize(
    "breach",
    [
        "create",  # 1. created a session
        "read",  # 2. read an agent's status (and the sessions through REST)
        "replace",  # 3. replaced another session's chain at the agent
        "detach",  # 4. detached a chain behind the controller's back
        "register",  # 5. registered a fake agent for a real node
    ],
)
def test_a_breach_as_nobody_is_refused_and_changes_nothing(world: World, breach: str) -> None:
    before = world.snapshot()
    report = as_nobody(world.spec(breach))
    assert_refused(report)
    assert report["fake_agent_calls"] == 0  # the controller never called the fake agent
    assert world.snapshot() == before
    world.assert_served()


def _register(world: World, key: bytes, key_dpid: int, body: dict[str, str]) -> tuple[int, Any]:
    """POST a registration signed with `key` as node `key_dpid`'s agent; return the answer."""
    signer = Signer(key, agent_key_id(key_dpid), controller_key_id(key_dpid))
    try:
        return 200, call_json(world.ctl.url + "/netserv/nodes", "POST", body, signer=signer)
    except ClientError as exc:
        return exc.status, exc.message


def test_a_registration_signed_with_another_nodes_key_is_refused(world: World) -> None:
    other = 0x7E57  # a node of another network: its key is real, but not this node's
    provision_node_key(world.ctl.secrets, other)
    other_key = read_secret(node_key_path(world.ctl.secrets, other))
    try:
        before = world.snapshot()
        real = before["node"]
        fake = world.spec("register")
        body = {
            "dpid": world.switch.dpid,
            "switch_port": fake["port"],
            "url": "http://127.0.0.1:9",
            "boot_id": real["boot_id"],
        }
        # Signed as the other node: the controller knows that key, so its refusal is signed.
        status, message = _register(world, other_key, other, body)
        assert status == 401 and "signed with node 0000000000007e57's key" in message
        # Signed as this node with the other's key: the refusal is not signed (status 0).
        status, message = _register(world, other_key, world.switch.dpid_int, body)
        assert status == 0 and "401" in message and "MAC does not match" in message
        assert world.snapshot() == before
        # The node's own key works: a heartbeat the real agent could have sent.
        key = read_secret(world.switch.key_file)
        heartbeat = body | {"switch_port": real["switch_port"], "url": real["url"]}
        status, reply = _register(world, key, world.switch.dpid_int, heartbeat)
        assert status == 200 and reply["sessions"] == [world.session["id"]]
        assert world.snapshot() == before
        world.assert_served(100)
    finally:
        node_key_path(world.ctl.secrets, other).unlink()


def test_no_redirect_of_someone_elses_flow_survives_a_restart_or_a_heartbeat(
    world: World,
) -> None:
    """6. A fake agent registers for the node all along, also while the real agent
    restarts (when no agent runs, so nothing answers for the old one): the restarted
    agent is taken with its key and gets its chain back, and the session's frames go
    through it to h2, before and after its next heartbeat, none out of h3's port."""
    spec = world.spec("register", wait=120)
    argv = [*AS_NOBODY, PYTHON, "-I", "-c", ATTACKER, json.dumps(spec)]
    attacker = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert attacker.stdout.readline().strip() == "trying", attacker.stderr.read()
        before = world.snapshot()
        world.assert_served(FRAMES)
        world.switch.stop_agent()
        time.sleep(1.0)  # the old agent is gone; the controller still holds it
        world.switch.start_agent()
        restarted = wait_restarted(world, before["node"]["boot_id"])
        assert restarted["chains"] == before["chains"]  # the controller attached it again
        # The stop was told to the controller, which took the detour out until the
        # agent was back (fail-open): it is the same but for its timer.
        assert restarted["sessions"] == before["sessions"]
        assert untimed(restarted["flows"]) == untimed(before["flows"])
        assert restarted["node"]["switch_port"] == before["node"]["switch_port"]
        world.assert_served(FRAMES)
        time.sleep(2 * HEARTBEAT + 0.5)  # the real agent has registered again meanwhile
        assert world.snapshot() == restarted
        world.assert_served(FRAMES)
        out, err = attacker.communicate("stop\n", timeout=60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    assert attacker.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert_refused(report)
    assert len(report["attempts"]) >= 4 * 10 and report["fake_agent_calls"] == 0


def wait_restarted(world: World, old_boot_id: str, timeout: float = 20) -> dict[str, Any]:
    """Wait until the controller took the node's new agent, it holds the session's
    chain again and the session is active (resumed: its detour back); return the
    snapshot then."""
    deadline = time.monotonic() + timeout
    while (world.client.nodes()[0]["agent"] or {}).get("boot_id") == old_boot_id:
        assert time.monotonic() < deadline, "the restarted agent was not taken"
        time.sleep(0.2)
    while True:
        snapshot = world.snapshot()
        if snapshot["chains"] and {s["state"] for s in snapshot["sessions"]} == {"active"}:
            return snapshot
        assert time.monotonic() < deadline, "the session was not served again"
        time.sleep(0.2)
