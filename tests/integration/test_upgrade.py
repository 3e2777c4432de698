"""Hot upgrade on real parts: a module published in versions through the repository moves
to a new version in the middle of a stream, in each tier.

`keep` runs in the agent (the node trusts it), `keepiso` in a worker process of its
own. Each counts its frames and hands the count over (tests/bundles.py `keeper`).
About 1 kpps (from a UDP socket paced by the clock) go through a session while it is
upgraded to 2.0.0 and then asked to move to a 3.0.0 whose import_state raises: every
frame reaches the receiver once and in order, 2.0.0's count goes on from 1.0.0's (the
total is the frames sent), the refused 3.0.0 changes nothing, and the session shows 2.0.0.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodes.archive import pack
from signaling.client import ClientError, NetServClient
from tests.bundles import REFUSES, keeper, module_folder
from tests.integration.test_sandbox import match
from tools.procs import REPO, python_env, stop_process
from tools.scenario import Receiver, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.node import NetServSwitch
from topo.topos import SingleSwitchTopo

# A moderate stream: the switch's userspace datapath drops a burst of a few hundred
# frames on a loaded machine (its port's socket buffer), so the sender never bursts.
FRAMES, RATE, BURST = 3000, 1000.0, 16


@dataclass
class Node:
    net: Any
    client: NetServClient
    folder: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    folder = tmp_path_factory.mktemp("upgrade")
    argv = NetServSwitch.agent_argv
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            NetServSwitch, "agent_argv", lambda self: argv(self) + ["--trusted", "shipped,keep"]
        )
        with ControllerProcess(folder / "controller.log") as ctl:
            topo = SingleSwitchTopo(k=2, prefix="u" + secrets.token_hex(2)[:3])
            with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=folder) as net:
                wait_connected(net)
                client = ctl.client()
                wait_ready(client, [net.switches[0].dpid])
                warm_up(net.hosts)
                yield Node(net, client, folder)


def start_sending(src: Any, dst: Any, port: int) -> Any:
    """Start sending FRAMES numbered UDP datagrams at RATE from `src` in the background,
    paced by the clock; return the process."""
    argv = [sys.executable, "-m", "tests.integration.udpflood", "--to", dst.IP()]
    argv += ["--port", str(port), "--rate", str(RATE), "--count", str(FRAMES)]
    argv += ["--payload-hex", "00" * 18, "--numbered", "--max-burst", str(BURST)]  # 64 bytes
    return src.popen(argv, cwd=str(REPO), env=python_env(), stdout=-1, stderr=-1, text=True)


def publish(node: Node, name: str, version: str, take: str | None = None) -> None:
    code = keeper(version) if take is None else keeper(version, take)
    folder = module_folder(node.folder / f"{name}-{version}", name, version, code=code)
    node.client.publish(pack(folder))


def wait_for(what: Callable[[], bool], sender: Any, timeout: float = 10.0) -> None:
    """Wait until `what()` holds while `sender` (a process) sends."""
    deadline = time.monotonic() + timeout
    while not what():
        if sender.poll() is not None:
            _, err = sender.communicate()
            pytest.fail(f"the sender ended first ({sender.returncode}): {err.strip()[-300:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("name, tier", [("keep", "trusted"), ("keepiso", "isolated")])
def test_a_module_moves_to_a_new_version_mid_stream_with_its_state_and_no_frame_lost(
    node: Node, name: str, tier: str
) -> None:
    h1, h2 = node.net.hosts
    port = 9300 if tier == "trusted" else 9301
    for version in ("1.0.0", "2.0.0"):
        publish(node, name, version)
    session = node.client.setup(
        match(h1, h2, port), modules=[{"name": name, "version": "1.0.0"}], lifetime=120
    )
    sid = session["id"]

    def module() -> dict[str, Any]:
        return node.client.stats(sid)["stats"]["modules"][0]

    with Receiver(h2, arrivals=True) as rx:
        sender = start_sending(h1, h2, port)
        try:
            wait_for(lambda: module()["stats"]["frames"] > FRAMES // 4, sender)
            upgraded = node.client.upgrade(sid, name, "2.0.0")
            assert upgraded["modules"][0]["version"] == "2.0.0"
            seen = module()
            assert (seen["stats"]["version"], seen["tier"]) == ("2.0.0", tier)
            assert FRAMES // 4 < seen["stats"]["frames"] < FRAMES, "upgraded after the stream"

            publish(node, name, "3.0.0", REFUSES)
            with pytest.raises(ClientError) as refused:
                node.client.upgrade(sid, name)  # the newest: 3.0.0
            assert refused.value.status == 502
            assert "cannot read the state" in str(refused.value)
            assert node.client.session(sid)["modules"][0]["version"] == "2.0.0"
            _, err = sender.communicate(timeout=60)
            assert sender.returncode == 0, err
        finally:
            stop_process(sender)
    numbers = [n for _, n in rx.arrived(h1, port)]
    path = node.client.stats(sid)["path"]
    missing = sorted(set(range(FRAMES)) - set(numbers))
    assert numbers == list(range(FRAMES)), (missing[:20], path)  # every frame once, in order
    after = module()
    assert after["stats"] == {"frames": FRAMES, "version": "2.0.0"}
    assert after["state"] == "running"
    assert node.client.session(sid)["modules"][0]["version"] == "2.0.0"
    node.client.teardown(sid)
