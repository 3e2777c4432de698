"""A simulated OpenFlow switch: applies message descriptions, forwards frame descriptions.

Tests assert on forwarding ("this frame leaves port 2 with tag 5") rather than on the
text of flow rules. Like Open vSwitch it refuses timeouts that do not fit their 16-bit
fields, counts frames per flow, keeps a flow's counters when an identical flow (same
table, priority and match) is added again, and restarts its hard timeout then; with a
clock, `expire` drops the flows whose hard timeout ran out. A flow-stats request is
answered with each flow as it was added, its counters and how long ago that was;
`added` and `deleted` record every flow-mod's effect, so a test can tell a flow left
alone from one replaced. As Open vSwitch, it refuses a flow that names a meter it does
not have, and drops a meter's flows with the meter.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from agentproto.tags import tag_of_tci
from controller.match import FlowMatch, overlaps
from controller.messages import (
    Barrier,
    FlowAdd,
    FlowDelete,
    FlowStats,
    FlowStatsRequest,
    Message,
    MeterAdd,
    MeterDelete,
    Output,
    PacketOut,
    PopVlan,
    PortStats,
    PortStatsRequest,
    PushVlan,
    Stats,
    StatsRequest,
    ToController,
)


@dataclass
class Result:
    outputs: list[tuple[int, int | None]] = field(default_factory=list)  # (port, vlan tag)
    to_controller: list[int] = field(default_factory=list)  # table ids that sent it up
    meters: list[int] = field(default_factory=list)  # the meters it passed


FlowKey = tuple[int, int, tuple[tuple[str, object], ...]]


def _key(flow: FlowAdd) -> FlowKey:
    return flow.table, flow.priority, flow.match


class SimSwitch:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.flows: list[FlowAdd] = []
        self.packet_outs: list[PacketOut] = []
        self.clock = clock
        self.added_at: dict[FlowKey, float] = {}
        self.packets: dict[FlowKey, int] = {}
        self.tx_dropped: dict[int, int] = {}  # set by tests: frames a port could not send
        self.meters: dict[int, MeterAdd] = {}
        self.added: list[FlowAdd] = []  # every flow-add applied, in order
        self.deleted: list[FlowAdd] = []  # every flow a delete removed, in order

    def _now(self) -> float:
        return self.clock() if self.clock is not None else 0.0

    def apply(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if isinstance(msg, FlowAdd):
                struct.pack("!HH", msg.idle_timeout, msg.hard_timeout)  # as a real flow-mod
                if msg.meter is not None and msg.meter not in self.meters:
                    raise ValueError(f"flow names meter {msg.meter}, which the switch lacks")
                key = _key(msg)
                self.flows = [f for f in self.flows if _key(f) != key]
                self.flows.append(msg)
                self.added_at[key] = self._now()
                self.packets.setdefault(key, 0)
                self.added.append(msg)
            elif isinstance(msg, FlowDelete):
                # As OFPFC_DELETE: every flow whose match has the delete's fields; with a
                # priority as OFPFC_DELETE_STRICT: the flow with exactly that priority and match.
                gone = [
                    f
                    for f in self.flows
                    if (f.cookie & msg.cookie_mask) == (msg.cookie & msg.cookie_mask)
                    and (msg.table is None or f.table == msg.table)
                    and (
                        set(msg.match) <= set(f.match)
                        if msg.priority is None
                        else (f.priority, f.match) == (msg.priority, msg.match)
                    )
                ]
                self._drop(gone)
                self.deleted += gone
            elif isinstance(msg, MeterAdd):
                if msg.meter_id in self.meters:
                    raise ValueError(f"meter {msg.meter_id} exists")
                self.meters[msg.meter_id] = msg
            elif isinstance(msg, MeterDelete):
                self.meters.pop(msg.meter_id, None)
                gone = [f for f in self.flows if f.meter == msg.meter_id]
                self._drop(gone)
                self.deleted += gone
            elif isinstance(msg, PacketOut):
                self.packet_outs.append(msg)
            elif not isinstance(msg, Barrier):
                raise TypeError(msg)

    def _drop(self, flows: list[FlowAdd]) -> None:
        keys = {_key(f) for f in flows}
        self.flows = [f for f in self.flows if _key(f) not in keys]
        for key in keys:
            self.added_at.pop(key, None)
            self.packets.pop(key, None)

    def deadline(self, flow: FlowAdd) -> float | None:
        """Return when `flow`'s hard timeout runs out, or None when it has none."""
        if not flow.hard_timeout:
            return None
        return self.added_at[_key(flow)] + flow.hard_timeout

    def expire(self) -> list[FlowAdd]:
        """Drop the flows whose hard timeout ran out by the clock; return them."""
        now = self._now()
        gone = [f for f in self.flows if (d := self.deadline(f)) is not None and d <= now]
        self._drop(gone)
        return gone

    def answer(self, msg: StatsRequest) -> list[Stats]:
        """Return what a switch answers to a statistics request."""
        if isinstance(msg, FlowStatsRequest):
            return [
                FlowStats(
                    f.table,
                    f.priority,
                    f.cookie,
                    self.packets.get(_key(f), 0),
                    0,
                    f.match,
                    f.actions,
                    f.goto,
                    f.hard_timeout,
                    self._now() - self.added_at[_key(f)],
                    f.meter,
                )
                for f in self.flows
                if (f.cookie & msg.cookie_mask) == (msg.cookie & msg.cookie_mask)
            ]
        if isinstance(msg, PortStatsRequest):
            return [PortStats(msg.port, 0, 0, 0, self.tx_dropped.get(msg.port, 0), 0, 0)]
        raise TypeError(msg)

    def cookies(self) -> set[int]:
        return {f.cookie for f in self.flows}

    def with_cookie(self, cookie: int) -> list[FlowAdd]:
        """Return the flows carrying exactly `cookie`."""
        return [f for f in self.flows if f.cookie == cookie]

    def packets_of(self, cookie: int) -> int:
        """Return the frames counted by the flows carrying `cookie`."""
        return sum(self.packets[_key(f)] for f in self.with_cookie(cookie))

    def _lookup(self, table: int, frame: dict[str, object]) -> FlowAdd | None:
        candidates = [
            f
            for f in self.flows
            if f.table == table
            and all(name in frame for name, _ in f.match)
            and overlaps(FlowMatch(f.match), FlowMatch(tuple(sorted(frame.items()))))
        ]
        return max(candidates, key=lambda f: f.priority, default=None)

    def process(self, frame: dict[str, object]) -> Result:
        """Run `frame` (OXM fields, in_port included) through the tables from table 0."""
        result, table, tcis = Result(), 0, []
        while table is not None:
            flow = self._lookup(table, frame)
            if flow is None:
                break  # table miss with no miss flow: drop
            self.packets[_key(flow)] = self.packets.get(_key(flow), 0) + 1
            if flow.meter is not None:
                result.meters.append(flow.meter)
            for action in flow.actions:
                if isinstance(action, PushVlan):
                    tcis.append(action.pcp << 13 | action.vid)
                elif isinstance(action, PopVlan):
                    tcis.pop()
                elif isinstance(action, Output):
                    # the session tag of the outer VLAN header, as the agent reads it
                    tag = tag_of_tci(tcis[-1]) if tcis else None
                    result.outputs.append((action.port, tag))
                elif isinstance(action, ToController):
                    result.to_controller.append(table)
            table = flow.goto
        return result


def _key(flow: FlowAdd) -> tuple:
    return (flow.table, flow.priority, flow.match)
