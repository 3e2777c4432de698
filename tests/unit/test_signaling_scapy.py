"""The scapy layer and the codec agree: scapy-built packets decode with the codec, and
codec-built bytes dissect in scapy with the same field values."""

import ipaddress
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from signaling.auth import sign, verify
from signaling.codec import decode, encode
from signaling.errors import ErrorCode
from signaling.messages import Ack, ErrorReply, Probe, ProbeResponse, Setup
from signaling.scapy_layer import (
    NetServSignal,
    NSAuth,
    NSError,
    NSFlowFilter,
    NSLifetime,
    NSModule,
    NSModuleChain,
    NSNodeInfo,
    NSNodeSelection,
    NSObject,
    NSParam,
    NSRequester,
)
from signaling.values import FlowFilter, ModuleRef, NodeInfo, NodeSelection, PortRange
from signaling.wire import SIGNALING_PORT, NodeMode, ParamType
from tests.unit.signaling_samples import HEADER, KEY, NONCE, RICH, samples

H = {**HEADER, "nonce": NONCE}


def _header(pkt: NetServSignal) -> dict:
    return {
        "session_id": pkt.session_id,
        "sequence": pkt.sequence,
        "timestamp_ms": pkt.timestamp,
        "nonce": pkt.nonce,
    }


def test_a_setup_built_in_scapy_decodes_with_the_codec():
    pkt = NetServSignal(
        type="SETUP",
        session_id=H["session_id"],
        sequence=1,
        timestamp=H["timestamp_ms"],
        nonce=NONCE,
        objects=[
            NSRequester(requester=b"alice@h1"),
            NSFlowFilter(
                family=4,
                present="src+dst+protocol+dport",
                protocol=17,
                src_prefix=32,
                dst_prefix=24,
                dport_low=9000,
                dport_high=9010,
                src="10.0.0.1",
                dst="10.0.1.0",
            ),
            NSModuleChain(
                modules=[
                    NSModule(module=b"null"),
                    NSModule(
                        module=b"counter",
                        params=[
                            NSParam(pname=b"a", ptype=ParamType.BOOL, bool_value=1),
                            NSParam(pname=b"b", ptype=ParamType.FLOAT64, float_value=2.5),
                            NSParam(pname=b"c", ptype=ParamType.INT64, int_value=-3),
                            NSParam(pname=b"d", ptype=ParamType.STRING, str_value="é".encode()),
                        ],
                    ),
                ]
            ),
            NSLifetime(lifetime=90),
            NSNodeSelection(mode=NodeMode.NAMED, dpids=[3, 1]),
        ],
    )
    message = decode(bytes(pkt))
    assert isinstance(message, Setup)
    assert message.session_id == H["session_id"] and message.nonce == NONCE
    d = message.description
    assert d.requester == "alice@h1"
    assert d.flow == FlowFilter(
        src="10.0.0.1/32", dst="10.0.1.0/24", protocol=17, dst_ports=PortRange(9000, 9010)
    )
    assert d.chain == (
        ModuleRef("null"),
        ModuleRef("counter", {"a": True, "b": 2.5, "c": -3, "d": "é"}),
    )
    assert d.lifetime == 90 and d.nodes == NodeSelection.named(3, 1)


def test_scapy_built_answers_decode_with_the_codec():
    probe_response = NetServSignal(
        type="PROBE_RESPONSE",
        flags="truncated",
        **_header_fields(),
        objects=[
            NSNodeInfo(dpid=1, sessions=2, load=300, modules=[]),
            NSNodeInfo(dpid=2, sessions=0, load=0),
        ],
    )
    assert decode(bytes(probe_response)) == ProbeResponse(
        **H, nodes=(NodeInfo(1, (), 300, 2), NodeInfo(2)), truncated=True
    )
    err = NetServSignal(type="ERROR", **_header_fields(), objects=[NSError(code=401, reason=b"x")])
    assert decode(bytes(err)) == ErrorReply(**H, code=ErrorCode.CONFLICT, reason="x")
    ack = NetServSignal(
        type="ACK",
        **_header_fields(),
        objects=[NSLifetime(lifetime=5), NSNodeSelection(mode="NAMED", dpids=[9])],
    )
    assert decode(bytes(ack)) == Ack(**H, lifetime=5, nodes=(9,))


def _header_fields() -> dict:
    return {
        "session_id": H["session_id"],
        "sequence": H["sequence"],
        "timestamp": H["timestamp_ms"],
        "nonce": NONCE,
    }


def test_an_ignorable_unknown_object_from_scapy_is_skipped():
    ack = NetServSignal(
        type="ACK", **_header_fields(), objects=[NSObject(ignore=1, type=99, value=b"abc")]
    )
    assert decode(bytes(ack)) == Ack(**H)


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_codec_bytes_dissect_in_scapy_and_rebuild_identically(message):
    data = encode(message)
    pkt = NetServSignal(data)
    assert bytes(pkt) == data
    assert pkt.type == message.TYPE and pkt.length == len(data)
    assert _header(pkt) == {k: getattr(message, k) for k in _header(pkt)}
    assert not any(isinstance(o, NSObject) for o in pkt.objects)


def _param_value(p: NSParam) -> object:
    if p.ptype == ParamType.INT64:
        return p.int_value
    if p.ptype == ParamType.FLOAT64:
        return p.float_value
    if p.ptype == ParamType.BOOL:
        return bool(p.bool_value)
    return p.str_value.decode()


def test_a_rich_setup_dissects_with_the_same_values():
    message = Setup(**H, description=RICH, retransmission=True)
    pkt = NetServSignal(sign(message, KEY))
    assert pkt.flags.retransmission
    requester, flow, chain, lifetime, nodes, auth = pkt.objects
    assert requester.requester.decode() == RICH.requester
    assert flow.family == 6 and flow.protocol == 6
    assert ipaddress.ip_network(f"{flow.src}/{flow.src_prefix}") == RICH.flow.src
    assert ipaddress.ip_network(f"{flow.dst}/{flow.dst_prefix}") == RICH.flow.dst
    assert (flow.sport_low, flow.sport_high, flow.dport_low, flow.dport_high) == (
        1024,
        65535,
        443,
        443,
    )
    assert [m.module.decode() for m in chain.modules] == [m.name for m in RICH.chain]
    values = {p.pname.decode(): _param_value(p) for p in chain.modules[1].params}
    assert values == dict(RICH.chain[1].params)
    assert lifetime.lifetime == RICH.lifetime
    assert nodes.mode == NodeMode.NAMED and nodes.dpids == list(RICH.nodes.dpids)
    assert isinstance(auth, NSAuth) and auth.key_id == KEY.key_id
    assert auth.mac == decode(bytes(pkt)).auth.mac


def test_the_layer_is_bound_to_the_signaling_port_both_ways():
    data = sign(
        Probe(**H, requester="bob", flow=FlowFilter(family=6), nodes=NodeSelection.every()), KEY
    )
    request = IPv6(dst="fd00::2") / UDP(sport=40000, dport=SIGNALING_PORT) / NetServSignal(data)
    answer = IP(dst="10.0.0.1") / UDP(sport=SIGNALING_PORT, dport=40000) / NetServSignal(data)
    for pkt, outer in ((request, IPv6), (answer, IP)):
        dissected = outer(bytes(pkt))
        assert NetServSignal in dissected
        payload = bytes(dissected[UDP].payload)
        verify(payload, decode(payload), KEY.secret)


def test_the_example_in_the_docs_runs():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "signaling.md").read_text()
    code = doc.split("## Crafting and reading messages")[1].split("```python\n")[1]
    namespace: dict = {}
    exec(code.split("```")[0], namespace)
    assert decode(namespace["data"]).description == namespace["d"]
    assert bytes(namespace["pkt"][NetServSignal]) == namespace["data"]
