"""The dispatcher: finds a frame's session by its tag and runs the session's chain.

The switch already classified the frame and pushed the session's tag, so finding the
chain is one dict look-up. The tag → chain map is replaced whole on every change
(copy on write), so the packet loop reads it without a lock while the control API
attaches and detaches sessions from another thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nodes.module_api import ServiceModule, Verdict

log = logging.getLogger("netserv.dispatcher")
Batch = list[tuple[int | None, memoryview]]  # (tag, frame) as received
_DROP = Verdict.DROP  # an enum member looked up per module call costs more than the call


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
    returned: int = 0  # ... sent back to the switch
    send_failed: int = 0  # ... passed on but not sent (the agent's link was full)
    errors: int = 0
    last_error: str = field(default="")

    def run(self, frame: memoryview) -> bool:
        """Run every module on `frame`; return True when it goes back to the switch."""
        self.packets += 1
        for name, module in self.modules:
            try:
                verdict = module.process(frame)
            except Exception as exc:  # fail open: a broken module must not cut the flow
                self.errors += 1
                self.last_error = f"{name}: {exc!r}"
                continue
            if verdict == _DROP:
                self.dropped += 1
                return False
        return True

    def stats(self) -> dict[str, object]:
        """Return the chain's counters and each module's own, JSON-ready."""
        modules = []
        for name, module in self.modules:
            try:
                counters = module.stats()
            except Exception as exc:
                counters = {"error": repr(exc)}
            modules.append({"name": name, "stats": counters})
        return {
            "session": self.session_id,
            "tag": self.tag,
            "packets": self.packets,
            "dropped": self.dropped,
            "returned": self.returned,
            "send_failed": self.send_failed,
            "errors": self.errors,
            "last_error": self.last_error,
            "modules": modules,
        }


Outgoing = list[tuple[memoryview, Chain | None]]  # frames to send, with the chain they ran


class Dispatcher:
    def __init__(self) -> None:
        self._by_tag: dict[int, Chain] = {}
        self.unmatched = 0

    def dispatch(self, tag: int | None, frame: memoryview) -> bool:
        """Run the chain the tag names; return True when the frame is to be sent on.

        A frame with no known tag (its session just ended) goes on unchanged.
        """
        return bool(self.run_batch([(tag, frame)]))

    def run_batch(self, batch: Batch) -> Outgoing:
        """Dispatch every (tag, frame); return the frames to send on, each with its chain."""
        out: Outgoing = []
        by_tag = self._by_tag  # one map for the whole batch
        for tag, frame in batch:
            chain = by_tag.get(tag) if tag is not None else None
            if chain is None:
                self.unmatched += 1
                out.append((frame, None))
            elif chain.run(frame):
                out.append((frame, chain))
        return out

    @staticmethod
    def count_sent(out: Outgoing, sent: int) -> None:
        """Credit each chain with its frames: the first `sent` of `out` left, the rest failed."""
        for i, (_frame, chain) in enumerate(out):
            if chain is not None:
                if i < sent:
                    chain.returned += 1
                else:
                    chain.send_failed += 1

    def chains(self) -> list[Chain]:
        """Return every chain, by session id."""
        return sorted(self._by_tag.values(), key=lambda c: c.session_id)

    def by_tag(self, tag: int) -> Chain | None:
        return self._by_tag.get(tag)

    def by_session(self, session_id: int) -> Chain | None:
        return next((c for c in self._by_tag.values() if c.session_id == session_id), None)

    def put(self, chain: Chain) -> Chain | None:
        """Install `chain` under its tag; return the chain it replaced, if any."""
        old = self.by_session(chain.session_id)
        table = {t: c for t, c in self._by_tag.items() if c is not old}
        table[chain.tag] = chain
        self._by_tag = table
        return old

    def remove(self, session_id: int) -> Chain | None:
        """Take a session's chain out; return it (the caller stops its modules)."""
        old = self.by_session(session_id)
        if old is not None:
            self._by_tag = {t: c for t, c in self._by_tag.items() if c is not old}
        return old
