"""The API a service module is written against.

A module is a class in a bundle (see `nodes/bundle.py`). The agent makes one instance
per session that names it: `__init__(params, ctx)` is the setup, `process(frame)` runs
for every frame of the session's flow in the chain's order, `stats()` is read by the
controller on request, `stop()` runs once when the session ends.

`frame` is a writable memoryview of the agent's receive buffer, valid only during the
call: a module may rewrite bytes in place (same length) but must copy what it keeps.
Returning `Verdict.DROP` stops the chain and the frame goes no further.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class Verdict(enum.IntEnum):
    PASS = 0  # on to the next module, then back to the switch
    DROP = 1  # the frame ends here


@dataclass(frozen=True)
class ModuleContext:
    """What the node offers a module instance: who it serves and the node's services."""

    session_id: int
    node: int
    log: logging.Logger
    clock: Callable[[], float]


class ServiceModule:
    """Base class of service modules; subclasses override what they need."""

    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        self.params = params
        self.ctx = ctx

    def process(self, frame: memoryview) -> Verdict:
        """Handle one frame; return what becomes of it."""
        return Verdict.PASS

    def stats(self) -> dict[str, int | float | str]:
        """Return the module's counters, JSON-ready."""
        return {}

    def stop(self) -> None:
        """Release what the instance holds; called once, after its last frame."""
