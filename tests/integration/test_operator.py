"""What an operator does by hand beside a topology: start an agent, bring a module."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from signaling.client import NetServClient
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, stop_process, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

NETSERV = Path(sys.executable).with_name("netserv")  # the command the README shows
FRAMES = 60


def _agent_line(switch: Any, url: str) -> list[str]:
    """Return the README's `netserv agent ...` line for `switch`'s node."""
    return [
        str(NETSERV),
        "agent",
        "--dpid",
        "1",
        "--iface",
        switch.agent_iface,
        "--switch-port",
        switch.agent_port_name,
        "--controller",
        url,
    ]


def _node(client: NetServClient, dpid: str) -> dict[str, Any]:
    return next(n for n in client.nodes() if n["dpid"] == dpid)


def _counted(client: NetServClient, session_id: int) -> dict[str, Any]:
    return client.stats(session_id)["stats"]["modules"][0]["stats"]


def _served(src: Any, dst: Any) -> dict[str, object]:
    return {"ipv4_src": src.IP(), "ipv4_dst": dst.IP(), "udp_dst": 9000}


def test_a_second_agent_for_a_node_is_refused_and_no_frame_is_doubled(
    unique_prefix: str, tmp_path: Path
) -> None:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path) as net:
            client = NetServClient(ctl.url)
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            first = _node(client, switch.dpid)["agent"]
            agent_pid = switch.agent_pid
            h1, h2 = net.hosts
            warm_up((h1, h2))
            session = client.setup(_served(h1, h2), module="counter", lifetime=120)
            second = subprocess.Popen(
                _agent_line(switch, ctl.url),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                try:
                    exited = second.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    exited = None  # still running beside the first: what must not happen
                with Receiver(h2) as rx:
                    send_udp(h1, h2, 9000, FRAMES)
                got, counted = rx.got(h1, 9000), _counted(client, session["id"])["packets"]
                listed = _node(client, switch.dpid)
            finally:
                stop_process(second)
            _, err = second.communicate()
    assert got == FRAMES and counted == FRAMES
    assert listed["ready"] and listed["agent"]["boot_id"] == first["boot_id"]
    assert exited not in (None, 0)
    # Its supervisor logs that it started it and that it exited; the agent says why.
    (line,) = [line for line in err.strip().splitlines() if "refused" in line]
    assert "already has a live agent" in line
    assert f"pid {agent_pid}" in line and first["url"] in line


def test_an_agent_restarted_at_once_takes_over_before_the_timeout(
    unique_prefix: str, tmp_path: Path
) -> None:
    dead_after = 60.0  # far longer than the test waits: the restart must not wait it out
    with ControllerProcess(tmp_path / "controller.log", agent_dead_after=dead_after) as ctl:
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path) as net:
            client = NetServClient(ctl.url)
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            crashed = _node(client, switch.dpid)["agent"]["boot_id"]
            h1, h2 = net.hosts
            warm_up((h1, h2))
            session = client.setup(_served(h1, h2), module="counter", lifetime=120)
            # Its supervisor too, which would start it again: here the operator does.
            agent_pid = switch.agent_pid
            os.kill(switch.supervisor_pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # it may stop alone, left alone
                os.kill(agent_pid, signal.SIGKILL)
            started = time.monotonic()
            restarted = subprocess.Popen(
                _agent_line(switch, ctl.url),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                while _node(client, switch.dpid)["agent"]["boot_id"] == crashed:
                    assert restarted.poll() is None, "the restarted agent was refused"
                    assert time.monotonic() - started < 15, "the restarted agent was not taken"
                    time.sleep(0.2)
                with Receiver(h2) as rx:
                    send_udp(h1, h2, 9000, FRAMES)
                got, counted = rx.got(h1, 9000), _counted(client, session["id"])["packets"]
            finally:
                stop_process(restarted)
    assert time.monotonic() - started < dead_after
    assert got == FRAMES and counted == FRAMES


TALLY_MANIFEST = """\
name = "tally"
version = "0.1.0"
summary = "Counts a flow's frames up to a size and above it"
entry = "module:Tally"

[params.small]
type = "int"
default = 128
help = "frames of at most this many bytes count as small"
"""
TALLY_CODE = """\
from nodes.module_api import ServiceModule, Verdict


class Tally(ServiceModule):
    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.small_limit = params["small"]
        self.small = self.large = 0

    def process(self, frame: memoryview) -> Verdict:
        if len(frame) <= self.small_limit:
            self.small += 1
        else:
            self.large += 1
        return Verdict.PASS

    def stats(self) -> dict:
        return {"small": self.small, "large": self.large}
"""


def test_a_module_kept_outside_the_repository_serves_a_session(
    unique_prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path / "my-modules" / "tally"
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(TALLY_MANIFEST)
    (folder / "module.py").write_text(textwrap.dedent(TALLY_CODE))
    mine = [tmp_path / "my-modules"]
    with ControllerProcess(tmp_path / "controller.log", module_path=mine) as ctl:
        client = NetServClient(ctl.url)
        offered = {m["name"] for m in client.modules()["modules"]}
        assert {"tally", "counter"} <= offered  # the shipped modules are still there
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(
            topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path, module_path=mine
        ) as net:
            wait_connected(net)
            wait_ready(client, [net.switches[0].dpid])
            h1, h2 = net.hosts
            warm_up((h1, h2))
            session = client.setup(
                _served(h1, h2), module="tally", params={"small": 100}, lifetime=60
            )
            with Receiver(h2) as rx:
                send_udp(h1, h2, 9000, 30, size=64)
                send_udp(h1, h2, 9000, 20, size=400)
            got, counted = rx.got(h1, 9000), _counted(client, session["id"])
    assert got == 50
    assert counted == {"small": 30, "large": 20}
