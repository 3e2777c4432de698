"""Verdicts, emitted frames and module timers, through the dispatcher and the packet loop."""

from pathlib import Path

import pytest

from agentproto.messages import Attach, ModuleSpec
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.dispatcher import Chain, Dispatcher
from nodes.host import ModuleHost
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox.policy import TierPolicy

SERVICES = Path(__file__).resolve().parents[2] / "services"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Step(ServiceModule):
    """Records the frames it sees in a shared trail; returns a set verdict; may emit."""

    def __init__(self, name, trail, verdict=Verdict.FORWARD, emit=b"", clock=None):
        super().__init__({}, ModuleContext(1, 1, name, clock or Clock()))
        self.name, self.trail, self.verdict, self.emit = name, trail, verdict, emit

    def process(self, frame):
        self.trail.append((self.name, bytes(frame[:1])))
        if self.emit:
            self.ctx.emit(self.emit + bytes(frame[:1]))
        if self.verdict == Verdict.MODIFIED:
            frame[0] ^= 0xFF
        return self.verdict


def frame(n: int) -> memoryview:
    return memoryview(bytearray([n]) * 60)


def chain(session: int, tag: int, *modules: ServiceModule) -> Chain:
    return Chain(session, tag, [(m.name, m) for m in modules], expires=0, lifetime=1)


def test_the_old_name_pass_still_means_forward():
    assert Verdict.PASS is Verdict.FORWARD and Verdict(0) is Verdict.FORWARD
    assert [v.name for v in Verdict] == ["FORWARD", "DROP", "MODIFIED"]


def test_a_chain_of_three_runs_in_order_and_a_drop_in_the_middle_ends_it():
    trail: list = []
    first, third = Step("first", trail), Step("third", trail)
    middle = Step("middle", trail, Verdict.DROP, emit=b"E" * 20)
    d = Dispatcher()
    c = d.put(chain(1, 10, first, middle, third)) or d.by_tag(10)
    out = d.run_batch([(10, frame(1)), (10, frame(2))])
    assert trail == [
        ("first", b"\x01"),
        ("middle", b"\x01"),
        ("first", b"\x02"),
        ("middle", b"\x02"),
    ]
    assert out.frames == [b"E" * 20 + b"\x01", b"E" * 20 + b"\x02"]  # what was emitted goes out
    assert out.forwarded == 0 and out.owners == [(c, True), (c, True)]
    assert (c.packets, c.dropped, c.modified) == (2, 2, 0)
    assert (c.module_frames(), c.module_dropped) == ([2, 2, 0], [0, 2, 0])


def test_forwarded_frames_come_out_rewritten_each_followed_by_its_emits():
    trail: list = []
    rewriter = Step("rewrite", trail, Verdict.MODIFIED, emit=b"R" * 20)
    counter = Step("count", trail)
    d = Dispatcher()
    d.put(chain(1, 10, rewriter, counter))
    c = d.by_tag(10)
    out = d.run_batch([(10, frame(1)), (None, frame(7)), (10, frame(2))])
    assert [bytes(f[:1]) if len(f) == 60 else bytes(f) for f in out.frames] == [
        b"\xfe",
        b"R" * 20 + b"\x01",
        b"\x07",
        b"\xfd",
        b"R" * 20 + b"\x02",
    ]
    assert trail[1] == ("count", b"\xfe")  # the next module saw the rewritten frame
    assert (c.packets, c.modified, c.dropped, out.forwarded, d.unmatched) == (2, 2, 0, 3, 1)
    Dispatcher.count_sent(out, 3)  # the link took three of the five
    assert (c.returned, c.emitted, c.send_failed, c.emit_failed) == (1, 1, 1, 1)
    stats = c.stats()
    assert {k: stats[k] for k in ("forwarded", "modified", "emitted", "emit_failed")} == {
        "forwarded": 2,
        "modified": 2,
        "emitted": 1,
        "emit_failed": 1,
    }


class Raises(Step):
    def process(self, frame):
        self.ctx.emit(b"half-made frame!")
        raise RuntimeError("broken")


class Odd(Step):
    def process(self, frame):
        return "sure"


def test_a_module_that_raises_is_skipped_and_its_emits_are_thrown_away():
    trail: list = []
    d = Dispatcher()
    d.put(chain(1, 10, Raises("bad", trail), Odd("odd", trail), Step("after", trail)))
    out = d.run_batch([(10, frame(1))])
    c = d.by_tag(10)
    assert out.frames == [frame(1)] and trail == [("after", b"\x01")]
    assert c.errors == 2 and "not a Verdict" in c.last_error
    assert d.by_tag(10).modules[0][1].ctx.outbox.frames == []


class Ticker(ServiceModule):
    """Emits a frame from a timer every second."""

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.ticks = ctx.counter("ticks", "timer runs")
        ctx.every(1, self.tick)

    def tick(self):
        self.ticks.inc()
        self.ctx.emit(b"T" * 14 + bytes([int(self.ticks.value)]))
        if self.params.get("fail"):
            raise ValueError("tick failed")


def test_module_timers_run_in_the_batch_once_the_chain_is_installed():
    clock = Clock()
    d = Dispatcher(clock)
    ticker = Ticker({}, ModuleContext(1, 1, "ticker", clock))
    clock.now += 5
    assert not d.timers_due()  # not installed: nothing armed
    d.put(Chain(1, 10, [("ticker", ticker)], expires=0, lifetime=1))
    clock.now += 1
    assert d.timers_due()
    out = d.run_batch([])
    assert out.frames == [b"T" * 14 + b"\x01"] and out.owners == [(d.by_tag(10), True)]
    assert not d.timers_due()
    assert d.by_tag(10).stats()["modules"][0] == {
        "name": "ticker",
        "stats": {"ticks": 1},  # a module's metrics are its stats unless it says otherwise
        "tier": "trusted",
        "state": "running",
        "failure": "open",
        "unprocessed": 0,
        "frames": 0,
        "dropped": 0,
        "errors": 0,
        "metrics": [{"name": "ticks", "type": "counter", "help": "timer runs", "value": 1}],
    }
    d.remove(1)
    clock.now += 10
    assert not d.timers_due() and d.run_batch([]).frames == []


def test_a_timer_that_raises_is_charged_to_its_chain():
    clock = Clock()
    d = Dispatcher(clock)
    d.put(Chain(1, 10, [("ticker", Ticker({"fail": True}, ModuleContext(1, 1, "t", clock)))], 0, 1))
    clock.now += 1
    assert d.run_batch([]).frames == []  # the failed run's frame is not sent
    c = d.by_tag(10)
    assert c.errors == 1 and c.last_error == "ticker (timer): ValueError('tick failed')"


class Batches:
    """A packet socket stand-in: delivers the given batches (None: a receive time-out),
    moving the clock on before each, then stops the agent."""

    def __init__(self, agent, clock, batches):
        self.agent, self.clock, self.batches, self.sent = agent, clock, list(batches), []
        self.too_big = 0

    def recv_batch(self):
        if not self.batches:
            self.agent.stopping.set()
            return []
        self.clock.now += 1
        return self.batches.pop(0) or []

    def send_batch(self, frames):
        self.sent += [bytes(f) for f in frames]
        return len(frames)

    def queue_dropped(self):
        return 0


def test_the_packet_loop_sends_emitted_frames_and_runs_timers_when_idle(tmp_path):
    clock = Clock()
    (tmp_path / "ticker").mkdir()
    (tmp_path / "ticker" / "manifest.toml").write_text(
        'name = "ticker"\nentry = "module:T"\ntier = "trusted"\n'
    )
    (tmp_path / "ticker" / "module.py").write_text(
        "from nodes.module_api import ServiceModule, Verdict\n"
        "class T(ServiceModule):\n"
        "    def __init__(self, params, ctx):\n"
        "        super().__init__(params, ctx)\n"
        "        ctx.every(1, lambda: ctx.emit(b'tick' * 4))\n"
        "    def process(self, frame):\n"
        "        self.ctx.emit(b'echo' * 4)\n"
        "        return Verdict.DROP\n"
    )
    config = AgentConfig(1, "s1-na", "s1-ns", "http://c", policy=TierPolicy.parse(["ticker"]))
    agent = NodeAgent(config, Catalog(tmp_path), clock)
    c = agent.attach(Attach(1, 5, 60, (ModuleSpec("ticker"),)))
    io = Batches(agent, clock, [None, [(5, frame(1))], None])
    agent.packet_loop(io)
    assert io.sent == [b"tick" * 4, b"tick" * 4, b"echo" * 4, b"tick" * 4]
    assert (c.packets, c.dropped, c.returned, c.emitted) == (1, 1, 0, 4)
    io = agent.io_stats()
    assert (io.received, io.dropped, io.sent) == (1, 1, 4)


def test_the_host_gives_each_instance_a_context_on_the_agents_clock_and_closes_it():
    clock = Clock()
    host = ModuleHost(Catalog(SERVICES), node=7, clock=clock)
    instance = host.instantiate("counter", {}, 3)
    ctx = instance.ctx
    assert (ctx.session_id, ctx.node, ctx.module, ctx.clock) == (3, 7, "counter", clock)
    timer = ctx.every(1, lambda: None)
    ctx.emit(b"\0" * 14)
    host.release("counter", instance)
    assert not timer.active and ctx.outbox.frames == []


def test_module_context_blocks_follow_its_clock():
    clock = Clock()
    ctx = ModuleContext(1, 1, "m", clock)
    flows, bucket, cache = ctx.flows(idle=2, factory=int), ctx.bucket(1, 1), ctx.cache(ttl=2)
    flows.setdefault("f")
    cache.put("k", "v")
    assert bucket.take() and not bucket.take()
    clock.now += 2
    assert "f" not in flows and cache.get("k") is None and bucket.take()
    with pytest.raises(ValueError):
        ctx.counter("Bad Name")
