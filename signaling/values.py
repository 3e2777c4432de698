"""The values that signaling messages carry, as frozen dataclasses that check themselves.

A value that breaks a rule of docs/signaling.md cannot be made: construction raises
SignalingUsageError. The decoder builds these too and turns that error into
SignalingProtocolError, so one set of rules serves both directions. Convenient inputs
(a dict of parameters, "10.0.0.1/32", a single port) are normalised on construction,
so two values that encode alike compare equal.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from signaling import wire
from signaling.errors import SignalingUsageError
from signaling.wire import Algorithm, NodeMode

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007
ParamValue = Union[bool, int, float, str]  # noqa: UP007


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def require(ok: bool, message: str) -> None:
    if not ok:
        raise SignalingUsageError(message)


def require_uint(name: str, value: object, hi: int, lo: int = 0) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        f"{name} must be an integer {lo}..{hi}, got {value!r}",
    )


def check_name(what: str, name: object) -> None:
    """Raise SignalingUsageError unless `name` is a module or parameter name."""
    require(
        isinstance(name, str) and wire.NAME_RE.fullmatch(name) is not None,
        f"{what} {name!r} must match {wire.NAME_RE.pattern}",
    )


def check_requester(requester: object) -> None:
    """Raise SignalingUsageError unless `requester` is a valid requester id."""
    require(
        isinstance(requester, str) and wire.REQUESTER_RE.fullmatch(requester) is not None,
        f"requester id {requester!r} must be 1..{wire.MAX_REQUESTER_ID} printable ASCII"
        " characters without spaces",
    )


def utf8(what: str, text: object, limit: int = wire.MAX_STRING) -> bytes:
    """Return `text` as UTF-8; raise SignalingUsageError if it is not text or too long."""
    require(isinstance(text, str), f"{what} must be a string, got {text!r}")
    try:
        raw = text.encode()  # type: ignore[union-attr]
    except UnicodeEncodeError:
        raise SignalingUsageError(f"{what} is not valid Unicode text") from None
    require(len(raw) <= limit, f"{what} is {len(raw)} bytes of UTF-8, at most {limit}")
    return raw


def _param_value(module: str, name: str, value: object) -> None:
    what = f"parameter {module}.{name}"
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        require(wire.I64_MIN <= value <= wire.I64_MAX, f"{what} does not fit in int64")
    elif isinstance(value, float):
        require(math.isfinite(value), f"{what} must be a finite float, got {value!r}")
    elif isinstance(value, str):
        utf8(what, value)
    else:
        raise SignalingUsageError(f"{what} must be int, float, bool or str, got {value!r}")


@dataclass(frozen=True)
class ModuleRef:
    """One module of a chain: its manifest name and the parameters given to it.

    `params` may be given as a mapping; it is kept as (name, value) pairs sorted by name.
    """

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()

    def __post_init__(self) -> None:
        check_name("module name", self.name)
        raw = self.params
        pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
        require(len(pairs) <= wire.MAX_PARAMS, f"module {self.name!r}: at most 16 parameters")
        for pair in pairs:
            require(isinstance(pair, tuple) and len(pair) == 2, "params are (name, value) pairs")
            check_name(f"module {self.name!r}: parameter", pair[0])
            _param_value(self.name, pair[0], pair[1])
        names = [p[0] for p in pairs]
        require(len(set(names)) == len(names), f"module {self.name!r}: a parameter given twice")
        _set(self, "params", tuple(sorted(pairs, key=lambda p: p[0].encode())))


@dataclass(frozen=True)
class PortRange:
    """Ports `low`..`high`, both included; a single port has low == high."""

    low: int
    high: int

    def __post_init__(self) -> None:
        require_uint("port", self.low, 0xFFFF)
        require_uint("port", self.high, 0xFFFF)
        require(self.low <= self.high, f"port range {self.low}-{self.high} is empty")


def _network(value: object) -> Network | None:
    if value is None:
        return None
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    require(isinstance(value, str), f"an address must be a string or a network, got {value!r}")
    try:
        return ipaddress.ip_network(value)  # strict: no host bits past the prefix
    except ValueError as exc:
        raise SignalingUsageError(f"address {value!r}: {exc}") from None


def _ports(value: object) -> PortRange | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return PortRange(value, value)
    require(value is None or isinstance(value, PortRange), f"not a port or range: {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class FlowFilter:
    """The flow a session claims; None is a wildcard. Normalised on construction:
    addresses become networks ("10.0.0.1" is 10.0.0.1/32), a single port a PortRange,
    and `family` (4 or 6) is taken from the addresses when not given (4 without any).
    """

    family: int | None = None
    src: Network | None = None
    dst: Network | None = None
    protocol: int | None = None
    src_ports: PortRange | None = None
    dst_ports: PortRange | None = None

    def __post_init__(self) -> None:
        src, dst = _network(self.src), _network(self.dst)
        versions = {n.version for n in (src, dst) if n is not None}
        family = self.family
        if family is None:
            family = versions.pop() if len(versions) == 1 else 4
        require(type(family) is int and family in (4, 6), f"family must be 4 or 6, not {family!r}")
        require(versions <= {family}, f"addresses must both be IPv{family}")
        if self.protocol is not None:
            require_uint("protocol", self.protocol, 255)
        src_ports, dst_ports = _ports(self.src_ports), _ports(self.dst_ports)
        if src_ports or dst_ports:
            require(
                self.protocol in wire.PORT_PROTOCOLS,
                "ports need protocol 6 (TCP), 17 (UDP) or 132 (SCTP)",
            )
        for name, value in (
            ("family", family),
            ("src", src),
            ("dst", dst),
            ("src_ports", src_ports),
            ("dst_ports", dst_ports),
        ):
            _set(self, name, value)


@dataclass(frozen=True)
class NodeSelection:
    """Which NetServ nodes on the flow's path serve it: FIRST, LAST, ALL, or NAMED
    (by datapath id, `dpids`, 1..16 distinct)."""

    mode: NodeMode
    dpids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        try:
            _set(self, "mode", NodeMode(self.mode))
        except ValueError:
            raise SignalingUsageError(f"unknown node selection mode {self.mode!r}") from None
        dpids = tuple(self.dpids)
        for dpid in dpids:
            require_uint("datapath id", dpid, wire.U64_MAX)
        if self.mode is NodeMode.NAMED:
            require(1 <= len(dpids) <= wire.MAX_PATH_NODES, "name 1..16 nodes")
            require(len(set(dpids)) == len(dpids), "a node is named twice")
        else:
            require(not dpids, f"mode {self.mode.name} names no nodes")
        _set(self, "dpids", dpids)

    @classmethod
    def first(cls) -> NodeSelection:
        return cls(NodeMode.FIRST)

    @classmethod
    def last(cls) -> NodeSelection:
        return cls(NodeMode.LAST)

    @classmethod
    def every(cls) -> NodeSelection:
        return cls(NodeMode.ALL)

    @classmethod
    def named(cls, *dpids: int) -> NodeSelection:
        return cls(NodeMode.NAMED, dpids)


@dataclass(frozen=True)
class NodeInfo:
    """One NetServ node on a probed path: what it offers and how busy it is."""

    dpid: int
    modules: tuple[str, ...] = ()
    load: int = 0  # thousandths of the node's capacity in use, 0..1000
    sessions: int = 0

    def __post_init__(self) -> None:
        require_uint("datapath id", self.dpid, wire.U64_MAX)
        modules = tuple(self.modules)
        require(len(modules) <= wire.MAX_NODE_MODULES, "a node lists at most 64 modules")
        for name in modules:
            check_name("module name", name)
        require(len(set(modules)) == len(modules), "a module is listed twice")
        require_uint("load", self.load, wire.MAX_LOAD)
        require_uint("session count", self.sessions, wire.U32_MAX)
        _set(self, "modules", modules)


@dataclass(frozen=True)
class Auth:
    """The authentication object: algorithm, key id and MAC (or signature)."""

    key_id: int
    mac: bytes
    algorithm: Algorithm = Algorithm.HMAC_SHA256

    def __post_init__(self) -> None:
        try:
            _set(self, "algorithm", Algorithm(self.algorithm))
        except ValueError:
            raise SignalingUsageError(f"unknown algorithm {self.algorithm!r}") from None
        require_uint("key id", self.key_id, wire.U32_MAX)
        require(
            isinstance(self.mac, bytes) and len(self.mac) == self.algorithm.mac_size,
            f"{self.algorithm.name} needs a {self.algorithm.mac_size}-byte MAC",
        )


@dataclass(frozen=True)
class Description:
    """Everything a session is: SETUP and every REFRESH carry all of it (soft state)."""

    requester: str
    flow: FlowFilter
    chain: tuple[ModuleRef, ...]
    lifetime: int
    nodes: NodeSelection = field(default_factory=NodeSelection.first)

    def __post_init__(self) -> None:
        check_requester(self.requester)
        require(isinstance(self.flow, FlowFilter), "flow must be a FlowFilter")
        chain = tuple(self.chain) if isinstance(self.chain, Iterable) else ()
        require(1 <= len(chain) <= wire.MAX_CHAIN, f"a chain has 1..{wire.MAX_CHAIN} modules")
        require(all(isinstance(m, ModuleRef) for m in chain), "chain holds ModuleRefs")
        require_uint("lifetime", self.lifetime, wire.MAX_LIFETIME, lo=1)
        require(isinstance(self.nodes, NodeSelection), "nodes must be a NodeSelection")
        _set(self, "chain", chain)
