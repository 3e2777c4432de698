"""Frozen descriptions of the OpenFlow messages the controller sends.

The pure logic returns these; only `controller/ofbuild.py` turns them into Ryu parser
objects. Tests feed them to a simulated flow table instead of a switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.tables import check_flow

Match = tuple[tuple[str, object], ...]  # sorted (OXM field name, value) pairs


@dataclass(frozen=True)
class Output:
    port: int


@dataclass(frozen=True)
class PushVlan:
    """Push an 802.1Q header and set its VLAN id and priority bits: how a detour tells
    the agent its session (`agentproto/tags.py`)."""

    vid: int
    pcp: int = 0


@dataclass(frozen=True)
class PopVlan:
    """Take the outer 802.1Q header off again: a copy rule's frame goes on as it came."""


@dataclass(frozen=True)
class ToController:
    pass


Action = Output | PushVlan | PopVlan | ToController


@dataclass(frozen=True)
class FlowAdd:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    notify_removal: bool = False
    meter: int | None = None  # the meter the flow's frames pass before its actions

    def __post_init__(self) -> None:
        check_flow(self.table, self.priority)


@dataclass(frozen=True)
class FlowDelete:
    """Delete flows whose cookie matches under the mask; table None means every table.

    With a priority the delete is strict: only the flow with exactly that table,
    priority and match (and a matching cookie) goes.
    """

    cookie: int
    cookie_mask: int
    table: int | None = None
    match: Match = ()
    priority: int | None = None


@dataclass(frozen=True)
class PacketOut:
    """A frame the controller sends out; `in_port` None when no port received it."""

    in_port: int | None
    actions: tuple[Action, ...]
    data: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class MeterAdd:
    """Add a meter that drops what exceeds `rate` packets a second, after a `burst`."""

    meter_id: int
    rate: int
    burst: int


@dataclass(frozen=True)
class MeterDelete:
    """Delete a meter; the switch deletes the flows that use it too."""

    meter_id: int


@dataclass(frozen=True)
class Barrier:
    pass


Message = FlowAdd | FlowDelete | PacketOut | MeterAdd | MeterDelete | Barrier


@dataclass(frozen=True)
class FlowStatsRequest:
    """Ask for the counters of the flows, in any table, whose cookie matches under the mask."""

    cookie: int
    cookie_mask: int


@dataclass(frozen=True)
class PortStatsRequest:
    port: int


StatsRequest = FlowStatsRequest | PortStatsRequest


@dataclass(frozen=True)
class FlowStats:
    """One flow as the switch answered a FlowStatsRequest: its counters, what it matches
    and does (an action NetServ never emits is kept as its text), and its timer."""

    table: int
    priority: int
    cookie: int
    packets: int
    bytes: int
    match: Match = ()
    actions: tuple[Action | str, ...] = ()
    goto: int | None = None
    hard_timeout: int = 0
    duration: float = 0.0
    meter: int | None = None


@dataclass(frozen=True)
class PortStats:
    """One port's counters, as the switch answered a PortStatsRequest."""

    port: int
    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int
    rx_errors: int
    tx_errors: int


Stats = FlowStats | PortStats


def as_match(fields: dict[str, object]) -> Match:
    """Return `fields` as a Match: a hashable, order-independent tuple of pairs."""
    return tuple(sorted(fields.items()))
