"""The controller's client of the node agents' control API (see `nodes/control.py`).

Requests are built and answers read with the contract's messages (`agentproto`), so
the controller sends nothing an agent would refuse as malformed and takes no answer
it does not understand. Every call is signed with the node's key and every answer must
be signed by the node's agent (`controller/auth.py`); an answer that is not counts as
no answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from agentproto.fields import ContractError
from agentproto.limits import CALL_TIMEOUT, HEALTH_TIMEOUT
from agentproto.messages import (
    AgentStatus,
    Attach,
    ChainQuery,
    ChainStats,
    Detach,
    ModuleSpec,
    Refresh,
    StatusQuery,
    Upgrade,
)
from controller.auth import Signer, agent_key_id, controller_key_id
from controller.errors import PartFailed, Unavailable
from controller.network import Agent
from controller.sessions import Session
from jsonhttp.client import ClientError, call_json

T = TypeVar("T")


class Request(Protocol):
    """A request of the contract: where it goes and its body (None: none)."""

    METHOD: str

    @property
    def path(self) -> str: ...

    def to_json(self) -> object: ...


def agent_call(
    key: bytes,
    dpid: int,
    url: str,
    method: str,
    path: str,
    body: object = None,
    timeout: float = CALL_TIMEOUT,
) -> Any:
    """Call node `dpid`'s agent at `url` as the controller does; return its JSON answer.

    Raise ClientError as `call_json` does (status 0 too for an answer the agent did
    not sign).
    """
    signer = Signer(key, controller_key_id(dpid), agent_key_id(dpid))
    return call_json(url + path, method, body, timeout, signer=signer)


class AgentClient:
    """Calls agents with their node's key, which `node_keys` returns (None: it has none)."""

    def __init__(
        self, node_keys: Callable[[int], bytes | None], timeout: float = CALL_TIMEOUT
    ) -> None:
        self.node_keys = node_keys
        self.timeout = timeout

    def send(self, agent: Agent, method: str, path: str, body: object, timeout: float) -> Any:
        """Send one call to `agent`; return its JSON answer. Raise ClientError, or
        Unavailable when the agent cannot be called at all."""
        key = self.node_keys(agent.dpid)
        if key is None:
            raise Unavailable(
                f"agent of node {agent.dpid:016x} cannot be called: "
                "the controller has no key for the node"
            )
        return agent_call(key, agent.dpid, agent.url, method, path, body, timeout)

    def _call(
        self,
        agent: Agent,
        request: Request,
        answer: Callable[[object], T],
        timeout: float = 0,
    ) -> T:
        """Send `request`; return its answer, read by `answer` (a message's from_json).

        Raise PartFailed when the agent refuses or its answer breaks the contract,
        Unavailable when it cannot be reached.
        """
        who = f"agent of node {agent.dpid:016x}"
        try:
            raw = self.send(
                agent, request.METHOD, request.path, request.to_json(), timeout or self.timeout
            )
        except ClientError as exc:
            if exc.status:
                raise PartFailed(f"{who} refused: {exc.message}") from None
            raise Unavailable(f"{who} unreachable: {exc.message}") from None
        try:
            return answer(raw)
        except ContractError as exc:
            raise PartFailed(f"{who} answered {request.METHOD} {request.path}: {exc}") from None

    def attach(self, agent: Agent, session: Session) -> None:
        """Have the agent build the session's chain, in the mode the session records
        (copies when `session.copy`, else a detour); raise PartFailed/Unavailable."""
        try:
            request = Attach(
                session.id, session.tag, session.lifetime, session.modules, bool(session.copy)
            )
        except ContractError as exc:  # what the agent would refuse is not sent
            raise PartFailed(f"session {session.id} cannot be attached: {exc}") from None
        self._call(agent, request, ChainStats.from_json)

    def refresh(self, agent: Agent, session: Session) -> None:
        """Extend the chain's soft state at the agent."""
        try:
            request = Refresh(session.id, session.lifetime)
        except ContractError as exc:
            raise PartFailed(f"session {session.id} cannot be refreshed: {exc}") from None
        self._call(agent, request, ChainStats.from_json)

    def upgrade(self, agent: Agent, session_id: int, position: int, module: ModuleSpec) -> None:
        """Have the agent put `module` (another version) at `position` of the session's
        chain, its state handed over; raise PartFailed/Unavailable."""
        try:
            request = Upgrade(session_id, position, module)
        except ContractError as exc:
            raise PartFailed(f"session {session_id} cannot be upgraded: {exc}") from None
        self._call(agent, request, ChainStats.from_json)

    def detach(self, agent: Agent, session_id: int) -> ChainStats:
        """Remove the chain; return its final counters."""
        return self._call(agent, Detach(session_id), ChainStats.from_json)

    def stats(self, agent: Agent, session_id: int) -> ChainStats:
        """Return the chain's counters, with the node's."""
        return self._call(agent, ChainQuery(session_id), ChainStats.from_json)

    def health(self, agent: Agent) -> AgentStatus:
        """Return the agent's own view (boot id, pid, ...); raise Unavailable if it is gone."""
        timeout = min(self.timeout, HEALTH_TIMEOUT)
        return self._call(agent, StatusQuery(), AgentStatus.from_json, timeout)
