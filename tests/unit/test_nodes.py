"""The node agent's pure parts: bundles, the module host, the dispatcher, attach checks."""

import json
import threading
import time
from pathlib import Path

import pytest

from agentproto.messages import Attach, ModuleSpec
from nodes import control
from nodes.agent import AgentConfig, AttachError, NodeAgent
from nodes.bundle import BundleError, Catalog, read_manifest
from nodes.dispatcher import Chain, Dispatcher
from nodes.host import ModuleHost, ModuleLoadError
from nodes.module_api import ServiceModule, Verdict
from nodes.sandbox.policy import TierPolicy

SERVICES = Path(__file__).resolve().parents[2] / "services"


TRUSTED = 'tier = "trusted"\n'


def bundle(root: Path, name: str, manifest: str, code: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(manifest)
    (folder / "module.py").write_text(code)
    return folder


def test_shipped_bundles_are_valid():
    good, bad = Catalog(SERVICES).all()
    assert bad == [] and {"counter", "null"} <= {m.name for m in good}


@pytest.mark.parametrize(
    "manifest, message",
    [
        ('name = "x"\nentry = "module:X"\n', "differs from its folder"),
        ('name = "m"\nentry = "nocolon"\n', "entry must look like"),
        ('name = "m"\nentry = "other:X"\n', "other.py is missing"),
        ('name = "m"\nentry = "module:X"\ncolour = 1\n', "unknown key"),
        ('name = "m"\nentry = "module:X"\n[params.a]\ntype = "list"\n', "needs type"),
        (
            'name = "m"\nentry = "module:X"\n[params.a]\ntype = "int"\ndefault = "z"\n',
            "must be int",
        ),
        ('name = "m"\nentry = "module:X"\n[[', "manifest.toml"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path, manifest, message):
    folder = bundle(tmp_path, "m", manifest, "")
    with pytest.raises(BundleError, match=message):
        read_manifest(folder)


def test_module_code_is_loaded_on_first_use_and_unloaded_after_last(tmp_path):
    code = (
        "from nodes.module_api import ServiceModule, Verdict\n"
        "class M(ServiceModule):\n"
        "    def process(self, frame):\n"
        "        return Verdict.{}\n"
    )
    manifest = 'name = "m"\nentry = "module:M"\n' + TRUSTED
    folder = bundle(tmp_path, "m", manifest, code.format("PASS"))
    host = ModuleHost(Catalog(tmp_path), node=1, policy=TierPolicy.parse(["m"]))
    a, b = host.instantiate("m", {}, 1), host.instantiate("m", {}, 2)
    assert host.loaded() == {"m": {"version": "0", "sessions": 2, "tier": "trusted"}}
    host.release("m", a)
    host.release("m", b)
    assert host.loaded() == {}
    (folder / "module.py").write_text(code.format("DROP"))  # a new version, no restart
    assert host.instantiate("m", {}, 3).process(memoryview(b"")) == Verdict.DROP


def test_load_failures_leave_nothing_loaded(tmp_path):
    bundle(tmp_path, "syntax", 'name = "syntax"\nentry = "module:M"\n' + TRUSTED, "def (:\n")
    bundle(tmp_path, "notsub", 'name = "notsub"\nentry = "module:M"\n' + TRUSTED, "class M: pass\n")
    host = ModuleHost(Catalog(tmp_path), node=1, policy=TierPolicy.parse(["syntax", "notsub"]))
    for name, message in (
        ("syntax", "failed to load"),
        ("notsub", "not a ServiceModule"),
        ("absent", "unknown module"),
    ):
        with pytest.raises(ModuleLoadError, match=message):
            host.instantiate(name, {}, 1)
    assert host.loaded() == {}


class Boom(ServiceModule):
    def process(self, frame):
        raise ValueError("bad frame")


class Drop(ServiceModule):
    def process(self, frame):
        return Verdict.DROP


class Count(ServiceModule):
    seen = 0

    def process(self, frame):
        self.seen += 1
        return Verdict.PASS


def test_chain_runs_in_order_stops_on_drop_and_fails_open_on_errors():
    d = Dispatcher()
    count = Count({}, None)
    d.put(Chain(1, 10, [("boom", Boom({}, None)), ("count", count)], expires=0, lifetime=1))
    d.put(Chain(2, 11, [("drop", Drop({}, None)), ("count", count)], expires=0, lifetime=1))
    assert d.dispatch(10, memoryview(b"x")) is True and count.seen == 1
    assert d.dispatch(11, memoryview(b"x")) is False and count.seen == 1
    assert d.dispatch(99, memoryview(b"x")) is True and d.unmatched == 1
    stats = d.by_session(1).stats()
    assert stats["errors"] == 1 and "bad frame" in stats["last_error"]
    assert d.by_session(2).stats()["dropped"] == 1
    assert d.remove(1) is not None and d.by_tag(10) is None


@pytest.fixture
def agent() -> NodeAgent:
    return NodeAgent(AgentConfig(1, "s1-na", "s1-ns", "http://c"), Catalog(SERVICES))


@pytest.mark.parametrize(
    "body, status",
    [
        ({"tag": 0, "lifetime": 5, "modules": [{"name": "null"}]}, 400),
        ({"tag": 1, "lifetime": -1, "modules": [{"name": "null"}]}, 400),
        ({"tag": 1, "lifetime": 5, "modules": []}, 400),
        ({"tag": 1, "lifetime": 5, "modules": [{"name": "nope"}]}, 422),
        ({"tag": 1, "lifetime": 5, "modules": [{"name": "counter", "params": {"x": 1}}]}, 422),
        ({"tag": 1, "lifetime": 5, "modules": [{"name": "null"}, {"name": "nope"}]}, 422),
    ],
)
def test_bad_attach_requests_leave_nothing(agent, body, status):
    answered, data, _ = control.answer(agent, "PUT", "/sessions/7", json.dumps(body).encode())
    assert answered == status, data
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_a_tag_belongs_to_one_session(agent):
    agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    with pytest.raises(AttachError) as err:
        agent.attach(Attach(2, 5, 5, (ModuleSpec("null"),)))
    assert err.value.status == 409
    agent.attach(Attach(1, 6, 5, (ModuleSpec("counter"),)))  # re-attach
    assert [c.tag for c in agent.dispatcher.chains()] == [6]
    assert set(agent.host.loaded()) == {"counter"}


class Slow(ServiceModule):
    """Blocks in process() until released; records whether stop() came while inside."""

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        self.inside = threading.Event()
        self.release = threading.Event()
        self.stopped_while_inside: bool | None = None
        self._busy = False

    def process(self, frame):
        self._busy = True
        self.inside.set()
        self.release.wait(5)
        self._busy = False
        return Verdict.PASS

    def stop(self):
        self.stopped_while_inside = self._busy


class OneFrame:
    """A packet socket stand-in that delivers one tagged frame, then nothing."""

    def __init__(self, agent, tag):
        self.agent, self.tag, self.sent = agent, tag, 0
        self.done = False

    def recv_batch(self):
        if self.done:
            time.sleep(0.01)
            return []
        self.done = True
        return [(self.tag, memoryview(bytearray(60)))]

    def send_batch(self, frames):
        self.sent += len(frames)
        return len(frames)


def test_detach_waits_for_the_frame_a_module_is_still_handling(agent):
    chain = agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    slow = Slow({}, None)
    chain.modules[0] = ("null", slow)  # in place of the null instance
    chain.relisted()
    io = OneFrame(agent, 5)
    loop = threading.Thread(target=agent.packet_loop, args=(io,))
    loop.start()
    try:
        assert slow.inside.wait(5)
        detacher = threading.Thread(target=agent.detach, args=(1,))
        detacher.start()
        time.sleep(0.05)
        assert slow.stopped_while_inside is None  # detach is waiting, stop() not yet called
        slow.release.set()
        detacher.join(5)
        assert slow.stopped_while_inside is False and io.sent == 1
    finally:
        slow.release.set()
        agent.stopping.set()
        loop.join(5)


class Batches:
    """A packet socket stand-in: delivers the given batches, then stops the agent.

    `send_batch` sends at most `room` frames of each batch, as a full link would.
    """

    def __init__(self, agent, batches, room=99, stale=(), late=()):
        self.agent, self.batches, self.room, self.sent = agent, list(batches), room, []
        self.too_big = 3
        self.stale = 0
        self.stale_tags = []
        self._stale, self._late = list(stale), list(late)

    def late(self):
        return bool(self._late) and self._late.pop(0)

    def recv_batch(self):
        self.stale_tags = self._stale.pop(0) if self._stale else []
        self.stale += len(self.stale_tags)
        if not self.batches:
            self.agent.stopping.set()
            return []
        return self.batches.pop(0)

    def send_batch(self, frames):
        self.sent += [bytes(f) for f in frames[: self.room]]
        return min(len(frames), self.room)

    def queue_dropped(self):
        return 7


def frame(n):
    return memoryview(bytearray([n]) * 60)


def test_the_packet_loop_credits_each_chain_with_what_it_returned_or_failed_to_send(agent):
    kept = agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    dropper = agent.attach(Attach(2, 6, 5, (ModuleSpec("null"),)))
    dropper.modules[0] = ("null", Drop({}, None))
    dropper.relisted()
    io = Batches(agent, [[(5, frame(1)), (6, frame(2)), (None, frame(3))], [(5, frame(4))]], room=1)
    agent.packet_loop(io)
    assert io.sent == [bytes(frame(1)), bytes(frame(4))]  # the untagged frame found no room
    assert (kept.packets, kept.returned, kept.send_failed) == (2, 2, 0)
    assert (dropper.packets, dropper.dropped, dropper.returned) == (1, 1, 0)
    node = agent.session_stats(1).node.to_json()
    assert {k: node[k] for k in ("received", "sent", "dropped", "send_failed", "unmatched")} == {
        "received": 4,
        "sent": 2,
        "dropped": 1,
        "send_failed": 1,
        "unmatched": 1,
    }
    assert (node["too_big"], node["queue_dropped"]) == (3, 7)
    with pytest.raises(KeyError):
        agent.session_stats(3)


def test_a_failed_send_is_charged_to_the_chain_of_the_frame_that_did_not_leave(agent):
    a = agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    b = agent.attach(Attach(2, 6, 5, (ModuleSpec("null"),)))
    agent.packet_loop(Batches(agent, [[(5, frame(1)), (6, frame(2)), (5, frame(3))]], room=1))
    assert (a.returned, a.send_failed, b.returned, b.send_failed) == (1, 1, 0, 1)


def test_stale_frames_are_charged_to_their_sessions_and_a_late_batch_is_not_sent(agent):
    agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    agent.attach(Attach(2, 6, 5, (ModuleSpec("null"),)))
    io = Batches(
        agent,
        [[(5, frame(1))], [(5, frame(2)), (6, frame(3))], [(6, frame(4))]],
        stale=[[5, 5, None], [], []],  # the first receive dropped three, one of no session
        late=[False, True, False],  # the agent stopped between the second's receive and send
    )
    agent.packet_loop(io)
    assert io.sent == [bytes(frame(1)), bytes(frame(4))]  # nothing sent late
    assert agent.session_stats(1).stale == 3 - 1 + 1  # two on receive, one late
    assert agent.session_stats(2).stale == 1
    node = agent.io_stats()
    assert (node.stale, node.send_failed, node.sent) == (3 + 2, 0, 2)
    assert agent.detach(1).stale == 3 and agent.session_stats(2).returned == 1
    assert agent.session_stats(2).to_json()["stale"] == 1  # the contract carries it


class Looper(ServiceModule):
    """A trusted module that never returns from its first frame."""

    def process(self, frame):
        while True:
            pass


def test_a_trusted_module_that_holds_the_packet_loop_is_interrupted_and_quarantined(agent):
    looping = agent.attach(Attach(1, 5, 5, (ModuleSpec("null"),)))
    looping.modules[0] = ("null", Looper({}, None))
    looping.relisted()
    other = agent.attach(Attach(2, 6, 5, (ModuleSpec("null"),)))
    io = Batches(agent, [[(5, frame(1))], [(6, frame(2)), (5, frame(3))]])
    watchdog = threading.Thread(target=agent.watchdog_loop)
    watchdog.start()
    started = time.monotonic()
    try:
        agent.packet_loop(io)
    finally:
        agent.stopping.set()
        watchdog.join(5)
    assert time.monotonic() - started < 3
    guard = looping.guards[0]
    assert guard.quarantined and "packet loop" in guard.reason
    assert io.sent == [bytes(frame(1)), bytes(frame(2)), bytes(frame(3))]  # it fails open
    assert other.returned == 1 and looping.packets == 2
