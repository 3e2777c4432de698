"""Chains with isolated modules, failure policies and quarantine, without a worker process:
the channel's format, the batched run, the guard, and the trusted tier's error budget."""

import signal

import pytest

from agentproto.fields import ContractError
from agentproto.messages import ChainStats
from nodes.dispatcher import Chain, Dispatcher
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox import wire
from nodes.sandbox.batched import ModuleFailed
from nodes.sandbox.budgets import Budget
from nodes.sandbox.guard import Guard, Quarantined
from nodes.sandbox.proxy import chunks, death_reason
from tests.unit.conftest import Clock

F, D, M, X = wire.FORWARD, wire.DROP, wire.MODIFIED, wire.FAILED


def test_a_batch_and_its_answer_cross_the_channel_whole():
    frames = [memoryview(b"a" * 60), memoryview(b"b" * 1500), memoryview(b"")]
    message = memoryview(b"".join(bytes(b) for b in wire.encode_batch(frames)))
    assert [bytes(f) for f in wire.decode_batch(message)] == [bytes(f) for f in frames]
    answer = wire.Answer(
        bytes([M, D, X]),
        emitted=[(-1, b"t" * 20), (0, b"e" * 30)],
        cpu=0.0125,
        next_timer=0.5,
        errors=[(2, "ValueError('x')")],
        log=[(30, "careful")],
        memory=True,
        modified=[b"A" * 60],
    )
    got = wire.decode_answer(
        memoryview(b"".join(bytes(b) for b in wire.encode_answer(answer))), [60, 1500, 0]
    )
    assert (got.verdicts, got.emitted, got.cpu, got.next_timer) == (
        answer.verdicts,
        answer.emitted,
        0.0125,
        0.5,
    )
    assert (got.errors, got.log, got.memory) == (answer.errors, answer.log, True)
    assert [bytes(m) for m in got.modified] == [b"A" * 60]


@pytest.mark.parametrize(
    "lengths, message",
    [([60], "an answer about 3 frames to a batch of 1"), ([10, 1500, 0], "its parts make")],
)
def test_an_answer_that_does_not_fit_its_batch_is_refused(lengths, message):
    answer = wire.Answer(bytes([M, F, F]), modified=[b"A" * 60])
    data = memoryview(b"".join(bytes(b) for b in wire.encode_answer(answer)))
    with pytest.raises(wire.WireError, match=message):
        wire.decode_answer(data, lengths)


def test_a_large_batch_is_cut_into_messages_that_fit():
    frames = [memoryview(bytes(60000))] * 40  # 2.4 MB
    runs = list(chunks(frames))
    assert sum(len(r) for r in runs) == 40 and len(runs) == 3
    assert all(wire.batch_size(r) <= wire.MAX_MESSAGE for r in runs)
    assert list(chunks([])) == [[]] and list(chunks(frames[:2])) == [frames[:2]]


@pytest.mark.parametrize(
    "code, oom, reason",
    [
        (-signal.SIGKILL, True, "over its memory budget"),
        (-signal.SIGSYS, False, "forbidden system call"),
        (-signal.SIGSEGV, False, "died of SIGSEGV"),
        (3, False, "exited with status 3"),
        (None, False, "closed its channel"),
    ],
)
def test_a_dead_workers_reason_says_how_it_died(code, oom, reason):
    assert reason in death_reason(code, oom)


class FakeIsolated(ServiceModule):
    """Stands for an isolated module: answers batches from a script of verdicts."""

    def __init__(self, verdicts: bytes = b"", emit: dict | None = None, cpu: float = 0.0):
        super().__init__({}, ModuleContext(1, 1, "fake"))
        self.verdicts, self.emit, self.cpu = verdicts, emit or {}, cpu
        self.batches: list[list[bytes]] = []
        self.failure = ""
        self.memory = False
        self.killed = False

    def process_batch(self, frames):
        self.batches.append([bytes(f) for f in frames])
        if self.failure:
            raise ModuleFailed(self.failure)
        verdicts = (self.verdicts or bytes(len(frames)))[: len(frames)]
        verdicts += bytes(len(frames) - len(verdicts))
        modified = []
        for frame, verdict in zip(frames, verdicts, strict=True):
            if verdict == M:
                frame[:1] = b"Z"
                modified.append(bytes(frame))
        errors = [(i, "ValueError('no')") for i, v in enumerate(verdicts) if v == X]
        emitted = [(i, f) for i, f in self.emit.items() if i < len(frames)]
        return wire.Answer(
            verdicts, emitted, self.cpu, -1, errors, [], self.memory, modified=modified
        )

    def kill(self):
        self.killed = True


class Count(ServiceModule):
    def __init__(self):
        super().__init__({}, ModuleContext(1, 1, "count"))
        self.seen: list[bytes] = []

    def process(self, frame):
        self.seen.append(bytes(frame))
        return Verdict.FORWARD


def frames(n: int, tag: int = 10) -> list[tuple[int, memoryview]]:
    return [(tag, memoryview(bytearray(bytes([i]) * 20))) for i in range(n)]


def guard(failure="open", clock=None, **budget) -> Guard:
    return Guard("isolated", failure, Budget(**budget), clock or Clock())


def install(d: Dispatcher, tag: int, modules, guards) -> Chain:
    chain = Chain(tag, tag, modules, expires=0, lifetime=1, guards=guards)
    d.put(chain)
    return chain


def test_an_isolated_module_gets_the_chains_frames_of_a_batch_in_one_call():
    d = Dispatcher()
    fake, count = FakeIsolated(bytes([F, D, M, F]), emit={0: b"e" * 14}), Count()
    chain = install(d, 10, [("fake", fake), ("count", count)], [guard(), Guard()])
    other = Count()
    install(d, 11, [("other", other)], [Guard()])
    batch = frames(2, tag=11) + frames(4)
    out = d.run_batch(batch)
    assert len(fake.batches) == 1 and len(fake.batches[0]) == 4
    assert len(other.seen) == 2  # the chain of the agent's own ran frame by frame
    # count saw the frames fake let through, the rewritten one rewritten
    assert count.seen == [bytes([0]) * 20, b"Z" + bytes([2]) * 19, bytes([3]) * 20]
    sent = [bytes(f) for f in out.frames]
    assert sent[:2] == [bytes([0]) * 20, bytes([1]) * 20]  # chain 11, as they came
    assert sent[2:] == [bytes([0]) * 20, b"e" * 14, b"Z" + bytes([2]) * 19, bytes([3]) * 20]
    assert (chain.packets, chain.dropped, chain.modified) == (4, 1, 1)
    assert out.forwarded == 5


@pytest.mark.parametrize("failure, goes_on", [("open", True), ("closed", False)])
def test_frames_a_module_failed_on_follow_its_failure_policy(failure, goes_on):
    d = Dispatcher()
    fake, count = FakeIsolated(bytes([F, X, F])), Count()
    chain = install(d, 10, [("fake", fake), ("count", count)], [guard(failure), Guard()])
    out = d.run_batch(frames(3))
    assert len(count.seen) == (3 if goes_on else 2) and out.forwarded == len(count.seen)
    stats = chain.stats()
    assert stats["errors"] == 1 and stats["last_error"] == "fake: ValueError('no')"
    assert stats["modules"][0]["unprocessed"] == 1 and stats["modules"][0]["state"] == "running"


@pytest.mark.parametrize(
    "make_it_fail, reason",
    [
        (lambda m: setattr(m, "failure", "hung: no answer within 0.30 s"), "hung"),
        (lambda m: setattr(m, "memory", True), "over its memory budget"),
        (lambda m: setattr(m, "cpu", 1.0), "over its time budget"),
        (lambda m: setattr(m, "verdicts", bytes([X]) * 64), "over its error budget"),
    ],
)
def test_a_module_that_fails_its_budget_is_quarantined_and_its_session_goes_on(
    make_it_fail, reason
):
    d = Dispatcher()
    fake, count = FakeIsolated(), Count()
    chain = install(d, 10, [("fake", fake), ("count", count)], [guard(), Guard()])
    neighbour = Count()
    install(d, 11, [("n", neighbour)], [Guard()])
    d.run_batch(frames(4))
    make_it_fail(fake)
    for _ in range(3):
        out = d.run_batch(frames(16) + frames(16, tag=11))
        assert out.forwarded == 32  # fail open: nothing lost, in this session or the other
    entry = chain.stats()["modules"][0]
    assert entry["state"] == "quarantined" and reason in entry["reason"]
    assert fake.killed and isinstance(chain.modules[0][1], Quarantined)
    assert len(fake.batches) == 2  # never called again once quarantined
    assert len(count.seen) == 4 + 48 and len(neighbour.seen) == 48
    assert not chain.batched  # nothing isolated is left: frame by frame again


def test_a_quarantined_fail_closed_module_drops_its_sessions_frames():
    d = Dispatcher()
    fake = FakeIsolated()
    fake.failure = "died of SIGSEGV"
    chain = install(d, 10, [("fake", fake)], [guard("closed")])
    assert d.run_batch(frames(5)).forwarded == 0
    assert d.run_batch(frames(5)).forwarded == 0
    assert chain.dropped == 10 and chain.stats()["modules"][0]["unprocessed"] == 10


def test_frames_over_the_rate_pass_the_module_by_and_are_counted():
    clock = Clock()
    d = Dispatcher(clock)
    fake = FakeIsolated()
    chain = install(d, 10, [("fake", fake)], [guard(clock=clock, frames_per_second=100)])
    assert d.run_batch(frames(30)).forwarded == 30
    assert len(fake.batches[0]) == 10  # a tenth of a second's worth
    entry = chain.stats()["modules"][0]
    assert entry["over_rate"] == 20 and entry["unprocessed"] == 20
    assert entry["state"] == "running"


def test_a_worker_found_dead_outside_the_packet_loop_is_replaced_at_the_next_batch():
    d = Dispatcher()
    fake, g = FakeIsolated(), guard()
    chain = install(d, 10, [("fake", fake)], [g])
    g.quarantine("died of SIGKILL")  # as the proxy does when a stats call finds it gone
    assert d.run_batch(frames(3)).forwarded == 3
    assert fake.batches == [] and isinstance(chain.modules[0][1], Quarantined)


class Raiser(ServiceModule):
    def __init__(self):
        super().__init__({}, ModuleContext(1, 1, "raiser"))
        self.calls = 0

    def process(self, frame):
        self.calls += 1
        raise ValueError("broken")


@pytest.mark.parametrize("failure, forwarded", [("open", 30), ("closed", 0)])
def test_a_trusted_module_that_keeps_raising_is_quarantined(failure, forwarded):
    clock = Clock()
    d = Dispatcher(clock)
    raiser = Raiser()
    g = Guard("trusted", failure, Budget(errors_per_second=5), clock)
    chain = install(d, 10, [("raiser", raiser)], [g])
    out = d.run_batch(frames(30))
    assert out.forwarded == forwarded
    assert raiser.calls == 6  # five within its budget, the sixth is one too many
    entry = chain.stats()["modules"][0]
    assert entry["state"] == "quarantined" and "error budget" in entry["reason"]
    assert entry["tier"] == "trusted" and chain.errors == 6


def test_a_chain_of_the_agents_own_modules_stays_frame_by_frame():
    chain = Chain(1, 10, [("count", Count())], expires=0, lifetime=1)
    assert not chain.batched and [g.tier for g in chain.guards] == ["trusted"]
    assert Chain(2, 11, [("f", FakeIsolated())], expires=0, lifetime=1).batched


def test_the_guards_view_crosses_the_agents_contract():
    d = Dispatcher()
    fake = FakeIsolated()
    fake.failure = "hung: no answer within 0.30 s"
    g = guard("closed", frames_per_second=100)
    g.confined = {"uid": 1314066578, "landlock_abi": 7}
    chain = install(d, 10, [("fake", fake), ("count", Count())], [g, Guard()])
    d.run_batch(frames(3))
    stats = ChainStats.from_json(chain.stats())
    isolated, trusted = stats.modules
    assert (isolated.tier, isolated.state, isolated.failure) == (
        "isolated",
        "quarantined",
        "closed",
    )
    assert isolated.reason == "hung: no answer within 0.30 s" and isolated.unprocessed == 3
    assert isolated.over_rate == 0 and isolated.confined["landlock_abi"] == 7
    assert (trusted.tier, trusted.state, trusted.reason, trusted.over_rate) == (
        "trusted",
        "running",
        None,
        None,
    )
    assert ChainStats.from_json(stats.to_json()) == stats
    bad = chain.stats()
    bad["modules"][0]["state"] = "sleeping"
    with pytest.raises(ContractError, match="state of fake must be one of"):
        ChainStats.from_json(bad)
