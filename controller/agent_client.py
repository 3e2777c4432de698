"""The controller's client of the node agents' control API (see `nodes/control.py`).

Every call is signed with the node's key and every answer must be signed by the node's
agent (`controller/auth.py`); an answer that is not counts as no answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.auth import Signer, agent_key_id, controller_key_id
from controller.errors import PartFailed, Unavailable
from controller.network import Agent
from controller.sessions import Session
from signaling.jsonhttp import ClientError, call_json

TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0  # asked while an agent waits for its registration's answer


def agent_call(
    key: bytes,
    dpid: int,
    url: str,
    method: str,
    path: str,
    body: object = None,
    timeout: float = TIMEOUT,
) -> Any:
    """Call node `dpid`'s agent at `url` as the controller does; return its JSON answer.

    Raise ClientError as `call_json` does (status 0 too for an answer the agent did
    not sign).
    """
    signer = Signer(key, controller_key_id(dpid), agent_key_id(dpid))
    return call_json(url + path, method, body, timeout, signer=signer)


class AgentClient:
    """Calls agents with their node's key, which `node_keys` returns (None: it has none)."""

    def __init__(self, node_keys: Callable[[int], bytes | None], timeout: float = TIMEOUT) -> None:
        self.node_keys = node_keys
        self.timeout = timeout

    def _call(
        self, agent: Agent, method: str, path: str, body: object = None, timeout: float = 0
    ) -> Any:
        who = f"agent of node {agent.dpid:016x}"
        key = self.node_keys(agent.dpid)
        if key is None:
            raise Unavailable(f"{who} cannot be called: the controller has no key for the node")
        try:
            return agent_call(
                key, agent.dpid, agent.url, method, path, body, timeout or self.timeout
            )
        except ClientError as exc:
            if exc.status:
                raise PartFailed(f"{who} refused: {exc.message}") from None
            raise Unavailable(f"{who} unreachable: {exc.message}") from None

    def attach(self, agent: Agent, session: Session) -> None:
        """Have the agent build the session's chain; raise PartFailed/Unavailable."""
        body = {
            "tag": session.tag,
            "lifetime": session.lifetime,
            "modules": [m.to_json() for m in session.modules],
        }
        self._call(agent, "PUT", f"/sessions/{session.id}", body)

    def refresh(self, agent: Agent, session: Session) -> None:
        """Extend the chain's soft state at the agent."""
        self._call(agent, "PATCH", f"/sessions/{session.id}", {"lifetime": session.lifetime})

    def detach(self, agent: Agent, session_id: int) -> dict[str, Any]:
        """Remove the chain; return its final counters."""
        return self._call(agent, "DELETE", f"/sessions/{session_id}")

    def stats(self, agent: Agent, session_id: int) -> dict[str, Any]:
        """Return the chain's counters."""
        return self._call(agent, "GET", f"/sessions/{session_id}")

    def health(self, agent: Agent) -> dict[str, Any]:
        """Return the agent's own view (boot id, pid, ...); raise Unavailable if it is gone."""
        return self._call(agent, "GET", "/health", timeout=min(self.timeout, HEALTH_TIMEOUT))
