"""The one place that turns message descriptions into Ryu OpenFlow 1.3 objects, and
the switch's statistics replies back into plain records."""

from __future__ import annotations

from typing import Any

from ryu.ofproto import ofproto_v1_3 as ofp13

from controller.messages import (
    Action,
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
    StatsRequest,
    ToController,
    as_match,
)

ETH_TYPE_8021Q = 0x8100
VLAN_VID_MASK = 0xFFF  # the VLAN id without OFPVID_PRESENT


def _match(parser: Any, fields: tuple[tuple[str, object], ...]) -> Any:
    return parser.OFPMatch(**dict(fields))


def _actions(dp: Any, actions: tuple[Action, ...]) -> list[Any]:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    out: list[Any] = []
    for action in actions:
        if isinstance(action, Output):
            out.append(parser.OFPActionOutput(action.port, 0))
        elif isinstance(action, PushVlan):
            out.append(parser.OFPActionPushVlan(ETH_TYPE_8021Q))
            out.append(parser.OFPActionSetField(vlan_vid=ofp.OFPVID_PRESENT | action.vid))
            if action.pcp:  # a pushed header's priority bits start at 0
                out.append(parser.OFPActionSetField(vlan_pcp=action.pcp))
        elif isinstance(action, PopVlan):
            out.append(parser.OFPActionPopVlan())
        elif isinstance(action, ToController):
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER))
        else:
            raise TypeError(f"unknown action {action!r}")
    return out


def build(dp: Any, msg: Message | StatsRequest) -> Any:
    """Return the Ryu message for `msg` on datapath `dp`."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(msg, FlowAdd):
        inst = []
        if msg.meter is not None:
            inst.append(parser.OFPInstructionMeter(msg.meter, ofp.OFPIT_METER))
        if msg.actions:
            inst.append(
                parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, _actions(dp, msg.actions))
            )
        if msg.goto is not None:
            inst.append(parser.OFPInstructionGotoTable(msg.goto))
        return parser.OFPFlowMod(
            dp,
            cookie=msg.cookie,
            table_id=msg.table,
            command=ofp.OFPFC_ADD,
            idle_timeout=msg.idle_timeout,
            hard_timeout=msg.hard_timeout,
            priority=msg.priority,
            flags=ofp.OFPFF_SEND_FLOW_REM if msg.notify_removal else 0,
            match=_match(parser, msg.match),
            instructions=inst,
        )
    if isinstance(msg, FlowDelete):
        strict = msg.priority is not None
        return parser.OFPFlowMod(
            dp,
            cookie=msg.cookie,
            cookie_mask=msg.cookie_mask,
            table_id=ofp.OFPTT_ALL if msg.table is None else msg.table,
            command=ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE,
            priority=msg.priority if strict else 0,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=_match(parser, msg.match),
        )
    if isinstance(msg, PacketOut):
        return parser.OFPPacketOut(
            dp,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=ofp.OFPP_CONTROLLER if msg.in_port is None else msg.in_port,
            actions=_actions(dp, msg.actions),
            data=msg.data,
        )
    if isinstance(msg, MeterAdd):
        return parser.OFPMeterMod(
            dp,
            command=ofp.OFPMC_ADD,
            flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST | ofp.OFPMF_STATS,
            meter_id=msg.meter_id,
            bands=[parser.OFPMeterBandDrop(rate=msg.rate, burst_size=msg.burst)],
        )
    if isinstance(msg, MeterDelete):
        return parser.OFPMeterMod(dp, command=ofp.OFPMC_DELETE, meter_id=msg.meter_id)
    if isinstance(msg, Barrier):
        return parser.OFPBarrierRequest(dp)
    if isinstance(msg, FlowStatsRequest):
        return parser.OFPFlowStatsRequest(
            dp,
            0,
            ofp.OFPTT_ALL,
            ofp.OFPP_ANY,
            ofp.OFPG_ANY,
            msg.cookie,
            msg.cookie_mask,
            parser.OFPMatch(),
        )
    if isinstance(msg, PortStatsRequest):
        return parser.OFPPortStatsRequest(dp, 0, msg.port)
    raise TypeError(f"unknown message {msg!r}")


def flow_stats(body: list[Any]) -> list[FlowStats]:
    """Return the records of a flow-stats reply's body (OFPFlowStats entries)."""
    records = []
    for f in body:
        actions, goto, meter = _instructions(f.instructions or [])
        records.append(
            FlowStats(
                f.table_id,
                f.priority,
                f.cookie,
                f.packet_count,
                f.byte_count,
                as_match(dict(f.match.items())) if f.match is not None else (),
                actions,
                goto,
                f.hard_timeout or 0,
                (f.duration_sec or 0) + (f.duration_nsec or 0) / 1e9,
                meter,
            )
        )
    return records


def _instructions(
    instructions: list[Any],
) -> tuple[tuple[Action | str, ...], int | None, int | None]:
    """Return a flow's instructions as the actions `build` would have sent, its goto and
    its meter.

    Anything NetServ never emits is kept as its text, so it never equals a flow of ours.
    """
    actions: list[Action | str] = []
    goto = meter = None
    for inst in instructions:
        if inst.type == ofp13.OFPIT_GOTO_TABLE:
            goto = inst.table_id
        elif inst.type == ofp13.OFPIT_METER:
            meter = inst.meter_id
        elif inst.type == ofp13.OFPIT_APPLY_ACTIONS:
            actions += _actions_read(inst.actions)
        else:
            actions.append(str(inst))
    return tuple(actions), goto, meter


def _actions_read(raw: list[Any]) -> list[Action | str]:
    """Return OpenFlow actions as Actions; `build` writes a PushVlan as two or three
    (push, VLAN id, priority bits when not 0), read as one."""
    out: list[Action | str] = []
    i = 0
    while i < len(raw):
        action, after = raw[i], raw[i + 1] if i + 1 < len(raw) else None
        i += 1
        if action.type == ofp13.OFPAT_OUTPUT:
            out.append(
                ToController() if action.port == ofp13.OFPP_CONTROLLER else Output(action.port)
            )
        elif (
            action.type == ofp13.OFPAT_PUSH_VLAN
            and action.ethertype == ETH_TYPE_8021Q
            and after is not None
            and after.type == ofp13.OFPAT_SET_FIELD
            and after.key == "vlan_vid"
        ):
            i += 1  # past the VLAN id
            pcp = raw[i] if i < len(raw) else None
            if pcp is not None and pcp.type == ofp13.OFPAT_SET_FIELD and pcp.key == "vlan_pcp":
                out.append(PushVlan(after.value & VLAN_VID_MASK, pcp.value))
                i += 1
            else:
                out.append(PushVlan(after.value & VLAN_VID_MASK))
        elif action.type == ofp13.OFPAT_POP_VLAN:
            out.append(PopVlan())
        else:
            out.append(str(action))
    return out


def port_stats(body: list[Any]) -> list[PortStats]:
    """Return the records of a port-stats reply's body (OFPPortStats entries)."""
    return [
        PortStats(
            p.port_no,
            p.rx_packets,
            p.tx_packets,
            p.rx_dropped,
            p.tx_dropped,
            p.rx_errors,
            p.tx_errors,
        )
        for p in body
    ]
