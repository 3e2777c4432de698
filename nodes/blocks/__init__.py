"""The building blocks a service module combines (the paper's building-block bundle).

Each is a plain object that takes its time from a clock it is given and holds no
reference to the agent, so it works alike in the agent's process and in a module
process of its own. A module gets them through its context (`ctx.flows(...)`,
`ctx.counter(...)`, ...; see `nodes/module_api.py`) or makes them itself:

- `Frame` (frame.py, headers.py): a zero-copy view with lazily parsed headers and
  setters that keep checksums right;
- `FlowTable` (state.py): per-flow state with idle expiry and a bounded size;
- `Metrics`, `Counter`, `Gauge` (counters.py): named, typed values for stats and exporters;
- `TokenBucket` (bucket.py); `Cache` (cache.py): a small LRU cache with lifetimes;
- `TimerSet`, `Scheduler` (timers.py): timers the packet loop runs between batches;
- `Outbox`, `udp_frame`, `udp_reply`, `icmp_echo_reply` (emit.py): new frames to send;
- `RateLimitedLog` (log.py).
"""

from nodes.blocks.bucket import TokenBucket
from nodes.blocks.cache import Cache
from nodes.blocks.counters import Counter, Gauge, Metrics, Sample
from nodes.blocks.emit import EmitError, Outbox, icmp_echo_reply, udp_frame, udp_reply
from nodes.blocks.frame import FlowKey, Frame
from nodes.blocks.log import RateLimitedLog
from nodes.blocks.state import FlowTable
from nodes.blocks.timers import Scheduler, Timer, TimerSet

__all__ = [
    "Cache",
    "Counter",
    "EmitError",
    "FlowKey",
    "FlowTable",
    "Frame",
    "Gauge",
    "Metrics",
    "Outbox",
    "RateLimitedLog",
    "Sample",
    "Scheduler",
    "Timer",
    "TimerSet",
    "TokenBucket",
    "icmp_echo_reply",
    "udp_frame",
    "udp_reply",
]
