"""Signaling messages for the codec's tests: fixed samples of every message type and
object, and hypothesis strategies for random valid messages."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from signaling import wire
from signaling.auth import Key, sign
from signaling.codec import decode, encode
from signaling.errors import ErrorCode
from signaling.messages import (
    Ack,
    Challenge,
    ChallengeResponse,
    ErrorReply,
    Message,
    Probe,
    ProbeResponse,
    Refresh,
    Setup,
    Teardown,
)
from signaling.values import (
    Auth,
    Description,
    FlowFilter,
    ModuleRef,
    NodeInfo,
    NodeSelection,
    PortRange,
)
from signaling.wire import Algorithm

NONCE = bytes(range(16))
HEADER = {"session_id": 0x0123456789ABCDEF, "sequence": 1, "timestamp_ms": 1767225600000}
KEY = Key(7, bytes(range(32)))

DESCRIPTION = Description(
    requester="alice@h1",
    flow=FlowFilter(src="10.0.0.1", dst="10.0.0.2", protocol=17, dst_ports=9000),
    chain=(ModuleRef("counter", {"log_every": 1000}),),
    lifetime=60,
    nodes=NodeSelection.first(),
)
RICH = Description(
    requester="cdn-1",
    flow=FlowFilter(
        src="2001:db8::/32",
        dst="2001:db8:1::1",
        protocol=6,
        src_ports=PortRange(1024, 65535),
        dst_ports=443,
    ),
    chain=(
        ModuleRef("null"),
        ModuleRef(
            "counter",
            {"a_int": -(1 << 63), "b_float": -0.0, "c_bool": False, "d_str": "héllo ☃", "e": ""},
        ),
        ModuleRef("firewall", {"max_pps": 1e308, "log": True}),
    ),
    lifetime=wire.MAX_LIFETIME,
    nodes=NodeSelection.named(1, 0xFFFFFFFFFFFFFFFF, 3),
)


def samples() -> list[Message]:
    """Return one or more messages of every type, together using every object and flag."""
    h = {**HEADER, "nonce": NONCE}
    return [
        Setup(**h, description=DESCRIPTION),
        Setup(**h, description=RICH, retransmission=True),
        Refresh(**{**h, "sequence": 2}, description=DESCRIPTION),
        Teardown(**{**h, "sequence": 3}, requester="alice@h1"),
        Probe(
            **h, requester="bob", flow=FlowFilter(dst="10.1.0.0/16"), nodes=NodeSelection.every()
        ),
        Probe(**h, requester="bob", flow=FlowFilter(family=6), nodes=NodeSelection.last()),
        Ack(**h, lifetime=60, nodes=(1, 2)),
        Ack(**h),
        ErrorReply(**h, code=ErrorCode.NOT_ENDPOINT, reason="10.0.0.1 is not yours"),
        ErrorReply(**h, code=65535, reason=""),
        ProbeResponse(
            **h,
            nodes=(
                NodeInfo(1, ("counter", "null"), load=250, sessions=3),
                NodeInfo(2, (), load=1000, sessions=0xFFFFFFFF),
            ),
            truncated=True,
        ),
        Setup(**h, description=DESCRIPTION, auth=Auth(9, bytes(range(32)))),
        Ack(**h, auth=Auth(1, bytes(64), Algorithm.ED25519)),
        Challenge(**h, requester="alice@h1", flow=DESCRIPTION.flow),
        Challenge(**h, requester="bob", flow=FlowFilter(family=6), retransmission=True),
        ChallengeResponse(**h),
    ]


def sample_bytes() -> list[bytes]:
    """Return the encoded samples, plus signed ones."""
    out = [encode(m) for m in samples()]
    out += [sign(m, KEY) for m in samples()[:4]]
    assert all(decode(b) is not None for b in out)
    return out


# -- hypothesis strategies ------------------------------------------------------------

names = st.from_regex(wire.NAME_RE, fullmatch=True)
requesters = st.from_regex(wire.REQUESTER_RE, fullmatch=True)
short_text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= wire.MAX_STRING)
param_values = st.one_of(
    st.booleans(),
    st.integers(min_value=wire.I64_MIN, max_value=wire.I64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
)
modules = st.builds(ModuleRef, names, st.dictionaries(names, param_values, max_size=3))
ports = st.integers(0, 0xFFFF)
port_ranges = st.tuples(ports, ports).map(lambda t: PortRange(min(t), max(t)))


@st.composite
def flow_filters(draw: st.DrawFn) -> FlowFilter:
    family = draw(st.sampled_from([4, 6]))
    bits = 32 if family == 4 else 128
    addr_type = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network

    def network() -> object:
        prefix = draw(st.integers(0, bits))
        value = draw(st.integers(0, (1 << bits) - 1)) >> (bits - prefix) << (bits - prefix)
        return addr_type((value, prefix))

    src = network() if draw(st.booleans()) else None
    dst = network() if draw(st.booleans()) else None
    with_ports = draw(st.booleans())
    if with_ports:
        protocol = draw(st.sampled_from(sorted(wire.PORT_PROTOCOLS)))
    else:
        protocol = draw(st.none() | st.integers(0, 255))
    return FlowFilter(
        family=family,
        src=src,
        dst=dst,
        protocol=protocol,
        src_ports=draw(st.none() | port_ranges) if with_ports else None,
        dst_ports=draw(st.none() | port_ranges) if with_ports else None,
    )


dpids = st.integers(0, wire.U64_MAX)
selections = st.one_of(
    st.sampled_from([NodeSelection.first(), NodeSelection.last(), NodeSelection.every()]),
    st.lists(dpids, min_size=1, max_size=4, unique=True).map(lambda d: NodeSelection.named(*d)),
)
descriptions = st.builds(
    Description,
    requester=requesters,
    flow=flow_filters(),
    chain=st.lists(modules, min_size=1, max_size=3),
    lifetime=st.integers(1, wire.MAX_LIFETIME),
    nodes=selections,
)
auths = st.none() | st.builds(
    Auth, st.integers(0, wire.U32_MAX), st.binary(min_size=32, max_size=32)
)
headers = st.fixed_dictionaries(
    {
        "session_id": st.integers(1, wire.U64_MAX),
        "sequence": st.integers(0, wire.U32_MAX),
        "timestamp_ms": st.integers(0, wire.U64_MAX),
        "nonce": st.binary(min_size=16, max_size=16),
        "auth": auths,
    }
)
node_infos = st.builds(
    NodeInfo,
    dpids,
    st.lists(names, max_size=4, unique=True).map(tuple),
    st.integers(0, wire.MAX_LOAD),
    st.integers(0, wire.U32_MAX),
)


def _with(header: st.SearchStrategy, cls: type, **fields: st.SearchStrategy):
    return st.builds(lambda h, **f: cls(**h, **f), header, **fields)


messages = st.one_of(
    _with(headers, Setup, description=descriptions, retransmission=st.booleans()),
    _with(headers, Refresh, description=descriptions, retransmission=st.booleans()),
    _with(headers, Teardown, requester=requesters, retransmission=st.booleans()),
    _with(headers, Probe, requester=requesters, flow=flow_filters(), nodes=selections),
    _with(headers, Ack),
    _with(
        headers,
        Ack,
        lifetime=st.integers(1, wire.MAX_LIFETIME),
        nodes=st.lists(dpids, min_size=1, max_size=16, unique=True).map(tuple),
    ),
    _with(headers, ErrorReply, code=st.integers(0, 0xFFFF), reason=short_text),
    _with(
        headers,
        ProbeResponse,
        nodes=st.lists(node_infos, min_size=1, max_size=4).map(tuple),
        truncated=st.booleans(),
    ),
    _with(
        headers, Challenge, requester=requesters, flow=flow_filters(), retransmission=st.booleans()
    ),
    _with(headers, ChallengeResponse),
)
