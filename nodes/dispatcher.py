"""The dispatcher: finds a frame's session by its tag and runs the session's chain.

The switch already classified the frame and pushed the session's tag, so finding the
chain is one dict look-up. The tag → chain map and the session → chain map are changed
one key at a time (the control API attaches and detaches from other threads, one at a
time under the agent's lock): each such change is atomic under the GIL, so the packet
loop reads the map without a lock, and a change costs the same with 10 or 10,000
chains. Whoever lists the chains takes a copy first (one C call, atomic too). The
digest of the sessions held (`agentproto/held.py`), which the heartbeat carries, is kept
up to date with the session map, so reading it costs nothing either.

The packet loop hands `run_batch` a batch and sends what it returns: the frames that
came through their chains, and the frames modules emitted (from a frame's call or a
timer), in one list. Module timers run there too, before the batch's frames, so they
run on the packet loop's thread between frames and never beside them.

A copy chain (the controller installed a copy rule, which it does only for a chain of
observe-only modules, and said so in the attach) gets copies: the switch forwarded
each frame itself, so nothing of such a chain is sent back (`Chain.observe`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import thread_time

from agentproto.held import Held, HeldSet
from nodes.blocks.timers import Scheduler
from nodes.module_api import ModuleContext, Outbox, ServiceModule, Verdict
from nodes.sandbox.batched import ObserveOnly, run_batched
from nodes.sandbox.guard import Guard, Quarantined

log = logging.getLogger("netserv.dispatcher")
Batch = list[tuple[int | None, memoryview]]  # (tag, frame) as received
# An enum member looked up per module call costs more than the call: compare with these.
_DROP, _FORWARD, _MODIFIED = Verdict.DROP, Verdict.FORWARD, Verdict.MODIFIED
# A trusted module's CPU time is measured on one frame of its chain in this many: charged
# to its time budget and recorded for the metrics. Reading the thread's CPU clock costs
# about 2 µs here, more than a small module's call, so one frame in 64 costs the others
# about 60 ns each.
SAMPLE_EVERY = 64


class ModuleHung(BaseException):
    """Raised in the packet loop's thread, inside a trusted module that held the loop too
    long, by the agent's watchdog (`NodeAgent.watchdog_loop`). A BaseException, so that
    the module's own `except Exception` does not swallow it."""


def _context(module: ServiceModule) -> ModuleContext | None:
    return getattr(module, "ctx", None)


@dataclass
class Chain:
    """One session's modules, in attach order, with the session's frame counters."""

    session_id: int
    tag: int
    modules: list[tuple[str, ServiceModule]]
    expires: float
    lifetime: int
    attached_at: float = 0.0
    packets: int = 0  # frames the chain was run on
    dropped: int = 0  # ... that a module dropped
    modified: int = 0  # ... that came through rewritten (a module said MODIFIED)
    returned: int = 0  # ... sent back to the switch
    send_failed: int = 0  # ... passed on but not sent (the agent's link was full)
    emitted: int = 0  # frames the chain's modules emitted that were sent
    emit_failed: int = 0  # ... that were not sent (the link was full)
    errors: int = 0
    last_error: str = field(default="")
    # One a module, in the same order: its failure policy, budgets and state.
    guards: list[Guard] = field(default_factory=list)
    # What the controller installed at the switch (`Attach.copy`): True, a copy rule,
    # the switch forwarded each frame itself and sends the chain copies, so nothing
    # goes back (`observe`); False, a detour. Told, never worked out here from the
    # modules: the switch does what the controller installed, whatever this node's
    # manifests say. Fixed for the chain's life (an upgrade keeps it).
    copy: bool = False
    # Whether a module runs in a process of its own: the chain then runs a batch at a
    # time (nodes/sandbox/batched.py) rather than a frame at a time.
    batched: bool = field(default=False, init=False)
    # Whether a module has a frame rate: every frame is then run by `run_checked`.
    rated: bool = field(default=False, init=False)
    # One a module, in the same order: frames it ended (a drop, or a failure under a
    # closed policy) and failed on; the frames a module saw follow from the first.
    module_dropped: list[int] = field(default_factory=list, init=False)
    module_errors: list[int] = field(default_factory=list, init=False)
    # Seconds a module took over `module_timed` frames: a sample of the frames (one in
    # SAMPLE_EVERY) for the agent's own modules, every frame for isolated ones (the
    # CPU time its worker reports).
    module_seconds: list[float] = field(default_factory=list, init=False)
    module_timed: list[int] = field(default_factory=list, init=False)
    # `modules` as `run` walks them: (position, name, module, its outbox or None), so
    # that a frame costs one call per module and not two more to find its outbox.
    _steps: list[tuple[int, str, ServiceModule, Outbox | None]] = field(
        default_factory=list, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.guards:
            self.guards = [Guard() for _ in self.modules]
        self.relisted()

    def relisted(self) -> None:
        """Take note of the chain's modules and guards (after they changed)."""
        self.batched = any(hasattr(m, "process_batch") for _, m in self.modules)
        self._steps = [
            (pos, name, module, ctx.outbox if (ctx := _context(module)) is not None else None)
            for pos, (name, module) in enumerate(self.modules)
        ]
        self.rated = any(g.rated for g in self.guards)
        n = len(self.modules)
        if len(self.module_dropped) != n:  # kept across a quarantine or an upgrade
            self.module_dropped, self.module_errors = [0] * n, [0] * n
            self.module_seconds, self.module_timed = [0.0] * n, [0] * n

    def module_frames(self) -> list[int]:
        """Return how many frames reached each module: those no module before it ended."""
        out, left = [], self.packets
        for dropped in self.module_dropped:
            out.append(left)
            left -= dropped
        return out

    def run(self, frame: memoryview, emitted: list[bytes]) -> bool:
        """Run every module on `frame`; return True when it goes back to the switch.

        Frames the modules emit on the way are added to `emitted`.
        """
        self.packets += 1
        # The loop below repeats `run_checked`'s without its budget checks, on purpose:
        # 63 frames in 64 of an unrated chain pay for no clock read and no guard.
        if self.rated or not self.packets % SAMPLE_EVERY:
            return self.run_checked(frame, emitted)
        modified = False
        for pos, name, module, outbox in self._steps:
            try:
                verdict = module.process(frame)
            except (Exception, ModuleHung) as exc:  # the frame follows its failure policy
                self._take(module, None)
                if self._fail(name, module, exc):
                    self.drop_at(pos)
                    return False
                continue
            if outbox is not None and outbox.frames:
                emitted.extend(outbox.take())
            if verdict == _DROP:
                self.drop_at(pos)
                return False
            if verdict == _MODIFIED:
                modified = True
            elif verdict != _FORWARD and verdict is not None:
                error = ValueError(f"process() returned {verdict!r}, not a Verdict")
                if self._fail(name, module, error):
                    self.drop_at(pos)
                    return False
        if modified:
            self.modified += 1
        return True

    def observe(self, frame: memoryview) -> None:
        """Run every module on a copy of a frame the switch forwarded itself; nothing of
        it goes back.

        A verdict changes nothing: a copy is neither forwarded nor dropped. What an
        observe-only module may not do is counted as its error, against its error
        budget (one that keeps on is quarantined) and otherwise ignored: raising,
        writing to the frame (its view is read-only, so the write raises), returning
        MODIFIED or what is no verdict, emitting a frame (thrown away).
        """
        self.packets += 1
        view = frame.toreadonly()
        for name, module in self.modules:
            self.observe_in(name, module, view)

    def observe_in(self, name: str, module: ServiceModule, view: memoryview) -> None:
        """Run one module of a copy chain on a read-only copy (see `observe`)."""
        try:
            verdict = module.process(view)
        except (Exception, ModuleHung) as exc:
            self._take(module, None)
            self._fail(name, module, exc)
            return
        ctx = _context(module)
        if ctx is not None and ctx.outbox.frames:
            sent = len(ctx.outbox.take())
            self.charge(name, module, ObserveOnly(f"emitted {sent} frame(s)"))
        if verdict == _MODIFIED:
            self.charge(name, module, ObserveOnly("returned MODIFIED"))
        elif verdict != _FORWARD and verdict != _DROP and verdict is not None:
            self.charge(name, module, ValueError(f"process() returned {verdict!r}"))

    def run_checked(self, frame: memoryview, emitted: list[bytes]) -> bool:
        """Run every module on `frame` as `run` does, within its budgets: a frame over a
        module's frame rate passes it by (its failure policy applies), and on one frame
        in SAMPLE_EVERY each module's CPU time is charged to its time budget; a module
        over it is quarantined. Return True when the frame goes back to the switch."""
        sampled = not self.packets % SAMPLE_EVERY
        modified = False
        for pos, ((name, module), guard) in enumerate(zip(self.modules, self.guards, strict=True)):
            if not guard.quarantined and not guard.admit(1):
                guard.unprocessed += 1
                if guard.fail_closed:
                    self.drop_at(pos)
                    return False
                continue
            started = thread_time() if sampled else 0.0
            try:
                verdict = module.process(frame)
            except (Exception, ModuleHung) as exc:
                self._take(module, None)
                if self._fail(name, module, exc):
                    self.drop_at(pos)
                    return False
                continue
            if sampled and not guard.quarantined:
                took = thread_time() - started
                self.timed(pos, 1, took)
                reason = guard.charge_time(1, took)
                if reason:
                    self.quarantine(module, reason)
            self._take(module, emitted)
            if verdict == _DROP:
                self.drop_at(pos)
                return False
            if verdict == _MODIFIED:
                modified = True
            elif verdict != _FORWARD and verdict is not None:
                error = ValueError(f"process() returned {verdict!r}, not a Verdict")
                if self._fail(name, module, error):
                    self.drop_at(pos)
                    return False
        if modified:
            self.modified += 1
        return True

    def drop_at(self, pos: int, frames: int = 1) -> None:
        """Count `frames` ended by the module at `pos` (a drop, or its closed policy)."""
        self.dropped += frames
        self.module_dropped[pos] += frames

    def timed(self, pos: int, frames: int, seconds: float) -> None:
        """Record that the module at `pos` took `seconds` over `frames` frames."""
        self.module_seconds[pos] += seconds
        self.module_timed[pos] += frames

    @staticmethod
    def _take(module: ServiceModule, into: list[bytes] | None) -> None:
        """Move the module's emitted frames into `into` (None: throw them away)."""
        ctx = _context(module)
        if ctx is not None and ctx.outbox.frames:
            frames = ctx.outbox.take()
            if into is not None:
                into.extend(frames)

    def _error(self, name: str, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{name}: {exc!r}"

    def _fail(self, name: str, module: ServiceModule, exc: BaseException) -> bool:
        """Count a frame `module` failed on, quarantine it when that is over its error
        budget or it hung; return True when the frame is dropped (its failure policy is
        closed)."""
        pos = self._position(module)
        guard = self.guards[pos]
        guard.unprocessed += 1
        self.charge(name, module, exc)
        return guard.fail_closed

    def charge(self, name: str, module: ServiceModule, exc: BaseException) -> None:
        """Count `exc` as an error of `module`; quarantine it when that is over its error
        budget, or at once when it hung."""
        self._error(name, exc)
        pos = self._position(module)
        self.module_errors[pos] += 1
        guard = self.guards[pos]
        hung = isinstance(exc, ModuleHung)
        reason = "hung: it held the node's packet loop" if hung else guard.error()
        if reason:
            self.quarantine(module, reason)

    def _position(self, module: ServiceModule) -> int:
        return next(i for i, (_, m) in enumerate(self.modules) if m is module)

    def quarantine(self, module: ServiceModule, reason: str) -> None:
        """Stop `module` for good for `reason`: from now on its failure policy stands in
        for it in the chain (a module that is not in the chain is left alone)."""
        modules = list(self.modules)
        pos = next((i for i, (_, m) in enumerate(modules) if m is module), None)
        if pos is None or isinstance(module, Quarantined):
            return
        guard, name = self.guards[pos], modules[pos][0]
        guard.quarantine(reason)
        modules[pos] = (name, Quarantined(module, guard))
        self.modules = modules  # a new list: a loop over the old one is not disturbed
        self.relisted()
        kill = getattr(module, "kill", None)  # an isolated module's worker goes at once
        if kill is not None:
            kill()
        ctx = _context(module)
        if ctx is not None:
            ctx.timers.cancel_all()
        log.warning("session %d: module %s quarantined: %s", self.session_id, name, guard.reason)

    def contexts(self) -> list[tuple[str, ModuleContext]]:
        """Return (module name, context) of every module that has one, in chain order."""
        found = [(name, _context(module)) for name, module in self.modules]
        return [(name, ctx) for name, ctx in found if ctx is not None]

    def stats(self) -> dict[str, object]:
        """Return the chain's counters and each module's own, JSON-ready."""
        modules = []
        frames = self.module_frames()
        for pos, ((name, module), guard) in enumerate(zip(self.modules, self.guards, strict=True)):
            try:
                counters = module.stats()
            except Exception as exc:
                counters = {"error": repr(exc)}
            entry: dict[str, object] = {"name": name, "stats": counters, **guard.to_json()}
            entry |= {
                "frames": frames[pos],
                "dropped": self.module_dropped[pos],
                "errors": self.module_errors[pos],
            }
            ctx = _context(module)
            if ctx is not None and len(ctx.metrics):
                entry["metrics"] = [s.to_json() for s in ctx.metrics.samples()]
            modules.append(entry)
        return {
            "session": self.session_id,
            "tag": self.tag,
            "packets": self.packets,
            "forwarded": self.packets - self.dropped,
            "modified": self.modified,
            "dropped": self.dropped,
            "returned": self.returned,
            "send_failed": self.send_failed,
            "emitted": self.emitted,
            "emit_failed": self.emit_failed,
            "errors": self.errors,
            "last_error": self.last_error,
            "modules": modules,
        }


def mode_refusal(copy: bool, names: list[str], guards: list[Guard]) -> str:
    """Return why modules `names` (with their `guards`) cannot make a chain in the mode
    the controller installed ("" when they can). A copy chain may hold only modules
    whose manifest here says they are observe-only: another one's drops and rewrites
    would be lost, since the switch forwarded every frame already. A detour may hold
    any: an observe-only module's frames simply go back."""
    if not copy:
        return ""
    others = [name for name, guard in zip(names, guards, strict=True) if not guard.observe_only]
    if not others:
        return ""
    return (
        f"the controller installed a copy rule, yet {', '.join(others)} "
        f"{'is' if len(others) == 1 else 'are'} not observe-only on this node: a copy "
        "chain takes only observe-only modules (do the controller and this node have "
        "the same manifests?)"
    )


class Outgoing:
    """What a batch sends back to the switch, in order: each frame with the chain it
    belongs to (None for a frame no chain ran on) and whether a module emitted it.

    `forwarded` counts the batch's own frames among them (the rest were emitted);
    `copies` the batch's frames that copy chains observed, which never go back.
    """

    __slots__ = ("frames", "owners", "forwarded", "copies")

    def __init__(self) -> None:
        self.frames: list[memoryview | bytes] = []
        self.owners: list[tuple[Chain | None, bool]] = []
        self.forwarded = 0
        self.copies = 0

    def forward(self, frame: memoryview, chain: Chain | None) -> None:
        self.frames.append(frame)
        self.owners.append((chain, False))
        self.forwarded += 1

    def emit(self, frames: list[bytes], chain: Chain | None) -> None:
        self.frames.extend(frames)
        self.owners.extend([(chain, True)] * len(frames))

    def __len__(self) -> int:
        return len(self.frames)


class Dispatcher:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_tag: dict[int, Chain] = {}
        self._by_session: dict[int, Chain] = {}
        self.unmatched = 0
        self.timers = Scheduler(clock)  # the module timers of every installed chain
        self._held = HeldSet()  # the digest of _by_session's keys

    @property
    def held(self) -> Held:
        """Return the digest of the sessions whose chains are installed (read it under
        the lock that `put` and `remove` are called under, or it may be torn)."""
        return self._held.held

    def dispatch(self, tag: int | None, frame: memoryview) -> bool:
        """Run the chain the tag names; return True when the frame is to be sent on.

        A frame with no known tag (its session just ended) goes on unchanged.
        """
        return self.run_batch([(tag, frame)]).forwarded == 1

    def run_batch(self, batch: Batch) -> Outgoing:
        """Run the due module timers, then dispatch every (tag, frame); return the frames
        to send: those that came through, each followed by what its modules emitted."""
        out = Outgoing()
        if self.timers.due():
            self.run_timers(out)
        by_tag = self._by_tag
        emitted: list[bytes] = []
        held: dict[int, tuple[Chain, list[memoryview]]] = {}  # batched chains' frames, by tag
        for tag, frame in batch:
            chain = by_tag.get(tag) if tag is not None else None
            if chain is None:
                self.unmatched += 1
                out.forward(frame, None)
                continue
            if chain.batched:
                held.setdefault(tag, (chain, []))[1].append(frame)  # type: ignore[arg-type]
                continue
            if chain.copy:
                chain.observe(frame)
                out.copies += 1
                continue
            if chain.run(frame, emitted):
                out.forward(frame, chain)
            if emitted:
                out.emit(emitted, chain)
                emitted = []
        for chain, frames in held.values():
            run_batched(chain, frames, out)
        return out

    def timers_due(self) -> bool:
        """Return True when a module timer is due (so an idle loop runs a batch anyway)."""
        return self.timers.due()

    def run_timers(self, out: Outgoing) -> None:
        """Run the due timers; add what they emitted to `out`, charge failures to their chain."""
        for timer, error in self.timers.run_due():
            chain, name, ctx = timer.owner  # type: ignore[misc]
            if error is not None:
                chain._error(f"{name} (timer)", error)
            if ctx.outbox.frames:
                frames = ctx.outbox.take()
                if chain.copy:
                    chain._error(f"{name} (timer)", ObserveOnly(f"emitted {len(frames)} frame(s)"))
                elif error is None:
                    out.emit(frames, chain)

    @staticmethod
    def count_sent(out: Outgoing, sent: int) -> None:
        """Credit each chain with its frames: the first `sent` of `out` left, the rest failed."""
        for i, (chain, emitted) in enumerate(out.owners):
            if chain is None:
                continue
            if emitted:
                if i < sent:
                    chain.emitted += 1
                else:
                    chain.emit_failed += 1
            elif i < sent:
                chain.returned += 1
            else:
                chain.send_failed += 1

    def __len__(self) -> int:
        """Return how many chains there are."""
        return len(self._by_session)

    def chains(self) -> list[Chain]:
        """Return every chain, by session id."""
        return sorted(list(self._by_session.values()), key=lambda c: c.session_id)

    def by_tag(self, tag: int) -> Chain | None:
        return self._by_tag.get(tag)

    def by_session(self, session_id: int) -> Chain | None:
        return self._by_session.get(session_id)

    def put(self, chain: Chain) -> Chain | None:
        """Install `chain` under its tag and arm its modules' timers; return the chain it
        replaced, if any, whose timers are cancelled."""
        old = self.by_session(chain.session_id)
        for name, ctx in chain.contexts():  # before any frame can reach the chain
            ctx.timers.bind(self.timers, (chain, name, ctx))
        table, sessions = self._by_tag, self._by_session
        if old is not None:
            _drop(table, sessions, old)
        displaced = table.get(chain.tag)  # another session's chain under this tag
        if displaced is not None and sessions.pop(displaced.session_id, None) is not None:
            self._held.remove(displaced.session_id)
        if old is None:
            self._held.add(chain.session_id)
        sessions[chain.session_id] = chain
        table[chain.tag] = chain
        if old is not None:
            self._disarm(old)
        return old

    def remove(self, session_id: int) -> Chain | None:
        """Take a session's chain out and cancel its timers; return it (the caller stops
        its modules)."""
        old = self.by_session(session_id)
        if old is not None:
            _drop(self._by_tag, self._by_session, old)
            self._held.remove(session_id)
            self._disarm(old)
        return old

    def swap(self, chain: Chain, pos: int, module: ServiceModule, guard: Guard) -> ServiceModule:
        """Put `module` (with its `guard`) in `chain`'s place `pos` and arm its timers;
        return the module it replaced, whose timers are cancelled. Called between batches
        (a hot upgrade): the next batch runs the new module."""
        name, old = chain.modules[pos]
        ctx = _context(module)
        if ctx is not None:
            ctx.timers.bind(self.timers, (chain, name, ctx))
        modules = list(chain.modules)
        modules[pos] = (name, module)
        guards = list(chain.guards)
        guards[pos] = guard
        chain.modules, chain.guards = modules, guards
        chain.relisted()
        ctx = _context(old)
        if ctx is not None:
            ctx.timers.cancel_all()
        return old

    @staticmethod
    def _disarm(chain: Chain) -> None:
        for _name, ctx in chain.contexts():
            ctx.timers.cancel_all()


def _drop(table: dict[int, Chain], sessions: dict[int, Chain], chain: Chain) -> None:
    """Take `chain` out of both maps (its tag only while the tag is still its own)."""
    if table.get(chain.tag) is chain:
        del table[chain.tag]
    sessions.pop(chain.session_id, None)
