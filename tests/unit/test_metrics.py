"""The Prometheus collectors of the controller and the agent, read after real calls of the
service and of an in-process agent's dispatcher; and the counters they read."""

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.messages import Barrier, FlowAdd, FlowDelete
from controller.metrics import ControllerCollector, Counts, signaling_event
from nodes.blocks.counters import Metrics
from nodes.bundle import Manifest
from nodes.dispatcher import SAMPLE_EVERY, Chain
from nodes.metrics import AgentCollector, module_samples
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox.budgets import Budget
from nodes.sandbox.cgroups import Layout
from nodes.sandbox.guard import Guard, quarantine_cause
from nodes.sandbox.proxy import IsolatedModule, Sandbox, mirror
from nodes.sandbox.worker import Worker
from tests.unit.conftest import make


def samples(collector: object) -> dict[tuple[str, frozenset], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def one(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


class Signaling:
    counts = {"received": 3, "answered: setup": 2, "dropped: unreadable": 1}


class Every(ServiceModule):
    """Drops every `n`th frame it sees."""

    def __init__(self, n: int) -> None:
        super().__init__({}, ModuleContext(1, 1, "every", lambda: 0.0))
        self.n, self.seen = n, 0

    def process(self, frame: memoryview) -> Verdict:
        self.seen += 1
        return Verdict.DROP if self.seen % self.n == 0 else Verdict.FORWARD


class Fails(ServiceModule):
    def __init__(self) -> None:
        super().__init__({}, ModuleContext(1, 1, "fails", lambda: 0.0))

    def process(self, frame: memoryview) -> Verdict:
        raise RuntimeError("no")


def test_a_chain_counts_what_reached_each_module_and_what_each_ended():
    chain = Chain(1, 10, [("a", Every(4)), ("b", Every(2)), ("c", Fails())], 0, 1)
    chain.guards[2] = Guard(failure="closed", budget=Budget(errors_per_second=1e6))
    for _ in range(2 * SAMPLE_EVERY):
        chain.run(memoryview(bytearray(60)), [])
    n = 2 * SAMPLE_EVERY
    # a drops 1 in 4; b every 2nd of the rest; c fails on all that is left, closed
    assert chain.module_frames() == [n, n * 3 // 4, n * 3 // 8]
    assert chain.module_dropped == [n // 4, n * 3 // 8, n * 3 // 8]
    assert chain.module_errors == [0, 0, n * 3 // 8]
    assert chain.dropped == n
    # frames 64 and 128 were timed: module a saw both, b and c the ones a let through
    assert chain.module_timed[0] == 2 and all(s >= 0 for s in chain.module_seconds)


def test_quarantine_causes_are_read_from_the_reason():
    assert quarantine_cause("hung: no answer within 0.25 s") == "hung"
    assert quarantine_cause("over its memory budget: the kernel killed it") == "memory"
    assert quarantine_cause("killed by the sandbox: it made a forbidden system call") == "seccomp"
    assert quarantine_cause("over its error budget: failed on more than 10 frames") == "errors"
    assert quarantine_cause("died of SIGSEGV") == "died"
    assert quarantine_cause("something new") == "other"


def test_a_guard_tells_of_its_quarantine_once():
    told: list[str] = []
    guard = Guard()
    guard.on_quarantine = told.append
    assert guard.quarantine("hung: x") and not guard.quarantine("hung: y")
    assert told == ["hung: x"]


def test_signaling_counts_split_into_outcome_and_detail():
    assert signaling_event("answered: setup") == ("answered", "setup")
    assert signaling_event("received") == ("received", "")


def test_counts_name_each_message_type():
    counts = Counts()
    counts.count_sent(1, [FlowDelete(cookie=1, cookie_mask=1), FlowAdd(0, 0, ()), Barrier()])
    assert counts.sent == {(1, "flow_delete"): 1, (1, "flow_add"): 1, (1, "barrier"): 1}


def test_the_controller_collector_reads_sessions_signaling_and_agents(world):
    service, _, _, _, _, clock = world
    make(service, {"match": {"udp_dst": 9000}, "module": "counter", "lifetime": 60})
    counts = Counts()
    counts.packet_ins[(1, "forwarding")] += 2
    clock.now += 1.5
    found = samples(ControllerCollector(service, Signaling(), counts, clock))
    assert one(found, "netserv_sessions", state="active") == 1
    assert one(found, "netserv_sessions", state="suspended") == 0
    assert one(found, "netserv_signaling_messages_total", outcome="answered", detail="setup") == 2
    assert one(found, "netserv_packet_ins_total", dpid="0000000000000001", kind="forwarding") == 2
    assert one(found, "netserv_agent_up", dpid="0000000000000001") == 1
    assert one(found, "netserv_agent_heartbeat_age_seconds", dpid="0000000000000001") == 1.5


def test_the_agent_collector_reads_chains_and_modules(world):
    service, _, _, _, agent, _ = world
    session = make(service, {"match": {"udp_dst": 9000}, "module": "counter", "lifetime": 60})
    for _ in range(5):
        agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    found = samples(AgentCollector(agent))
    labels = {"session": str(session.id), "position": "0", "module": "counter"}
    assert one(found, "netserv_module_frames_total", **labels) == 5
    assert one(found, "netserv_module_dropped_total", **labels) == 0
    assert one(found, "netserv_module_quarantined", **labels) == 0
    assert one(found, "netserv_session_frames_total", session=str(session.id)) == 5
    assert one(found, "netserv_agent_sessions") == 1


def test_a_quarantine_is_counted_by_module_tier_and_cause(world):
    service, _, _, _, agent, _ = world
    session = make(service, {"match": {"udp_dst": 9000}, "module": "counter", "lifetime": 60})
    chain = agent.dispatcher.by_session(session.id)
    chain.quarantine(chain.modules[0][1], "hung: it held the node's packet loop")
    found = samples(AgentCollector(agent))
    labels = {"session": str(session.id), "position": "0", "module": "counter"}
    assert one(found, "netserv_module_quarantined", **labels) == 1
    counted = {"module": "counter", "tier": "trusted", "cause": "hung"}
    assert one(found, "netserv_agent_quarantines_total", **counted) == 1
    agent.detach(session.id)  # the count outlives the session
    assert one(samples(AgentCollector(agent)), "netserv_agent_quarantines_total", **counted) == 1


def test_a_trusted_modules_own_counters_and_gauges_are_read_at_scrape_time(world):
    service, _, _, _, agent, _ = world
    session = make(service, {"match": {"udp_dst": 9000}, "module": "ratelimit", "lifetime": 60})
    labels = {"session": str(session.id), "position": "0", "module": "ratelimit"}
    for _ in range(5):
        agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    found = samples(AgentCollector(agent))
    assert one(found, "netserv_module_counter_total", **labels, metric="passed") == 5
    assert one(found, "netserv_module_counter_total", **labels, metric="dropped") == 0
    assert one(found, "netserv_module_gauge", **labels, metric="flows") == 1  # not IP: one key
    agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    again = samples(AgentCollector(agent))
    assert one(again, "netserv_module_counter_total", **labels, metric="passed") == 6


class Odd(ServiceModule):
    def __init__(self) -> None:
        super().__init__({}, ModuleContext(1, 1, "odd", lambda: 0.0))
        self.ctx.counter("fine").inc(2)
        self.ctx.gauge("word").set("high")  # type: ignore[arg-type]


def test_a_metric_that_is_no_number_is_left_out_and_the_rest_read():
    assert [(s.name, s.value) for s in module_samples(Odd())] == [("fine", 2)]


def test_a_workers_metrics_are_mirrored_leaving_out_what_is_malformed():
    metrics = Metrics()
    metrics.gauge("flows")
    mirror(
        metrics,
        [
            {"name": "seen", "type": "counter", "help": "frames", "value": 7},
            {"name": "flows", "type": "counter", "help": "", "value": 9},  # was a gauge
            {"name": "Bad Name", "type": "counter", "help": "", "value": 1},
            {"name": "text", "type": "gauge", "help": "", "value": "x"},
            "not a sample",
            {"type": "counter", "value": 1},
        ],
    )
    assert metrics.values() == {"flows": 0, "seen": 7, "text": 0}
    mirror(metrics, {"not": "a list"})
    assert metrics.values()["seen"] == 7


TALLY = """
from nodes.module_api import ServiceModule, Verdict


class Tally(ServiceModule):
    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.seen = ctx.counter("seen", "frames seen")
        self.length = ctx.gauge("last_length", "length of the last frame")

    def process(self, frame):
        self.seen.inc()
        self.length.set(len(frame))
        return Verdict.FORWARD
"""


class InProcessWorker(IsolatedModule):
    """An isolated module whose worker serves its channel from a thread of this process:
    the worker's and the agent's code and messages as they are, without the process."""

    def _start(self, manifest: Manifest, params: object, capabilities: object) -> None:
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        init = {
            "module": self.name,
            "path": str(manifest.path / f"{manifest.entry_file}.py"),
            "entry_class": manifest.entry_class,
            "params": {},
            "session_id": self.ctx.session_id,
            "node": self.ctx.node,
        }
        self.worker = Worker(child, init)
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()


@pytest.fixture
def isolated_tally(tmp_path: Path) -> Iterator[InProcessWorker]:
    (tmp_path / "module.py").write_text(TALLY)
    manifest = Manifest("tally", "1.0.0", "", "module", "Tally", tmp_path)
    root = logging.getLogger()
    level = root.level
    module = InProcessWorker(manifest, {}, 900, 1, Guard(tier="isolated"), Sandbox(Layout()))
    try:
        yield module
    finally:
        module.stop()
        module.thread.join(5)
        root.removeHandler(module.worker.log)  # the worker logs through the root logger
        root.setLevel(level)


def test_an_isolated_modules_own_metrics_are_asked_of_its_worker_at_scrape_time(
    world, isolated_tally
):
    _, _, _, _, agent, _ = world
    module = isolated_tally
    chain = Chain(900, 900, [("tally", module)], 0, 60, guards=[module.guard])
    agent.dispatcher.put(chain)
    labels = {"session": "900", "position": "0", "module": "tally"}
    agent.dispatcher.run_batch([(900, memoryview(bytearray(60))) for _ in range(3)])
    assert len(module.ctx.metrics) == 0  # the counts are in the worker, not here yet
    found = samples(AgentCollector(agent))
    assert one(found, "netserv_module_counter_total", **labels, metric="seen") == 3
    assert one(found, "netserv_module_gauge", **labels, metric="last_length") == 60
    agent.dispatcher.run_batch([(900, memoryview(bytearray(70))) for _ in range(2)])
    found = samples(AgentCollector(agent))
    assert one(found, "netserv_module_counter_total", **labels, metric="seen") == 5
    assert one(found, "netserv_module_gauge", **labels, metric="last_length") == 70
    chain.quarantine(module, "died of SIGKILL")  # its worker is gone: its last values stay
    found = samples(AgentCollector(agent))
    assert one(found, "netserv_module_counter_total", **labels, metric="seen") == 5
    assert one(found, "netserv_module_quarantined", **labels) == 1
