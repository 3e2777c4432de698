"""A copy chain at the agent (every module observe-only): nothing goes back, verdicts
change nothing, and what an observe-only module may not do counts as its error; in
both tiers (the isolated one through a stand-in for its worker)."""

import json

import pytest

from agentproto.messages import Attach, ModuleSpec
from nodes import control
from nodes.agent import AttachError
from nodes.blocks import Frame, udp_frame
from nodes.dispatcher import Chain, Dispatcher, mode_refusal
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox import wire
from nodes.sandbox.budgets import Budget
from nodes.sandbox.guard import Guard
from services.monitor.module import Monitor, _describe, _key
from tests.unit.conftest import Clock
from tests.unit.test_nodes import Batches, agent, frame  # noqa: F401
from tests.unit.test_sandbox_chain import Count, FakeIsolated, frames

F, D, M, X = wire.FORWARD, wire.DROP, wire.MODIFIED, wire.FAILED


def observer(tier: str = "trusted", clock=None, **budget) -> Guard:
    return Guard(tier, "closed", Budget(**budget), clock or Clock(), observe_only=True)


def install(d: Dispatcher, modules, guards, copy: bool = True) -> Chain:
    chain = Chain(1, 10, modules, expires=0, lifetime=1, guards=guards, copy=copy)
    d.put(chain)
    return chain


class Unruly(ServiceModule):
    """An observe-only module that breaks its promise in the way it is told."""

    def __init__(self, how: str):
        super().__init__({}, ModuleContext(1, 1, "unruly"))
        self.how = how

    def process(self, frame):
        if self.how == "write":
            frame[0] = 0xFF
        if self.how == "emit":
            self.ctx.emit(b"e" * 60)
        if self.how == "raise":
            raise RuntimeError("no")
        return {"modify": Verdict.MODIFIED, "drop": Verdict.DROP}.get(self.how, Verdict.FORWARD)


def test_a_chain_runs_in_the_mode_it_is_told_and_only_observers_make_a_copy():
    assert not Chain(1, 10, [("a", Count())], expires=0, lifetime=1, guards=[observer()]).copy
    assert mode_refusal(True, ["a", "b"], [observer(), observer()]) == ""
    assert mode_refusal(False, ["a", "b"], [observer(), Guard()]) == ""
    why = mode_refusal(True, ["a", "b", "c"], [observer(), Guard(), Guard()])
    assert "copy rule, yet b, c are not observe-only on this node" in why


def test_a_detour_of_observers_sends_their_frames_back():
    d = Dispatcher()
    chain = install(d, [("a", Count()), ("b", Count())], [observer(), observer()], copy=False)
    out = d.run_batch(frames(3))
    assert (len(out), out.copies, chain.returned) == (3, 0, 0)  # returned counts once sent


@pytest.mark.parametrize("how", ["forward", "drop"])
def test_a_copy_chain_sends_nothing_back_and_its_verdicts_change_nothing(how):
    d = Dispatcher()
    first, after = Unruly(how), Count()
    chain = install(d, [("first", first), ("after", after)], [observer(), observer()])
    out = d.run_batch(frames(3))
    assert (len(out), out.forwarded, out.copies) == (0, 0, 3)
    assert len(after.seen) == 3  # a DROP did not end the chain: a copy is not dropped
    assert (chain.packets, chain.dropped, chain.returned, chain.errors) == (3, 0, 0, 0)
    assert chain.stats()["forwarded"] == 3  # the switch forwarded every one itself


@pytest.mark.parametrize(
    "how, error",
    [
        ("write", "cannot modify read-only memory"),
        ("modify", "returned MODIFIED"),
        ("emit", "emitted 1 frame(s)"),
        ("raise", "RuntimeError('no')"),
    ],
)
def test_what_an_observe_only_module_may_not_do_is_its_error_and_ignored(how, error):
    d = Dispatcher()
    unruly, after = Unruly(how), Count()
    chain = install(
        d,
        [("unruly", unruly), ("after", after)],
        [observer(errors_per_second=2), observer()],
    )
    out = d.run_batch(frames(2))
    assert len(out) == 0 and after.seen == [bytes([0]) * 20, bytes([1]) * 20]  # as they came
    assert chain.errors == 2 and error in chain.last_error and chain.dropped == 0
    assert not chain.guards[0].quarantined
    d.run_batch(frames(1))  # one more than its error budget allows
    assert chain.guards[0].quarantined and "error budget" in chain.guards[0].reason
    assert len(after.seen) == 3 and chain.packets == 3


def test_a_timer_of_a_copy_chain_emits_nothing():
    clock = Clock()
    d = Dispatcher(clock)
    module = Count()
    module.ctx = ModuleContext(1, 1, "count", clock)
    module.ctx.every(1.0, lambda: module.ctx.emit(b"t" * 60))
    chain = install(d, [("count", module)], [observer()])
    clock.now += 1.5
    out = d.run_batch([])
    assert len(out) == 0 and chain.errors == 1 and "emitted 1 frame(s)" in chain.last_error


class QuietIsolated(FakeIsolated):
    """FakeIsolated that, as the real proxy, takes a rewritten frame's bytes back only
    when asked to."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rewrites: list[bool] = []

    def process_batch(self, frames, rewrite=True):
        self.rewrites.append(rewrite)
        copies = [memoryview(bytearray(f)) for f in frames]
        answer = super().process_batch(copies)
        if rewrite:
            for frame, copy in zip(frames, copies, strict=True):
                frame[:] = copy
        return answer


def test_an_isolated_observer_gets_a_batch_and_its_rewrites_and_emits_are_refused():
    d = Dispatcher()
    fake, after = QuietIsolated(bytes([F, M, D, X]), emit={0: b"e" * 14}), Count()
    chain = install(d, [("fake", fake), ("after", after)], [observer("isolated"), observer()])
    out = d.run_batch(frames(4))
    assert (len(out), out.copies) == (0, 4) and fake.rewrites == [False]
    assert after.seen == [bytes([i]) * 20 for i in range(4)]  # nothing rewritten, none dropped
    assert (chain.packets, chain.dropped, chain.errors) == (4, 0, 3)  # MODIFIED, FAILED, emit
    assert chain.guards[0].unprocessed == 1  # the frame it failed on


def test_an_isolated_observer_that_dies_is_quarantined_and_the_rest_goes_on():
    d = Dispatcher()
    fake, after = QuietIsolated(), Count()
    fake.failure = "died of SIGKILL"
    chain = install(d, [("fake", fake), ("after", after)], [observer("isolated"), observer()])
    out = d.run_batch(frames(2))
    assert len(out) == 0 and len(after.seen) == 2
    assert chain.guards[0].quarantined and chain.guards[0].unprocessed == 2
    d.run_batch(frames(1))
    assert len(fake.batches) == 1 and len(after.seen) == 3  # never called again


def test_the_agent_sends_nothing_of_a_copy_and_counts_no_copy_as_dropped(agent):  # noqa: F811
    watched = agent.attach(Attach(1, 5, 5, (ModuleSpec("monitor"),), copy=True))
    served = agent.attach(Attach(2, 6, 5, (ModuleSpec("null"),)))
    assert watched.copy and not served.copy
    io = Batches(agent, [[(5, frame(1)), (6, frame(2)), (5, frame(3))]], room=9)
    agent.packet_loop(io)
    assert io.sent == [bytes(frame(2))]
    assert (watched.packets, watched.returned, served.returned) == (2, 0, 1)
    node = agent.io_stats()
    assert (node.received, node.sent, node.dropped) == (3, 1, 0)
    top = agent.session_stats(1).modules[0].stats
    assert (top["packets"], top["bytes"]) == (2, 120)


def test_a_copy_attach_of_a_module_not_observe_only_here_is_refused_and_leaves_nothing(
    agent,  # noqa: F811
):
    chain = (ModuleSpec("monitor"), ModuleSpec("null"))
    with pytest.raises(AttachError) as err:
        agent.attach(Attach(1, 5, 5, chain, copy=True))
    assert err.value.status == 422
    assert "copy rule, yet null is not observe-only on this node" in str(err.value)
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}
    before = agent.attach(Attach(1, 5, 5, chain))  # a detour of the same chain is taken
    with pytest.raises(AttachError):  # and a refused attach again leaves it as it was
        agent.attach(Attach(1, 5, 5, chain, copy=True))
    assert agent.dispatcher.by_session(1) is before and not before.copy
    assert {n: m["sessions"] for n, m in agent.host.loaded().items()} == {"monitor": 1, "null": 1}


def test_a_detour_attach_of_observers_sends_their_frames_back(agent):  # noqa: F811
    chain = agent.attach(Attach(1, 5, 5, (ModuleSpec("monitor"),)))  # no "copy": a detour
    assert not chain.copy
    io = Batches(agent, [[(5, frame(1)), (5, frame(2))]], room=9)
    agent.packet_loop(io)
    assert io.sent == [bytes(frame(1)), bytes(frame(2))]  # what the switch waits for
    assert (chain.packets, chain.returned) == (2, 2)
    assert agent.session_stats(1).modules[0].stats["packets"] == 2


def test_the_control_api_refuses_a_copy_that_is_not_true_or_false(agent):  # noqa: F811
    body = {"tag": 5, "lifetime": 5, "modules": [{"name": "monitor"}], "copy": "yes"}
    status, data, _ = control.answer(agent, "PUT", "/sessions/1", json.dumps(body).encode())
    assert status == 400 and "copy must be true or false" in json.loads(data)["error"]
    assert agent.dispatcher.chains() == []


def test_the_monitor_follows_each_flow():
    clock = Clock()
    ctx = ModuleContext(1, 1, "monitor", clock)
    monitor = Monitor({"max_flows": 2, "idle": 10.0, "report": 5}, ctx)
    macs = {"src_mac": "02:00:00:00:00:01", "dst_mac": "02:00:00:00:00:02"}
    a = udp_frame(**macs, src="10.0.0.1", dst="10.0.0.2", sport=5000, dport=9000)
    b = udp_frame(
        **macs, src="10.0.0.1", dst="10.0.0.2", sport=5001, dport=9000, payload=b"x" * 100
    )
    c = udp_frame(**macs, src="10.0.0.3", dst="10.0.0.2", sport=1, dport=2)
    for data in (a, b, a):
        assert monitor.process(memoryview(bytearray(data))) == Verdict.FORWARD
        clock.now += 1
    monitor.process(memoryview(bytearray(c)))  # a third flow: over max_flows
    stats = monitor.stats()
    assert (stats["packets"], stats["flows"], stats["untracked"]) == (4, 2, 1)
    assert stats["bytes"] == 2 * len(a) + len(b) + len(c)
    assert [f["flow"] for f in stats["top"]] == [
        "udp 10.0.0.1:5001 > 10.0.0.2:9000",  # the most bytes first
        "udp 10.0.0.1:5000 > 10.0.0.2:9000",
    ]
    first = stats["top"][1]
    assert (first["packets"], first["first_seen_ago"], first["last_seen_ago"]) == (2, 3.0, 1.0)
    clock.now += 9  # b was last seen 11 s ago, a 10 s ago: both forgotten
    monitor.sweep()
    assert monitor.stats()["flows"] == 0 and monitor.stats()["expired"] == 2


def test_the_monitors_quick_key_names_a_flow_as_the_frame_parser_does():
    macs = {"src_mac": "02:00:00:00:00:01", "dst_mac": "02:00:00:00:00:02"}
    udp = memoryview(bytearray(udp_frame(**macs, src="10.0.0.1", dst="10.0.0.2", sport=7, dport=9)))
    assert len(_key(udp)) == 2  # read straight from the bytes
    assert _describe(_key(udp)) == _describe(Frame(udp).flow_key()) == "udp 10.0.0.1:7 > 10.0.0.2:9"
    v6 = udp_frame(**macs, src="fd00::1", dst="fd00::2", sport=7, dport=9)
    assert _describe(_key(memoryview(bytearray(v6)))) == "udp [fd00::1]:7 > [fd00::2]:9"
    assert _describe(_key(memoryview(bytearray(60)))) == "not IP"
