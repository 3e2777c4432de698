"""The controller's client of the node agents' control API (see `nodes/control.py`)."""

from __future__ import annotations

from typing import Any

from controller.errors import PartFailed, Unavailable
from controller.network import Agent
from controller.sessions import Session
from signaling.jsonhttp import ClientError, call_json

TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0  # asked while an agent waits for its registration's answer


class AgentClient:
    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout

    def _call(
        self, agent: Agent, method: str, path: str, body: object = None, timeout: float = 0
    ) -> Any:
        try:
            return call_json(agent.url + path, method, body, timeout or self.timeout)
        except ClientError as exc:
            who = f"agent of node {agent.dpid:016x}"
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
