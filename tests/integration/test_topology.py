"""Links, host locations and paths on a real chain of three NetServ switches."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller.topology import PROBE_INTERVAL
from signaling.client import NetServClient
from tools import ovs
from tools.scenario import Receiver, send_udp
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import LinearTopo

DISCOVERY_TIMEOUT = 10.0


def get(url: str, path: str) -> tuple[int, Any]:
    """Return (status, JSON body) of GET `path`, errors included."""
    try:
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, check: Any, timeout: float = DISCOVERY_TIMEOUT) -> Any:
    """Return check()'s first true value; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ControllerProcess]]:
    """h1-s1-s2-s3-h3 (one host per switch), every switch a NetServ node with its agent."""
    tmp = tmp_path_factory.mktemp("chain")
    prefix = "t" + secrets.token_hex(2)[:3]
    with ControllerProcess(tmp / "controller.log") as ctl:
        topo = LinearTopo(n=3, k=1, prefix=prefix)
        with netserv_network(topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp) as net:
            wait_connected(net)
            wait_ready(NetServClient(ctl.url), [s.dpid for s in net.switches])
            yield net, ctl


def links_of(view: dict[str, Any]) -> set[tuple[str, int, str, int]]:
    return {
        (k["src"]["dpid"], k["src"]["port"], k["dst"]["dpid"], k["dst"]["port"])
        for k in view["links"]
    }


def test_links_hosts_and_the_path_of_a_flow_are_discovered(chain: tuple[Any, Any]) -> None:
    net, ctl = chain
    s1, s2, s3 = (s.dpid for s in net.switches)
    h1, h2, h3 = net.hosts
    both_ways = {(s1, 2, s2, 2), (s2, 2, s1, 2), (s2, 3, s3, 2), (s3, 2, s2, 3)}

    def discovered() -> dict[str, Any] | None:
        view = get_topology(ctl)
        return view if links_of(view) == both_ways else None

    view = wait_for("both links, both ways", discovered)
    assert [(s["dpid"], s["connected"], s["ready"]) for s in view["switches"]] == [
        (s1, True, True),
        (s2, True, True),
        (s3, True, True),
    ]
    assert view["hosts"] == [] and view["probes_refused"] == 0  # no host has sent a frame
    status, body = get(ctl.url, f"/netserv/topology/path?src={h1.IP()}&dst={h3.IP()}")
    assert status == 503
    assert body["error"] == f"host {h1.IP()} not located yet; it must send a frame first"

    assert " 0% packet loss" in h1.cmd(f"ping -c 2 -i 0.2 -W 2 {h3.IP()}")
    hosts = {h["ipv4"][0]: (h["mac"], h["dpid"], h["port"]) for h in get_topology(ctl)["hosts"]}
    assert hosts == {h1.IP(): (h1.MAC(), s1, 1), h3.IP(): (h3.MAC(), s3, 1)}
    forth = get(ctl.url, f"/netserv/topology/path?src={h1.IP()}&dst={h3.IP()}")[1]
    back = get(ctl.url, f"/netserv/topology/path?src={h3.IP()}&dst={h1.IP()}")[1]
    assert [(h["dpid"], h["in_port"], h["out_port"]) for h in forth["path"]] == [
        (s1, 1, 2),
        (s2, 2, 3),
        (s3, 2, 1),
    ]
    assert [h["dpid"] for h in back["path"]] == [s3, s2, s1]
    assert forth["netserv_nodes"] == [s1, s2, s3]
    assert back["netserv_nodes"] == [s3, s2, s1]
    status, body = get(ctl.url, f"/netserv/topology/path?src={h1.IP()}&dst={h2.IP()}")
    assert status == 503 and body["error"].startswith(f"host {h2.IP()} not located yet")


def get_topology(ctl: ControllerProcess) -> dict[str, Any]:
    status, body = get(ctl.url, "/netserv/topology")
    assert status == 200, body
    return body


@pytest.mark.parametrize("query", ["", "?src=10.0.0.1", "?src=10.0.0.1&dst=h3", "?src=1&dst=2&x=3"])
def test_a_path_query_without_two_addresses_is_refused(chain: tuple[Any, Any], query: str) -> None:
    status, body = get(chain[1].url, "/netserv/topology/path" + query)
    assert status == 400
    assert "takes src and dst" in body["error"] or "not an IPv4 address" in body["error"]


def test_probes_never_reach_an_agent(chain: tuple[Any, Any]) -> None:
    net, _ = chain
    switch = net.switches[1]
    before = ovs.port_counters(switch.name, switch.agent_port_name)["tx_packets"]
    time.sleep(2 * PROBE_INTERVAL + 0.5)  # two rounds of probes out of every other port
    assert ovs.port_counters(switch.name, switch.agent_port_name)["tx_packets"] == before


def test_hosts_at_either_end_of_the_chain_reach_each_other(chain: tuple[Any, Any]) -> None:
    net, _ = chain
    h1, h2, h3 = net.hosts
    assert " 0% packet loss" in h1.cmd(f"ping -c 3 -i 0.2 -W 2 {h3.IP()}")
    assert " 0% packet loss" in h3.cmd(f"ping -c 3 -i 0.2 -W 2 {h2.IP()}")
    with Receiver(h3) as rx:
        send_udp(h1, h3, 9000, 50)
    assert rx.got(h1, 9000) == 50
