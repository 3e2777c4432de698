import pytest

from controller.errors import Conflict, NotFound
from controller.match import parse_match
from controller.requests import ModuleSpec, SessionRequest
from controller.sessions import SessionTable, State

COUNTER = (ModuleSpec("counter", ()),)


def req(match: dict, lifetime: int = 10) -> SessionRequest:
    return SessionRequest(parse_match(match), COUNTER, lifetime)


def test_life_of_a_session():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), node=1, now=100.0)
    assert s.state is State.INSTALLING and s.id == 1 and s.tag == 1 and s.expires == 110.0
    assert table.expired(200.0) == []  # not active yet: not expired by the clock
    table.activate(s.id)
    assert table.refresh(s.id, 30, now=105.0).expires == 135.0
    assert [x.id for x in table.expired(135.0)] == [1]
    table.discard(s.id)
    with pytest.raises(NotFound):
        table.get(s.id)


def test_overlapping_flows_at_the_same_specificity_conflict_but_not_across_nodes():
    table = SessionTable()
    table.reserve(req({"udp_dst": 1}), node=1, now=0)
    with pytest.raises(Conflict, match="overlaps session 1"):
        table.reserve(req({"udp_dst": 1}), node=1, now=0)
    table.reserve(req({"udp_dst": 1}), node=2, now=0)
    table.reserve(req({"udp_dst": 2}), node=1, now=0)
    more_specific = table.reserve(req({"udp_dst": 1, "ipv4_src": "10.0.0.1"}), node=1, now=0)
    assert more_specific.priority > table.get(1).priority
    assert len(table) == 4


def test_failed_reservation_leaves_nothing():
    table = SessionTable()
    with pytest.raises(Conflict):
        table.reserve(req({"udp_dst": 1}), 1, 0)
        table.reserve(req({"udp_dst": 1}), 1, 0)
    assert [s.id for s in table.all()] == [1]


def test_tags_are_unique_per_node_and_not_reused_at_once():
    table = SessionTable()
    a = table.reserve(req({"udp_dst": 1}), 1, 0)
    b = table.reserve(req({"udp_dst": 2}), 1, 0)
    table.discard(a.id)
    c = table.reserve(req({"udp_dst": 3}), 1, 0)
    assert (a.tag, b.tag, c.tag) == (1, 2, 3)
    assert table.reserve(req({"udp_dst": 4}), 2, 0).tag == 1


def test_refresh_of_a_session_still_installing_is_refused():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), 1, 0)
    with pytest.raises(Conflict):
        table.refresh(s.id, 5, 1)
