"""Every message between the controller and a node's agent, typed and checked once.

| sender     | call                  | request (body)        | answer                          |
| ---------- | --------------------- | --------------------- | ------------------------------- |
| agent      | POST /netserv/nodes   | Registration, with    | RegistrationReply: the node's   |
|            |                       | the digest of the     | sessions, or "same" when the    |
|            |                       | sessions it holds     | digests agree; 409 REFUSED      |
| controller | PUT /sessions/{id}    | Attach (copy or not)  | 201 ChainStats                  |
| controller | PATCH /sessions/{id}  | Refresh               | ChainStats                      |
| controller | DELETE /sessions/{id} | Detach (no body)      | ChainStats, the final counters  |
| controller | POST /sessions/{id}/  | Upgrade               | ChainStats, with the new module |
|            | upgrade               |                       |                                 |
| controller | GET /sessions/{id}    | ChainQuery (no body)  | ChainStats with the node's      |
| controller | GET /health           | StatusQuery (no body) | AgentStatus                     |

A message is a frozen dataclass checked when it is built, so neither side can make
one the other would refuse: `to_json()` returns its JSON (a request's body; its
session id travels in the path), `from_json()` reads one strictly (no field missing,
none unknown, every type and range checked). Both raise ContractError. Requests name
their METHOD, ROUTE and `path`. Counters the modules themselves report (`ModuleStats`)
are the modules' business: the contract only checks that they are JSON objects.
The calls are signed both ways (`controller/auth.py`) and carried by `jsonhttp`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from agentproto.fields import (
    ContractError,
    count,
    fields,
    flag,
    frozen_object,
    listed,
    text,
    whole,
    word,
)
from agentproto.held import Held
from agentproto.limits import MAX_CHAIN, MAX_LIFETIME, SESSION_TAGS
from controller.tables import SESSION_ID_MAX
from nodes.bundle import FAILURES, NAME_RE, TIERS, VERSION_RE
from nodes.sandbox.guard import STATES
from signaling.dpid import format_dpid, parse_dpid

MAX_URL = 256
SESSION_PATH = "/sessions/{id}"
UPGRADE_PATH = SESSION_PATH + "/upgrade"
SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")  # a bundle's identity (nodes/archive.py)
# What the agent's host loaded a module by: its name, or NAME@SHA256 for a bundle from the
# controller's repository (nodes/bundlecache.py), so two versions can be loaded at once.
MODULE_REF_RE = re.compile(r"[a-z][a-z0-9_]{0,31}(@[0-9a-f]{64})?\Z")


def session_id(value: object, name: str = "session id") -> int:
    """Return `value` when it is a session id (1 to SESSION_ID_MAX); raise ContractError."""
    return whole(value, name, 1, SESSION_ID_MAX)


def tag(value: object) -> int:
    """Return `value` when it is a session tag (SESSION_TAGS); raise ContractError."""
    return whole(value, "tag", SESSION_TAGS.start, SESSION_TAGS.stop - 1)


def lifetime(value: object) -> int:
    """Return `value` when it is a lifetime in seconds (1 to MAX_LIFETIME); raise ContractError."""
    return whole(value, "lifetime", 1, MAX_LIFETIME)


def dpid(value: object) -> int:
    """Return the datapath id `value` names (an int, or up to 16 hex digits); raise
    ContractError."""
    try:
        return parse_dpid(value)
    except ValueError as exc:
        raise ContractError(f"dpid: {exc}") from None


def agent_url(value: object) -> str:
    """Return `value` when it is the base URL of an agent's control API (http://host:port,
    no path); raise ContractError."""
    url = text(value, "url")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not one
    except ValueError as exc:
        raise ContractError(f"url {url[:60]!r} is not a URL: {exc}") from None
    if (
        len(url) > MAX_URL
        or parts.scheme != "http"
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
    ):
        raise ContractError(f"url {url[:60]!r} must be http://host:port, nothing more")
    return url


def _session_ids(value: object, name: str) -> tuple[int, ...]:
    items = listed(value, name, 0, len(SESSION_TAGS))  # a node holds a session per tag at most
    return tuple(session_id(item, f"{name} item") for item in items)


# --- registration: agent → controller ----------------------------------------------


@dataclass(frozen=True)
class Registration:
    """An agent's registration, sent again every HEARTBEAT seconds as its heartbeat."""

    METHOD: ClassVar[str] = "POST"
    ROUTE: ClassVar[str] = "/netserv/nodes"
    # The controller's answer when another live agent serves the node: the agent exits.
    REFUSED: ClassVar[int] = 409

    dpid: int
    switch_port: str  # the node's switch port the agent's frames come and go by
    url: str  # the agent's control API
    boot_id: str  # new each time the agent starts: a new one means its chains are gone
    port_type: str = ""  # how the node's bridge reads its ports (system, afxdp); "": unknown
    # The digest of the sessions whose chains the agent holds (agentproto/held.py), so
    # the controller lists its own only when they differ. None: an agent that does not
    # send one, which is always sent the list.
    held: Held | None = None

    def __post_init__(self) -> None:
        whole(self.dpid, "dpid", 0, (1 << 64) - 1)
        word(self.switch_port, "switch_port")
        agent_url(self.url)
        word(self.boot_id, "boot_id")
        if not isinstance(self.port_type, str) or len(self.port_type) > 200:
            raise ContractError("port_type must be a string of at most 200 characters")
        if self.held is not None and not isinstance(self.held, Held):
            raise ContractError("held must be a Held")

    @property
    def path(self) -> str:
        return self.ROUTE

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "dpid": format_dpid(self.dpid),
            "switch_port": self.switch_port,
            "url": self.url,
            "boot_id": self.boot_id,
        }
        if self.port_type:  # optional, so a registration without it reads as before
            out["port_type"] = self.port_type
        if self.held is not None:  # optional too
            out["held"] = self.held.to_json()
        return out

    @classmethod
    def from_json(cls, raw: object) -> Registration:
        """Return the registration `raw` is; raise ContractError."""
        required = ("dpid", "switch_port", "url", "boot_id")
        body = fields(raw, "a registration", required, ("port_type", "held"))
        return cls(
            dpid(body["dpid"]),
            body["switch_port"],
            body["url"],
            body["boot_id"],
            body.get("port_type", ""),
            Held.from_json(body["held"]) if "held" in body else None,
        )


@dataclass(frozen=True)
class RegistrationReply:
    """The controller's answer: the sessions it places on the node, or None ("same":
    true on the wire) when the registration's `held` digest is that of exactly these,
    or while sessions on the node are being set up or torn down and the controller
    defers the list (`controller/service.py`, `LIST_EVERY`). The agent drops any chain
    not listed (the orphans of a controller that restarted, or of a teardown that did
    not reach it); "same" leaves it nothing to drop."""

    dpid: int
    sessions: tuple[int, ...] | None

    def __post_init__(self) -> None:
        whole(self.dpid, "dpid", 0, (1 << 64) - 1)
        if self.sessions is not None:
            object.__setattr__(self, "sessions", _session_ids(self.sessions, "sessions"))

    def to_json(self) -> dict[str, object]:
        if self.sessions is None:
            return {"dpid": format_dpid(self.dpid), "same": True}
        return {"dpid": format_dpid(self.dpid), "sessions": list(self.sessions)}

    @classmethod
    def from_json(cls, raw: object) -> RegistrationReply:
        """Return the reply `raw` is (either its sessions or "same": true); raise
        ContractError."""
        what = "a registration's answer"
        if isinstance(raw, dict) and "same" in raw:
            body = fields(raw, what, ("dpid", "same"))
            if not flag(body["same"], "same"):
                raise ContractError("same must be true: the list is sent otherwise")
            return cls(dpid(body["dpid"]), None)
        body = fields(raw, what, ("dpid", "sessions"))
        return cls(dpid(body["dpid"]), _session_ids(body["sessions"], "sessions"))

    @classmethod
    def answer(
        cls, dpid: int, theirs: Held | None, ours: Held, listed: Callable[[], tuple[int, ...]]
    ) -> RegistrationReply:
        """Return the answer to a registration whose digest is `theirs` (None: it sent
        none) from a controller whose sessions on the node have the digest `ours`:
        "same" when they agree, else the list `listed()` returns (called only then)."""
        if theirs is not None and theirs == ours:
            return cls(dpid, None)
        return cls(dpid, listed())


# --- chains: controller → agent ------------------------------------------------------


@dataclass(frozen=True)
class ModuleSpec:
    """One module of a session's chain: its name and its full parameter set (the
    controller resolves them against the module's manifest; the agent again), the
    version the controller chose ("" when it did not say: a session stored before
    versions were kept) and, for a module from the controller's repository, its
    bundle's SHA-256, which the agent checks the bundle it fetches against ("" for a
    module from a folder on the module path)."""

    name: str
    params: tuple[tuple[str, object], ...] = ()
    version: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        word(self.name, "module name", NAME_RE)
        if self.version:
            word(self.version, f"version of {self.name}", VERSION_RE)
        if self.sha256:
            word(self.sha256, f"sha256 of {self.name}", SHA256_RE)
            if not self.version:
                raise ContractError(f"a bundle of {self.name} needs its version")
        pairs = tuple(listed(self.params, f"params of {self.name}"))
        if any(not isinstance(p, tuple) or len(p) != 2 or not isinstance(p[0], str) for p in pairs):
            raise ContractError(f"params of {self.name} must be (name, value) pairs")
        if len({key for key, _ in pairs}) != len(pairs):
            raise ContractError(f"params of {self.name} name a parameter twice")
        object.__setattr__(self, "params", pairs)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "params": dict(self.params)}
        if self.version:
            out["version"] = self.version
        if self.sha256:
            out["sha256"] = self.sha256
        return out

    @classmethod
    def from_json(cls, raw: object) -> ModuleSpec:
        """Return the module `raw` names ({name, params, version, sha256}; no params:
        none; no version or sha256: ""); raise ContractError."""
        body = fields(raw, "a module", ("name",), ("params", "version", "sha256"))
        name = word(body["name"], "module name", NAME_RE)
        params = frozen_object(body.get("params", {}), f"params of {name}")
        version = text(body.get("version", ""), f"version of {name}")  # checked when built
        sha256 = text(body.get("sha256", ""), f"sha256 of {name}")
        return cls(name, tuple(params.items()), version, sha256)


def _chain(value: object) -> tuple[ModuleSpec, ...]:
    modules = listed(value, "modules", 1, MAX_CHAIN)
    if not all(isinstance(m, ModuleSpec) for m in modules):
        raise ContractError("modules must be ModuleSpecs")
    return tuple(modules)


@dataclass(frozen=True)
class Attach:
    """Build (or replace) a session's chain; frames tagged `tag` go through it.

    `copy` says what the controller installed at the switch: True, a copy rule (the
    switch forwards each frame itself and sends the chain a copy: nothing goes back,
    and every module must be observe-only); False, a detour (every frame that comes
    through goes back). The agent builds the chain in that mode, never in one it
    decides itself, so the two cannot disagree.
    """

    METHOD: ClassVar[str] = "PUT"
    ROUTE: ClassVar[str] = SESSION_PATH

    session_id: int
    tag: int
    lifetime: int
    modules: tuple[ModuleSpec, ...]
    copy: bool = False

    def __post_init__(self) -> None:
        session_id(self.session_id)
        tag(self.tag)
        lifetime(self.lifetime)
        object.__setattr__(self, "modules", _chain(self.modules))
        flag(self.copy, "copy")

    @property
    def path(self) -> str:
        return self.ROUTE.format(id=self.session_id)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "tag": self.tag,
            "lifetime": self.lifetime,
            "modules": [m.to_json() for m in self.modules],
        }
        # Only when true: an agent from before the field then takes a detour as ever,
        # and refuses a copy (an unknown field) rather than guess the mode itself.
        if self.copy:
            out["copy"] = True
        return out

    @classmethod
    def from_json(cls, raw: object, session: int) -> Attach:
        """Return the attach of session `session` whose body is `raw` (no "copy": a
        detour, as a controller from before the field means); raise ContractError."""
        body = fields(raw, "an attach", ("tag", "lifetime", "modules"), ("copy",))
        items = listed(body["modules"], "modules", 1, MAX_CHAIN)
        modules = tuple(ModuleSpec.from_json(item) for item in items)
        copy = flag(body.get("copy", False), "copy")
        return cls(session, body["tag"], body["lifetime"], modules, copy)


@dataclass(frozen=True)
class Refresh:
    """Give a chain a new lifetime from now (soft state)."""

    METHOD: ClassVar[str] = "PATCH"
    ROUTE: ClassVar[str] = SESSION_PATH

    session_id: int
    lifetime: int

    def __post_init__(self) -> None:
        session_id(self.session_id)
        lifetime(self.lifetime)

    @property
    def path(self) -> str:
        return self.ROUTE.format(id=self.session_id)

    def to_json(self) -> dict[str, object]:
        return {"lifetime": self.lifetime}

    @classmethod
    def from_json(cls, raw: object, session: int) -> Refresh:
        """Return the refresh of session `session` whose body is `raw`; raise ContractError."""
        body = fields(raw, "a refresh", ("lifetime",))
        return cls(session, body["lifetime"])


@dataclass(frozen=True)
class Upgrade:
    """Replace the module at `position` of a session's chain by `module` (the same
    module at another version), its state handed over (a hot upgrade)."""

    METHOD: ClassVar[str] = "POST"
    ROUTE: ClassVar[str] = UPGRADE_PATH

    session_id: int
    position: int  # 0 is the chain's first module
    module: ModuleSpec

    def __post_init__(self) -> None:
        session_id(self.session_id)
        whole(self.position, "position", 0, MAX_CHAIN - 1)
        if not isinstance(self.module, ModuleSpec):
            raise ContractError("module must be a ModuleSpec")

    @property
    def path(self) -> str:
        return self.ROUTE.format(id=self.session_id)

    def to_json(self) -> dict[str, object]:
        return {"position": self.position, "module": self.module.to_json()}

    @classmethod
    def from_json(cls, raw: object, session: int) -> Upgrade:
        """Return the upgrade of session `session` whose body is `raw`; raise ContractError."""
        body = fields(raw, "an upgrade", ("position", "module"))
        return cls(session, body["position"], ModuleSpec.from_json(body["module"]))


@dataclass(frozen=True)
class _SessionCall:
    """A call about one session with no body."""

    ROUTE: ClassVar[str] = SESSION_PATH

    session_id: int

    def __post_init__(self) -> None:
        session_id(self.session_id)

    @property
    def path(self) -> str:
        return self.ROUTE.format(id=self.session_id)

    def to_json(self) -> None:
        return None


@dataclass(frozen=True)
class Detach(_SessionCall):
    """Remove a session's chain; the answer holds its final counters."""

    METHOD: ClassVar[str] = "DELETE"


@dataclass(frozen=True)
class ChainQuery(_SessionCall):
    """Read a session's chain counters, with the node's."""

    METHOD: ClassVar[str] = "GET"


@dataclass(frozen=True)
class StatusQuery:
    """Read the agent's own view."""

    METHOD: ClassVar[str] = "GET"
    ROUTE: ClassVar[str] = "/health"

    @property
    def path(self) -> str:
        return self.ROUTE

    def to_json(self) -> None:
        return None


# --- answers: agent → controller -----------------------------------------------------


@dataclass(frozen=True)
class NodeIO:
    """The node's frame counters, every session together, since the agent started.

    `switch_queue_dropped` is None when the switch does not read the agent's port
    through a socket the agent can see (see docs/architecture.md). `stale`: frames
    dropped for having waited longer than the agent's frame age limit (a hang).
    """

    received: int
    sent: int
    dropped: int
    send_failed: int
    unmatched: int
    queue_dropped: int
    too_big: int
    switch_queue_dropped: int | None
    stale: int = 0

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "received",
        "sent",
        "dropped",
        "send_failed",
        "unmatched",
        "queue_dropped",
        "too_big",
        "stale",
    )

    def __post_init__(self) -> None:
        for name in self.COUNTERS:
            count(getattr(self, name), name)
        if self.switch_queue_dropped is not None:
            count(self.switch_queue_dropped, "switch_queue_dropped")

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in (*self.COUNTERS, "switch_queue_dropped")}

    @classmethod
    def from_json(cls, raw: object) -> NodeIO:
        """Return the counters `raw` holds; raise ContractError."""
        body = fields(raw, "the node's counters", (*cls.COUNTERS, "switch_queue_dropped"))
        return cls(**body)


@dataclass(frozen=True)
class ModuleStats:
    """One module's own counters (`stats`) and metric samples, as the module reports them,
    and how the node runs it (its guard, `nodes/sandbox/guard.py`): its tier, whether it
    runs or was quarantined and why, its failure policy, the frames that went by without
    it, those over its frame rate (isolated), what confines its process (isolated); and
    the chain's count of the frames that reached it (`frames`), that it ended (`dropped`:
    its DROP, or its closed failure policy) and that it failed on (`errors`)."""

    name: str
    stats: Mapping[str, object]
    metrics: tuple[Mapping[str, object], ...] | None = None  # None: the module has none
    tier: str = "trusted"
    state: str = "running"
    failure: str = "open"
    unprocessed: int = 0
    reason: str | None = None  # why it was quarantined
    over_rate: int | None = None
    confined: Mapping[str, object] | None = None
    frames: int | None = None  # None: an agent that does not count them
    dropped: int | None = None
    errors: int | None = None

    GUARD: ClassVar[tuple[str, ...]] = ("tier", "state", "failure", "unprocessed")
    GUARD_OPTIONAL: ClassVar[tuple[str, ...]] = ("reason", "over_rate", "confined")
    VERDICTS: ClassVar[tuple[str, ...]] = ("frames", "dropped", "errors")

    def __post_init__(self) -> None:
        word(self.name, "module name", NAME_RE)
        object.__setattr__(self, "stats", frozen_object(self.stats, f"stats of {self.name}"))
        if self.metrics is not None:
            samples = listed(self.metrics, f"metrics of {self.name}")
            frozen = tuple(frozen_object(s, f"a metric of {self.name}") for s in samples)
            object.__setattr__(self, "metrics", frozen)
        for name, allowed in (("tier", TIERS), ("state", STATES), ("failure", FAILURES)):
            if getattr(self, name) not in allowed:
                raise ContractError(f"{name} of {self.name} must be one of {list(allowed)}")
        count(self.unprocessed, "unprocessed")
        if self.reason is not None:
            text(self.reason, "reason")
        if self.over_rate is not None:
            count(self.over_rate, "over_rate")
        if self.confined is not None:
            confined = frozen_object(self.confined, f"confined of {self.name}")
            object.__setattr__(self, "confined", confined)
        for name in self.VERDICTS:
            if getattr(self, name) is not None:
                count(getattr(self, name), name)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "stats": dict(self.stats)}
        out |= {name: getattr(self, name) for name in self.GUARD}
        for name in self.GUARD_OPTIONAL + self.VERDICTS:
            value = getattr(self, name)
            if value is not None:
                out[name] = dict(value) if name == "confined" else value
        if self.metrics is not None:
            out["metrics"] = [dict(s) for s in self.metrics]
        return out

    @classmethod
    def from_json(cls, raw: object) -> ModuleStats:
        """Return the module's counters `raw` holds; raise ContractError."""
        required = ("name", "stats", *cls.GUARD)
        optional = ("metrics", *cls.GUARD_OPTIONAL, *cls.VERDICTS)
        body = fields(raw, "a module's counters", required, optional)
        metrics = body.get("metrics")
        return cls(
            body["name"],
            body["stats"],
            None if metrics is None else tuple(metrics),
            **{name: body[name] for name in cls.GUARD},
            **{name: body[name] for name in cls.GUARD_OPTIONAL + cls.VERDICTS if name in body},
        )


@dataclass(frozen=True)
class ChainStats:
    """A session's chain and its counters; `node` the node's own, when asked for;
    `stale` the session's frames dropped for their age (after a hang)."""

    session: int
    tag: int
    packets: int
    forwarded: int
    modified: int
    dropped: int
    returned: int
    send_failed: int
    emitted: int
    emit_failed: int
    errors: int
    last_error: str | None
    modules: tuple[ModuleStats, ...]
    node: NodeIO | None = None
    stale: int = 0

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "packets",
        "forwarded",
        "modified",
        "dropped",
        "returned",
        "send_failed",
        "emitted",
        "emit_failed",
        "errors",
    )

    def __post_init__(self) -> None:
        session_id(self.session, "session")
        tag(self.tag)
        for name in self.COUNTERS:
            count(getattr(self, name), name)
        if self.last_error is not None:
            text(self.last_error, "last_error")
        modules = tuple(listed(self.modules, "modules", 0, MAX_CHAIN))
        if not all(isinstance(m, ModuleStats) for m in modules):
            raise ContractError("modules must be ModuleStats")
        object.__setattr__(self, "modules", modules)
        if self.node is not None and not isinstance(self.node, NodeIO):
            raise ContractError("node must be NodeIO")
        count(self.stale, "stale")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"session": self.session, "tag": self.tag}
        out |= {name: getattr(self, name) for name in self.COUNTERS}
        out["stale"] = self.stale
        out["last_error"] = self.last_error
        out["modules"] = [m.to_json() for m in self.modules]
        if self.node is not None:
            out["node"] = self.node.to_json()
        return out

    @classmethod
    def from_json(cls, raw: object) -> ChainStats:
        """Return the chain's counters `raw` holds; raise ContractError."""
        required = ("session", "tag", *cls.COUNTERS, "last_error", "modules")
        body = fields(raw, "a chain's counters", required, ("node", "stale"))
        items = listed(body["modules"], "modules", 0, MAX_CHAIN)
        return cls(
            **{name: body[name] for name in required[:-1]},
            modules=tuple(ModuleStats.from_json(m) for m in items),
            node=NodeIO.from_json(body["node"]) if "node" in body else None,
            stale=body.get("stale", 0),  # type: ignore[arg-type]
        )

    def with_node(self, node: NodeIO) -> ChainStats:
        """Return these counters with the node's."""
        return replace(self, node=node)


@dataclass(frozen=True)
class LoadedModule:
    """A module in use on the agent: its version, how many chains use it, and its tier
    (trusted: its code is in the agent; isolated: each chain's instance is a process)."""

    version: str
    sessions: int
    tier: str = "trusted"

    def __post_init__(self) -> None:
        text(self.version, "version")
        count(self.sessions, "sessions")
        if self.tier not in TIERS:
            raise ContractError(f"tier must be one of {list(TIERS)}, got {self.tier!r}")

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "sessions": self.sessions, "tier": self.tier}

    @classmethod
    def from_json(cls, raw: object) -> LoadedModule:
        body = fields(raw, "a loaded module", ("version", "sessions", "tier"))
        return cls(body["version"], body["sessions"], body["tier"])


@dataclass(frozen=True)
class AgentStatus:
    """The agent's own view: who it is, what it holds, what it has counted."""

    dpid: int
    iface: str
    switch_port: str
    boot_id: str
    pid: int
    registered: bool  # the controller has taken it
    modules_loaded: Mapping[str, LoadedModule]
    sessions: tuple[int, ...]
    io: NodeIO
    # The node's trust policy and what confines its isolated modules (nodes/host.py).
    tiers: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        whole(self.dpid, "dpid", 0, (1 << 64) - 1)
        word(self.iface, "iface")
        word(self.switch_port, "switch_port")
        word(self.boot_id, "boot_id")
        whole(self.pid, "pid", 1, (1 << 31) - 1)
        flag(self.registered, "registered")
        loaded = frozen_object(self.modules_loaded, "modules_loaded")
        for name, module in loaded.items():
            word(name, "module name", MODULE_REF_RE)
            if not isinstance(module, LoadedModule):
                raise ContractError(f"modules_loaded[{name}] must be a LoadedModule")
        object.__setattr__(self, "modules_loaded", loaded)
        object.__setattr__(self, "sessions", _session_ids(self.sessions, "sessions"))
        if not isinstance(self.io, NodeIO):
            raise ContractError("io must be NodeIO")
        tiers = frozen_object({} if self.tiers is None else self.tiers, "tiers")
        object.__setattr__(self, "tiers", tiers)

    def to_json(self) -> dict[str, object]:
        return {
            "dpid": format_dpid(self.dpid),
            "iface": self.iface,
            "switch_port": self.switch_port,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "registered": self.registered,
            "modules_loaded": {n: m.to_json() for n, m in self.modules_loaded.items()},
            "sessions": list(self.sessions),
            "io": self.io.to_json(),
            "tiers": dict(self.tiers or {}),
        }

    @classmethod
    def from_json(cls, raw: object) -> AgentStatus:
        """Return the status `raw` holds; raise ContractError."""
        names = ("dpid", "iface", "switch_port", "boot_id", "pid", "registered")
        required = (*names, "modules_loaded", "sessions", "io", "tiers")
        body = fields(raw, "an agent's status", required)
        loaded = frozen_object(body["modules_loaded"], "modules_loaded")
        return cls(
            **{name: body[name] for name in names[1:]},
            dpid=dpid(body["dpid"]),
            modules_loaded={n: LoadedModule.from_json(m) for n, m in loaded.items()},
            sessions=_session_ids(body["sessions"], "sessions"),
            io=NodeIO.from_json(body["io"]),
            tiers=body["tiers"],
        )
