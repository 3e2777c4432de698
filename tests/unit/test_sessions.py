import itertools
from dataclasses import replace

import pytest

from controller.errors import Conflict, NotFound
from controller.match import parse_match
from controller.requests import ModuleSpec, SessionRequest
from controller.sessions import TRANSITIONS, SessionTable, State

COUNTER = (ModuleSpec("counter", ()),)
# A way to reach each state from a fresh reservation, through allowed transitions only.
PATH_TO = {
    State.PENDING_ROUTABILITY: [],  # reserved so (see `reserved`)
    State.INSTALLING: [],
    State.ACTIVE: [State.ACTIVE],
    State.REFRESHING: [State.ACTIVE, State.REFRESHING],
    State.SUSPENDED: [State.ACTIVE, State.SUSPENDED],
    State.RESUMING: [State.ACTIVE, State.SUSPENDED, State.RESUMING],
    State.ENDING: [State.ACTIVE, State.ENDING],
    State.ENDED: [State.ENDED],
}


def req(match: dict, lifetime: int = 10) -> SessionRequest:
    return SessionRequest(parse_match(match), COUNTER, lifetime)


def test_life_of_a_session():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), node=1, now=100.0)
    assert s.state is State.INSTALLING and s.id == 1 and s.tag == 1 and s.expires == 110.0
    assert table.expired(200.0) == []  # not active yet: not expired by the clock
    table.move(s.id, State.ACTIVE, armed_until=120.0)
    table.move(s.id, State.REFRESHING)
    assert table.move(s.id, State.ACTIVE, lifetime=30, expires=135.0).expires == 135.0
    assert [x.id for x in table.expired(135.0)] == [1]
    assert table.move(s.id, State.ENDING).state is State.ENDING
    assert table.expired(135.0) == []  # already ending: not ended twice
    assert table.move(s.id, State.ENDED).state is State.ENDED
    with pytest.raises(NotFound):
        table.get(s.id)


@pytest.mark.parametrize("before, after", list(itertools.product(State, State)))
def test_only_the_transitions_in_the_table_are_allowed(before, after):
    table = SessionTable()
    start = State.PENDING_ROUTABILITY if before is State.PENDING_ROUTABILITY else State.INSTALLING
    s = table.reserve(req({"udp_dst": 1}), node=1, now=0.0, state=start)
    for step in PATH_TO[before]:
        s = table.move(s.id, step)
    if before is State.ENDED:  # forgotten: nothing can happen to it any more
        with pytest.raises(NotFound):
            table.move(s.id, after)
    elif after in TRANSITIONS[before]:
        assert table.move(s.id, after).state is after
    else:
        with pytest.raises(Conflict, match=rf"^cannot \w+ session {s.id}: it (is|has) "):
            table.move(s.id, after)
        assert table.get(s.id).state is before  # a refused transition changes nothing


def test_every_state_has_a_row_and_ended_is_final():
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.ENDED] == frozenset()
    # a reservation starts in one of these; only a passed check leads to INSTALLING
    assert all(State.PENDING_ROUTABILITY not in targets for targets in TRANSITIONS.values())
    assert [s for s, targets in TRANSITIONS.items() if State.INSTALLING in targets] == [
        State.PENDING_ROUTABILITY
    ]


def test_a_reservation_pending_its_check_holds_the_flow_and_can_only_go_on_or_end():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), 1, 0, state=State.PENDING_ROUTABILITY)
    assert s.state is State.PENDING_ROUTABILITY and s.to_json(0)["state"] == "pending-routability"
    with pytest.raises(Conflict, match="overlaps session"):
        table.reserve(req({"udp_dst": 1}), node=1, now=0)
    for refused in (State.ACTIVE, State.REFRESHING, State.ENDING):
        with pytest.raises(Conflict, match="awaiting its return-routability check"):
            table.move(s.id, refused)
    assert table.expired(100.0) == [] and table.rearm_due(100.0, 5) == []
    assert table.move(s.id, State.INSTALLING).state is State.INSTALLING
    with pytest.raises(ValueError, match="cannot start active"):
        table.reserve(req({"udp_dst": 2}), 1, 0, state=State.ACTIVE)


def test_teardown_of_a_session_still_installing_says_so():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), 1, 0)
    with pytest.raises(Conflict, match=f"cannot end session {s.id}: it is still being installed"):
        table.move(s.id, State.ENDING)
    with pytest.raises(Conflict, match="still being installed"):
        table.move(s.id, State.REFRESHING)


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


def test_an_ending_session_holds_its_flow_space_and_tag_until_it_has_ended():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), 1, 0)
    table.move(s.id, State.ACTIVE)
    table.move(s.id, State.ENDING)
    with pytest.raises(Conflict, match="overlaps session 1"):
        table.reserve(req({"udp_dst": 1}), 1, 0)
    table.move(s.id, State.ENDED)
    assert table.reserve(req({"udp_dst": 1}), 1, 0).tag != s.tag


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
    table.move(a.id, State.ENDED)
    c = table.reserve(req({"udp_dst": 3}), 1, 0)
    assert (a.tag, b.tag, c.tag) == (1, 2, 3)
    assert table.reserve(req({"udp_dst": 4}), 2, 0).tag == 1


def test_rearm_is_due_shortly_before_a_capped_timer_runs_out_not_at_the_sessions_end():
    table = SessionTable()
    long = table.reserve(req({"udp_dst": 1}, lifetime=86_400), 1, 0.0)
    table.move(long.id, State.ACTIVE, armed_until=3600.0)  # capped: ends long before the session
    short = table.reserve(req({"udp_dst": 2}, lifetime=100), 1, 0.0)
    table.move(short.id, State.ACTIVE, armed_until=110.0)  # lifetime + grace: never re-armed
    installing = table.reserve(req({"udp_dst": 3}, lifetime=86_400), 1, 0.0)
    assert table.rearm_due(now=3539.0, margin=60.0) == []
    assert [s.id for s in table.rearm_due(now=3540.0, margin=60.0)] == [long.id]
    assert [s.id for s in table.rearm_due(now=5000.0, margin=60.0)] == [long.id]  # overdue too
    assert short.id not in [s.id for s in table.rearm_due(now=109.0, margin=60.0)]
    assert installing.id not in [s.id for s in table.rearm_due(now=9e9, margin=60.0)]


def test_restored_sessions_keep_their_ids_and_tags_from_new_reservations():
    changes = []
    first = SessionTable()
    a = first.move(first.reserve(req({"udp_dst": 1}), node=1, now=0.0).id, State.ACTIVE)
    b = first.reserve(req({"udp_dst": 2}), node=1, now=0.0)
    table = SessionTable(on_change=changes.append)
    assert table.restore(a) == a and table.get(a.id) == a
    table.restore(replace(b, state=State.ENDED))  # ended on restart: not taken back
    assert [s.id for s in table.all()] == [a.id]
    assert [(s.id, s.state) for s in changes] == [(a.id, State.ACTIVE), (b.id, State.ENDED)]
    new = table.reserve(req({"udp_dst": 3}), node=1, now=0.0)
    assert (new.id, new.tag) == (b.id + 1, b.tag + 1)
    with pytest.raises(ValueError):
        table.restore(a)


def test_a_suspended_session_expires_by_the_clock_and_resumes_only_through_resuming():
    table = SessionTable()
    s = table.reserve(req({"udp_dst": 1}), node=1, now=100.0)
    table.move(s.id, State.ACTIVE)
    table.move(s.id, State.SUSPENDED)
    assert table.move(s.id, State.SUSPENDED, expires=150.0).expires == 150.0  # refreshed
    assert table.expired(149.0) == [] and [x.id for x in table.expired(150.0)] == [s.id]
    with pytest.raises(Conflict, match="it is suspended"):
        table.move(s.id, State.ACTIVE)
    table.move(s.id, State.RESUMING)
    assert table.expired(150.0) == []  # being resumed: the resume settles it first
    assert table.move(s.id, State.ACTIVE).state is State.ACTIVE
