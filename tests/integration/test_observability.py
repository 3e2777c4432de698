"""What operators watch, on real parts: the Prometheus endpoints, the web view and traces.

One controller and one single-switch node serve every test here (module scope), each
test ending the sessions it made.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from signaling.client import NetServClient
from tools.scenario import send_udp, warm_up
from topo.controller import ControllerProcess, free_port, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo


@dataclass
class Site:
    controller: ControllerProcess
    client: NetServClient
    switch: Any
    hosts: list[Any]
    agent_metrics: str

    def controller_metrics(self) -> str:
        return f"http://127.0.0.1:{self.controller.metrics_port}/metrics"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("observe")
    agent_port = free_port()
    prefix = "o" + tmp.name[-3:].replace("_", "x")
    with ControllerProcess(tmp / "controller.log", metrics_port=free_port()) as controller:
        with netserv_network(
            SingleSwitchTopo(k=3, prefix=prefix),
            controller=controller.of_addr,
            rest_url=controller.url,
            rundir=tmp,
            agent_args=["--metrics-listen", f"127.0.0.1:{agent_port}"],
        ) as net:
            wait_connected(net)
            switch = net.switches[0]
            client = controller.client()
            wait_ready(client, [switch.dpid])
            warm_up((net.hosts[0], net.hosts[1]), (net.hosts[2], net.hosts[1]))
            yield Site(
                controller,
                client,
                switch,
                net.hosts,
                f"http://127.0.0.1:{agent_port}/metrics",
            )


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of the endpoint at `url`: (name, labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """Return the sample `name` with exactly `labels`; fail naming what there is."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels}: {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def test_both_endpoints_count_a_sessions_traffic(site: Site) -> None:
    h1, h2, _ = site.hosts
    match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
    session = site.client.setup(match, modules=["null", "counter", "ratelimit"], lifetime=60)
    sid, dpid = str(session["id"]), site.switch.dpid
    try:
        send_udp(h1, h2, 9000, 64)
        send_udp(h1, h2, 9001, 10)  # not the session's: never reaches the agent
        time.sleep(0.3)
        agent = scrape(site.agent_metrics)
        ctl = scrape(site.controller_metrics())
    finally:
        site.client.teardown(session["id"])
    for pos, module in enumerate(("null", "counter")):
        labels = {"session": sid, "position": str(pos), "module": module}
        assert value(agent, "netserv_module_frames_total", **labels) == 64
        assert value(agent, "netserv_module_dropped_total", **labels) == 0
        assert value(agent, "netserv_module_frame_seconds_count", **labels) == 1  # 1 in 64
        assert value(agent, "netserv_module_frame_seconds_sum", **labels) > 0
    own = {"session": sid, "position": "2", "module": "ratelimit", "metric": "passed"}
    assert value(agent, "netserv_module_counter_total", **own) == 64  # its ctx.counter
    assert value(agent, "netserv_session_frames_total", session=sid) == 64
    assert value(agent, "netserv_session_returned_total", session=sid) == 64
    assert value(agent, "netserv_agent_frames_received_total") >= 64
    assert value(agent, "netserv_agent_registered") == 1
    assert value(agent, "netserv_agent_heartbeat_age_seconds") < 5
    assert value(agent, "netserv_agent_module_users", module="counter", version="1.0.0",
                 tier="trusted") == 1  # fmt: skip
    assert value(ctl, "netserv_sessions", state="active") == 1
    assert value(ctl, "netserv_sessions", state="suspended") == 0
    assert value(ctl, "netserv_openflow_messages_sent_total", dpid=dpid, type="flow_add") >= 1
    assert value(ctl, "netserv_packet_ins_total", dpid=dpid, kind="forwarding") >= 1
    assert value(ctl, "netserv_agent_up", dpid=dpid) == 1
    assert value(ctl, "netserv_agent_heartbeat_age_seconds", dpid=dpid) < 5
    assert value(ctl, "netserv_node_ready", dpid=dpid) == 1
    after = scrape(site.controller_metrics())
    assert value(after, "netserv_sessions", state="active") == 0
    deletes = value(after, "netserv_openflow_messages_sent_total", dpid=dpid, type="flow_delete")
    assert deletes >= 1


def rule_outputs(one_pass: dict[str, Any]) -> list[str]:
    return [a for rule in one_pass["rules"] for a in rule["actions"] if a.startswith("output:")]


def test_a_trace_shows_the_detour_of_a_served_flow_and_none_for_another(site: Site) -> None:
    h1, h2, _ = site.hosts
    match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
    session = site.client.setup(match, modules=["null", "counter"], lifetime=60)
    try:
        send_udp(h1, h2, 9000, 20)
        served = site.client.trace(match)
        other = site.client.trace({**match, "udp_dst": 9001})
    finally:
        site.client.teardown(session["id"])
    (hop,) = served["hops"]
    agent_port = int(
        next(n for n in site.client.nodes() if n["dpid"] == site.switch.dpid)["agent_port"]
    )
    assert hop["traced"] and hop["bridge"] == site.switch.name
    first, back = hop["passes"]
    assert first["rules"][0]["session"] == session["id"]
    assert rule_outputs(first) == [f"output:{agent_port}"]
    assert back["in_port"] == agent_port and rule_outputs(back) == [f"output:{hop['out_port']}"]
    detour = hop["detour"]
    assert detour["session"] == session["id"] and detour["state"] == "active"
    assert [(m["name"], m["frames"], m["dropped"], m["verdict"]) for m in detour["modules"]] == [
        ("null", 20, 0, "forward"),
        ("counter", 20, 0, "forward"),
    ]
    (plain,) = other["hops"]
    assert plain["detour"] is None and len(plain["passes"]) == 1
    assert not any("session" in rule for rule in plain["passes"][0]["rules"])
    assert rule_outputs(plain["passes"][0]) == [f"output:{plain['out_port']}"]


def chromium(tmp: Path, url: str, *args: str) -> str:
    """Return what headless Chromium prints for `url` (after its scripts ran a while)."""
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    argv += [f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=4000", *args, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_with_token(tmp: Path, site: Site) -> str:
    """Return a file:// page that opens the web view with the operator's token in its
    fragment: the token goes through a root-only file, not Chromium's command line."""
    page = tmp / "open.html"
    target = f"{site.controller.url}/netserv/ui#token={site.controller.token}"
    page.touch(mode=0o600)
    page.write_text(f"<script>location.replace({json.dumps(target)})</script>")
    return page.as_uri()


def session_row(dom: str, session_id: int) -> str:
    found = re.search(rf'<tr data-session="{session_id}">(.*?)</tr>', dom, re.S)
    assert found, f"no row of session {session_id} in the page: {dom[:3000]}"
    return found.group(1)


def packets(row: str) -> int:
    return int(re.search(r'class="count packets">(\d+)<', row).group(1))


def test_the_web_view_shows_a_session_and_its_counters_move(site: Site, tmp_path: Path) -> None:
    h1, h2, _ = site.hosts
    match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
    session = site.client.setup(match, module="counter", lifetime=60)
    try:
        send_udp(h1, h2, 9000, 10)
        url = page_with_token(tmp_path, site)
        first = session_row(chromium(tmp_path, url, "--dump-dom"), session["id"])
        send_udp(h1, h2, 9000, 15)
        time.sleep(0.5)
        shot = tmp_path / "view.png"
        dom = chromium(
            tmp_path, url, "--dump-dom", f"--screenshot={shot}", "--window-size=1200,900"
        )
    finally:
        site.client.teardown(session["id"])
    second = session_row(dom, session["id"])
    assert "udp_dst=9000" in first and f"ipv4_src={h1.IP()}" in first and "active" in first
    assert (packets(first), packets(second)) == (10, 25)
    assert f'data-dpid="{site.switch.dpid}"' in dom  # the node, in the table and the picture
    assert f">{h2.IP()}<" in dom  # a host the topology located
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
