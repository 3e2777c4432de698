"""The session service: the one place where requests become agent calls and flow rules.

Every transport (REST today, on-path signaling next) calls these methods. I/O is handed
in: `switches` sends messages and waits for the barrier, `agents` talks to node agents,
`clock` tells the time, `lock` serialises state changes (a green lock under Ryu).

Order matters so that nothing is ever half-made:
  create:   reserve → agent attaches the chain → switch installs the detour → active;
            any failure undoes what was done and leaves no session, flow or module.
  teardown: forget → switch deletes the detour → agent detaches the chain;
            a part that is down cleans itself up (the switch's hard timeout and reset
            on reconnect, the agent's own soft-state expiry).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from controller import pipeline
from controller.errors import Conflict, InvalidRequest, NetServError, NotFound, Unavailable
from controller.messages import Message
from controller.network import Agent, Network
from controller.requests import format_dpid, parse_dpid, parse_lifetime, parse_session_request
from controller.sessions import Session, SessionTable, State
from nodes.bundle import Catalog

log = logging.getLogger("netserv.service")
AGENT_DEAD_AFTER = 6.0


class Switches(Protocol):
    def send(self, dpid: int, msgs: list[Message]) -> None:
        """Send `msgs`; when they end in a Barrier, wait for it. Raise PartFailed/Unavailable."""


class Agents(Protocol):
    def attach(self, agent: Agent, session: Session) -> None: ...
    def refresh(self, agent: Agent, session: Session) -> None: ...
    def detach(self, agent: Agent, session_id: int) -> dict[str, Any]: ...
    def stats(self, agent: Agent, session_id: int) -> dict[str, Any]: ...


class NetServService:
    def __init__(
        self,
        catalog: Catalog,
        switches: Switches,
        agents: Agents,
        clock: Callable[[], float],
        lock: AbstractContextManager[Any] | None = None,
        agent_dead_after: float = AGENT_DEAD_AFTER,
    ) -> None:
        self.catalog = catalog
        self.network = Network()
        self.sessions = SessionTable()
        self.switches = switches
        self.agents = agents
        self.clock = clock
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.agent_dead_after = agent_dead_after

    # --- sessions ------------------------------------------------------------------
    def create(self, body: object) -> Session:
        """Create a session from a request body; return it active, or raise and change nothing."""
        request = parse_session_request(body, self.catalog)
        with self.lock:
            node = self.network.place(request)
            session = self.sessions.reserve(request, node, self.clock())
            agent, port = self.network.agents[node], self.network.agent_port(node)
        try:
            self.agents.attach(agent, session)
        except NetServError:  # a chain the agent made anyway is dropped at its next heartbeat
            with self.lock:
                self.sessions.discard(session.id)
            raise
        try:
            if port is None:
                raise Unavailable(f"the agent port of node {node:#x} vanished")
            self.switches.send(node, pipeline.session_install(session, port))
        except NetServError:
            self._undo(session, agent)
            raise
        with self.lock:
            session = self.sessions.activate(session.id)
        log.info("session %d active on %016x: %s", session.id, node, session.match.as_dict())
        return session

    def _undo(self, session: Session, agent: Agent) -> None:
        with self.lock:
            self.sessions.discard(session.id)
        with contextlib.suppress(NetServError):
            self.switches.send(session.node, pipeline.session_remove(session))
        with contextlib.suppress(NetServError):
            self.agents.detach(agent, session.id)

    def teardown(self, session_id: int, reason: str = "teardown") -> dict[str, Any]:
        """End a session; return its last JSON view with the chain's final counters."""
        with self.lock:
            session = self.sessions.get(session_id)
            if session.state is not State.ACTIVE:
                raise Conflict(f"session {session_id} is still being installed")
            self.sessions.discard(session_id)
            agent = self.network.agents.get(session.node)
        view = session.to_json(self.clock()) | {"state": "ended", "ended": reason}
        try:
            self.switches.send(session.node, pipeline.session_remove(session))
        except NetServError as exc:  # the switch's reset on reconnect removes it
            log.warning("session %d: switch delete failed: %s", session_id, exc)
        if agent is not None:
            try:
                view["stats"] = self.agents.detach(agent, session_id)
            except NetServError as exc:  # the agent expires it by itself
                log.warning("session %d: agent detach failed: %s", session_id, exc)
        log.info("session %d ended (%s)", session_id, reason)
        return view

    def refresh(self, session_id: int, body: object) -> Session:
        """Extend a session's lifetime (soft state); return it."""
        lifetime = parse_lifetime(
            body.get("lifetime") if isinstance(body, dict) else None,
            default=self.sessions.get(session_id).lifetime,
        )
        with self.lock:
            session = self.sessions.refresh(session_id, lifetime, self.clock())
            agent = self.network.agents.get(session.node)
            port = self.network.agent_port(session.node)
        if agent is None:
            raise Unavailable(f"node {session.node:016x} has no agent")
        self.agents.refresh(agent, session)
        if port is not None:  # re-adding the flow restarts its hard timeout
            self.switches.send(session.node, pipeline.session_install(session, port))
        return session

    def stats(self, session_id: int) -> dict[str, Any]:
        """Return a session's JSON view with its chain's counters from the agent."""
        session = self.sessions.get(session_id)
        agent = self.network.agents.get(session.node)
        if agent is None:
            raise Unavailable(f"node {session.node:#x} has no agent")
        return session.to_json(self.clock()) | {"stats": self.agents.stats(agent, session_id)}

    # --- housekeeping --------------------------------------------------------------
    def tick(self) -> list[int]:
        """Expire sessions and notice dead agents; return the ids of sessions ended."""
        now = self.clock()
        ended = [s.id for s in self.sessions.expired(now)]
        for sid in ended:
            self._end_quietly(sid, "expired")
        for dpid in self.network.silent_agents(now, self.agent_dead_after):
            # Fail open: with the agent gone, its detours would black-hole the flows.
            log.warning("agent of node %016x is silent; removing its sessions", dpid)
            for session in self.sessions.on_node(dpid):
                self._end_quietly(session.id, "agent-dead")
                ended.append(session.id)
        return ended

    def _end_quietly(self, session_id: int, reason: str) -> None:
        with contextlib.suppress(NotFound, Conflict):  # already gone, or not yet made
            self.teardown(session_id, reason)

    def flow_removed(self, cookie_session: int | None) -> None:
        """The switch dropped a session's detour by itself (hard timeout): end the session."""
        if cookie_session is not None and cookie_session in {s.id for s in self.sessions.all()}:
            self._end_quietly(cookie_session, "switch-timeout")

    # --- nodes ---------------------------------------------------------------------
    def register_agent(self, body: object) -> dict[str, Any]:
        """Record an agent's registration (also its heartbeat); return the node's JSON view."""
        if not isinstance(body, dict):
            raise InvalidRequest("registration body must be a JSON object")
        try:
            agent = Agent(
                dpid=parse_dpid(body["dpid"]),
                switch_port=str(body["switch_port"]),
                url=str(body["url"]),
                boot_id=str(body["boot_id"]),
                last_seen=self.clock(),
            )
        except KeyError as exc:
            raise InvalidRequest(f"registration lacks {exc.args[0]!r}") from None
        with self.lock:
            restarted, msgs = self.network.register_agent(agent)
            stale = self.sessions.on_node(agent.dpid) if restarted else []
        switch = self.network.switches.get(agent.dpid)
        if msgs and switch is not None and switch.connected:  # else sent on (re)connect
            self.switches.send(agent.dpid, msgs)
        for session in stale:  # the agent lost its chains: give them back
            try:
                self.agents.attach(agent, session)
            except NetServError:
                self._end_quietly(session.id, "agent-restarted")
        if restarted:
            log.info("agent of node %016x registered at %s", agent.dpid, agent.url)
        # The agent drops any chain not listed: orphans of a controller that restarted.
        listed = [s.id for s in self.sessions.on_node(agent.dpid)]
        return {"dpid": format_dpid(agent.dpid), "sessions": listed}

    def switch_connected(self, dpid: int) -> list[Message]:
        """Return the base pipeline plus the detours of the node's active sessions."""
        with self.lock:
            msgs = self.network.switch_connected(dpid)
            port = self.network.agent_port(dpid)
            for session in self.sessions.on_node(dpid):
                if port is not None and session.state is State.ACTIVE:
                    msgs += pipeline.session_install(session, port)
        return msgs

    def ports_replaced(self, dpid: int, ports: dict[int, str]) -> list[Message]:
        """Record a switch's full port list (port-desc reply); return flows to add."""
        switch = self.network.switches.get(dpid)
        gone = set(switch.ports) - set(ports) if switch else set()
        return self.ports_changed(dpid, ports, gone)

    def ports_changed(self, dpid: int, added: dict[int, str], removed: set[int]) -> list[Message]:
        """Record port changes; return flows to add (agent return and pending detours)."""
        with self.lock:
            before = self.network.agent_port(dpid)
            msgs = self.network.ports_changed(dpid, added, removed)
            after = self.network.agent_port(dpid)
            if after is not None and after != before:
                for session in self.sessions.on_node(dpid):
                    if session.state is State.ACTIVE:
                        msgs += pipeline.session_install(session, after)
        return msgs
