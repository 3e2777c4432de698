"""Chains of modules built on the building blocks, on real parts: verdicts, rewrites, answers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signaling.client import NetServClient
from tools.procs import REPO, python_env, stop_process
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

# Counts UDP datagrams a socket on the host receives: the kernel checks each checksum.
UDP_LISTENER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
sock.settimeout(float(sys.argv[2]))
got = 0
try:
    while True:
        sock.recv(2048)
        got += 1
except TimeoutError:
    print(got, flush=True)
"""


@dataclass
class Node:
    net: Any
    client: NetServClient
    hosts: list[Any]


@pytest.fixture
def node(unique_prefix: str, tmp_path: Path) -> Iterator[Node]:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        topo = SingleSwitchTopo(k=3, prefix=unique_prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path) as net:
            client = NetServClient(ctl.url)
            wait_connected(net)
            wait_ready(client, [net.switches[0].dpid])
            h1, h2, h3 = net.hosts
            warm_up((h1, h2), (h3, h2), (h1, h3))
            yield Node(net, client, [h1, h2, h3])


def udp_match(src: Any, dst: Any, port: int = 9000) -> dict[str, object]:
    return {"ipv4_src": src.IP(), "ipv4_dst": dst.IP(), "udp_dst": port}


def udp_received(host: Any, port: int, idle: float = 3.0) -> Any:
    """Start counting datagrams to `port` on `host`; return the process once it listens."""
    argv = [sys.executable, "-c", UDP_LISTENER, str(port), str(idle)]
    proc = host.popen(argv, cwd=str(REPO), env=python_env(), stdout=-1, stderr=-1, text=True)
    if proc.stdout.readline().strip() != "ready":
        stop_process(proc)
        raise RuntimeError(f"listener on {host.name} did not start: {proc.stderr.read()}")
    return proc


def udp_errors(host: Any) -> int:
    """Return the UDP checksum errors the host's kernel counted (its own namespace's)."""
    lines = [
        ln.split() for ln in host.cmd("cat /proc/net/snmp").splitlines() if ln.startswith("Udp:")
    ]
    return int(dict(zip(lines[0], lines[1], strict=True))["InCsumErrors"])


def test_a_chain_of_three_runs_in_order_and_a_drop_in_the_middle_ends_it(node: Node) -> None:
    h1, h2, _ = node.hosts
    n = 300
    limit = {"rate": 50.0, "burst": 20, "per": "session"}
    session = node.client.setup(
        udp_match(h1, h2),
        modules=[
            {"name": "counter"},
            {"name": "ratelimit", "params": limit},
            {"name": "counter"},
        ],
        lifetime=60,
    )
    with Receiver(h2) as rx:
        assert send_udp(h1, h2, 9000, n) == n
    stats = node.client.stats(session["id"])["stats"]
    first, limiter, last = (m["stats"] for m in stats["modules"])
    assert [m["name"] for m in stats["modules"]] == ["counter", "ratelimit", "counter"]
    assert first["packets"] == stats["packets"] == n  # the first saw every frame
    assert limiter["passed"] + limiter["dropped"] == n and limiter["dropped"] > 0
    assert limiter["passed"] >= limit["burst"]
    # Frames the middle module dropped reached neither the third module nor the receiver.
    assert last["packets"] == limiter["passed"] == rx.got(h1, 9000)
    assert stats["dropped"] == limiter["dropped"] and stats["returned"] == limiter["passed"]
    assert stats["errors"] == 0


def test_a_rewritten_flow_reaches_the_new_destination_with_checksums_right(node: Node) -> None:
    h1, h2, h3 = node.hosts
    n = 50
    params = {"dst": h3.IP(), "dst_mac": h3.MAC(), "dport": 9001}
    session = node.client.setup(udp_match(h1, h2), module="rewrite", params=params, lifetime=60)
    errors = udp_errors(h3)
    listener = udp_received(h3, 9001)
    try:
        with Receiver(h2) as rx:
            assert send_udp(h1, h2, 9000, n) == n
        out, _ = listener.communicate(timeout=30)
    finally:
        stop_process(listener)
    assert int(out.strip()) == n  # h3's kernel took every datagram: the checksums are right
    assert udp_errors(h3) == errors
    assert rx.got(h1, 9000) == 0  # nothing went to the old destination
    stats = node.client.stats(session["id"])["stats"]
    assert stats["modules"][0]["stats"] == {"rewritten": n, "skipped": 0}
    assert stats["modified"] == stats["returned"] == n


def test_pings_to_an_address_nobody_has_are_answered_at_the_node(node: Node) -> None:
    h1, _, _ = node.hosts
    absent = "10.0.0.99"
    # No host answers for the address: h1 is told its MAC, so its pings go out at all.
    h1.cmd(f"ip neigh replace {absent} lladdr 02:00:00:00:00:99 dev {h1.defaultIntf().name}")
    out = h1.cmd(f"ping -c 3 -i 0.2 -W 2 {absent}")
    assert " 100% packet loss" in out
    match = {"ipv4_src": h1.IP(), "ipv4_dst": absent, "ip_proto": 1}
    session = node.client.setup(match, module="probe_responder", lifetime=60)
    out = h1.cmd(f"ping -c 5 -i 0.2 -W 2 {absent}")
    assert " 0% packet loss" in out, out
    stats = node.client.stats(session["id"])["stats"]
    assert stats["modules"][0]["stats"] == {"answered": 5, "over_rate": 0, "passed": 0}
    assert stats["dropped"] == 5 and stats["emitted"] == 5 and stats["returned"] == 0
