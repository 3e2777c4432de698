"""A session's frames on their way through the detour: what the switch sent the agent,
what the agent got, dropped and returned, and what was lost on the way and where.

The switch counts the frames its detour flow sent (by the session's cookie); the
agent counts per session only the frames it received. A frame lost in between was
never seen with its session's tag by anyone who could count it, so the causes are
node-wide counters: the switch's agent port, the agent's receive queue and buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller import tables
from controller.messages import FlowStats, FlowStatsRequest, PortStats, PortStatsRequest


def flow_request(session_cookie: int) -> FlowStatsRequest:
    """Return the request for the counters of the flows the session owns."""
    return FlowStatsRequest(session_cookie, tables.COOKIE_ALL)


def port_request(agent_port: int) -> PortStatsRequest:
    """Return the request for the counters of the agent's port."""
    return PortStatsRequest(agent_port)


def frame_path(
    flows: list[FlowStats] | None,
    ports: list[PortStats] | None,
    agent: Mapping[str, Any],
    copy: bool = False,
) -> dict[str, object]:
    """Return the session's frame path, JSON-ready.

    With `copy` (a chain of observe-only modules) the switch forwarded each frame
    itself and sent the agent a copy, which never comes back: nothing is returned or
    dropped by design, so those counters are None rather than a loss, and what is lost
    before the agent is a lost copy, never a lost frame of the flow.

    `flows` and `ports` are the switch's replies (None when it could not be asked);
    `agent` is the agent's reply for the session: its chain's counters with the
    node's under "node". The two are read a moment apart, and Open vSwitch brings
    flow counters up to date only about every half second, so the loss is exact
    once the flow has been idle for a second; it is never shown below zero.
    """
    sent = None if flows is None else sum(f.packets for f in flows if f.table == tables.CLASSIFY)
    received = int(agent.get("packets", 0))
    node = agent.get("node") or {}
    port = ports[0] if ports else None
    return {
        "copy": copy,
        "switch_sent": sent,
        "agent_received": received,
        "module_dropped": None if copy else agent.get("dropped"),
        "agent_returned": None if copy else agent.get("returned"),
        "agent_send_failed": None if copy else agent.get("send_failed"),
        "lost_before_agent": None if sent is None else max(0, sent - received),
        "node_losses": {
            "switch_tx_dropped": None if port is None else port.tx_dropped,
            "agent_queue_dropped": node.get("queue_dropped"),
            "agent_too_big": node.get("too_big"),
            "agent_send_failed": node.get("send_failed"),
            "switch_queue_dropped": node.get("switch_queue_dropped"),
        },
    }
