"""The API a service module is written against.

A module is a class in a bundle (see `nodes/bundle.py`). The agent makes one instance
per session that names it: `__init__(params, ctx)` is the setup, `process(frame)` runs
for every frame of the session's flow in the chain's order, `stats()` is read by the
controller on request, `stop()` runs once when the session ends.

Two methods are optional, for a hot upgrade (a live session moving to another version of
its module): `export_state()` on the old instance returns a JSON-able value or bytes,
and `import_state(state)` on the new one takes a copy of it, between two batches of
the packet loop (`nodes/handover.py`). Without them the new instance starts afresh; an
`import_state` that raises refuses the upgrade and the old instance runs on.

`frame` is a writable memoryview of the agent's receive buffer, valid only during the
call: a module may rewrite bytes in place (same length) but must copy what it keeps.
`nodes.blocks.Frame(frame)` parses its headers on demand without copying.

`process` returns a Verdict. FORWARD sends the frame on to the next module and then
back to the switch; MODIFIED does the same and says the module rewrote the frame
(a module that rewrites must say so: a module run in a process of its own works on
a copy, and only a MODIFIED frame's bytes are taken back); DROP ends the chain, and
the frame goes no further. Whatever the verdict, the frames the module emitted with
`ctx.emit` are sent. A module that raises is counted as an error and the frame goes
on to the next module (fail open). Verdicts and emitted frames are plain data (an int,
bytes), so they cross a process boundary as they are.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Hashable, Mapping

from nodes.blocks import (
    Cache,
    Counter,
    FlowTable,
    Gauge,
    Metrics,
    Outbox,
    RateLimitedLog,
    Timer,
    TimerSet,
    TokenBucket,
)


class Verdict(enum.IntEnum):
    FORWARD = 0  # on to the next module, then back to the switch
    DROP = 1  # the frame ends here
    MODIFIED = 2  # as FORWARD; the module rewrote the frame in place
    PASS = 0  # the name FORWARD had before there were other ways to forward


class ModuleContext:
    """What the node offers one module instance: who it serves, and the building blocks.

    Every block takes its time from `clock` (monotonic seconds), so a test hands a
    fake clock in and every block follows it. `log` is a rate-limited logger;
    `metrics` the instance's counters, which its stats and exporters read; `outbox`
    the frames it emitted and the agent has not yet sent; `timers` its timers.
    """

    def __init__(
        self,
        session_id: int,
        node: int,
        module: str = "",
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.session_id = session_id
        self.node = node  # the datapath id of the NetServ node
        self.module = module  # the module's name
        self.clock = clock
        if logger is None:
            logger = logging.getLogger(f"netserv.module.{module or 'module'}.{session_id}")
        self.log = RateLimitedLog(logger, clock)
        self.metrics = Metrics()
        self.outbox = Outbox()
        self.timers = TimerSet()

    def counter(self, name: str, help: str = "") -> Counter:
        """Return the counter `name` (made on first use), shown in the module's stats."""
        return self.metrics.counter(name, help)

    def gauge(self, name: str, help: str = "") -> Gauge:
        """Return the gauge `name` (made on first use), shown in the module's stats."""
        return self.metrics.gauge(name, help)

    def flows(
        self,
        idle: float,
        max_entries: int = 65536,
        factory: Callable[[], object] | None = None,
        on_expire: Callable[[Hashable, object], object] | None = None,
    ) -> FlowTable:
        """Return a new per-flow state table whose entries expire after `idle` seconds."""
        return FlowTable(self.clock, idle, max_entries, factory, on_expire)

    def bucket(self, rate: float, burst: float) -> TokenBucket:
        """Return a new token bucket: `rate` tokens a second, at most `burst` at once."""
        return TokenBucket(rate, burst, self.clock)

    def cache(self, max_entries: int = 1024, ttl: float | None = None) -> Cache:
        """Return a new cache of at most `max_entries`, each living `ttl` seconds."""
        return Cache(self.clock, max_entries, ttl)

    def every(self, seconds: float, fn: Callable[[], object]) -> Timer:
        """Call `fn()` every `seconds`, from the packet loop between batches; return the
        timer (cancel it to stop). It runs once the session's chain is installed."""
        return self.timers.every(seconds, fn)

    def after(self, seconds: float, fn: Callable[[], object]) -> Timer:
        """Call `fn()` once, `seconds` from now (or from when the chain is installed)."""
        return self.timers.after(seconds, fn)

    def emit(self, frame: bytes | bytearray | memoryview) -> None:
        """Send a copy of `frame` to the switch with the current batch; raise EmitError
        when it is no frame or too many are waiting (see nodes.blocks.emit)."""
        self.outbox.put(frame)

    def close(self) -> None:
        """Cancel the instance's timers and forget unsent frames (the agent calls it last)."""
        self.timers.cancel_all()
        self.outbox.take()


class ServiceModule:
    """Base class of service modules; subclasses override what they need."""

    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        self.params = params
        self.ctx = ctx

    def process(self, frame: memoryview) -> Verdict:
        """Handle one frame; return what becomes of it."""
        return Verdict.FORWARD

    def stats(self) -> dict[str, int | float | str]:
        """Return the module's counters, JSON-ready: by default its metrics' values."""
        ctx = getattr(self, "ctx", None)
        return ctx.metrics.values() if ctx is not None else {}

    def stop(self) -> None:
        """Release what the instance holds; called once, after its last frame."""
