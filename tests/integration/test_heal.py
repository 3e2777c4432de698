"""A node agent killed or stopped under a steady flow, on real OVS, agents and hosts:
each session's failure policy within a second, no stale frame, and the sessions
served again once the agent is back."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes.bundle import SHIPPED_MODULES
from signaling.client import NetServClient
from tests.agents import call_agent
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

RATE = 400.0  # frames per second: a steady, moderate stream
POLICY_WITHIN = 1.0  # seconds from the failure to the policy applied


@pytest.fixture
def modules(tmp_path: Path) -> Path:
    """A module folder with `guard`: a counter whose flow is dropped while its agent is down."""
    folder = tmp_path / "modules"
    shutil.copytree(SHIPPED_MODULES / "counter", folder / "guard")
    manifest = folder / "guard" / "manifest.toml"
    text = manifest.read_text().replace('name = "counter"', 'name = "guard"\nfailure = "closed"')
    manifest.write_text(text)
    return folder


@pytest.fixture
def node(modules: Path, unique_prefix: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with ControllerProcess(tmp_path / "controller.log", module_path=[modules]) as ctl:
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(
            topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path, module_path=[modules]
        ) as net:
            client = ctl.client()
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            h1, h2 = net.hosts
            warm_up((h1, h2))
            yield {"client": client, "switch": switch, "h1": h1, "h2": h2, "log": tmp_path}


def served(h1: Any, h2: Any, port: int) -> dict[str, object]:
    return {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": port}


def counted(client: NetServClient, session_id: int) -> int:
    return client.stats(session_id)["stats"]["modules"][0]["stats"]["packets"]


def stream(h1: Any, h2: Any, port: int, seconds: float) -> tuple[threading.Thread, list[int]]:
    """Start sending `seconds` of numbered frames at RATE in the background."""
    sent: list[int] = []
    count = int(seconds * RATE)
    thread = threading.Thread(target=lambda: sent.append(send_udp(h1, h2, port, count, RATE)))
    thread.start()
    return thread, sent


def wait_state(client: NetServClient, session_id: int, state: str, timeout: float = 20) -> float:
    """Wait until the session is in `state`; return the time of day it was seen so."""
    deadline = time.monotonic() + timeout
    while client.session(session_id)["state"] != state:
        assert time.monotonic() < deadline, f"session {session_id} never became {state}"
        time.sleep(0.05)
    return time.time()


def wait_restarted(client: NetServClient, boot_id: str, timeout: float = 20) -> None:
    """Wait until the node's agent registered with another boot id than `boot_id`."""
    deadline = time.monotonic() + timeout
    while (client.nodes()[0]["agent"] or {}).get("boot_id") in (boot_id, None):
        assert time.monotonic() < deadline, "the agent was not started again"
        time.sleep(0.05)


def longest_gap(arrivals: list[tuple[float, int]], start: float, end: float) -> float:
    """Return the longest time without an arrival between `start` and `end` (time of day)."""
    times = [start] + [t for t, _ in arrivals if start < t < end] + [end]
    return max(b - a for a, b in zip(times, times[1:], strict=False))


def test_a_killed_agent_fails_open_at_once_and_its_restart_serves_the_session_again(node):
    client, switch, h1, h2 = node["client"], node["switch"], node["h1"], node["h2"]
    session = client.setup(served(h1, h2, 9000), module="counter", lifetime=120)
    before = client.nodes()[0]["agent"]["boot_id"]
    with Receiver(h2, arrivals=True) as rx:
        sender, sent = stream(h1, h2, 9000, 8)
        time.sleep(2)
        assert counted(client, session["id"]) > 0
        killed = time.time()
        os.kill(switch.agent_pid, signal.SIGKILL)
        wait_restarted(client, before)  # by its supervisor
        back = wait_state(client, session["id"], "active", timeout=20)
        sender.join(60)
    arrivals = rx.arrived(h1, 9000)
    gap = longest_gap(arrivals, killed - 0.5, killed + 4)
    assert gap < POLICY_WITHIN, f"no frame for {gap:.2f} s after the kill"
    assert sent == [int(8 * RATE)] and len(arrivals) >= sent[0] - 0.2 * RATE  # the frames
    # the dead agent's queue held are the only ones lost
    assert counted(client, session["id"]) > 0  # the new agent's chain counts
    assert back - killed < 10


def test_a_stopped_agent_fails_open_within_a_second_and_sends_no_stale_frame(node):
    client, switch, h1, h2 = node["client"], node["switch"], node["h1"], node["h2"]
    session = client.setup(served(h1, h2, 9000), module="counter", lifetime=120)
    pid = switch.agent_pid
    with Receiver(h2, arrivals=True) as rx:
        sender, sent = stream(h1, h2, 9000, 9)
        time.sleep(2)
        stopped = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.2)
            before = client.session(session["id"])["state"]
            wait_state(client, session["id"], "suspended", timeout=2)
            time.sleep(3 - (time.time() - stopped))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.time()
        wait_state(client, session["id"], "active", timeout=10)
        during = counted(client, session["id"])
        sender.join(60)
    time.sleep(1)
    stats = client.stats(session["id"])["stats"]
    arrivals = rx.arrived(h1, 9000)
    gap = longest_gap(arrivals, stopped - 0.5, resumed + 2)
    assert gap < POLICY_WITHIN, f"no frame for {gap:.2f} s after the stop"
    numbers = [n for t, n in arrivals if t > stopped]
    assert numbers == sorted(numbers), "a frame arrived after one sent later (stale)"
    first_before = max(n for t, n in arrivals if t < stopped)
    assert all(n > first_before for t, n in arrivals if t > resumed)
    assert stats["stale"] > 0 and stats["node"]["stale"] >= stats["stale"]
    assert switch.agent_pid == pid  # it came back by itself: not restarted
    assert stats["modules"][0]["stats"]["packets"] > during  # its chain counts again
    assert before in ("active", "suspended") and sent == [int(9 * RATE)]


def test_a_fail_closed_session_is_dropped_while_its_agent_is_down_and_served_after(node):
    client, switch, h1, h2 = node["client"], node["switch"], node["h1"], node["h2"]
    guarded = client.setup(served(h1, h2, 9001), module="guard", lifetime=120)
    pid = switch.agent_pid
    with Receiver(h2, arrivals=True) as rx:
        sender, _ = stream(h1, h2, 9001, 14)
        time.sleep(2)
        stopped = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(3)
        finally:
            os.kill(pid, signal.SIGCONT)
        continued = time.time()
        wait_state(client, guarded["id"], "active", timeout=10)
        time.sleep(1.5)
        boot_id = client.nodes()[0]["agent"]["boot_id"]
        killed = time.time()
        os.kill(switch.agent_pid, signal.SIGKILL)
        wait_restarted(client, boot_id)
        restarted = wait_state(client, guarded["id"], "active", timeout=20)
        sender.join(60)
    arrivals = [t for t, _ in rx.arrived(h1, 9001)]
    assert not [t for t in arrivals if stopped + POLICY_WITHIN < t < continued]  # dropped
    assert [t for t in arrivals if continued < t < killed]  # served again after the hang
    assert not [t for t in arrivals if killed + POLICY_WITHIN < t < restarted - 0.5]
    assert [t for t in arrivals if t > restarted]  # and after the restart
    assert switch.agent_pid != pid
    assert counted(client, guarded["id"]) > 0


def test_a_supervisor_stopped_with_its_node_leaves_no_agent(node):
    switch = node["switch"]
    supervisor, agent = switch.supervisor_pid, switch.agent_pid
    assert supervisor != agent and call_agent(node["client"], switch)["pid"] == agent
    assert switch.stop_agent() == 0
    for pid in (supervisor, agent):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
