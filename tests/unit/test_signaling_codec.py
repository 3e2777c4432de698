"""The signaling codec: round trips, the rules encoding enforces, the errors decoding
raises for each way a message can be wrong, and the spec's worked example."""

import re
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from controller import requests as controller_requests
from nodes import bundle
from signaling import wire
from signaling.auth import Key, sign
from signaling.codec import _objects_of, decode, encode, peek_echo
from signaling.errors import Echo, ErrorCode, SignalingProtocolError, SignalingUsageError
from signaling.messages import Ack, ErrorReply, Probe, ProbeResponse, Refresh, Setup, Teardown
from signaling.values import (
    FlowFilter,
    ModuleRef,
    NodeInfo,
    NodeSelection,
    PortRange,
)
from tests.unit.signaling_samples import DESCRIPTION, HEADER, NONCE, samples

DOC = Path(__file__).resolve().parents[2] / "docs" / "signaling.md"
H = {**HEADER, "nonce": NONCE}


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_sample_round_trips(message):
    data = encode(message)
    back = decode(data)
    assert back == message
    assert type(back) is type(message)
    assert encode(back) == data
    assert len(data) % 4 == 0 and struct.unpack_from("!H", data, 6)[0] == len(data)


def test_parameter_types_survive_the_round_trip():
    chain = decode(encode(samples()[1])).description.chain
    params = dict(chain[1].params)
    assert [type(params[k]) for k in ("a_int", "b_float", "c_bool", "d_str")] == [
        int,
        float,
        bool,
        str,
    ]
    assert str(params["b_float"]) == "-0.0" and params["d_str"] == "héllo ☃"


def test_the_spec_example_is_what_the_codec_writes():
    text = DOC.read_text()
    block = re.search(r"<!-- setup-example -->\n```\n(.*?)```", text, re.S).group(1)
    example = bytes.fromhex("".join(line.split("|")[0] for line in block.splitlines()))
    message = Setup(**H, description=DESCRIPTION)
    assert example == encode(message)
    assert decode(example) == message
    signed = sign(message, Key(7, bytes(32)))  # the page's note on the signed form
    assert len(signed) == 184 and signed[6:8].hex() == "00b8"
    assert signed[140:152].hex() == "000800280100000000000007"


def test_limits_agree_with_the_controller_and_manifests():
    assert wire.MAX_CHAIN == controller_requests.MAX_CHAIN
    assert wire.MAX_LIFETIME == controller_requests.MAX_LIFETIME
    assert wire.NAME_RE.pattern == bundle.NAME_RE.pattern.strip("^$").removesuffix("\\Z")


def test_the_codec_does_not_import_scapy():
    code = "import sys, signaling.codec, signaling.auth, signaling.session, signaling.probe,"
    code += " signaling.freshness;"
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'ryu')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DOC.parents[1]
    )
    assert out.stdout.strip() == "[]"


# -- encoding refuses what the protocol cannot say ----------------------------------------


def _chain(n):
    return tuple(ModuleRef("null") for _ in range(n))


@pytest.mark.parametrize(
    "build",
    [
        lambda: replace(DESCRIPTION, chain=_chain(wire.MAX_CHAIN + 1)),
        lambda: replace(DESCRIPTION, chain=()),
        lambda: replace(DESCRIPTION, lifetime=0),
        lambda: replace(DESCRIPTION, lifetime=wire.MAX_LIFETIME + 1),
        lambda: replace(DESCRIPTION, requester="has space"),
        lambda: replace(DESCRIPTION, requester="x" * 65),
        lambda: ModuleRef("Counter"),
        lambda: ModuleRef("c" * 33),
        lambda: ModuleRef("counter", {"Bad": 1}),
        lambda: ModuleRef("counter", {f"p{i}": i for i in range(17)}),
        lambda: ModuleRef("counter", {"x": float("nan")}),
        lambda: ModuleRef("counter", {"x": float("inf")}),
        lambda: ModuleRef("counter", {"x": 1 << 63}),
        lambda: ModuleRef("counter", {"x": "é" * 128}),
        lambda: ModuleRef("counter", {"x": "\ud800"}),
        lambda: ModuleRef("counter", {"x": None}),
        lambda: ModuleRef("counter", (("x", 1), ("x", 2))),
        lambda: FlowFilter(dst_ports=80),
        lambda: FlowFilter(protocol=1, dst_ports=80),
        lambda: FlowFilter(src="10.0.0.1/8"),
        lambda: FlowFilter(src="10.0.0.1", dst="::1"),
        lambda: FlowFilter(family=6, src="10.0.0.1"),
        lambda: FlowFilter(family=5),
        lambda: FlowFilter(protocol=256),
        lambda: FlowFilter(protocol=6, dst_ports=PortRange(2, 1)),
        lambda: FlowFilter(protocol=6, dst_ports=65536),
        lambda: NodeSelection.named(),
        lambda: NodeSelection.named(1, 1),
        lambda: NodeSelection.named(*range(17)),
        lambda: NodeSelection(wire.NodeMode.FIRST, (1,)),
        lambda: NodeSelection(9),
        lambda: NodeInfo(1, load=1001),
        lambda: NodeInfo(1, modules=("a", "a")),
        lambda: Setup(**{**H, "session_id": 0}, description=DESCRIPTION),
        lambda: Setup(**{**H, "nonce": b"short"}, description=DESCRIPTION),
        lambda: Setup(**{**H, "sequence": 1 << 32}, description=DESCRIPTION),
        lambda: Teardown(**H, requester=""),
        lambda: Ack(**H, lifetime=60),
        lambda: Ack(**H, lifetime=60, nodes=()),
        lambda: ErrorReply(**H, code=70000),
        lambda: ErrorReply(**H, code=100, reason="x" * 256),
        lambda: ProbeResponse(**H, nodes=()),
    ],
)
def test_values_the_protocol_cannot_carry_are_refused(build):
    with pytest.raises(SignalingUsageError):
        build()


def test_a_message_larger_than_one_datagram_is_refused():
    big = ModuleRef("m", {f"p{i:02d}": "x" * 200 for i in range(16)})
    message = Setup(**H, description=replace(DESCRIPTION, chain=(big,)))
    with pytest.raises(SignalingUsageError, match="1232"):
        encode(message)


def test_encode_and_decode_refuse_what_is_not_theirs():
    with pytest.raises(SignalingUsageError):
        encode(DESCRIPTION)
    with pytest.raises(SignalingUsageError):
        decode("not bytes")


def test_answers_echo_their_request():
    request = Teardown(**H, requester="alice")
    for answer in (
        Ack.answering(request, 5),
        ErrorReply.answering(request, 5, ErrorCode.UNKNOWN_SESSION, "é" * 200),
        ProbeResponse.answering(request, 5, (NodeInfo(1),)),
    ):
        assert (answer.session_id, answer.sequence, answer.nonce) == (
            request.session_id,
            request.sequence,
            request.nonce,
        )
        decode(encode(answer))
    with pytest.raises(SignalingProtocolError) as info:
        decode(_patch(encode(request), 20, b"\x01"))
    refusal = ErrorReply.answering(info.value.echo, 5, info.value.code, info.value.reason)
    assert (refusal.session_id, refusal.sequence, refusal.nonce) == (
        request.session_id,
        request.sequence,
        request.nonce,
    )
    assert refusal.code is ErrorCode.MALFORMED


# -- decoding: each kind of garbage, with its code ---------------------------------------

GOOD = encode(Setup(**H, description=DESCRIPTION))
OBJECTS_AT = wire.HEADER_SIZE


def _patch(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw) :]


def _with_length(data: bytes) -> bytes:
    return _patch(data, 6, struct.pack("!H", len(data)))


def _obj(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


def _expect(data: bytes, code: ErrorCode, match: str | None = None):
    with pytest.raises(SignalingProtocolError, match=match) as info:
        decode(data)
    assert info.value.code is code
    return info.value


@pytest.mark.parametrize(
    "data, code, match",
    [
        (b"", ErrorCode.MALFORMED, "shorter than the header"),
        (GOOD[:47], ErrorCode.MALFORMED, "shorter than the header"),
        (_patch(GOOD, 0, b"XX"), ErrorCode.MALFORMED, "magic"),
        (_patch(GOOD, 2, b"\x02"), ErrorCode.UNSUPPORTED_VERSION, "version 2"),
        (_patch(GOOD, 3, b"\x06"), ErrorCode.UNKNOWN_MESSAGE_TYPE, "type 6"),
        (_patch(GOOD, 4, b"\x00\x02"), ErrorCode.MALFORMED, "flags"),
        (_patch(GOOD, 6, b"\x00\x30"), ErrorCode.MALFORMED, "length field"),
        (_patch(GOOD, 6, b"\xff\xff"), ErrorCode.MALFORMED, "length field"),
        (_patch(GOOD, 20, b"\x00\x00\x00\x01"), ErrorCode.MALFORMED, "reserved"),
        (_patch(GOOD, 8, bytes(8)), ErrorCode.MALFORMED, "session id"),
        (GOOD + bytes(4), ErrorCode.MALFORMED, "length field"),
        (_with_length(GOOD + bytes(wire.MAX_MESSAGE_SIZE)), ErrorCode.MALFORMED, "more than"),
        (_with_length(GOOD + b"\x00\x63\x00"), ErrorCode.MALFORMED, "cut short"),
        (_with_length(GOOD + _obj(0x0063, b"x")), ErrorCode.UNKNOWN_OBJECT, "object 99"),
        (
            _with_length(GOOD + _obj(0x0063, b"")[:2] + b"\x00\x10"),
            ErrorCode.MALFORMED,
            "runs past",
        ),
        (
            _with_length(GOOD + _obj(wire.ObjectType.ERROR, b"\x00\x64")),
            ErrorCode.MALFORMED,
            "does not carry ERROR",
        ),
        (
            _with_length(GOOD + _obj(wire.ObjectType.LIFETIME, b"\x00\x00\x00\x01")),
            ErrorCode.MALFORMED,
            "out of order",
        ),
        (
            _with_length(
                GOOD + _obj(wire.ObjectType.AUTH, b"\x01" + bytes(39)) + _obj(0x8063, b"")
            ),
            ErrorCode.MALFORMED,
            "last",
        ),
        (
            _with_length(GOOD + _obj(wire.ObjectType.AUTH, b"\x07" + bytes(39))),
            ErrorCode.BAD_AUTH,
            "algorithm",
        ),
        (
            _with_length(GOOD + _obj(wire.ObjectType.AUTH, b"\x01" + bytes(38))),
            ErrorCode.MALFORMED,
            "32-byte",
        ),
        (_with_length(GOOD + b"\x80\x63\x00\x01x\x00\x01\x00"), ErrorCode.MALFORMED, "padding"),
    ],
)
def test_garbage_is_refused_with_its_code(data, code, match):
    _expect(data, code, match)


def _setup_with(**values: bytes) -> bytes:
    """Return GOOD with some objects' values (keyed by ObjectType name) replaced."""
    items = _objects_of(Setup(**H, description=DESCRIPTION))
    body = b"".join(_obj(kind, values.get(kind.name, value)) for kind, value in items)
    return _with_length(GOOD[: wire.HEADER_SIZE] + body)


@pytest.mark.parametrize(
    "objects, match",
    [
        ({"REQUESTER": b"al ice"}, "requester id"),
        ({"REQUESTER": b"\xff"}, "UTF-8"),
        ({"FLOW_FILTER": b"\x05" + bytes(23)}, "family 5"),
        ({"FLOW_FILTER": b"\x04\x20" + bytes(22)}, "unknown field bits"),
        ({"FLOW_FILTER": b"\x04\x00\x11" + bytes(21)}, "wildcard field"),
        ({"FLOW_FILTER": b"\x04\x01\x00\x00\x21" + bytes(19)}, "prefix length 33"),
        (
            {"FLOW_FILTER": b"\x04\x01\x00\x00\x08" + bytes(11) + b"\x0a\x00\x00\x01" + bytes(4)},
            "past its /8",
        ),
        (
            {"FLOW_FILTER": b"\x04\x00\x00\x00" + bytes(12) + b"\x0a\x00\x00\x01" + bytes(4)},
            "wildcard address",
        ),
        ({"FLOW_FILTER": b"\x04\x1c\x01" + bytes(21)}, "ports need protocol"),
        ({"FLOW_FILTER": b"\x04\x00" + bytes(18)}, "truncated"),
        ({"FLOW_FILTER": b"\x04\x00" + bytes(26)}, "too many"),
        ({"FLOW_FILTER": b"\x04\x00\x00\x01" + bytes(20)}, "reserved"),
        ({"MODULE_CHAIN": b"\x09\x00\x00\x00"}, "9 modules"),
        ({"MODULE_CHAIN": b"\x00\x00\x00\x00"}, "1..8"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x11"}, "17 parameters"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x01\x01x\x09"}, "parameter type 9"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x01\x01x\x03\x02"}, "bool value 2"),
        (
            {
                "MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x01\x01x\x02"
                + struct.pack("!d", float("nan"))
            },
            "finite",
        ),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x02\x01y\x03\x01\x01x\x03\x01"}, "ascending"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x02\x01x\x03\x01\x01x\x03\x01"}, "ascending"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04null\x01\x01x\x04\xff\xff"}, "truncated"),
        ({"MODULE_CHAIN": b"\x01\x00\x00\x00\x04NULL\x00"}, "module name"),
        ({"LIFETIME": b"\x00\x00\x00\x00"}, "lifetime"),
        ({"LIFETIME": b"\x00\x01\x51\x81"}, "lifetime"),
        ({"LIFETIME": b"\x00\x00\x3c"}, "truncated"),
        ({"NODE_SELECTION": b"\x04\x00\x00\x00"}, "1..16"),
        ({"NODE_SELECTION": b"\x01\x01\x00\x00" + bytes(8)}, "names no nodes"),
        ({"NODE_SELECTION": b"\x07\x00\x00\x00"}, "mode 7"),
        ({"NODE_SELECTION": b"\x04\x11\x00\x00"}, "17 nodes"),
    ],
)
def test_bad_object_values_are_malformed(objects, match):
    _expect(_setup_with(**objects), ErrorCode.MALFORMED, match)


def test_a_huge_datagram_is_refused_before_it_is_read():
    huge = GOOD[:6] + b"\xff\xff" + GOOD[8:] + bytes(64 << 20)
    started = time.perf_counter()
    _expect(huge, ErrorCode.MALFORMED, "more than 1232")
    assert time.perf_counter() - started < 1.0


def test_a_missing_object_is_malformed():
    short = GOOD[: wire.HEADER_SIZE] + GOOD[wire.HEADER_SIZE + 12 :]  # without REQUESTER
    _expect(_with_length(short), ErrorCode.MALFORMED, "lacks REQUESTER")


def test_unknown_objects_marked_ignorable_are_skipped():
    ignorable = _obj(0x8000 | 0x7FFE, b"future")
    message = decode(_with_length(GOOD + ignorable))
    assert message == decode(GOOD)
    ignorable_first = GOOD[:48] + _obj(0x8000, b"x") + GOOD[48:]
    assert decode(_with_length(ignorable_first)) == decode(GOOD)


def test_the_ignore_bit_on_a_known_object_changes_nothing():
    marked = _patch(GOOD, OBJECTS_AT, b"\x80\x01")
    assert decode(marked) == decode(GOOD)


def test_errors_carry_what_the_answer_echoes():
    error = _expect(_patch(GOOD, 20, b"\x00\x00\x00\x01"), ErrorCode.MALFORMED)
    assert error.echo == Echo(wire.MessageType.SETUP, H["session_id"], 1, NONCE)
    assert _expect(b"\x00" * 10, ErrorCode.MALFORMED).echo is None
    assert _expect(_patch(GOOD, 0, b"XX"), ErrorCode.MALFORMED).echo is None
    assert peek_echo(GOOD) == Echo(1, H["session_id"], 1, NONCE) and peek_echo(GOOD).answerable
    answer = _patch(encode(Ack(**H)), 20, b"\x01")
    assert not _expect(answer, ErrorCode.MALFORMED).echo.answerable
    assert not _expect(_patch(GOOD, 3, b"\x90"), ErrorCode.UNKNOWN_MESSAGE_TYPE).echo.answerable


def test_an_ack_names_its_nodes():
    lifetime = _obj(wire.ObjectType.LIFETIME, struct.pack("!I", 5))
    first = _obj(wire.ObjectType.NODE_SELECTION, b"\x01\x00\x00\x00")
    named = _obj(wire.ObjectType.NODE_SELECTION, b"\x04\x01\x00\x00" + bytes(7) + b"\x01")
    head = encode(Ack(**H))
    assert decode(_with_length(head + lifetime + named)).nodes == (1,)
    _expect(_with_length(head + lifetime + first), ErrorCode.MALFORMED, "NAMED")
    _expect(_with_length(head + lifetime), ErrorCode.MALFORMED, "both lifetime and nodes")


def test_flags_belong_to_their_message_types():
    truncated = encode(ProbeResponse(**H, nodes=(NodeInfo(1),), truncated=True))
    assert decode(truncated).truncated
    as_ack = _patch(encode(Ack(**H)), 4, b"\x00\x01")
    _expect(as_ack, ErrorCode.MALFORMED, "flags")
    retransmitted = encode(Refresh(**H, description=DESCRIPTION, retransmission=True))
    assert decode(retransmitted).retransmission
    assert not decode(
        encode(Probe(**H, requester="b", flow=FlowFilter(), nodes=NodeSelection.every()))
    ).retransmission
