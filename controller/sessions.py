"""Sessions and their state changes, with no I/O: time is passed in as `now`.

A session is one requester's claim on one flow at one node, with a module chain and a
soft-state lifetime. Its life: `reserve` (ids, tag and flow space held while the agent
and switch are being set up) → `activate` → `refresh`* → `remove` (teardown, expiry,
or a failed part). A reservation that fails is `discard`ed and leaves no trace.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from controller.errors import Conflict, NotFound, Unavailable
from controller.match import FlowMatch, overlaps
from controller.requests import ModuleSpec, SessionRequest, format_dpid
from controller.tables import SESSION, SESSION_ID_MAX, session_cookie

VLAN_TAGS = range(1, 4095)  # the VLAN id a detour pushes names the session at its agent


class State(enum.Enum):
    INSTALLING = "installing"
    ACTIVE = "active"


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
        }


class SessionTable:
    """Every session the controller knows, by id; decides ids, tags and conflicts."""

    def __init__(self, first_id: int = 1) -> None:
        self._sessions: dict[int, Session] = {}
        self._next_id = first_id
        self._next_tag: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> Session:
        """Return the session `session_id`; raise NotFound."""
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id}") from None

    def all(self) -> list[Session]:
        """Return every session, oldest first."""
        return sorted(self._sessions.values(), key=lambda s: s.id)

    def on_node(self, dpid: int) -> list[Session]:
        """Return the sessions placed on node `dpid`, oldest first."""
        return [s for s in self.all() if s.node == dpid]

    def reserve(self, request: SessionRequest, node: int, now: float) -> Session:
        """Hold an id, a tag and the flow space for a new session; raise Conflict/Unavailable."""
        probe = Session(0, node, 0, request.match, request.modules, request.lifetime, now, now)
        for other in self.on_node(node):
            if other.priority == probe.priority and overlaps(other.match, request.match):
                raise Conflict(
                    f"match {request.match.as_dict()} overlaps session {other.id} "
                    f"({other.match.as_dict()}) at the same specificity on node {format_dpid(node)}"
                )
        if self._next_id > SESSION_ID_MAX:
            raise Unavailable("session ids are exhausted")
        session = replace(
            probe, id=self._next_id, tag=self._free_tag(node), expires=now + request.lifetime
        )
        self._next_id += 1
        self._sessions[session.id] = session
        return session

    def _free_tag(self, node: int) -> int:
        # Round-robin, so a tag just freed is not reused while its frames may be in flight.
        used = {s.tag for s in self.on_node(node)}
        start = self._next_tag.get(node, VLAN_TAGS.start)
        for offset in range(len(VLAN_TAGS)):
            tag = VLAN_TAGS.start + (start - VLAN_TAGS.start + offset) % len(VLAN_TAGS)
            if tag not in used:
                self._next_tag[node] = tag + 1
                return tag
        raise Unavailable(f"node {format_dpid(node)} has no free session tag")

    def activate(self, session_id: int) -> Session:
        """Mark a reserved session as installed; return it."""
        session = replace(self.get(session_id), state=State.ACTIVE)
        self._sessions[session_id] = session
        return session

    def discard(self, session_id: int) -> None:
        """Forget a session (failed reservation or finished teardown); idempotent."""
        self._sessions.pop(session_id, None)

    def refresh(self, session_id: int, lifetime: int, now: float) -> Session:
        """Extend an active session to live `lifetime` seconds from `now`; return it."""
        session = self.get(session_id)
        if session.state is not State.ACTIVE:
            raise Conflict(f"session {session_id} is {session.state.value}, not active")
        session = replace(session, lifetime=lifetime, expires=now + lifetime)
        self._sessions[session_id] = session
        return session

    def expired(self, now: float) -> list[Session]:
        """Return the active sessions whose lifetime has run out at `now`."""
        return [s for s in self.all() if s.state is State.ACTIVE and s.expires <= now]
