"""Asking a node agent what it holds, as the controller asks: signed with the node's key."""

from __future__ import annotations

from typing import Any

from controller.agent_client import agent_call
from controller.keyfiles import read_secret
from signaling.client import NetServClient


def call_agent(
    client: NetServClient,
    switch: Any,
    method: str = "GET",
    path: str = "/health",
    body: object = None,
) -> Any:
    """Return the answer of `switch`'s agent (at the URL it registered) to a signed call.

    `switch` is a NetServSwitch: its key file is the node's key. Raise ClientError.
    """
    node = next(n for n in client.nodes() if n["dpid"] == switch.dpid)
    key = read_secret(switch.key_file)
    return agent_call(key, switch.dpid_int, node["agent"]["url"], method, path, body)
