"""A simulated OpenFlow switch: applies message descriptions, forwards frame descriptions.

Tests assert on forwarding ("this frame leaves port 2 with tag 5") rather than on the
text of flow rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.match import FlowMatch, overlaps
from controller.messages import (
    Barrier,
    FlowAdd,
    FlowDelete,
    FlowStats,
    FlowStatsRequest,
    Message,
    Output,
    PacketOut,
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


class SimSwitch:
    def __init__(self) -> None:
        self.flows: list[FlowAdd] = []
        self.packet_outs: list[PacketOut] = []
        self.packets: dict[tuple, int] = {}  # by flow key, kept when a flow is re-added
        self.tx_dropped: dict[int, int] = {}  # set by tests: frames a port could not send

    def apply(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if isinstance(msg, FlowAdd):
                self.flows = [
                    f
                    for f in self.flows
                    if not (
                        f.table == msg.table and f.priority == msg.priority and f.match == msg.match
                    )
                ]
                self.flows.append(msg)
            elif isinstance(msg, FlowDelete):
                self.flows = [
                    f
                    for f in self.flows
                    if not (
                        (f.cookie & msg.cookie_mask) == (msg.cookie & msg.cookie_mask)
                        and (msg.table is None or f.table == msg.table)
                    )
                ]
                kept = {_key(f) for f in self.flows}
                self.packets = {k: n for k, n in self.packets.items() if k in kept}
            elif isinstance(msg, PacketOut):
                self.packet_outs.append(msg)
            elif not isinstance(msg, Barrier):
                raise TypeError(msg)

    def answer(self, msg: StatsRequest) -> list[Stats]:
        """Return what a switch answers to a statistics request."""
        if isinstance(msg, FlowStatsRequest):
            return [
                FlowStats(f.table, f.priority, f.cookie, self.packets.get(_key(f), 0), 0)
                for f in self.flows
                if (f.cookie & msg.cookie_mask) == (msg.cookie & msg.cookie_mask)
            ]
        if isinstance(msg, PortStatsRequest):
            return [PortStats(msg.port, 0, 0, 0, self.tx_dropped.get(msg.port, 0), 0, 0)]
        raise TypeError(msg)

    def cookies(self) -> set[int]:
        return {f.cookie for f in self.flows}

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
        result, table, tag = Result(), 0, None
        while table is not None:
            flow = self._lookup(table, frame)
            if flow is None:
                break  # table miss with no miss flow: drop
            self.packets[_key(flow)] = self.packets.get(_key(flow), 0) + 1
            for action in flow.actions:
                if isinstance(action, PushVlan):
                    tag = action.vid
                elif isinstance(action, Output):
                    result.outputs.append((action.port, tag))
                elif isinstance(action, ToController):
                    result.to_controller.append(table)
            table = flow.goto
        return result


def _key(flow: FlowAdd) -> tuple:
    return (flow.table, flow.priority, flow.match)
