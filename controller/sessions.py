"""Sessions and their state changes, with no I/O: time is passed in as `now`.

A session is one requester's claim on one flow at one node, with a module chain and a
soft-state lifetime. A request served at several nodes makes a group: one session per
node, named together by (requester, ref), made, refreshed and ended together.

Every change of a session's state goes through `SessionTable.move`, which allows only
the transitions in TRANSITIONS and raises Conflict, saying why, otherwise:

    PENDING_ROUTABILITY                        held while the claimed endpoint is
        │   └──────────────────────► ENDED     challenged; no answer in time: undone
        ▼
    INSTALLING ──► ACTIVE ◄──► REFRESHING      a refresh; a re-armed switch timer
        │           ▲ │             │
        │           │ ▼             │
        │  RESUMING ◄─► SUSPENDED ◄─┘          the node's agent died or hangs: the
        │     │          │  ▲ │                flow fails open or closed until it is
        │     ▼          ▼  └─┘                back (a refresh while suspended)
        │          ENDING ◄── ACTIVE, REFRESHING: teardown, expiry
        │            │
        │            ▼
        └────────► ENDED                       undone, or removed everywhere

A reservation (INSTALLING) holds the id, tag and flow space while the agent and switch
are set up; a session keeps them until it has ENDED, when it leaves the table. A
reservation that must first pass the return-routability check (`controller/routability.py`)
starts PENDING_ROUTABILITY: it holds the same, counts against the requester's quotas,
and has nothing in the switch or agent; only a confirmed check moves it on to INSTALLING.

Every change (a reservation, a move, a restored session) is handed to one hook,
`on_change`, with the session as it now is: the controller's store writes it there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, ValuesView
from dataclasses import dataclass, replace

from agentproto.held import Held, HeldSet
from agentproto.limits import SESSION_TAGS
from controller.errors import Conflict, NotFound, Unavailable
from controller.flowindex import OverlapIndex
from controller.match import FlowMatch
from controller.requests import OPERATOR, ModuleSpec, SessionRequest, format_dpid
from controller.tables import SESSION, SESSION_ID_MAX, session_cookie
from controller.timequeue import TimeQueue
from signaling.values import NodeSelection

GroupKey = tuple[str, int]  # (requester, ref)


class State(enum.Enum):
    PENDING_ROUTABILITY = "pending-routability"  # reserved; the claimed endpoint is challenged
    INSTALLING = "installing"  # reserved; the agent and the switch are being set up
    ACTIVE = "active"  # chain at the agent, detour in the switch
    REFRESHING = "refreshing"  # active; a new lifetime or switch timer is being pushed
    SUSPENDED = "suspended"  # the node's agent is down: no detour; dropped if it fails closed
    RESUMING = "resuming"  # the agent is back: the chain and the detour are being put back
    ENDING = "ending"  # the detour and the chain are being removed
    ENDED = "ended"  # gone everywhere (or never made): no longer in the table


TRANSITIONS: dict[State, frozenset[State]] = {
    # the check passed, or failed (no answer in time): nothing was installed to undo
    State.PENDING_ROUTABILITY: frozenset({State.INSTALLING, State.ENDED}),
    State.INSTALLING: frozenset({State.ACTIVE, State.ENDED}),  # installed, or undone
    State.ACTIVE: frozenset({State.REFRESHING, State.SUSPENDED, State.ENDING}),
    # done or undone; a teardown or the agent's failure wins
    State.REFRESHING: frozenset({State.ACTIVE, State.SUSPENDED, State.ENDING}),
    # a refresh while suspended changes only the lifetime
    State.SUSPENDED: frozenset({State.SUSPENDED, State.RESUMING, State.ENDING}),
    State.RESUMING: frozenset({State.ACTIVE, State.SUSPENDED, State.ENDING}),
    State.ENDING: frozenset({State.ENDED}),
    State.ENDED: frozenset(),
}
LIVE = frozenset({State.ACTIVE, State.REFRESHING})  # the states whose detour is in the switch
# The states in which the node's agent may hold the session's chain or not: it is being
# attached, detached, or put back after the agent's failure.
IN_FLIGHT = frozenset({State.PENDING_ROUTABILITY, State.INSTALLING, State.ENDING, State.RESUMING})
# The states of a session whose agent is down or just back: no detour of its own yet.
HELD = frozenset({State.SUSPENDED, State.RESUMING})
_ACTION = {
    State.PENDING_ROUTABILITY: "hold",
    State.ACTIVE: "activate",
    State.REFRESHING: "refresh",
    State.SUSPENDED: "suspend",
    State.RESUMING: "resume",
    State.ENDING: "end",
    State.ENDED: "discard",
    State.INSTALLING: "reinstall",
}
_BECAUSE = {
    State.PENDING_ROUTABILITY: "is awaiting its return-routability check",
    State.INSTALLING: "is still being installed",
    State.ACTIVE: "is active",
    State.REFRESHING: "is being refreshed",
    State.SUSPENDED: "is suspended (its node's agent is down)",
    State.RESUMING: "is being resumed",
    State.ENDING: "is already ending",
    State.ENDED: "has ended",
}


@dataclass(frozen=True)
class Session:
    id: int
    node: int
    tag: int
    match: FlowMatch
    modules: tuple[ModuleSpec, ...]
    lifetime: int
    created: float
    expires: float
    state: State = State.INSTALLING
    armed_until: float = 0.0  # when the switch's hard timeout on its detour runs out
    requester: str = OPERATOR  # who asked for it (controller/policy.py)
    # The requester's name for the session's group: the session id of its signaling, or
    # for REST the controller id of the group's first session (0: its own id).
    ref: int = 0
    selection: NodeSelection = NodeSelection.first()
    # How its frames reach its chain, decided when it is reserved (`NetServService.copies`):
    # True, the switch copies them; False, it detours them; None only as read from a
    # store that did not record it (decided then). Kept, so a controller that restarts
    # installs the mode the agent's chain was built in.
    copy: bool | None = None

    @property
    def group(self) -> GroupKey:
        return self.requester, self.ref or self.id

    @property
    def cookie(self) -> int:
        return session_cookie(self.id)

    @property
    def priority(self) -> int:
        """Return the flow priority: more specific matches win over broader ones."""
        return min(SESSION.low + self.match.specificity, SESSION.high)

    def to_json(self, now: float) -> dict[str, object]:
        """Return the session as a JSON-ready dict; times relative to `now`."""
        return {
            "id": self.id,
            "cookie": f"{self.cookie:#018x}",
            "node": format_dpid(self.node),
            "state": self.state.value,
            "match": self.match.as_dict(),
            "modules": [m.to_json() for m in self.modules],
            "lifetime": self.lifetime,
            "expires_in": round(max(0.0, self.expires - now), 3),
            "tag": self.tag,
            "requester": self.requester,
        }


class SessionTable:
    """Every session the controller knows, by id; decides ids, tags and conflicts.

    Each node's sessions are indexed by priority and match (`OverlapIndex`) and by tag,
    so a reservation costs the same with 10 or 10,000 sessions held; the digest of each
    node's session ids (`held`), which the agents' heartbeats are answered by, is kept
    as they come and go.
    """

    def __init__(
        self, first_id: int = 1, on_change: Callable[[Session], None] | None = None
    ) -> None:
        self._sessions: dict[int, Session] = {}
        self._groups: dict[GroupKey, list[int]] = {}
        self._by_node: dict[int, dict[int, int]] = {}  # node → tag → session id
        self._held: dict[int, HeldSet] = {}  # node → the digest of _by_node[node]'s ids
        self._flows: dict[tuple[int, int], OverlapIndex] = {}  # (node, priority) → matches
        self._next_id = first_id
        self._next_tag: dict[int, int] = {}
        self._on_change = on_change or (lambda session: None)
        # Sessions by when their lifetime runs out and by when their detour's timer does,
        # and the number of suspended sessions by node: what the tick asks for each second.
        self._by_expiry = TimeQueue()
        self._by_timer = TimeQueue()
        self._suspended: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}  # node → its sessions in an IN_FLIGHT state

    @property
    def next_id(self) -> int:
        """Return the id the next reservation takes."""
        return self._next_id

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> Session:
        """Return the session `session_id`; raise NotFound."""
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id}") from None

    def find(self, session_id: int) -> Session | None:
        """Return the session `session_id`, or None when there is none."""
        return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        """Return every session, oldest first."""
        return sorted(self._sessions.values(), key=lambda s: s.id)

    def values(self) -> ValuesView[Session]:
        """Return every session, in no particular order (cheaper than `all`)."""
        return self._sessions.values()

    def nodes(self) -> list[int]:
        """Return the nodes that hold a session."""
        return list(self._by_node)

    def on_node(self, dpid: int) -> list[Session]:
        """Return the sessions placed on node `dpid`, oldest first."""
        held = self._by_node.get(dpid, {})
        return sorted((self._sessions[i] for i in held.values()), key=lambda s: s.id)

    def held(self, dpid: int) -> Held:
        """Return the digest of the ids of the sessions placed on node `dpid` (those
        `on_node` returns)."""
        held = self._held.get(dpid)
        return held.held if held is not None else Held(0, 0)

    def group(self, key: GroupKey) -> list[Session]:
        """Return the sessions of group `key`, in the order they were made (path order)."""
        return [self._sessions[i] for i in self._groups.get(key, ())]

    def reserve_group(
        self,
        request: SessionRequest,
        nodes: tuple[int, ...],
        now: float,
        ref: int | None = None,
        state: State = State.INSTALLING,
        copy: bool | None = None,
    ) -> list[Session]:
        """Hold a session on each of `nodes`, in one group, all or none; return them,
        in `state` (INSTALLING, or PENDING_ROUTABILITY while the claim is checked),
        with `copy` (whether the switch copies their frames rather than detouring them).

        Raise Conflict when the group (requester, ref) exists or a node's flow space is
        taken, Unavailable when ids or tags run out; then nothing is held.
        """
        if ref is not None and (request.requester, ref) in self._groups:
            raise Conflict(f"session {ref:#x} of {request.requester} exists")
        made: list[Session] = []
        try:
            for node in nodes:
                ref = made[0].ref if made else ref
                made.append(self.reserve(request, node, now, ref, state, copy))
        except Exception:
            for session in made:
                self.move(session.id, State.ENDED)
            raise
        return made

    def reserve(
        self,
        request: SessionRequest,
        node: int,
        now: float,
        ref: int | None = None,
        state: State = State.INSTALLING,
        copy: bool | None = None,
    ) -> Session:
        """Hold an id, a tag and the flow space for a new session, in `state` (one
        that is installed next: INSTALLING or PENDING_ROUTABILITY); return it. Raise
        Conflict/Unavailable.

        It joins group (requester, `ref`); `ref` None starts a group named by its id.
        """
        if state not in (State.INSTALLING, State.PENDING_ROUTABILITY):
            raise ValueError(f"a reservation cannot start {state.value}")
        probe = Session(
            0,
            node,
            0,
            request.match,
            request.modules,
            request.lifetime,
            now,
            now,
            requester=request.requester,
            selection=request.selection,
            copy=copy,
        )
        index = self._flows.get((node, probe.priority))
        clash = index.overlapping(request.match) if index is not None else None
        if clash is not None:
            other = self._sessions[clash]
            raise Conflict(
                f"match {request.match.as_dict()} overlaps session {other.id} "
                f"({other.match.as_dict()}) at the same specificity on node {format_dpid(node)}"
            )
        if self._next_id > SESSION_ID_MAX:
            raise Unavailable("session ids are exhausted")
        session_id = self._next_id
        session = replace(
            probe,
            id=session_id,
            state=state,
            tag=self._free_tag(node),
            expires=now + request.lifetime,
            ref=session_id if ref is None else ref,
        )
        self._next_id += 1
        self._hold(session)
        self._on_change(session)
        return session

    def restore(self, session: Session) -> Session:
        """Take back a session a previous controller held, as it is; return it.

        Its id is never given out again, and its node's next tag follows its own. One
        that is ENDED is not taken back; its id and tag are still kept from the next
        reservations, since its agent may hold its chain a moment longer.
        """
        if session.id in self._sessions:
            raise ValueError(f"session {session.id} is in the table already")
        self._next_id = max(self._next_id, session.id + 1)
        self._next_tag[session.node] = max(self._next_tag.get(session.node, 0), session.tag + 1)
        if session.state is not State.ENDED:
            self._hold(session)
        self._on_change(session)
        return session

    def _hold(self, session: Session) -> None:
        self._sessions[session.id] = session
        self._groups.setdefault(session.group, []).append(session.id)
        tags = self._by_node.setdefault(session.node, {})
        held = self._held.setdefault(session.node, HeldSet())
        displaced = tags.get(session.tag)  # a restored session under a tag already held
        if displaced is not None:
            held.remove(displaced)
        tags[session.tag] = session.id
        held.add(session.id)
        key = (session.node, session.priority)
        self._flows.setdefault(key, OverlapIndex()).add(session.id, session.match)
        self._by_expiry.add(session.id, session.expires)
        self._by_timer.add(session.id, session.armed_until)
        self._count(session, 1)

    def _release(self, session: Session) -> None:
        del self._sessions[session.id]
        members = self._groups[session.group]
        members.remove(session.id)
        if not members:
            del self._groups[session.group]
        tags = self._by_node[session.node]
        if tags.get(session.tag) == session.id:
            del tags[session.tag]
            self._held[session.node].remove(session.id)
        if not tags:
            del self._by_node[session.node]
            del self._held[session.node]
        key = (session.node, session.priority)
        index = self._flows[key]
        index.remove(session.id)
        if not len(index):
            del self._flows[key]
        # A queue's entries of sessions gone leave it when they come due; sessions set up
        # and torn down by the thousand within a lifetime would pile them up till then.
        if len(self._by_expiry) > 2 * len(self._sessions) + 1024:
            self._by_expiry.rebuild((s.expires, s.id) for s in self._sessions.values())
        if len(self._by_timer) > 2 * len(self._sessions) + 1024:
            self._by_timer.rebuild((s.armed_until, s.id) for s in self._sessions.values())

    def _free_tag(self, node: int) -> int:
        # Round-robin, so a tag just freed is not reused while its frames may be in flight.
        used = self._by_node.get(node, {})
        start = self._next_tag.get(node, SESSION_TAGS.start)
        for offset in range(len(SESSION_TAGS)):
            tag = SESSION_TAGS.start + (start - SESSION_TAGS.start + offset) % len(SESSION_TAGS)
            if tag not in used:
                self._next_tag[node] = tag + 1
                return tag
        raise Unavailable(f"node {format_dpid(node)} has no free session tag")

    def move(self, session_id: int, to: State, **changes: object) -> Session:
        """Change a session's state to `to` (and the fields in `changes`); return it.

        Raise NotFound when there is no such session, Conflict when TRANSITIONS does not
        allow the change. A session moved to ENDED leaves the table.
        """
        session = self.get(session_id)
        if to not in TRANSITIONS[session.state]:
            raise Conflict(
                f"cannot {_ACTION[to]} session {session_id}: it {_BECAUSE[session.state]}"
            )
        old, session = session, replace(session, state=to, **changes)
        self._count(old, -1)
        if to is State.ENDED:
            self._release(session)
        else:
            self._sessions[session_id] = session
            self._count(session, 1)
            self._by_expiry.moved(session_id, old.expires, session.expires)
            self._by_timer.moved(session_id, old.armed_until, session.armed_until)
        self._on_change(session)
        return session

    def _count(self, session: Session, delta: int) -> None:
        """Count `session` in (delta 1) or out of (-1) its node's suspended or in-flight
        sessions, as its state says."""
        if session.state is State.SUSPENDED:
            counts = self._suspended
        elif session.state in IN_FLIGHT:
            counts = self._in_flight
        else:
            return
        left = counts.get(session.node, 0) + delta
        if left:
            counts[session.node] = left
        else:
            del counts[session.node]

    def in_flight(self, dpid: int) -> int:
        """Return how many sessions on node `dpid` are in an IN_FLIGHT state."""
        return self._in_flight.get(dpid, 0)

    def suspended_nodes(self) -> list[int]:
        """Return the nodes that hold a suspended session, in order."""
        return sorted(self._suspended)

    def expired(self, now: float) -> list[Session]:
        """Return the active and suspended sessions whose lifetime has run out at `now`."""
        due = (
            self._sessions[i]
            for i in self._by_expiry.due(now, self._expires)
            if self._sessions[i].state in (State.ACTIVE, State.SUSPENDED)
        )
        return sorted(due, key=lambda s: s.id)

    def _expires(self, session_id: int) -> float | None:
        session = self._sessions.get(session_id)
        return session.expires if session is not None else None

    def _armed_until(self, session_id: int) -> float | None:
        session = self._sessions.get(session_id)
        return session.armed_until if session is not None else None

    def rearm_due(self, now: float, margin: float) -> list[Session]:
        """Return the active sessions whose detour's timer must be re-armed at `now`.

        Those whose timer runs out within `margin` (or has run out) while the session
        lives on: a capped timer. One set to the session's end (plus grace) never is.
        """
        due = (
            s
            for s in map(
                self._sessions.__getitem__, self._by_timer.due(now + margin, self._armed_until)
            )
            if s.state is State.ACTIVE and s.armed_until < s.expires
        )
        return sorted(due, key=lambda s: s.id)
