"""The requester policy on real parts: a controller run with --policy, OVS, a node agent.

Every refusal must leave the controller's sessions and the switch's NetServ flows
(cookies 0x4e53...) exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.tables import COOKIE_PREFIX, COOKIE_PREFIX_MASK
from tests.rawhttp import Answer, exchange, request
from tools import ovs
from topo.controller import REPO_ROOT, ControllerProcess, free_port, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

TOKENS = {name: secrets.token_urlsafe(24) for name in ("operator", "alice", "bob")}
H1, H2, H3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"  # SingleSwitchTopo's hosts


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


POLICY = f"""
[operator]
tokens = ["{digest(TOKENS["operator"])}"]

[requesters.alice]
tokens = ["{digest(TOKENS["alice"])}"]
prefixes = ["{H1}/32"]
modules = ["counter"]
max_sessions = 1

[requesters.bob]
tokens = ["{digest(TOKENS["bob"])}"]
prefixes = ["{H3}/32"]
modules = "all"
"""


class PolicyController(ControllerProcess):
    """`netserv controller --policy FILE` on free ports."""

    def __init__(self, logfile: Path, policy: Path) -> None:
        super().__init__(logfile, policy=policy)


@dataclass
class World:
    controller: PolicyController
    switch: Any
    policy: Path

    def call(self, method: str, path: str, body: object = None, who: str | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        data = b"" if body is None else json.dumps(body).encode()
        return exchange(self.controller.rest_port, request(method, path, data, headers))

    def sessions(self) -> list[dict[str, Any]]:
        return self.call("GET", "/netserv/sessions", who="operator").json()  # type: ignore[return-value]

    def flows(self) -> set[str]:
        """Return the switch's NetServ flows (cookie 0x4e53...) without their counters."""
        mask = f"cookie={COOKIE_PREFIX:#x}/{COOKIE_PREFIX_MASK:#x}"
        argv = [*ovs.OFCTL, "dump-flows", self.switch.name, mask]
        lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return {
            " ".join(w for w in line.split() if not w.startswith(("duration", "n_", "idle_age")))
            for line in lines.splitlines()
            if "cookie=" in line
        }

    def state(self) -> tuple[list[dict[str, Any]], set[str]]:
        sessions = [{k: v for k, v in s.items() if k != "expires_in"} for s in self.sessions()]
        return sessions, self.flows()

    def alice(self) -> dict[str, Any]:
        """Return alice's rights as GET /netserv/policy shows them."""
        view = self.call("GET", "/netserv/policy", who="operator").json()
        return next(r for r in view["requesters"] if r["id"] == "alice")  # type: ignore[index]

    def reload(self, text: str, ok: Any = None) -> None:
        """Write `text` as the policy file and SIGHUP the controller; with `ok`, wait
        until alice's rights satisfy it."""
        assert self.controller.pid is not None
        self.policy.write_text(text)
        os.kill(self.controller.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while ok is not None and not ok(self.alice()):
            assert time.monotonic() < deadline, "the policy was not reloaded"
            time.sleep(0.2)

    def rejections(self) -> dict[str, int]:
        view = self.call("GET", "/netserv/policy", who="operator").json()
        return view["rejections"].get("rest", {})  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("policy")
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    prefix = "p" + secrets.token_hex(2)[:3]
    with PolicyController(tmp / "controller.log", policy) as ctl:
        topo = SingleSwitchTopo(k=3, prefix=prefix)
        with netserv_network(topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp) as net:
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(ctl.url, [switch.dpid])
            yield World(ctl, switch, policy)


@pytest.fixture
def clean(world: World) -> Iterator[World]:
    """The world with no session; sessions a test made are ended after it."""
    assert world.sessions() == []
    yield world
    for session in world.sessions():
        world.call("DELETE", f"/netserv/sessions/{session['id']}", who="operator")
    if world.policy.read_text() != POLICY:
        world.reload(POLICY, lambda alice: alice["prefixes"] == [f"{H1}/32"])


def flow(src: str, dst: str, module: str = "counter", port: int = 9000) -> dict[str, Any]:
    return {"match": {"ipv4_src": src, "ipv4_dst": dst, "udp_dst": port}, "module": module}


def test_a_requester_gets_its_own_flow_served(clean: World) -> None:
    before = clean.flows()
    answer = clean.call("POST", "/netserv/sessions", flow(H1, H2), who="alice")
    assert answer.status == 201, answer.body
    session = answer.json()
    assert session["requester"] == "alice"
    assert len(clean.flows() - before) == 1
    assert len(ovs.dump_flows(clean.switch.name, int(session["cookie"], 16))) == 1


@pytest.mark.parametrize(
    "who, headers, body, status, code",
    [
        (None, {}, flow(H1, H2), 401, "unauthenticated"),
        (None, {"Authorization": "Bearer " + "x" * 32}, flow(H1, H2), 401, "unauthenticated"),
        (None, {"Authorization": f"Basic {TOKENS['alice']}"}, flow(H1, H2), 401, "unauthenticated"),
        ("alice", {}, flow(H2, H3), 403, "not_endpoint"),
        ("alice", {}, {"match": {"udp_dst": 9000}, "module": "counter"}, 403, "not_endpoint"),
        ("alice", {}, flow(H1, H2, module="null"), 403, "module_not_allowed"),
        ("bob", {}, flow(H1, H2), 403, "not_endpoint"),
    ],
)
def test_a_refused_request_changes_nothing_and_is_counted(
    clean: World, who: str | None, headers: dict[str, str], body: object, status: int, code: str
) -> None:
    counted = clean.rejections().get(code, 0)
    before = clean.state()
    if who is not None:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"}
    data = json.dumps(body).encode()
    answer = exchange(
        clean.controller.rest_port, request("POST", "/netserv/sessions", data, headers)
    )
    assert answer.status == status, answer.body
    assert answer.json()["code"] == code  # type: ignore[index]
    if status == 401:
        assert answer.headers["www-authenticate"] == 'Bearer realm="netserv"'
    assert clean.state() == before
    assert clean.rejections()[code] == counted + 1


def test_a_requester_over_its_quota_gets_a_429_and_nothing_more(clean: World) -> None:
    assert clean.call("POST", "/netserv/sessions", flow(H1, H2), who="alice").status == 201
    before = clean.state()
    answer = clean.call("POST", "/netserv/sessions", flow(H2, H1, port=9001), who="alice")
    assert answer.status == 429 and answer.json()["code"] == "quota_exceeded"  # type: ignore[index]
    assert clean.state() == before


def test_another_requesters_session_cannot_be_ended_or_refreshed(clean: World) -> None:
    empty = clean.flows()
    sid = clean.call("POST", "/netserv/sessions", flow(H1, H2), who="alice").json()["id"]  # type: ignore[index]
    before = clean.state()
    for method, path in (
        ("DELETE", f"/netserv/sessions/{sid}"),
        ("POST", f"/netserv/sessions/{sid}/refresh"),
    ):
        answer = clean.call(method, path, {} if method == "POST" else None, who="bob")
        assert answer.status == 403 and answer.json()["code"] == "not_owner"  # type: ignore[index]
        assert clean.call(method, path).status == 401
        assert clean.state() == before
    assert clean.call("DELETE", f"/netserv/sessions/{sid}", who="alice").status == 200
    assert clean.flows() == empty


def test_sighup_reloads_the_policy_and_a_bad_file_keeps_it(clean: World) -> None:
    clean.reload(
        POLICY.replace(f'["{H1}/32"]', f'["{H2}/32"]'), lambda a: a["prefixes"] != [f"{H1}/32"]
    )
    assert clean.alice()["prefixes"] == [f"{H2}/32"]
    assert clean.call("POST", "/netserv/sessions", flow(H1, H3), who="alice").status == 403
    clean.reload(POLICY + "\n[requesters.carol]\nmax_session = 1\n")
    log, deadline = clean.controller.logfile, time.monotonic() + 10
    while "the policy in use stays" not in log.read_text():
        assert time.monotonic() < deadline, "the bad file was not reported"
        time.sleep(0.2)
    assert "line 17: requesters.carol.max_session: unknown key" in log.read_text()
    assert clean.alice()["prefixes"] == [f"{H2}/32"]
    assert clean.call("POST", "/netserv/sessions", flow(H2, H3), who="alice").status == 201


def test_a_bad_policy_file_stops_the_controller_with_one_message(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('[requesters.alice]\nprefixes = ["10.0.0.1/8"]\nmodules = "all"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "--policy", str(bad)]
        + ["--rest-port", str(free_port()), "--of-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"netserv controller: policy file {bad} line 2: requesters.alice.prefixes:"
        " '10.0.0.1/8' is not an address prefix: 10.0.0.1/8 has host bits set"
    ]
