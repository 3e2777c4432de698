"""The node agent's Prometheus endpoint: counters read when Prometheus scrapes them.

The packet loop keeps plain integer counters (`NodeAgent.io_counters`, each chain's and
each module's in `nodes/dispatcher.py`, and those a module keeps itself through
`ctx.counter` and `ctx.gauge`); nothing here runs per frame. A scrape reads them through
`AgentCollector`, so a frame costs no Prometheus call; an isolated module's own metrics
are in its worker, which the scrape asks for them with the STATS message its stats come
by (one round trip a module a scrape). Names and labels are in docs/metrics.md.

    server = serve(agent, "127.0.0.1", 9101)   # a thread of its own; server.shutdown() ends it
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import start_http_server

from nodes.agent import NodeAgent
from nodes.blocks.counters import KINDS, Sample
from nodes.module_api import ServiceModule

log = logging.getLogger("netserv.metrics")

IO_COUNTERS = (
    ("received", "frames the agent received from the switch"),
    ("sent", "frames the agent sent back to the switch"),
    ("dropped", "frames the agent received and did not send back (modules' drops)"),
    ("send_failed", "frames the agent could not send back (its link was full)"),
    ("stale", "frames dropped for having waited longer than --max-frame-age"),
    ("unmatched", "frames whose tag named no session (sent on unchanged)"),
    ("queue_dropped", "frames the kernel dropped for the agent's full receive queue"),
    ("too_big", "frames larger than the agent's receive buffer"),
)
CHAIN_COUNTERS = (
    ("packets", "frames", "frames of the session the agent ran its chain on"),
    ("dropped", "dropped", "frames of the session a module ended"),
    ("returned", "returned", "frames of the session sent back to the switch"),
    ("send_failed", "send_failed", "frames of the session not sent back (link full)"),
    ("emitted", "emitted", "frames the session's modules emitted that were sent"),
    ("errors", "errors", "calls of the session's modules that failed"),
)


class AgentCollector:
    """Reads an agent's counters at scrape time (a prometheus_client custom collector)."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def describe(self) -> list[Metric]:
        return []  # registering must not read the agent

    def collect(self) -> Iterator[Metric]:
        """Yield the agent's metric families, read now."""
        yield from self._node()
        yield from self._chains()

    def _node(self) -> Iterator[Metric]:
        agent = self.agent
        info = InfoMetricFamily("netserv_agent", "the node agent: its node, interface and boot id")
        info.add_metric(
            [],
            {
                "dpid": f"{agent.config.dpid:016x}",
                "iface": agent.config.iface,
                "boot_id": agent.boot_id,
            },
        )
        yield info
        yield GaugeMetricFamily(
            "netserv_agent_registered",
            "1 once the controller took the agent's registration",
            value=float(agent.registered.is_set()),
        )
        age = GaugeMetricFamily(
            "netserv_agent_heartbeat_age_seconds",
            "seconds since the controller last took the agent's heartbeat (registration)",
        )
        if agent.last_heartbeat is not None:
            age.add_metric([], max(0.0, agent.clock() - agent.last_heartbeat))
        yield age
        yield CounterMetricFamily(
            "netserv_agent_loop_turns",
            "rounds of the agent's packet loop",
            value=agent.loop_turns,
        )
        io = agent.io_stats().to_json()
        for name, text in IO_COUNTERS:
            yield CounterMetricFamily(f"netserv_agent_frames_{name}", text, value=io[name])
        chains = len(agent.dispatcher.chains())
        yield GaugeMetricFamily("netserv_agent_sessions", "session chains attached", value=chains)
        loaded = GaugeMetricFamily(
            "netserv_agent_module_users",
            "sessions using each module loaded now",
            labels=["module", "version", "tier"],
        )
        for name, entry in sorted(agent.host.loaded().items()):
            loaded.add_metric([name, str(entry["version"]), str(entry["tier"])], entry["sessions"])
        yield loaded
        quarantines = CounterMetricFamily(
            "netserv_agent_quarantines",
            "module instances quarantined since the agent started, by cause; an isolated "
            "one's worker is killed",
            labels=["module", "tier", "cause"],
        )
        for (module, tier, cause), n in sorted(agent.host.quarantines.items()):
            quarantines.add_metric([module, tier, cause], n)
        yield quarantines

    def _chains(self) -> Iterator[Metric]:
        chains = self.agent.dispatcher.chains()
        families = {
            attr: CounterMetricFamily(f"netserv_session_{name}", text, labels=["session"])
            for attr, name, text in CHAIN_COUNTERS
        }
        labels = ["session", "position", "module"]
        frames = CounterMetricFamily(
            "netserv_module_frames", "frames that reached the module", labels=labels
        )
        dropped = CounterMetricFamily(
            "netserv_module_dropped",
            "frames the module ended (its DROP, or its closed failure policy)",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "netserv_module_errors", "frames the module failed on", labels=labels
        )
        unprocessed = CounterMetricFamily(
            "netserv_module_unprocessed",
            "frames that went by without the module (failed, quarantined, over its rate)",
            labels=labels,
        )
        quarantined = GaugeMetricFamily(
            "netserv_module_quarantined", "1 when the module is quarantined", labels=labels
        )
        seconds = SummaryMetricFamily(
            "netserv_module_frame_seconds",
            "time the module took per frame: _sum seconds over _count frames (the agent's "
            "own modules: one frame in 64 timed; isolated ones: every frame, CPU time)",
            labels=labels,
        )
        own = {
            "counter": CounterMetricFamily(
                "netserv_module_counter",
                "the module's own counters (ctx.counter), by name",
                labels=[*labels, "metric"],
            ),
            "gauge": GaugeMetricFamily(
                "netserv_module_gauge",
                "the module's own gauges (ctx.gauge), by name",
                labels=[*labels, "metric"],
            ),
        }
        for chain in chains:
            session = str(chain.session_id)
            for attr, family in families.items():
                family.add_metric([session], getattr(chain, attr))
            seen = chain.module_frames()
            modules = zip(chain.modules, chain.guards, strict=False)
            for pos, ((name, module), guard) in enumerate(modules):
                values = [session, str(pos), name]
                frames.add_metric(values, seen[pos])
                dropped.add_metric(values, chain.module_dropped[pos])
                errors.add_metric(values, chain.module_errors[pos])
                unprocessed.add_metric(values, guard.unprocessed)
                quarantined.add_metric(values, float(guard.quarantined))
                seconds.add_metric(values, chain.module_timed[pos], chain.module_seconds[pos])
                for sample in module_samples(module):
                    own[sample.kind].add_metric([*values, sample.name], sample.value)
        yield from families.values()
        yield from (frames, dropped, errors, unprocessed, quarantined, seconds)
        yield from own.values()


def module_samples(module: ServiceModule) -> list[Sample]:
    """Return the metrics `module` keeps through its context, read now, leaving out any
    that is no number. An isolated module's are asked of its worker, with its stats
    (`IsolatedModule.read_metrics`); a quarantined one's are the last it gave. []
    when they cannot be read: one module must not fail the whole scrape."""
    read = getattr(module, "read_metrics", None)
    try:
        if read is not None:
            found = read()
        else:
            ctx = getattr(module, "ctx", None)
            found = ctx.metrics.samples() if ctx is not None else []
    except Exception as exc:  # a worker's broken answer, a module's odd context
        log.warning("metrics of module %s not read: %r", getattr(module, "name", "?"), exc)
        return []
    # A gauge takes whatever `set` is given; only numbers can be exposed.
    return [s for s in found if isinstance(s.value, int | float) and s.kind in KINDS]


def registry_for(agent: NodeAgent) -> CollectorRegistry:
    """Return a registry holding the agent's collector only."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return registry


def serve(agent: NodeAgent, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the agent's metrics on host:port (port 0: any) from a daemon thread; return
    the server (its `server_address` says where). Raise OSError when it cannot listen."""
    server, _thread = start_http_server(port, host, registry_for(agent))
    return server
