"""The NetServ demo: a service requested, installed, applied to one flow, torn down.

h1, h2 and h3 hang off s1, a NetServ node (OVS bridge + node agent). Through the
controller's REST API we ask for a `counter` service module on h1 → h2 UDP 9000, send
N frames on that flow and M on others, and check with the switch's own counters that
only the N went through the agent. Every claim printed is checked; any failed check
makes the demo exit non-zero.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SERVED_PORT, OTHER_PORT = 9000, 9001


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, claim: str) -> bool:
        print(f"   [{'ok' if ok else 'FAILED'}] {claim}")
        if not ok:
            self.failed.append(claim)
        return ok


def step(text: str) -> None:
    print(f"\n== {text}")


def _agent_health(switch: Any, url: str) -> dict[str, Any]:
    """Return the node agent's own view, asked as the controller asks: with the node's key."""
    from controller.agent_client import agent_call
    from controller.keyfiles import read_secret

    return agent_call(read_secret(switch.key_file), switch.dpid_int, url, "GET", "/health")


def run_demo(packets: int = 200, others: int = 300) -> int:
    """Run the demo; return 0 when every check held, 1 otherwise."""
    if os.geteuid() != 0:
        print("netserv demo: needs root (it creates namespaces, veths and an OVS bridge)")
        return 1
    from signaling.client import NetServClient
    from tools import ovs
    from tools.scenario import Receiver, send_udp, warm_up
    from topo.controller import ControllerProcess, wait_ready
    from topo.net import netserv_network, planned_names, wait_connected
    from topo.topos import SingleSwitchTopo

    check = Checks()
    rundir = Path(tempfile.mkdtemp(prefix="netserv-demo-"))
    m1, m2 = others // 2, others - others // 2
    step("Starting the controller (Ryu + NetServ app, OpenFlow 1.3)")
    try:
        with ControllerProcess(rundir / "controller.log") as ctl:
            client = NetServClient(ctl.url)
            print(f"   REST API {ctl.url}, OpenFlow on 127.0.0.1:{ctl.of_port}; logs in {rundir}")
            step("Building h1, h2, h3 on s1, a NetServ node (bridge + node agent)")
            topo = SingleSwitchTopo(k=3)
            with netserv_network(
                topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=rundir
            ) as net:
                h1, h2, h3 = net.get("h1", "h2", "h3")
                s1 = net.get("s1")
                wait_connected(net)
                wait_ready(client, [s1.dpid])
                print(
                    f"   s1 dpid {s1.dpid}, agent pid {s1.agent_pid} on {s1.agent_iface}, "
                    f"bridge port {s1.agent_port_name}"
                )
                warm_up((h1, h2), (h3, h2))
                step(
                    f"Requesting a counter on h1 -> h2 UDP {SERVED_PORT} "
                    "(REST POST /netserv/sessions)"
                )
                session = client.setup(
                    match={"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": SERVED_PORT},
                    module="counter",
                    lifetime=120,
                )
                cookie = int(session["cookie"], 16)
                print(
                    f"   session {session['id']}: cookie {session['cookie']}, "
                    f"tag {session['tag']}, expires in {session['expires_in']:.0f}s"
                )
                for line in ovs.dump_flows(s1.name, cookie):
                    print(f"   flow: {line}")
                agent_url = next(n for n in client.nodes() if n["dpid"] == s1.dpid)["agent"]["url"]
                check(
                    "counter" in _agent_health(s1, agent_url)["modules_loaded"],
                    "the agent loaded the counter module at run time",
                )
                before = ovs.port_counters(s1.name, s1.agent_port_name)
                step(f"Sending {packets} frames on the served flow and {others} on others (scapy)")
                with Receiver(h2) as rx:
                    send_udp(h1, h2, SERVED_PORT, packets)
                    send_udp(h1, h2, OTHER_PORT, m1)
                    send_udp(h3, h2, SERVED_PORT, m2)
                print(
                    f"   h1 -> h2:{SERVED_PORT} {packets} (served), h1 -> h2:{OTHER_PORT} {m1}, "
                    f"h3 -> h2:{SERVED_PORT} {m2}"
                )
                after = ovs.port_counters(s1.name, s1.agent_port_name)
                stats = client.stats(session["id"])["stats"]
                counted = stats["modules"][0]["stats"]["packets"]
                to_agent = after["tx_packets"] - before["tx_packets"]
                back = after["rx_packets"] - before["rx_packets"]
                step("What each part saw")
                check(
                    counted == packets,
                    f"the counter module counted {counted} of {packets} served frames",
                )
                check(
                    to_agent == packets,
                    f"the switch sent {to_agent} frames to the agent port: "
                    f"the other {others} bypassed it",
                )
                check(back == packets, f"the agent sent {back} frames back to the switch")
                check(
                    ovs.flow_packets(s1.name, cookie) == packets,
                    f"the session's flow rule matched {ovs.flow_packets(s1.name, cookie)} frames",
                )
                got = rx.got(h1, SERVED_PORT), rx.got(h1, OTHER_PORT), rx.got(h3, SERVED_PORT)
                check(
                    got == (packets, m1, m2),
                    f"h2 received {sum(got)} of {packets + others} "
                    f"({got[0]} served, {got[1] + got[2]} other)",
                )
                step(f"Tearing the session down (REST DELETE /netserv/sessions/{session['id']})")
                final = client.teardown(session["id"])
                print(f"   final counters: {final['stats']['modules'][0]['stats']}")
                check(
                    ovs.dump_flows(s1.name, cookie) == [],
                    "no flow with the session's cookie is left",
                )
                health = _agent_health(s1, agent_url)
                check(
                    health["sessions"] == [] and health["modules_loaded"] == {},
                    "the agent holds no session and has unloaded the counter module",
                )
                check(client.sessions() == [], "the controller holds no session")
                agent_pid, bridge = s1.agent_pid, s1.name
                host_pids = [h.pid for h in net.hosts]  # each host's namespace lives with it
            step("Stopping everything the demo started")
            bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True)
            check(bridge not in bridges.stdout.split(), f"bridge {bridge} removed")
            left = sorted(n for n in planned_names(topo) if Path("/sys/class/net", n).exists())
            check(
                not left,
                "every veth and port of the topology removed"
                + (f" (left: {left})" if left else ""),
            )
            namespaces = [pid for pid in host_pids if Path(f"/proc/{pid}").exists()]
            check(not namespaces, "the hosts' network namespaces are gone")
            check(not Path(f"/proc/{agent_pid}").exists(), f"agent (pid {agent_pid}) stopped")
            controller_pid = ctl.proc.pid
        check(
            not Path(f"/proc/{controller_pid}").exists(),
            f"controller (pid {controller_pid}) stopped",
        )
    except Exception as exc:  # the demo's one message for a broken part
        print(f"\nnetserv demo: FAILED: {type(exc).__name__}: {exc}\n   logs: {rundir}")
        return 1
    if check.failed:
        print(f"\nnetserv demo: {len(check.failed)} check(s) failed; logs in {rundir}")
        return 1
    print("\nnetserv demo: all checks passed")
    return 0
