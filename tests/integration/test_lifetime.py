"""Long lifetimes on real parts: the detour's hard timeout is a capped safety net, re-armed.

OpenFlow's hard timeout is a 16-bit field (at most 65,535 s), while a session may live a
day (86,400 s). The controller caps the timer and re-adds the identical flow before it
runs out, which restarts the timer and keeps the flow's counters.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller.requests import MAX_LIFETIME
from controller.tables import HARD_TIMEOUT_CAP, HARD_TIMEOUT_CAP_ENV
from signaling.client import NetServClient
from tests.agents import call_agent
from tools import ovs
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

SMALL_CAP = 6  # seconds: the controller re-arms it every few seconds


class Node:
    def __init__(self, net: Any, controller: ControllerProcess) -> None:
        self.net, self.controller = net, controller
        self.client = NetServClient(controller.url)
        self.switch = net.switches[0]
        self.h1, self.h2, self.h3 = net.hosts

    def create(self, lifetime: int) -> dict[str, Any]:
        """POST a counter session on h1 → h2 UDP 9000; return its reply (asserting 201)."""
        body = {
            "match": {"ipv4_src": self.h1.IP(), "ipv4_dst": self.h2.IP(), "udp_dst": 9000},
            "module": "counter",
            "lifetime": lifetime,
        }
        req = urllib.request.Request(
            self.controller.url + "/netserv/sessions", data=json.dumps(body).encode(), method="POST"
        )
        req.add_header("Authorization", f"Bearer {self.controller.token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        assert status == 201, raw[:500]
        return json.loads(raw)

    def detour(self, session: dict[str, Any]) -> str:
        (flow,) = ovs.dump_flows(self.switch.name, int(session["cookie"], 16))
        return flow

    def agent(self) -> dict[str, Any]:
        return call_agent(self.client, self.switch)

    def send(self, count: int) -> int:
        """Send `count` frames on the session's flow; return how many h2 received."""
        with Receiver(self.h2) as rx:
            send_udp(self.h1, self.h2, 9000, count)
        return rx.got(self.h1, 9000)

    def counted(self, session: dict[str, Any]) -> int:
        return self.client.stats(session["id"])["stats"]["modules"][0]["stats"]["packets"]

    def torn_down_cleanly(self, session: dict[str, Any]) -> dict[str, Any]:
        final = self.client.teardown(session["id"])
        assert final["state"] == "ended"
        assert ovs.dump_flows(self.switch.name, int(session["cookie"], 16)) == []
        agent = self.agent()
        assert agent["sessions"] == [] and agent["modules_loaded"] == {}
        assert self.client.sessions() == []
        return final


@contextmanager
def netserv_node(tmp_path: Path, prefix: str) -> Iterator[Node]:
    with ControllerProcess(tmp_path / "controller.log") as controller:
        topo = SingleSwitchTopo(k=3, prefix=prefix)
        with netserv_network(
            topo, controller=controller.of_addr, rest_url=controller.url, rundir=tmp_path
        ) as net:
            wait_connected(net)
            node = Node(net, controller)
            wait_ready(node.client, [node.switch.dpid])
            warm_up((node.h1, node.h2))
            yield node


def field(flow: str, name: str) -> float:
    match = re.search(rf"\b{name}=([0-9.]+)", flow)
    assert match, f"no {name} in {flow}"
    return float(match.group(1))


def test_a_day_long_session_works_end_to_end(tmp_path: Path, unique_prefix: str) -> None:
    with netserv_node(tmp_path, unique_prefix) as node:
        session = node.create(MAX_LIFETIME)
        assert session["state"] == "active" and session["lifetime"] == MAX_LIFETIME
        assert field(node.detour(session), "hard_timeout") == HARD_TIMEOUT_CAP
        assert node.send(40) == 40
        assert node.counted(session) == 40
        assert field(node.detour(session), "n_packets") == 40

        refreshed = node.client.refresh(session["id"], lifetime=80_000)
        assert refreshed["state"] == "active" and refreshed["lifetime"] == 80_000
        assert 79_990 < refreshed["expires_in"] <= 80_000
        flow = node.detour(session)  # re-added: its timer restarted, its counters kept
        assert field(flow, "hard_timeout") == HARD_TIMEOUT_CAP and field(flow, "n_packets") == 40
        assert field(flow, "duration") < 5

        final = node.torn_down_cleanly(session)
        assert final["ended"] == "teardown" and final["stats"]["packets"] == 40


def test_the_controller_rearms_the_capped_timer_and_the_flow_keeps_its_counters(
    tmp_path: Path, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HARD_TIMEOUT_CAP_ENV, str(SMALL_CAP))  # read by the controller we start
    with netserv_node(tmp_path, unique_prefix) as node:
        session = node.create(MAX_LIFETIME)
        assert field(node.detour(session), "hard_timeout") == SMALL_CAP
        assert node.send(25) == 25

        # Watch the flow for two and a half caps: always there, counters kept, and its
        # age (duration) falling back to zero at each re-arm, before the cap runs out.
        ages, deadline = [], time.monotonic() + 2.5 * SMALL_CAP
        while time.monotonic() < deadline:
            flows = ovs.dump_flows(node.switch.name, int(session["cookie"], 16))
            assert len(flows) == 1, "the detour lapsed between re-arms"
            assert field(flows[0], "n_packets") == 25
            assert field(flows[0], "hard_timeout") == SMALL_CAP
            ages.append(field(flows[0], "duration"))
            time.sleep(0.3)
        assert max(ages) < SMALL_CAP
        rearms = sum(1 for a, b in zip(ages, ages[1:], strict=False) if b < a)
        assert rearms >= 2, ages

        assert node.send(25) == 25  # still detoured through the agent, still counted
        assert node.counted(session) == 50
        assert field(node.detour(session), "n_packets") == 50
        assert [s["id"] for s in node.client.sessions()] == [session["id"]]
        assert "dropped its detour early" not in (tmp_path / "controller.log").read_text()

        node.torn_down_cleanly(session)
