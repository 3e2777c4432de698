"""The one place that turns message descriptions into Ryu OpenFlow 1.3 objects."""

from __future__ import annotations

from typing import Any

from controller.messages import (
    Action,
    Barrier,
    FlowAdd,
    FlowDelete,
    Message,
    Output,
    PacketOut,
    PushVlan,
    ToController,
)

ETH_TYPE_8021Q = 0x8100


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
        elif isinstance(action, ToController):
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER))
        else:
            raise TypeError(f"unknown action {action!r}")
    return out


def build(dp: Any, msg: Message) -> Any:
    """Return the Ryu message for `msg` on datapath `dp`."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(msg, FlowAdd):
        inst = []
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
        return parser.OFPFlowMod(
            dp,
            cookie=msg.cookie,
            cookie_mask=msg.cookie_mask,
            table_id=ofp.OFPTT_ALL if msg.table is None else msg.table,
            command=ofp.OFPFC_DELETE,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=_match(parser, msg.match),
        )
    if isinstance(msg, PacketOut):
        return parser.OFPPacketOut(
            dp,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=msg.in_port,
            actions=_actions(dp, msg.actions),
            data=msg.data,
        )
    if isinstance(msg, Barrier):
        return parser.OFPBarrierRequest(dp)
    raise TypeError(f"unknown message {msg!r}")
