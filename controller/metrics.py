"""The controller's Prometheus endpoint: its state and counters, read at scrape time.

Nothing is incremented for Prometheus on the way of a request or an OpenFlow event:
the service, the signaling handler and the Ryu shim keep their own counts (`Counts`
for what the shim sends and receives), and `ControllerCollector` reads them when
Prometheus scrapes. Names and labels are in docs/metrics.md.

Pure: no Ryu, no eventlet; the Ryu app serves `wsgi_app(...)` on its own listener.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from controller.messages import Barrier, FlowAdd, FlowDelete, MeterAdd, MeterDelete, PacketOut
from controller.sessions import State

# The OpenFlow messages the controller sends, as the `type` label names them.
MESSAGE_TYPES: dict[type, str] = {
    FlowAdd: "flow_add",
    FlowDelete: "flow_delete",
    PacketOut: "packet_out",
    MeterAdd: "meter_add",
    MeterDelete: "meter_delete",
    Barrier: "barrier",
}


class Counts:
    """What the Ryu shim sent to and received from each switch, by kind."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[int, str]] = Counter()  # (dpid, message type)
        self.packet_ins: Counter[tuple[int, str]] = Counter()  # (dpid, what it was)

    def count_sent(self, dpid: int, msgs: list[Any]) -> None:
        """Count `msgs` sent to switch `dpid`."""
        for msg in msgs:
            self.sent[(dpid, MESSAGE_TYPES.get(type(msg), "other"))] += 1


def signaling_event(key: str) -> tuple[str, str]:
    """Return (outcome, detail) of a signaling count's key: "answered: setup" is
    ("answered", "setup"), "received" is ("received", "")."""
    outcome, _, detail = key.partition(": ")
    return outcome, detail


class ControllerCollector:
    """Reads the controller's state at scrape time (a prometheus_client custom collector).

    `service` is the NetServService, `signaling` its SignalingHandler (or None), `counts`
    the shim's Counts; `clock` tells the service's time (agents' heartbeat ages).
    """

    def __init__(
        self, service: Any, signaling: Any, counts: Counts, clock: Callable[[], float]
    ) -> None:
        self.service, self.signaling, self.counts, self.clock = service, signaling, counts, clock

    def describe(self) -> list[Metric]:
        return []  # registering must not read the service

    def collect(self) -> Iterator[Metric]:
        """Yield the controller's metric families, read now."""
        yield self._sessions()
        yield from self._signaling()
        yield from self._openflow()
        yield from self._nodes()

    def _sessions(self) -> Metric:
        by_state = Counter(s.state for s in self.service.sessions.all())
        family = GaugeMetricFamily("netserv_sessions", "sessions by state", labels=["state"])
        for state in State:
            if state is not State.ENDED:  # ended sessions leave the table
                family.add_metric([state.value], by_state[state])
        return family

    def _signaling(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "netserv_signaling_messages",
            "on-path signaling messages by outcome (received, answered, dropped, ...) and "
            "detail (the message type answered, why one was dropped)",
            labels=["outcome", "detail"],
        )
        counts = dict(self.signaling.counts) if self.signaling is not None else {}
        for key, n in sorted(counts.items()):
            messages.add_metric(list(signaling_event(key)), n)
        yield messages
        refused = CounterMetricFamily(
            "netserv_refusals",
            "requests refused, by transport (rest, signaling) and error code",
            labels=["transport", "code"],
        )
        for transport, codes in self.service.rejections.to_json().items():
            for code, n in codes.items():
                refused.add_metric([transport, code], n)
        yield refused

    def _openflow(self) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "netserv_openflow_messages_sent",
            "OpenFlow messages sent to each switch by type (flow-mods: flow_add, flow_delete)",
            labels=["dpid", "type"],
        )
        for (dpid, kind), n in sorted(self.counts.sent.items()):
            sent.add_metric([f"{dpid:016x}", kind], n)
        yield sent
        packet_ins = CounterMetricFamily(
            "netserv_packet_ins",
            "packet-ins from each switch by kind (discovery, signaling, forwarding)",
            labels=["dpid", "kind"],
        )
        for (dpid, kind), n in sorted(self.counts.packet_ins.items()):
            packet_ins.add_metric([f"{dpid:016x}", kind], n)
        yield packet_ins

    def _nodes(self) -> Iterator[Metric]:
        network, now = self.service.network, self.clock()
        connected = GaugeMetricFamily(
            "netserv_switch_connected", "1 while the switch is connected", labels=["dpid"]
        )
        ready = GaugeMetricFamily(
            "netserv_node_ready",
            "1 while the NetServ node is ready (switch, agent and agent port)",
            labels=["dpid"],
        )
        for dpid, switch in sorted(network.switches.items()):
            connected.add_metric([f"{dpid:016x}"], float(switch.connected))
            ready.add_metric([f"{dpid:016x}"], float(network.ready(dpid)))
        up = GaugeMetricFamily(
            "netserv_agent_up", "1 while the node's agent counts as alive", labels=["dpid"]
        )
        age = GaugeMetricFamily(
            "netserv_agent_heartbeat_age_seconds",
            "seconds since the node's agent last registered (its heartbeat)",
            labels=["dpid"],
        )
        for dpid, agent in sorted(network.agents.items()):
            up.add_metric([f"{dpid:016x}"], float(agent.alive))
            age.add_metric([f"{dpid:016x}"], max(0.0, now - agent.last_seen))
        yield from (connected, ready, up, age)
        topology = network.topology
        yield GaugeMetricFamily("netserv_links", "links discovered", value=len(topology.links()))
        yield GaugeMetricFamily("netserv_hosts", "hosts located", value=len(topology.hosts()))


def wsgi_app(collector: ControllerCollector) -> Callable[..., Any]:
    """Return a WSGI app that answers every request with the collector's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return make_wsgi_app(registry)
