"""The return-routability check on real parts: an off-path requester with a valid key
and the right to claim h2's flows, in a namespace of its own (h4), cannot take h2's
flow — whether it signals from its own address, spoofs h2's, or answers the CHALLENGE
with the cookie from the wrong port — and nothing is installed for it. (A legitimate
setup passing the check is test_onpath.py's first test.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import tables
from signaling.auth import sign
from signaling.codec import encode
from signaling.keyfile import make_key_file, read_key
from signaling.messages import ChallengeResponse, Setup
from signaling.values import Description, FlowFilter, ModuleRef
from tests.integration.test_onpath import REQUESTER, Net, PolicyController, flow
from tools import ovs
from tools.procs import REPO, python_env
from tools.scenario import warm_up
from topo.controller import ControllerProcess, stop_process, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

MALLORY = "mallory"
TIMEOUT = 3.0  # the controller's --routability-timeout, given as the default is


class CheckingController(PolicyController):
    def argv(self) -> list[str]:
        return [*super().argv(), "--routability-timeout", str(TIMEOUT)]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """Return alice's and mallory's key files. The policy: alice may claim h1's flows,
    mallory h2's (as if h2's operator had given it the right); both any module."""
    alice, mallory = tmp_path / "alice.key", tmp_path / "mallory.key"
    make_key_file(alice)
    make_key_file(mallory)
    (tmp_path / "policy.toml").write_text(
        f'[requesters."{REQUESTER}"]\nkeys = {{ 1 = "file:{alice.name}" }}\n'
        'prefixes = ["10.0.0.1/32"]\nmodules = "all"\n'
        f'[requesters.{MALLORY}]\nkeys = {{ 1 = "file:{mallory.name}" }}\n'
        'prefixes = ["10.0.0.2/32"]\nmodules = "all"\n'
    )
    return alice, mallory


@pytest.fixture
def quad(tmp_path: Path, keys, unique_prefix: str) -> Iterator[tuple[Net, ControllerProcess]]:
    with CheckingController(tmp_path / "controller.log", tmp_path / "policy.toml") as ctl:
        topo = SingleSwitchTopo(k=4, prefix=unique_prefix)
        with netserv_network(
            topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp_path
        ) as net:
            client = ctl.client()
            wait_connected(net)
            wait_ready(client, [net.switches[0].dpid])
            h1, h2, h3, h4 = net.hosts
            warm_up((h2, h3), (h4, h3))
            yield Net(net, client, keys[0]), ctl


def in_host(host: Any, *argv: str) -> Any:
    """Start `python -m tests.integration.rrpeer ARGV` in `host`; return it once ready."""
    proc = host.popen(
        [sys.executable, "-m", "tests.integration.rrpeer", *argv],
        cwd=str(REPO),
        env=python_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = proc.stdout.readline()
    assert json.loads(ready or "{}") == {"ready": True}, proc.stderr.read()
    return proc


def spoof(forger: Any, src: str, to: str, payload: bytes) -> None:
    """Have `forger` send `payload` to `to`'s signaling port as if from `src`."""
    forger.stdin.write(json.dumps({"src": src, "to": to, "payload": payload.hex()}) + "\n")
    forger.stdin.flush()
    assert json.loads(forger.stdout.readline())["sent"] > 0


def finish(proc: Any, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc)
    return proc.returncode, out, err


def test_an_off_path_requester_cannot_take_someone_elses_flow(quad, keys) -> None:
    net, controller = quad
    _, h2, h3, h4 = net.hosts
    switch = net.net.switches[0]
    flows = net.flows()
    mallory = {"requester": MALLORY, "key": keys[1]}
    # h2 makes no request, but listens where the CHALLENGE of a claim made elsewhere goes
    listener = in_host(h2, "listen", "--session", "c0ffee")
    forger = in_host(h4, "spoof")
    try:
        # 1. mallory, at h4, claims h2 -> h3 from its own address
        own = net.start_signal(h4, "setup", *flow(h2, h3, 9001), "--module", "null", **mallory)
        # 2. and spoofing h2's address
        setup = Setup(
            session_id=0x5900F,
            sequence=1,
            timestamp_ms=int(time.time() * 1000),
            nonce=bytes(range(16)),
            description=Description(
                MALLORY,
                FlowFilter(src=h2.IP(), dst=h3.IP(), protocol=17, dst_ports=9002),
                [ModuleRef("null")],
                60,
            ),
        )
        spoof(forger, h2.IP(), h3.IP(), sign(setup, read_key(keys[1], 1)))
        # 3. and answering the CHALLENGE with its cookie (which h2 saw) from h4's port
        argv = [*flow(h2, h3, 9003), "--module", "null", "--session", "c0ffee"]
        stolen = net.start_signal(h4, "setup", *argv, **mallory)
        seen = json.loads(listener.stdout.readline())  # h2 answered it a wrong cookie itself
        pending = [s for s in net.client.sessions() if s["requester"] == MALLORY]
        assert pending and {s["state"] for s in pending} == {"pending-routability"}
        for session in pending:  # held, with nothing in the switch
            assert ovs.dump_flows(switch.name, int(session["cookie"], 16)) == []
        answer = ChallengeResponse(
            session_id=0xC0FFEE,
            sequence=seen["sequence"],
            timestamp_ms=0,
            nonce=bytes.fromhex(seen["cookie"]),
        )
        spoof(forger, h2.IP(), seen["from"][0], encode(answer))
        for proc in (own, stolen):
            code, out, err = finish(proc)
            assert code == 1 and "304 NOT_ROUTABLE" in err, (out, err)
    finally:
        ended = finish(forger), finish(listener)
    assert [code for code, _, _ in ended] == [0, 0], ended
    deadline = time.monotonic() + TIMEOUT + 2  # the spoofed one's ERROR went to h2's address
    while net.client.sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert net.client.sessions() == [] and net.flows() == flows
    for sid in range(1, 4):  # the ids the three reservations took: no flow has their cookie
        assert ovs.dump_flows(switch.name, tables.session_cookie(sid)) == []
    assert net.refused(controller) == {"not_routable": 3}
    counts = net.counts(controller)
    assert counts["routability: challenged"] == counts["routability: failed"] == 3
    assert counts["dropped: a challenge-response that confirms nothing"] == 2  # cookie, port
    assert "routability: confirmed" not in counts
