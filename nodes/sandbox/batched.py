"""A chain run module by module over its frames of a batch, for chains with isolated modules.

The dispatcher runs a chain of trusted modules frame by frame (`Chain.run`). A chain
with a module in a process of its own is run here instead: each module in turn gets
all the chain's frames of the batch still alive, so an isolated module costs one
round trip to its worker a batch, not one a frame. What the modules see is the same
either way: each frame goes through the modules in order, a DROP ends its way, a
MODIFIED frame is seen rewritten by the modules after; frames still go back in their
order, each followed by what the modules emitted for it.

Here the isolated modules' budgets are applied: frames above a module's frame rate
and frames it failed on follow its failure policy; a module that hangs, dies, runs
out of memory, overruns its time or fails more often than its error budget allows is
quarantined.

A copy chain (every module observe-only) is run by `observe_batched`: the same
budgets, but nothing goes back, verdicts change nothing, and what an observe-only
module may not do (rewrite or emit a frame) counts as its error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nodes.module_api import ServiceModule, Verdict
from nodes.sandbox import wire
from nodes.sandbox.guard import Guard, Quarantined

if TYPE_CHECKING:
    from nodes.dispatcher import Chain, Outgoing

_DROP, _FORWARD, _MODIFIED = Verdict.DROP, Verdict.FORWARD, Verdict.MODIFIED


class ModuleFailed(Exception):
    """An isolated module's worker hung or died; the message says how."""


class ObserveOnly(Exception):
    """What an observe-only module did that it may not: change or emit a frame."""

    def __init__(self, what: str) -> None:
        super().__init__(f"observe-only, yet it {what}; ignored")


class _Run:
    """One chain's frames of one batch on their way through the chain."""

    def __init__(self, chain: Chain, frames: list[memoryview]) -> None:
        self.chain = chain
        self.frames = frames
        self.alive = list(range(len(frames)))  # indices of the frames still going on
        self.modified: set[int] = set()
        self.emitted: dict[int, list[bytes]] = {}
        self.first: list[bytes] = []  # emitted by timers during the batch: sent first

    def policy(self, pos: int, guard: Guard, indices: list[int]) -> list[int]:
        """Apply `guard`'s failure policy to frames `indices`; return those that go on."""
        guard.unprocessed += len(indices)
        if guard.fail_closed:
            self.chain.drop_at(pos, len(indices))
            return []
        return indices

    def per_frame(self, pos: int, name: str, module: ServiceModule, guard: Guard) -> None:
        """Run a module of the agent's own (or a quarantined one's stand-in) frame by frame;
        the frames over its frame rate, if it has one, pass it by."""
        chain, keep, over, began = self.chain, [], [], time.perf_counter()
        if guard.rated and not guard.quarantined:
            allowed = guard.admit(len(self.alive))
            over = self.policy(pos, guard, self.alive[allowed:])
            self.alive = self.alive[:allowed]
        for n, i in enumerate(self.alive):
            if guard.quarantined and not isinstance(module, Quarantined):
                keep.extend(self.policy(pos, guard, self.alive[n:]))  # quarantined meanwhile
                break
            try:
                verdict = module.process(self.frames[i])
            except Exception as exc:
                chain._take(module, None)
                if chain._fail(name, module, exc):
                    chain.drop_at(pos)
                else:
                    keep.append(i)
                continue
            ctx = getattr(module, "ctx", None)
            if ctx is not None and ctx.outbox.frames:
                self.emitted.setdefault(i, []).extend(ctx.outbox.take())
            if verdict == _DROP:
                chain.drop_at(pos)
                continue
            if verdict == _MODIFIED:
                self.modified.add(i)
            elif verdict != _FORWARD and verdict is not None:
                error = ValueError(f"process() returned {verdict!r}, not a Verdict")
                if chain._fail(name, module, error):
                    chain.drop_at(pos)
                    continue
            keep.append(i)
        chain.timed(pos, len(self.alive), time.perf_counter() - began)
        self.alive = sorted(keep + over) if over else keep

    def batched(self, pos: int, name: str, module: ServiceModule, guard: Guard) -> None:
        """Run an isolated module on the frames still alive, in one call."""
        allowed = guard.admit(len(self.alive))
        given, over = self.alive[:allowed], self.alive[allowed:]
        keep = self.policy(pos, guard, over)
        if not given:
            self.alive = keep
            return
        try:
            answer = module.process_batch([self.frames[i] for i in given])  # type: ignore[attr-defined]
        except ModuleFailed as exc:
            self.chain.quarantine(module, str(exc))
            self.alive = sorted(keep + self.policy(pos, guard, given))
            return
        self.chain.timed(pos, len(given), answer.cpu)
        self.alive = sorted(keep + self.take(pos, name, module, guard, given, answer))

    def take(
        self,
        pos: int,
        name: str,
        module: ServiceModule,
        guard: Guard,
        given: list[int],
        answer: wire.Answer,
    ) -> list[int]:
        """Apply an isolated module's answer about frames `given`; return those that go on."""
        chain, keep, failed = self.chain, [], []
        for k, verdict in enumerate(answer.verdicts):
            i = given[k]
            if verdict == wire.FORWARD:
                keep.append(i)
            elif verdict == wire.MODIFIED:
                self.modified.add(i)
                keep.append(i)
            elif verdict == wire.DROP:
                chain.drop_at(pos)
            else:
                failed.append(i)
        for index, frame in answer.emitted:
            if index < 0:
                self.first.append(frame)
            else:
                self.emitted.setdefault(given[index], []).append(frame)
        reason = ""
        for index, text in answer.errors:
            chain.errors += index < 0  # a timer's; a frame's is counted with its frame below
            chain.last_error = f"{name}{' (timer)' if index < 0 else ''}: {text}"
        for _ in failed:
            chain.errors += 1
            chain.module_errors[pos] += 1
            reason = guard.error() or reason
        keep.extend(self.policy(pos, guard, failed))
        if answer.memory:
            reason = "over its memory budget: it ran out of memory (MemoryError)"
        reason = reason or guard.charge_time(len(given), answer.cpu)
        if reason:
            chain.quarantine(module, reason)
        return keep


def observe_batched(chain: Chain, frames: list[memoryview]) -> None:
    """Run a copy chain on its copies of a batch, module by module; nothing goes back.

    As `Chain.observe` does frame by frame: a verdict changes nothing; a frame a module
    failed on, a MODIFIED verdict (its bytes are not taken back) and an emitted frame
    (thrown away) count as its errors, against its error budget; frames over its frame
    rate or after it was quarantined go by without it.
    """
    chain.packets += len(frames)
    for pos, (name, module) in enumerate(chain.modules):
        guard = chain.guards[pos]
        if guard.quarantined and hasattr(module, "process_batch"):
            chain.quarantine(module, guard.reason)  # found dead outside the packet loop
            name, module = chain.modules[pos]
        if not hasattr(module, "process_batch"):
            for frame in frames:
                chain.observe_in(name, module, frame.toreadonly())
            continue
        given = frames[: guard.admit(len(frames))]
        guard.unprocessed += len(frames) - len(given)
        if not given:
            continue
        try:
            answer = module.process_batch(given, rewrite=False)  # type: ignore[attr-defined]
        except ModuleFailed as exc:
            chain.quarantine(module, str(exc))
            guard.unprocessed += len(given)
            continue
        failures = dict(answer.errors)
        if -1 in failures:  # a timer's
            chain._error(f"{name} (timer)", RuntimeError(failures[-1]))
        for index, verdict in enumerate(answer.verdicts):
            if verdict == wire.FAILED:
                guard.unprocessed += 1
                chain.charge(name, module, RuntimeError(failures.get(index, "failed")))
            elif verdict == wire.MODIFIED:
                chain.charge(name, module, ObserveOnly("returned MODIFIED"))
        by_call: dict[int, int] = {}  # frame index (-1: a timer) → frames it emitted
        for index, _frame in answer.emitted:
            by_call[index] = by_call.get(index, 0) + 1
        for count in by_call.values():
            chain.charge(name, module, ObserveOnly(f"emitted {count} frame(s)"))
        reason = ""
        if answer.memory:
            reason = "over its memory budget: it ran out of memory (MemoryError)"
        reason = reason or guard.charge_time(len(given), answer.cpu)
        if reason:
            chain.quarantine(module, reason)


def run_batched(chain: Chain, frames: list[memoryview], out: Outgoing) -> None:
    """Run `chain` on its frames of a batch, module by module; add what goes back to
    the switch to `out`: each frame that came through, followed by what was emitted
    for it (what modules' timers emitted meanwhile goes first)."""
    if chain.copy:
        observe_batched(chain, frames)
        out.copies += len(frames)
        return
    run = _Run(chain, frames)
    chain.packets += len(frames)
    for pos, (name, module) in enumerate(chain.modules):
        if not run.alive:
            break
        guard = chain.guards[pos]
        if guard.quarantined and hasattr(module, "process_batch"):
            chain.quarantine(module, guard.reason)  # found dead outside the packet loop
            name, module = chain.modules[pos]
        if hasattr(module, "process_batch"):
            run.batched(pos, name, module, guard)
        else:
            run.per_frame(pos, name, module, guard)
    if run.first:
        out.emit(run.first, chain)
    if len(run.alive) == len(frames) and not run.emitted and not run.modified:
        for frame in frames:  # the common case: every frame came through as it was
            out.forward(frame, chain)
        return
    alive = set(run.alive)
    chain.modified += len(alive & run.modified)
    for i, frame in enumerate(frames):
        if i in alive:
            out.forward(frame, chain)
        extra = run.emitted.get(i)
        if extra:
            out.emit(extra, chain)
