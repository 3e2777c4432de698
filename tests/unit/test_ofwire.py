"""`controller/ofwire.py` packs the bytes Ryu would send, for every flow NetServ makes."""

from __future__ import annotations

import random

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()

from ryu.ofproto import ofproto_v1_3 as ofp  # noqa: E402
from ryu.ofproto import ofproto_v1_3_parser as parser  # noqa: E402

from controller import ofwire  # noqa: E402
from controller.match import MATCH_FIELDS  # noqa: E402
from controller.messages import (  # noqa: E402
    Barrier,
    FlowAdd,
    FlowDelete,
    MeterAdd,
    Output,
    PopVlan,
    PushVlan,
    ToController,
)
from controller.ofbuild import build  # noqa: E402
from controller.tables import BANDS  # noqa: E402


class _Datapath:
    ofproto, ofproto_parser = ofp, parser


def ryu_bytes(msg: object, xid: int) -> bytes:
    made = build(_Datapath(), msg)
    made.set_xid(xid)
    made.serialize()
    return bytes(made.buf)


def _value(rng: random.Random, name: str) -> object:
    if name.startswith("eth_") and name != "eth_type":
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        if rng.random() < 0.3:
            return mac, ":".join(f"{rng.choice((0, 0xF0, 0xFF)):02x}" for _ in range(6))
        return mac
    if name.startswith("ipv4_"):
        addr = ".".join(str(rng.randrange(256)) for _ in range(4))
        if rng.random() < 0.4:
            bits = rng.randrange(1, 32)
            mask = ((1 << 32) - 1) ^ ((1 << (32 - bits)) - 1)
            return addr, ".".join(str(mask >> s & 0xFF) for s in (24, 16, 8, 0))
        return addr
    if name.startswith("ipv6_"):
        addr = ":".join(f"{rng.randrange(1 << 16):x}" for _ in range(8))
        return (addr, "ffff:ffff:ffff:ff00::") if rng.random() < 0.4 else addr
    width = {"in_port": 32, "eth_type": 16, "tcp_src": 16, "tcp_dst": 16}.get(name, 8)
    width = 16 if name.startswith("udp_") else width
    return rng.randrange(1 << width) if name != "in_port" else rng.randrange(1, 1 << 20)


def _match(rng: random.Random) -> tuple[tuple[str, object], ...]:
    names = rng.sample(MATCH_FIELDS, rng.randrange(0, 6))
    return tuple((n, _value(rng, n)) for n in names)


def _actions(rng: random.Random) -> tuple[object, ...]:
    pool = [
        lambda: Output(rng.randrange(1, 1 << 16)),
        lambda: PushVlan(rng.randrange(1, 4095), rng.choice((0, 0, 3, 7))),
        PopVlan,
        ToController,
    ]
    return tuple(rng.choice(pool)() for _ in range(rng.randrange(0, 4)))


@pytest.mark.parametrize("seed", range(300))
def test_a_flow_add_is_the_bytes_ryu_sends(seed: int) -> None:
    rng = random.Random(seed)
    band = rng.choice(BANDS)
    msg = FlowAdd(
        band.table,
        rng.randint(band.low, band.high),
        _match(rng),
        actions=_actions(rng),
        goto=rng.choice((None, rng.randrange(1, 5))),
        cookie=rng.randrange(1 << 64),
        idle_timeout=rng.choice((0, rng.randrange(1 << 16))),
        hard_timeout=rng.choice((0, rng.randrange(1 << 16))),
        notify_removal=rng.random() < 0.5,
        meter=rng.choice((None, rng.randrange(1, 100))),
    )
    xid = rng.randrange(1 << 32)
    assert ofwire.encode(msg, xid) == ryu_bytes(msg, xid)


@pytest.mark.parametrize("seed", range(100))
def test_a_flow_delete_is_the_bytes_ryu_sends(seed: int) -> None:
    rng = random.Random(seed)
    msg = FlowDelete(
        rng.randrange(1 << 64),
        rng.choice((0, (1 << 64) - 1, 0xFFFF0000)),
        table=rng.choice((None, rng.randrange(0, 4))),
        match=_match(rng),
        priority=rng.choice((None, rng.randrange(1 << 16))),
    )
    assert ofwire.encode(msg, 7) == ryu_bytes(msg, 7)


def test_a_barrier_is_the_bytes_ryu_sends() -> None:
    assert ofwire.encode(Barrier(), 12345) == ryu_bytes(Barrier(), 12345)


def test_what_is_not_encoded_here_is_left_to_ryu() -> None:
    assert ofwire.encode(MeterAdd(1, 10, 10), 1) is None
    odd = FlowAdd(0, 1000, (("mpls_label", 5),))
    assert ofwire.encode(odd, 1) is None
