"""The session service: the one place where requests become agent calls and flow rules.

Every transport (REST, on-path signaling) builds a SessionRequest (`controller/requests.py`)
and calls these methods. I/O is handed
in: `switches` sends messages and waits for the barrier, `agents` talks to node agents,
`clock` tells the time, `lock` serialises state changes (a green lock under Ryu); it is
never held across I/O, so every state change goes through the session table's
transitions (`controller/sessions.py`), which turn a racing request into a Conflict.

Order matters so that nothing is ever half-made:
  create:   reserve a session at each selected node (a group) → at each, the agent
            attaches the chain and the switch installs the detour → all active;
            any failure, of any type, undoes what was done at every node (no session,
            flow or chain) and is raised again. An on-path request that is checked for
            return-routability is reserved PENDING_ROUTABILITY first (`reserve`), then
            installed when the check passes (`install`) or withdrawn when it fails.
  refresh:  (each session of the group) check everything → agent → switch re-adds the
            detour → the new lifetime;
            a failure at any node puts back what was pushed and leaves every
            session of the group as it was.
  upgrade:  (each session of the group) check everything → the agent swaps the module
            for the new version, its state handed over → the session records it;
            an agent that refuses changes nothing there, and the sessions of the
            group already upgraded are moved back.
  teardown: (each session of the group) ending → switch deletes the detour → agent
            detaches the chain → ended;
            a part that is down cleans itself up (the switch's hard timeout and reset
            on reconnect, the agent's own soft-state expiry).
  tick:     expire, suspend the sessions of agents gone silent, resume the suspended
            sessions of agents that are back, re-arm the switch timers that are due: a
            detour's hard timeout is capped (16-bit field) and re-added before it runs
            out while the session lives.
  agent down (its supervisor's notice, or silence): each of the node's sessions is
            suspended by its failure policy, in one batch per switch: fail-open takes
            the detour out (the flow goes on unserved), fail-closed replaces it with a
            drop. The session keeps its id, tag, flow space and lifetime. A session
            whose chain only observes has a copy rule, not a detour: its flow never
            depended on the agent, so it is taken out as fail-open, whatever the
            modules' failure policy.
  agent back (its registration): each suspended session gets its chain (attached
            again when the agent restarted, its lifetime renewed when it only hung)
            and its detour, and is active again; one the agent refuses ends.

With a store (`controller/store.py`) every change of a session's state is written
there through the session table's one hook, and a controller that starts takes back
what the last one left (`_restore`). A switch that (re)connects is not wiped: its
NetServ flows are read and only what differs from what it should hold is deleted or
added (`reconcile`), so a detour that is right keeps serving its flow throughout.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Protocol

from agentproto.fields import ContractError
from agentproto.held import Held
from agentproto.limits import AGENT_DEAD_AFTER
from agentproto.messages import AgentStatus, ChainStats, ModuleSpec, Registration, RegistrationReply
from controller import framepath, pipeline
from controller.errors import (
    Conflict,
    InvalidRequest,
    NetServError,
    NotFound,
    PartFailed,
    Rejections,
    Unavailable,
)
from controller.messages import (
    FlowAdd,
    FlowDelete,
    FlowStats,
    Message,
    Stats,
    StatsRequest,
)
from controller.modules import as_source
from controller.network import Agent, Network, refusal
from controller.placement import select_nodes
from controller.policy import OPERATOR, OPERATOR_ONLY, Policy
from controller.requests import SessionRequest, format_dpid, resolve_module
from controller.sessions import HELD, LIVE, GroupKey, Session, SessionTable, State
from controller.store import SessionStore, StoreError
from controller.tables import HARD_TIMEOUT_CAP
from nodes.bundle import BundleError, Catalog

log = logging.getLogger("netserv.service")
# Seconds at least between two lists of a node's sessions sent to its agent while some
# of them are being set up or torn down (`_list_due`): orphans then wait that long.
LIST_EVERY = 30.0


class Switches(Protocol):
    def send(self, dpid: int, msgs: list[Message]) -> None:
        """Send `msgs`; when they end in a Barrier, wait for it. Raise PartFailed/Unavailable."""

    def request(self, dpid: int, msg: StatsRequest) -> list[Stats]:
        """Return the switch's statistics records for `msg`. Raise PartFailed/Unavailable."""


class Agents(Protocol):
    """The node agents, as `controller/agent_client.py` calls them; each call raises
    PartFailed or Unavailable when it fails."""

    def attach(self, agent: Agent, session: Session) -> None: ...
    def refresh(self, agent: Agent, session: Session) -> None: ...
    def detach(self, agent: Agent, session_id: int) -> ChainStats: ...
    def stats(self, agent: Agent, session_id: int) -> ChainStats: ...
    def health(self, agent: Agent) -> AgentStatus:
        """Return the agent's own view (boot id, pid, ...); raise NetServError if it is gone."""


class NetServService:
    def __init__(
        self,
        catalog: Catalog,
        switches: Switches,
        agents: Agents,
        clock: Callable[[], float],
        lock: AbstractContextManager[Any] | None = None,
        agent_dead_after: float = AGENT_DEAD_AFTER,
        hard_timeout_cap: int = HARD_TIMEOUT_CAP,
        policy: Policy = OPERATOR_ONLY,
        store: SessionStore | None = None,
    ) -> None:
        self.catalog = catalog
        self.network = Network()
        self.switches = switches
        self.agents = agents
        self.clock = clock
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.agent_dead_after = agent_dead_after
        self.hard_timeout_cap = hard_timeout_cap
        self.policy = policy  # replaced whole when the operator reloads the file
        self.rejections = Rejections()  # counted by the transports, shown to the operator
        self.store = store
        first_id = store.next_id if store is not None else 1
        self.sessions = SessionTable(first_id, on_change=self._persist)
        self._unsynced: set[int] = set()  # switches connected whose flows are not reconciled
        self._resync: set[int] = set()  # restored sessions whose agent lifetime is unsure
        self._suspending: set[int] = set()  # suspended sessions whose flows are on their way
        self._listed_at: dict[int, float] = {}  # node → when its agent was last sent the list
        if store is not None:
            self._restore(store)

    # --- sessions ------------------------------------------------------------------
    def create(self, request: SessionRequest, ref: int | None = None) -> list[Session]:
        """Create the sessions `request` asks for, one per selected node, as one group;
        return them active, in path order, or raise and change nothing.

        `ref` names the group for its requester (a signaling session id; a group it
        already has is a Conflict); None names it by its first session's id. The policy
        is asked before anything else (UnknownRequester, Forbidden, QuotaExceeded), and
        once the nodes are chosen, for the flows they hold. A failure after the
        reservation, whatever its type, undoes everything done so far, at every node,
        and is raised again.
        """
        return self.install(self.reserve(request, ref))

    def reserve(
        self, request: SessionRequest, ref: int | None = None, state: State = State.INSTALLING
    ) -> list[Session]:
        """Ask the policy, choose the nodes and hold a session at each, as one group;
        return them in path order, in `state`: INSTALLING to be installed at once, or
        PENDING_ROUTABILITY while the return-routability check runs (then `install`
        when it passes, `withdraw` when it fails). Raise as `create` does; then
        nothing is held."""
        with self.lock:
            held = self.sessions.values()
            self.policy.authorize(request.requester, request, held)
            nodes = select_nodes(self.network, request.selection, request.ends)
            if len(nodes) > 1:  # a flow rule at each node counts
                self.policy.authorize(request.requester, request, held, flows=len(nodes))
            copy = self._decide_copy(request.modules)
            return self.sessions.reserve_group(request, nodes, self.clock(), ref, state, copy)

    def withdraw(self, reserved: list[Session]) -> None:
        """End reservations that were never installed (a failed return-routability
        check): nothing was sent anywhere, so nothing is undone but the table's hold."""
        with self.lock:
            for session in reserved:
                with contextlib.suppress(NotFound):
                    self.sessions.move(session.id, State.ENDED)

    def install(self, reserved: list[Session]) -> list[Session]:
        """Install a reserved group (from `reserve`) at each of its nodes: the agent
        attaches the chain, the switch the detour; return the sessions active, or raise
        after undoing everything done so far, at every node, and ending the group."""
        try:
            with self.lock:
                reserved = [
                    self.sessions.move(s.id, State.INSTALLING)
                    if s.state is State.PENDING_ROUTABILITY
                    else s
                    for s in reserved
                ]
        except NetServError:  # one ended meanwhile: nothing was sent anywhere
            self.withdraw(reserved)
            raise
        with self.lock:
            parts = [
                (s, self.network.agents[s.node], self.network.agent_port(s.node)) for s in reserved
            ]
        armed: list[float] = []
        tried: set[tuple[int, str]] = set()  # (session, "agent" | "switch") asked to set up
        try:
            for session, agent, port in parts:
                tried.add((session.id, "agent"))
                self.agents.attach(agent, session)
                if port is None:
                    node = format_dpid(session.node)
                    raise Unavailable(f"the agent port of node {node} vanished")
                tried.add((session.id, "switch"))
                armed.append(self._install(session, port))
            with self.lock:
                made = [
                    self.sessions.move(s.id, State.ACTIVE, armed_until=until)
                    for s, until in zip(reserved, armed, strict=True)
                ]
        except Exception:
            for session, agent, _ in parts:
                self._undo(session, agent, {part for sid, part in tried if sid == session.id})
            raise
        for session in made:
            log.info(
                "session %d (%s %#x) active on %016x: %s",
                session.id,
                session.requester,
                session.ref,
                session.node,
                session.match.as_dict(),
            )
        return made

    def group(self, target: int | GroupKey) -> list[Session]:
        """Return the sessions of a group, in path order: the group of session `target`
        (an id) or the group `target` names (requester, ref). Raise NotFound."""
        with self.lock:
            if isinstance(target, int):
                target = self.sessions.get(target).group
            members = self.sessions.group(target)
        if not members:
            raise NotFound(f"no session {target[1]:#x} of requester {target[0]}")
        return members

    def _install(self, session: Session, port: int) -> float:
        """Install (or re-arm) the session's detour; return when its hard timeout runs out."""
        now = self.clock()
        hard = pipeline.hard_timeout(session, now, self.hard_timeout_cap)
        copy = self.copies(session)
        self.switches.send(session.node, pipeline.session_install(session, port, hard, copy))
        return now + hard

    def _undo(self, session: Session, agent: Agent, tried: set[str]) -> None:
        """Remove what a failed create may have made at the parts it `tried` ("agent",
        "switch"): a part never asked sent nothing to undo. The reservation is held
        until then."""
        try:
            if "switch" in tried:
                self._remove_detour(session)
            if "agent" in tried:
                _quietly(session.id, "agent detach", self.agents.detach, agent, session.id)
        finally:
            with self.lock:
                self.sessions.move(session.id, State.ENDED)

    def _remove_detour(self, session: Session) -> None:
        # A switch that cannot be reached drops it by its hard timeout or reset on reconnect.
        _quietly(
            session.id,
            "switch delete",
            self.switches.send,
            session.node,
            pipeline.session_remove(session),
        )

    def teardown(
        self, target: int | GroupKey, reason: str = "teardown", requester: str = OPERATOR
    ) -> list[dict[str, Any]]:
        """End every session of a group (see `group`); return their last JSON views, in
        path order, with the chains' final counters.

        Raise NotFound, NotOwner when it is not `requester`'s, or Conflict when a
        session is still being installed or already ending.
        """
        members = self.group(target)
        with self.lock:
            self.policy.check_owner(requester, members[0])
        return [self._end(session.id, reason) for session in members]

    def _end(self, session_id: int, reason: str) -> dict[str, Any]:
        """End one session; return its last JSON view with the chain's final counters."""
        with self.lock:
            session = self.sessions.move(session_id, State.ENDING)
            agent = self.network.agents.get(session.node)
            if agent is not None and not agent.alive:
                agent = None  # it drops the chain itself: expiry, or its registration's answer
        stats = None
        try:
            self._remove_detour(session)
            if agent is not None:  # else the agent expires the chain by itself
                stats = _quietly(session_id, "agent detach", self.agents.detach, agent, session_id)
        finally:
            with self.lock:
                session = self.sessions.move(session_id, State.ENDED)
        view = session.to_json(self.clock()) | {"ended": reason}
        if stats is not None:
            view["stats"] = stats.to_json()
        log.info("session %d ended (%s)", session_id, reason)
        return view

    def refresh(
        self,
        target: int | GroupKey,
        lifetime: int | None = None,
        expect: SessionRequest | None = None,
        requester: str = OPERATOR,
    ) -> list[Session]:
        """Give every session of a group (see `group`) a new lifetime from now (soft
        state): `lifetime`, or each one's own when None; return them.

        Everything is checked first: `requester` must own it (NotOwner), the policy is
        asked again as for a new session, its own sessions left out (a reloaded policy
        may have taken a right away), and `expect`, the request the group must have been
        made from (a signaling REFRESH carries the whole description), may differ only
        in the lifetime (Conflict). When an agent or switch fails at any node, every
        session of the group is put back as it was (lifetime, the agent's expiry, the
        switch's timer) and the error raised.
        """
        members = self.group(target)
        first = members[0]
        with self.lock:
            self.policy.check_owner(requester, first)
            others = [s for s in self.sessions.all() if s.group != first.group]
            again = SessionRequest(
                first.match,
                first.modules if expect is None else expect.modules,
                lifetime or first.lifetime,
                first.requester,
                first.selection,
            )
            self.policy.authorize(requester, again, others, flows=len(members))
        upgrades = [] if expect is None else _upgrades(first, expect)
        for position, spec in upgrades:
            members = self._upgrade(members, position, spec)
        done: list[Session] = []  # as they were before this refresh
        try:
            for session in members:
                with self.lock:
                    was = self.sessions.get(session.id)
                self._refresh_one(session.id, lifetime)
                done.append(was)
        except Exception:
            for was in reversed(done):  # a refresh is the whole group's or no one's
                self._unrefresh(was)
            raise
        with self.lock:
            return [self.sessions.get(s.id) for s in members]

    def upgrade(
        self,
        target: int,
        module: str | None = None,
        version: str | None = None,
        requester: str = OPERATOR,
    ) -> list[Session]:
        """Move module `module` of the chain of every session of session `target`'s group
        (None: the chain's only module) to `version` (None: the one a new request for it
        would get, the newest published), its state handed over at each node; return
        the sessions, which record the new version.

        Everything is checked first: `requester` must own it (NotOwner), the policy is
        asked again for the chain with the new version; a module the chain does not hold,
        or holds more than once (InvalidRequest), or already at that version (Conflict),
        changes nothing. An agent that refuses (PartFailed: the new version cannot be
        loaded or take the state) keeps the old version running.
        """
        members = self.group(target)
        first = members[0]
        with self.lock:
            self.policy.check_owner(requester, first)
        position = _position(first, module)
        current = first.modules[position]
        spec = resolve_module(current.name, dict(current.params), version, self.catalog)
        if (spec.version, spec.sha256) == (current.version, current.sha256):
            raise Conflict(f"session {target} runs {spec.name} {spec.version} already")
        modules = _replaced(first.modules, position, spec)
        with self.lock:
            others = [s for s in self.sessions.all() if s.group != first.group]
            again = SessionRequest(
                first.match, modules, first.lifetime, first.requester, first.selection
            )
            self.policy.authorize(requester, again, others, flows=len(members))
        return self._upgrade(members, position, spec)

    def _upgrade(self, members: list[Session], position: int, spec: ModuleSpec) -> list[Session]:
        """Upgrade the module at `position` of each of `members`; return them. When one
        fails, those done are moved back to the module they had and the error raised.

        A session keeps how its frames reach its chain: one whose frames are copied
        (every module observe-only) cannot take a version that is not observe-only
        (Conflict, before anything is sent); a detour stays a detour, whatever the
        new version says."""
        copied = [s.id for s in members if self.copies(s)]
        if copied and not self._observes(spec):
            raise Conflict(
                f"the frames of session {copied[0]} are copied to its chain, which takes "
                f"observe-only modules only, and {spec.name} {spec.version} is not "
                "observe-only: end the session and create it anew to run that version"
            )
        done: list[Session] = []
        try:
            for session in members:
                done.append(self._upgrade_one(session.id, position, spec))
        except Exception:
            for session, before in zip(done, members, strict=False):
                back = before.modules[position]
                _quietly(session.id, "upgrade undo", self._upgrade_one, session.id, position, back)
            raise
        return done

    def _upgrade_one(self, session_id: int, position: int, spec: ModuleSpec) -> Session:
        """Have the session's agent put `spec` at `position` of its chain; return the
        session with it recorded. Raise Conflict unless the session is active,
        Unavailable/PartFailed as the agent does (the session then stays as it was)."""
        with self.lock:
            old = self.sessions.get(session_id)
            agent = self.network.agents.get(old.node)
            if old.state is not State.ACTIVE or agent is None or not agent.alive:
                raise Conflict(
                    f"session {session_id} cannot be upgraded while it is {old.state.value}"
                    + ("" if agent is not None and agent.alive else " (its agent is down)")
                )
            old = self.sessions.move(session_id, State.REFRESHING)
        try:
            self.agents.upgrade(agent, session_id, position, spec)
        except Exception:
            self._settle(old)
            raise
        done = self._settle(old, modules=_replaced(old.modules, position, spec))
        if done is None:
            raise Conflict(f"session {session_id} ended while it was being upgraded")
        log.info("session %d: %s upgraded to %s", session_id, spec.name, spec.version)
        return done

    def _refresh_one(self, session_id: int, lifetime: int | None) -> Session:
        """Give one session a new lifetime from now; return it.

        Everything is checked before anything changes. When the agent or the switch
        fails, what was pushed is put back, the session stays as it was (lifetime,
        expiry, active) and the error is raised again.
        """
        with self.lock:
            old = self.sessions.get(session_id)
            lifetime = old.lifetime if lifetime is None else lifetime
            if old.state is State.SUSPENDED:  # the agent gets the rest when it is back
                held = self.sessions.move(
                    session_id, State.SUSPENDED, lifetime=lifetime, expires=self.clock() + lifetime
                )
                self._suspending.add(session_id)
        if old.state is State.SUSPENDED:
            self._hold([held])  # a drop's timer follows the new lifetime
            return held
        with self.lock:
            agent = self.network.agents.get(old.node)
            if agent is None:
                raise Unavailable(f"node {format_dpid(old.node)} has no agent")
            port = self.network.agent_port(old.node)
            new = replace(old, lifetime=lifetime, expires=self.clock() + lifetime)
            old = self.sessions.move(session_id, State.REFRESHING)
        pushed: list[str] = []
        try:
            pushed.append("agent")
            self.agents.refresh(agent, new)
            armed_until = old.armed_until
            if port is not None:  # else the detour is reinstalled when the port is back
                pushed.append("switch")
                armed_until = self._install(new, port)
        except Exception:
            self._put_back(old, agent, port, pushed)
            self._settle(old)
            raise
        done = self._settle(old, lifetime=lifetime, expires=new.expires, armed_until=armed_until)
        if done is None:
            raise Conflict(f"session {session_id} ended while it was being refreshed")
        return done

    def _unrefresh(self, was: Session) -> None:
        """Put a session that a group's refresh renewed back as it `was`, since the
        refresh failed at another node: its lifetime, the agent's expiry, the switch's
        timer. One that ended or changed state meanwhile is left as it is now."""
        with self.lock:
            try:
                now = self.sessions.get(was.id)
            except NotFound:
                return
            if now.state is State.SUSPENDED and was.state is State.SUSPENDED:
                held = self.sessions.move(
                    was.id, State.SUSPENDED, lifetime=was.lifetime, expires=was.expires
                )
                self._suspending.add(was.id)
            elif now.state is State.ACTIVE and was.state is State.ACTIVE:
                held = None
                agent = self.network.agents.get(was.node)
                port = self.network.agent_port(was.node)
                self.sessions.move(was.id, State.REFRESHING)
            else:
                return
        if held is not None:
            self._hold([held])
            return
        armed_until = was.armed_until
        if agent is not None:
            rest = replace(was, lifetime=max(1, math.ceil(was.expires - self.clock())))
            _quietly(was.id, "agent restore", self.agents.refresh, agent, rest)
        if port is not None:
            rearmed = _quietly(was.id, "switch restore", self._install, was, port)
            armed_until = armed_until if rearmed is None else rearmed
        self._settle(was, lifetime=was.lifetime, expires=was.expires, armed_until=armed_until)

    def _put_back(self, old: Session, agent: Agent, port: int | None, pushed: list[str]) -> None:
        """Restore the agent's expiry and the switch's timer of a refresh that failed."""
        ended = True
        with self.lock, contextlib.suppress(NotFound):
            if self.sessions.get(old.id).state is State.REFRESHING:
                ended = False
        if ended:  # a teardown won; _settle removes what the refresh may have re-added
            return
        if "agent" in pushed:
            rest = replace(old, lifetime=max(1, math.ceil(old.expires - self.clock())))
            _quietly(old.id, "agent restore", self.agents.refresh, agent, rest)
        if "switch" in pushed and port is not None:
            _quietly(old.id, "switch restore", self._install, old, port)

    def _settle(self, before: Session, **changes: Any) -> Session | None:
        """End an update (REFRESHING or RESUMING) with `changes`; return the session,
        active again.

        Return None when a teardown ended it meanwhile, or its agent went down: the
        update's flow may have reached the switch after the teardown's delete or the
        suspension's flows, so the detour is removed again, or the suspension's
        flows sent again.
        """
        held = None
        with self.lock:
            with contextlib.suppress(Conflict, NotFound):
                return self.sessions.move(before.id, State.ACTIVE, **changes)
            with contextlib.suppress(NotFound):
                held = self.sessions.get(before.id)
            if held is not None and held.state is State.SUSPENDED:
                self._suspending.add(held.id)
            else:
                held = None
        if held is not None:
            self._hold([held])
        else:
            self._remove_detour(before)
        return None

    def stats(self, session_id: int) -> dict[str, Any]:
        """Return a session's JSON view with its chain's counters and its frames' path."""
        session = self.sessions.get(session_id)
        agent = self.network.agents.get(session.node)
        if agent is None or not agent.alive or session.state in HELD:
            raise Unavailable(
                f"node {format_dpid(session.node)}'s agent is down; session {session_id} is "
                f"{session.state.value} until it is back"
            )
        port = self.network.agent_port(session.node)
        # The switch before the agent: the other way round, frames still on their
        # way to the agent would read as lost.
        try:
            flows = self.switches.request(session.node, framepath.flow_request(session.cookie))
            ports = None
            if port is not None:
                ports = self.switches.request(session.node, framepath.port_request(port))
        except NetServError as exc:  # the agent's counters are worth showing alone
            log.warning("session %d: no switch counters: %s", session_id, exc)
            flows = ports = None
        chain = self.agents.stats(agent, session_id).to_json()
        path = framepath.frame_path(flows, ports, chain, copy=self.copies(session))
        return session.to_json(self.clock()) | {"stats": chain, "path": path}

    # --- housekeeping --------------------------------------------------------------
    def tick(self) -> list[int]:
        """Expire sessions, suspend those of agents gone silent, resume those whose
        agent is back, re-arm the switch timers due.

        Return the ids of the sessions ended.
        """
        now = self.clock()
        with self.lock:
            for dpid in self.network.silent_agents(now, self.agent_dead_after):
                log.warning("agent of node %016x is silent; suspending its sessions", dpid)
                self._agent_dead(dpid)
            ending = {s.id: "expired" for s in self.sessions.expired(now)}
            held = [s for s in self._suspend_due() if s.id not in ending]
            margin = pipeline.rearm_margin(self.hard_timeout_cap)
            due = [s for s in self.sessions.rearm_due(now, margin) if s.id not in ending]
            back = self.sessions.suspended_nodes()
        self._hold(held)
        ended = [sid for sid, reason in ending.items() if self._end_quietly(sid, reason)]
        by_node: dict[int, list[Session]] = {}
        for session in due:
            by_node.setdefault(session.node, []).append(session)
        for node, sessions in by_node.items():
            self._rearm(node, sessions)
        for node in back:  # a resume that failed is tried again
            self._resume(node, restarted=False)
        return ended

    # --- an agent's failure and return ------------------------------------------------
    def agent_down(self, dpid: int, body: object) -> dict[str, Any]:
        """Take a notice that node `dpid`'s agent died or hangs (from its supervisor);
        suspend the node's sessions by their failure policy; return what was done.

        A notice about another boot of the agent than the one registered (a late
        notice about an agent already replaced) changes nothing.
        """
        if not isinstance(body, dict) or not isinstance(body.get("boot_id"), str):
            raise InvalidRequest("an agent-down notice is a JSON object with the boot_id")
        reason = str(body.get("reason", "down"))[:200]
        with self.lock:
            current = self.network.agent_down(dpid, body["boot_id"])
            if current:
                self._agent_dead(dpid)
            held = self._suspend_due()
        if current:
            log.warning("agent of node %016x is down (%s); suspending its sessions", dpid, reason)
        self._hold(held)
        return {
            "dpid": format_dpid(dpid),
            "current": current,
            "suspended": [s.id for s in held],
        }

    def _suspend_due(self) -> list[Session]:
        """Move the live sessions of nodes whose agent is down to SUSPENDED; return them,
        to be sent their flows by `_hold` (lock held)."""
        down = {dpid for dpid, agent in self.network.agents.items() if not agent.alive}
        held = []
        if not down and all(node in self.network.agents for node in self.sessions.nodes()):
            return held  # every node's agent is up: no session to look at
        for session in self.sessions.all():
            if (session.node in down or session.node not in self.network.agents) and (
                session.state in LIVE or session.state is State.RESUMING
            ):
                held.append(self.sessions.move(session.id, State.SUSPENDED))
                self._suspending.add(session.id)
        return held

    def copies(self, session: Session) -> bool:
        """Return True when the switch copies the session's frames to its agent rather
        than detouring them. The agent is told in every attach (`Attach.copy`) and
        builds the chain in that mode (sending nothing of a copy back).

        Decided once, when the session is reserved (or restored from a store that did
        not record it), and kept with it (`Session.copy`, stored): neither a manifest
        changed under the same version nor an upgrade nor a restart of the controller
        turns a live session's copy rule into a detour or back.
        """
        if session.copy is None:  # a session made outside `reserve` and `restore`
            return self._decide_copy(session.modules)
        return session.copy

    def _decide_copy(self, modules: tuple[ModuleSpec, ...]) -> bool:
        """Return whether a chain of `modules` gets copies: when every module of it says
        `observe_only = true` in its manifest."""
        try:
            return all(self._observes(spec) for spec in modules)
        except (BundleError, NetServError) as exc:  # gone since: a detour, as ever
            log.warning("modules %s: %s", [m.name for m in modules], exc)
            return False

    def _observes(self, spec: ModuleSpec) -> bool:
        """Return whether module `spec`'s manifest says it is observe-only; raise
        BundleError/NetServError when it cannot be found."""
        modules = as_source(self.catalog)
        return modules.resolve(spec.name, spec.version or None).manifest.observe_only

    def fails_closed(self, session: Session) -> bool:
        """Return True when the session's frames are dropped while its agent is down:
        when any module of its chain says so in its manifest (`failure = "closed"`).
        Never for a session whose frames are only copied: its flow does not depend on
        the agent."""
        if self.copies(session):
            return False
        modules = as_source(self.catalog)
        for spec in session.modules:
            try:
                if modules.resolve(spec.name, spec.version or None).manifest.failure == "closed":
                    return True
            except (BundleError, NetServError) as exc:  # gone or untrusted since: open
                log.warning("session %d: module %s: %s", session.id, spec.name, exc)
        return False

    def _held_flows(self, sessions: list[Session]) -> list[Message]:
        """Return the flows of suspended `sessions` on one switch, in one batch."""
        now = self.clock()
        return pipeline.sessions_suspend(
            [
                (s, self.fails_closed(s), pipeline.hard_timeout(s, now, self.hard_timeout_cap))
                for s in sessions
            ]
        )

    def _hold(self, sessions: list[Session]) -> None:
        """Send the suspension flows of `sessions`, one batch per switch. A switch that
        is away gets them at reconciliation when it is back; a failure is logged."""
        by_node: dict[int, list[Session]] = {}
        for session in sessions:
            by_node.setdefault(session.node, []).append(session)
        for node, group in sorted(by_node.items()):
            try:
                msgs = self._held_flows(group)
                self.switches.send(node, msgs)
            except Exception as exc:
                log.warning(
                    "node %016x: suspending sessions %s failed: %r",
                    node,
                    [s.id for s in group],
                    exc,
                    exc_info=not isinstance(exc, NetServError),
                )
                continue
            finally:
                with self.lock:
                    self._suspending -= {s.id for s in group}
            dropped = {m.cookie for m in msgs if isinstance(m, FlowAdd)}
            for session in group:
                policy = "closed: dropped" if session.cookie in dropped else "open: unserved"
                log.info("session %d suspended (fails %s)", session.id, policy)

    def _resume(self, node: int, restarted: bool, in_place: set[int] | None = None) -> list[int]:
        """Give node `node`'s suspended sessions their chain and detour again, now that
        its agent is back; return the ids resumed.

        A restarted agent is attached each chain; one that only hung is sent each
        chain's rest of lifetime, and attached it when it no longer holds it. A chain
        the agent refuses ends its session; an agent or switch that is away leaves the
        session suspended, tried again at the next tick. While the switch's ports are
        not known, the detours wait for them (`ports_changed`, `reconcile`). The
        sessions `in_place` still have their detour (an agent that restarted before
        anyone noticed): it is left as it is.
        """
        with self.lock:
            agent = self.network.agents.get(node)
            port = self.network.agent_port(node)
            switch = self.network.switches.get(node)
            if agent is None or not agent.alive:
                return []
            if port is not None and (switch is None or not switch.connected):
                return []  # the next tick after it is back
            resuming = [
                self.sessions.move(s.id, State.RESUMING)
                for s in self.sessions.on_node(node)
                if s.state is State.SUSPENDED and s.id not in self._suspending
            ]
        done = []
        for session in resuming:
            rest = replace(session, lifetime=max(1, math.ceil(session.expires - self.clock())))
            changes = {}
            try:
                self._give_chain(agent, rest, restarted)
                if port is not None and session.id not in (in_place or ()):
                    changes["armed_until"] = self._install(session, port)
            except PartFailed as exc:
                log.warning("session %d: not resumed: %s", session.id, exc)
                self._end_quietly(session.id, "agent-refused")
                continue
            except Exception as exc:
                log.warning(
                    "session %d: not resumed yet: %r",
                    session.id,
                    exc,
                    exc_info=not isinstance(exc, NetServError),
                )
                self._back_to_held(session)
                continue
            if self._settle(session, **changes) is not None:
                done.append(session.id)
                log.info("session %d resumed on %016x", session.id, node)
        return done

    def _give_chain(self, agent: Agent, session: Session, restarted: bool) -> None:
        """Have the agent hold the session's chain for the rest of its lifetime."""
        if not restarted:
            try:
                self.agents.refresh(agent, session)
                return
            except PartFailed:  # it no longer holds the chain (expired meanwhile)
                pass
        self.agents.attach(agent, session)

    def _back_to_held(self, session: Session) -> None:
        """Put a session whose resume failed back to SUSPENDED, with its flows."""
        with self.lock:
            try:
                held = self.sessions.move(session.id, State.SUSPENDED)
            except (Conflict, NotFound):
                return  # ended or suspended again meanwhile: that one sends its flows
            self._suspending.add(held.id)
        self._hold([held])

    def _rearm(self, node: int, sessions: list[Session]) -> None:
        """Re-add the detours of active `sessions` on `node` in one batch, restarting
        their timers; a failure is logged and retried at the next tick."""
        with self.lock:
            port = self.network.agent_port(node)
            if port is None:  # reinstalled with a fresh timer when the port is back
                return
            moved = []
            for session in sessions:
                with contextlib.suppress(Conflict, NotFound):  # refreshed or ended meanwhile
                    moved.append(self.sessions.move(session.id, State.REFRESHING))
            now = self.clock()
            detours = [(s, pipeline.hard_timeout(s, now, self.hard_timeout_cap)) for s in moved]
            copies = {s.id for s in moved if self.copies(s)}
        if not detours:
            return
        armed = True
        try:
            self.switches.send(node, pipeline.sessions_rearm(detours, port, copies))
        except Exception as exc:
            armed = False
            log.warning(
                "node %016x: re-arming the detours of sessions %s failed: %r",
                node,
                [s.id for s in moved],
                exc,
                exc_info=not isinstance(exc, NetServError),
            )
        for session, hard in detours:
            self._settle(session, **({"armed_until": now + hard} if armed else {}))

    def _end_quietly(self, session_id: int, reason: str) -> bool:
        """End a session; return False when it is gone, ending, or not yet made."""
        try:
            self._end(session_id, reason)
        except (NotFound, Conflict):
            return False
        return True

    def flow_removed(self, dpid: int, session_id: int | None) -> None:
        """The switch dropped a session's detour by its hard timeout.

        Before the session's end (a re-arm failed or came late) the detour is put back,
        so an active session never goes without its flow; after it, the session ends.
        """
        if session_id is None:
            return
        with self.lock:
            try:
                session = self.sessions.get(session_id)
            except NotFound:
                return
            if session.node != dpid or session.state not in (State.ACTIVE, State.SUSPENDED):
                return  # another switch's, or an update in flight re-adds it
            over = session.expires <= self.clock()
            if session.state is State.SUSPENDED and not over:
                self._suspending.add(session_id)
        if session.state is State.SUSPENDED and not over:
            self._hold([session])  # a fail-closed drop outlived its capped timer
        elif over:
            self._end_quietly(session_id, "expired")
        else:
            log.warning("session %d: the switch dropped its detour early; reinstalling", session_id)
            self._rearm(dpid, [session])

    # --- nodes ---------------------------------------------------------------------
    def register_agent(self, body: object) -> dict[str, Any]:
        """Record an agent's registration (also its heartbeat); return the node's JSON view.

        Raise Conflict when the node has another agent that still runs: two agents for
        one node would both send the node's frames on.
        """
        agent, held = self._registration(body)
        with self.lock:
            rival = self.network.rival_of(agent)
        if rival is not None:
            self._refuse_if_running(rival)
        with self.lock:
            current = self.network.agents.get(agent.dpid)
            if rival is not None and current is not None and current.boot_id != rival.boot_id:
                raise Conflict(
                    f"another agent ({current.url}) registered for node "
                    f"{format_dpid(agent.dpid)} meanwhile; a node has one agent"
                )
            before = self.network.agents.get(agent.dpid)
            restarted, msgs = self.network.register_agent(agent)
            back = restarted or (before is not None and not before.alive)
            in_place = set()  # live sessions: only the chain was lost, the detour is there
            if restarted:  # it holds no chain: resumed below
                for session in self.sessions.on_node(agent.dpid):
                    if session.state in LIVE:
                        self.sessions.move(session.id, State.SUSPENDED)
                        in_place.add(session.id)
            resync = self._agent_registered(agent, back)
        self._resync_chains(agent, resync)
        switch = self.network.switches.get(agent.dpid)
        if msgs and switch is not None and switch.connected:  # else sent on (re)connect
            self.switches.send(agent.dpid, msgs)
        if back:
            log.info("agent of node %016x registered at %s", agent.dpid, agent.url)
            self._resume(agent.dpid, restarted, in_place)
        # The agent drops any chain not listed: orphans of a controller that restarted.
        # When it holds exactly the node's sessions (the digests agree), it is told so:
        # a heartbeat then costs the same with 10 or 10,000 sessions.
        with self.lock:
            ours, now = self.sessions.held(agent.dpid), self.clock()
            if held != ours and not self._list_due(agent.dpid, back, held, now):
                return RegistrationReply(agent.dpid, None).to_json()
            reply = RegistrationReply.answer(
                agent.dpid, held, ours, lambda: self._listed(agent.dpid)
            )
            if reply.sessions is not None:
                self._listed_at[agent.dpid] = now
            return reply.to_json()

    def _list_due(self, dpid: int, back: bool, held: Held | None, now: float) -> bool:
        """Return whether an agent whose digest differs from the node's is sent the list.

        While sessions on the node are being set up or torn down, the two digests differ
        without an orphan: the agent may have attached a chain the controller still
        installs, or dropped one it still ends. Under a steady load of setups nearly
        every heartbeat came then, and each carried every id held (10,000 parsed and
        compared on both sides every HEARTBEAT). So while sessions are in flight the
        list goes at most every LIST_EVERY seconds; at once to an agent just back, one
        that sent no digest, or a node with nothing in flight.
        """
        if back or held is None or not self.sessions.in_flight(dpid):
            return True
        return now - self._listed_at.get(dpid, -LIST_EVERY) >= LIST_EVERY

    def _listed(self, dpid: int) -> tuple[int, ...]:
        return tuple(s.id for s in self.sessions.on_node(dpid))

    def _registration(self, body: object) -> tuple[Agent, Held | None]:
        """Return the agent a registration's body describes and the digest of the
        sessions it holds (None: it sent none); raise InvalidRequest."""
        try:
            sent = Registration.from_json(body)
        except ContractError as exc:
            raise InvalidRequest(str(exc)) from None
        agent = Agent(
            sent.dpid,
            sent.switch_port,
            sent.url,
            sent.boot_id,
            last_seen=self.clock(),
            port_type=sent.port_type,
        )
        return agent, sent.held

    def _refuse_if_running(self, rival: Agent) -> None:
        """Raise Conflict when `rival` still runs: its control API answers with its boot id."""
        try:
            health = self.agents.health(rival)
        except NetServError:
            health = None
        if health is not None and health.boot_id == rival.boot_id:
            raise Conflict(refusal(rival, health.pid))
        log.warning(
            "agent of node %016x at %s no longer runs; taking its successor",
            rival.dpid,
            rival.url,
        )

    def switch_connected(self, dpid: int) -> None:
        """Record a (re)connected switch. Nothing is sent to it yet: once its ports are
        known (`ports_replaced`), its flows are read and reconciled (`reconcile`)."""
        with self.lock:
            self.network.switch_connected(dpid)
            self._unsynced.add(dpid)

    def sync_due(self, dpid: int) -> bool:
        """Return True when switch `dpid` connected and its flows were not reconciled since."""
        with self.lock:
            return dpid in self._unsynced

    def reconcile(self, dpid: int, present: list[FlowStats] | None) -> list[Message]:
        """Return what switch `dpid` needs, given the NetServ flows it holds (`present`,
        its answer to `pipeline.present_request()`; None when they could not be read).

        It should hold the base pipeline, its agent's return and the detours of the
        node's live sessions. Flows that are right stay untouched (their counters and
        timers run on); wrong or unknown ones are deleted and missing ones added. The
        flows of a session being installed or ended are left to that operation. With
        nothing read, everything is wiped and installed again.
        """
        with self.lock:
            self._unsynced.discard(dpid)
            port = self.network.agent_port(dpid)
            expected = pipeline.base_flows(port)
            if port is not None:
                expected += [m for m in self._detours(dpid, port) if isinstance(m, FlowAdd)]
            held = [s for s in self.sessions.on_node(dpid) if s.state is State.SUSPENDED]
            expected += [m for m in self._held_flows(held) if isinstance(m, FlowAdd)]
            if present is None:
                log.warning("switch %016x: its flows could not be read; reinstalling them", dpid)
                return pipeline.reinstall(expected)
            busy = {
                s.cookie
                for s in self.sessions.all()
                if s.state in (State.INSTALLING, State.RESUMING, State.ENDING)
                or s.id in self._suspending
            }
            switch = self.network.switches.get(dpid)
            msgs = pipeline.reconcile(
                expected,
                [f for f in present if f.cookie not in busy],
                switch.macs if switch is not None else {},
            )
        adds = sum(isinstance(m, FlowAdd) for m in msgs)
        log.info(
            "switch %016x reconciled: %d flows kept, %d deleted, %d added",
            dpid,
            len(expected) - adds,
            sum(isinstance(m, FlowDelete) for m in msgs),
            adds,
        )
        return msgs

    def _detours(self, dpid: int, port: int) -> list[Message]:
        """Return the detours of the node's live sessions, with fresh timers (lock held)."""
        now, msgs = self.clock(), []
        for session in self.sessions.on_node(dpid):
            if session.state in LIVE:
                hard = pipeline.hard_timeout(session, now, self.hard_timeout_cap)
                msgs += pipeline.session_install(session, port, hard, self.copies(session))
        return msgs

    def ports_replaced(self, dpid: int, ports: dict[int, str]) -> list[Message]:
        """Record a switch's full port list (port-desc reply); return flows to add
        (none while the switch waits for `reconcile`, which installs them)."""
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
                msgs += self._detours(dpid, after)
            if dpid in self._unsynced:  # adding them now would restart the timers of
                return []  # detours that are right: reconcile compares first
        return msgs

    # --- the store -----------------------------------------------------------------
    def _persist(self, session: Session) -> None:
        """Write a session's change to the store: the session table's one hook.

        A store that fails is logged, not raised: the change has happened in the
        network already, and only a restart would miss it.
        """
        if self.store is None:
            return
        try:
            if session.state is State.ENDED:
                self.store.delete(session.id)
            else:
                self.store.save(session)
        except StoreError as exc:
            log.error("session %d (%s) not stored: %s", session.id, session.state.value, exc)

    def _restore(self, store: SessionStore) -> None:
        """Take back the agents and sessions a previous controller left in `store`.

        Agents come back as just heard from: one that still runs heartbeats with the
        same boot id and keeps its chains (none is attached again); one that is gone
        is declared dead as usual and its sessions are suspended; one that
        restarted meanwhile gets its chains again. Sessions, by the state they were
        left in:
          active      active again, with the rest of their lifetime and their detour's
                      timer; ended if the lifetime ran out meanwhile.
          refreshing  active, with the lifetime it had, since the refresh's requester
                      got no answer. The agent may hold the new lifetime, so it is
                      sent the rest of the old one at its next heartbeat.
          installing  ended: its requester got no answer (the 201 follows the move to
                      active), so what the create may have made is undone.
          ending      ended: the teardown is finished.
          suspended,  suspended, resumed when the node's agent registers.
          resuming
        And a live session whose node has no agent in the store is suspended: its
        agent was declared down, and the controller stopped before that was written.
        A session ended here leaves nothing behind: reconciliation deletes its detour
        (no session owns the cookie any more) and the agent drops its chain when its
        registration's answer does not list it. Its id is never given out again.
        """
        now = self.clock()
        for agent in store.load_agents():
            self.network.agents[agent.dpid] = agent
        for session in store.load():
            why = _ended_on_restart(session, now)
            if why is not None:
                log.info("session %d ended on restart: %s", session.id, why)
                self.sessions.restore(replace(session, state=State.ENDED))
                continue
            held = session.state in HELD or session.node not in self.network.agents
            state = State.SUSPENDED if held else State.ACTIVE
            copy = self.copies(session)  # decided now for a store that did not record it
            self.sessions.restore(replace(session, state=state, copy=copy))
            if session.state is State.REFRESHING and not held:
                self._resync.add(session.id)
            log.info(
                "session %d restored%s on %016x: %s, %.0f s left",
                session.id,
                " suspended" if held else "",
                session.node,
                session.match.as_dict(),
                session.expires - now,
            )

    def _agent_registered(self, agent: Agent, restarted: bool) -> list[Session]:
        """Store a new, restarted or returning agent; return the sessions whose chain
        must be sent its lifetime again (lock held)."""
        if restarted and self.store is not None:
            try:
                self.store.save_agent(agent)
            except StoreError as exc:
                log.error("agent of node %016x not stored: %s", agent.dpid, exc)
        # Only the few sessions restored unsure are looked at, not every one of the node;
        # those that ended meanwhile are forgotten.
        unsure = {i: self.sessions.find(i) for i in self._resync}
        on_node = sorted(
            (s for s in unsure.values() if s is not None and s.node == agent.dpid),
            key=lambda s: s.id,
        )
        # A restarted agent gets whole chains, and no resync.
        self._resync -= {i for i, s in unsure.items() if s is None} | {s.id for s in on_node}
        return [] if restarted else [s for s in on_node if s.state in LIVE]

    def _agent_dead(self, dpid: int) -> None:
        """Forget a dead agent in the store, so that a restart does not count it ready."""
        if self.store is not None:
            try:
                self.store.delete_agent(dpid)
            except StoreError as exc:
                log.error("agent of node %016x not removed from the store: %s", dpid, exc)

    def _resync_chains(self, agent: Agent, sessions: list[Session]) -> None:
        """Send the agent the rest of each session's lifetime, as the controller has it."""
        for session in sessions:
            rest = replace(session, lifetime=max(1, math.ceil(session.expires - self.clock())))
            _quietly(session.id, "agent resync", self.agents.refresh, agent, rest)


def _ended_on_restart(session: Session, now: float) -> str | None:
    """Return why a stored session is not taken back at `now`, or None when it is."""
    if session.state not in LIVE | HELD:
        return f"it was {session.state.value}"
    if session.expires <= now:
        return "expired"
    return None


def _position(session: Session, module: str | None) -> int:
    """Return where `module` is in the session's chain (None: its only module); raise
    InvalidRequest when it is not there once."""
    names = [m.name for m in session.modules]
    if module is None:
        if len(names) != 1:
            raise InvalidRequest(f"session {session.id} runs {names}: name the module to upgrade")
        return 0
    if names.count(module) != 1:
        times = "does not run it" if module not in names else "runs it more than once"
        raise InvalidRequest(f"session {session.id} {times}: its chain is {names}")
    return names.index(module)


def _replaced(
    modules: tuple[ModuleSpec, ...], position: int, spec: ModuleSpec
) -> tuple[ModuleSpec, ...]:
    return (*modules[:position], spec, *modules[position + 1 :])


def _upgrades(session: Session, request: SessionRequest) -> list[tuple[int, ModuleSpec]]:
    """Return the modules a refresh's `request` asks to move to another version, by their
    place in the chain; raise Conflict when it asks for more than that and a lifetime:
    another requester, flow, node selection, chain, or parameters of a module it keeps."""
    made = (session.requester, session.match, session.modules, session.selection)
    asked = (request.requester, request.match, request.modules, request.selection)
    same_chain = [m.name for m in session.modules] == [m.name for m in request.modules]
    upgrades = []
    if same_chain:
        for position, (had, wants) in enumerate(zip(session.modules, request.modules, strict=True)):
            if (had.version, had.sha256) != (wants.version, wants.sha256):
                upgrades.append((position, wants))
        kept = tuple(
            had if any(p == i for p, _ in upgrades) else wants
            for i, (had, wants) in enumerate(zip(session.modules, request.modules, strict=True))
        )
        asked = (request.requester, request.match, kept, request.selection)
    if made != asked:
        names = ("requester", "flow", "modules", "nodes")
        changed = [name for name, a, b in zip(names, made, asked, strict=True) if a != b]
        raise Conflict(
            f"session {session.ref:#x} of {session.requester} was made with another "
            f"{' and '.join(changed)}: a refresh may change only the lifetime and the "
            "versions of its modules"
        )
    return upgrades


def _quietly(session_id: int, what: str, call: Callable[..., Any], *args: Any) -> Any:
    """Return `call(*args)`, or None after logging its failure: for clean-up steps,
    which must never hide the error that made them necessary nor stop the next step."""
    try:
        return call(*args)
    except Exception as exc:
        log.warning(
            "session %d: %s failed: %r",
            session_id,
            what,
            exc,
            exc_info=not isinstance(exc, NetServError),
        )
        return None
