"""Reconciling a switch's flows with what it should hold, on a simulated switch.

The switch keeps what is right (counters and timers untouched, not a frame missed),
loses what is wrong or unknown, and gains what is missing.
"""

from dataclasses import replace

import pytest

from controller import tables
from controller.match import parse_match
from controller.messages import Barrier, FlowAdd, FlowDelete, Output, as_match
from controller.pipeline import (
    base_flows,
    learn,
    present_request,
    reconcile,
    reinstall,
    session_detour,
)
from controller.requests import ModuleSpec
from controller.sessions import Session, State
from tests.unit.flowsim import SimSwitch

AGENT = 4
H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"


def session(sid: int, match: dict, tag: int) -> Session:
    return Session(
        sid, 1, tag, parse_match(match), (ModuleSpec("counter", ()),), 60, 0.0, 60.0, State.ACTIVE
    )


S1 = session(1, {"ipv4_src": "10.0.0.1", "udp_dst": 9000}, tag=1)
S2 = session(2, {"udp_dst": 9001}, tag=2)


def frame(dport: int, in_port: int = 1) -> dict:
    return {
        "in_port": in_port,
        "eth_src": H1,
        "eth_dst": H2,
        "eth_type": 0x0800,
        "ip_proto": 17,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": "10.0.0.2",
        "udp_dst": dport,
    }


def expected(*sessions: Session, port: int = AGENT) -> list[FlowAdd]:
    return base_flows(port) + [session_detour(s, port, 100) for s in sessions]


KNOWN = {H1: 1, H2: 2}  # the hosts the controller has learned, at their ports


def sync(sim: SimSwitch, want: list[FlowAdd], known: dict[str, int] = KNOWN) -> list:
    """Reconcile `sim` with `want` as the controller does; return the messages sent."""
    msgs = reconcile(want, sim.answer(present_request()), known)
    sim.apply(msgs)
    return msgs


@pytest.fixture
def sim() -> SimSwitch:
    """A switch serving S1 and S2, with two hosts learned and a flow of another app."""
    sim = SimSwitch()
    sim.apply(reinstall(expected(S1, S2)))
    sim.apply(learn({}, 1, H1, [AGENT]) + learn({}, 2, H2, [AGENT]))
    sim.apply([FlowAdd(tables.CLASSIFY, 1500, as_match({"udp_dst": 7}), cookie=0xABC)])
    for _ in range(3):
        sim.process(frame(9000))
    sim.added.clear()
    return sim


def test_a_switch_that_holds_what_it_should_is_sent_nothing_and_loses_nothing(sim):
    assert sync(sim, expected(S1, S2)) == []
    assert sim.added == [] and sim.deleted == []
    assert sim.packets_of(S1.cookie) == 3  # its counters run on
    assert sim.process(frame(9000)).outputs == [(AGENT, S1.tag)]


def test_an_empty_switch_gets_the_pipeline_and_the_detours():
    sim = SimSwitch()
    msgs = sync(sim, expected(S1))
    assert isinstance(msgs[-1], Barrier) and not any(isinstance(m, FlowDelete) for m in msgs)
    assert sim.process(frame(9000)).outputs == [(AGENT, S1.tag)]
    assert sim.process(frame(9001)).to_controller == [tables.LEARN, tables.FORWARD]


def test_a_detour_no_session_owns_is_deleted_by_its_exact_cookie_and_nothing_else(sim):
    msgs = sync(sim, expected(S1))  # S2 is gone
    assert msgs == [FlowDelete(S2.cookie, tables.COOKIE_ALL), Barrier()]
    assert [f.cookie for f in sim.deleted] == [S2.cookie]
    assert sim.process(frame(9001)).outputs == [(2, None)]  # served by forwarding again
    assert sim.packets_of(S1.cookie) == 3


def test_a_wrong_detour_is_replaced_and_the_right_ones_kept(sim):
    moved = replace(S2, tag=9)  # say the tag changed while the controller was away
    msgs = sync(sim, expected(S1, moved))
    assert msgs == [
        FlowDelete(S2.cookie, tables.COOKIE_ALL),
        session_detour(moved, AGENT, 100),
        Barrier(),
    ]
    assert sim.process(frame(9001)).outputs == [(AGENT, 9)]
    assert [f.cookie for f in sim.deleted] == [S2.cookie] and sim.packets_of(S1.cookie) == 3


def test_a_stale_base_flow_is_deleted_strictly_so_the_others_sharing_its_cookie_stay(sim):
    msgs = sync(sim, expected(S1, S2, port=5))  # the agent's port is 5 now
    (strict,) = [m for m in msgs if isinstance(m, FlowDelete) and m.priority is not None]
    assert (strict.table, strict.priority, strict.match) == (0, 3000, as_match({"in_port": AGENT}))
    base = tables.cookie(tables.KIND_BASE)
    assert [f.match for f in sim.deleted if f.cookie == base] == [as_match({"in_port": AGENT})]
    # the detours pointed at the old port too: replaced, now to port 5
    assert sim.process(frame(9000)).outputs == [(5, S1.tag)]
    assert sim.process(frame(9000, in_port=5)).outputs == [(2, None)]  # back from the agent


def test_a_base_flow_with_the_wrong_actions_is_overwritten_without_a_delete(sim):
    miss = base_flows(None)[2]
    sim.apply([replace(miss, actions=(Output(1),))])
    msgs = sync(sim, expected(S1, S2))
    assert msgs == [miss, Barrier()] and sim.deleted == []


def test_learned_flows_the_controller_knows_and_other_apps_flows_are_kept(sim):
    learned = set(sim.with_cookie(tables.cookie(tables.KIND_LEARNED)))
    sync(sim, expected())  # no session any more
    assert set(sim.with_cookie(tables.cookie(tables.KIND_LEARNED))) == learned
    assert sim.with_cookie(0xABC) != []
    result = sim.process(frame(9000))
    assert result.outputs == [(2, None)] and result.to_controller == []


def test_hosts_the_controller_does_not_know_are_learned_again_at_their_next_frame(sim):
    msgs = sync(sim, expected(S1, S2), known={H2: 2})  # as after a restart that saw H2 only
    assert [(m.table, dict(m.match)) for m in msgs if isinstance(m, FlowDelete)] == [
        (tables.LEARN, {"in_port": 1, "eth_src": H1})
    ]
    h1 = sim.process(frame(9002))  # not detoured: learned again, forwarded meanwhile
    assert h1.to_controller == [tables.LEARN] and h1.outputs == [(2, None)]
    assert sync(sim, expected(S1, S2), known={}) != []  # a controller that knows no host
    assert not [f for f in sim.flows if f.table == tables.LEARN and f.priority > 0]
    assert sim.process(frame(9000)).outputs == [(AGENT, S1.tag)]  # detours untouched
    assert sim.packets_of(S1.cookie) == 4


def test_deletes_come_before_adds_and_one_barrier_ends_the_batch(sim):
    s3 = session(3, {"udp_dst": 9002}, tag=3)
    msgs = sync(sim, expected(S1, s3))
    kinds = [type(m) for m in msgs]
    assert kinds == [FlowDelete, FlowAdd, Barrier]


@pytest.mark.parametrize(
    "spelled",
    [
        {"ipv4_src": ("10.0.0.1", "255.255.255.255")},  # a mask of all ones
        {"ipv6_src": "2001:0db8:0000:0000:0000:0000:0000:0001"},  # the long form
        {"eth_src": "AA:BB:CC:DD:EE:FF"},  # upper case
    ],
)
def test_a_match_the_switch_spells_its_own_way_still_counts_as_the_same(spelled):
    name, raw = next(iter(spelled.items()))
    canonical = {
        "ipv4_src": "10.0.0.1",
        "ipv6_src": "2001:db8::1",
        "eth_src": "aa:bb:cc:dd:ee:ff",
    }[name]
    ours = session(7, {name: canonical}, tag=7)
    sim = SimSwitch()
    sim.apply(reinstall(expected()))
    detour = session_detour(ours, AGENT, 100)
    fields = dict(detour.match) | {name: raw}
    sim.apply([replace(detour, match=as_match(fields))])
    assert reconcile(expected(ours), sim.answer(present_request())) == []
