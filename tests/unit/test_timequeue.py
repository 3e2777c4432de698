"""The tick's questions (which sessions expired, whose timer is due, which nodes hold
suspended ones) answered from queues give exactly what a look at every session gives."""

from __future__ import annotations

import random

import pytest

from controller.match import parse_match
from controller.requests import ModuleSpec, SessionRequest
from controller.sessions import TRANSITIONS, SessionTable, State
from controller.timequeue import TimeQueue


def _scan_expired(table: SessionTable, now: float) -> list[int]:
    return sorted(
        s.id
        for s in table.values()
        if s.state in (State.ACTIVE, State.SUSPENDED) and s.expires <= now
    )


def _scan_rearm(table: SessionTable, now: float, margin: float) -> list[int]:
    return sorted(
        s.id
        for s in table.values()
        if s.state is State.ACTIVE and s.armed_until < s.expires and s.armed_until - now <= margin
    )


def test_a_time_moved_later_is_found_at_the_new_time_and_earlier_at_once() -> None:
    times = {1: 10.0, 2: 20.0}
    queue = TimeQueue()
    for sid, at in times.items():
        queue.add(sid, at)
    times[1] = 30.0  # later: no new entry
    assert queue.due(15.0, times.get) == [] and len(queue) == 2
    queue.moved(2, 20.0, 5.0)
    times[2] = 5.0
    assert queue.due(15.0, times.get) == [2]
    assert queue.due(15.0, times.get) == [2]  # still due until it moves or goes
    del times[2]
    assert queue.due(40.0, times.get) == [1]
    assert len(queue) == 1


@pytest.mark.parametrize("seed", range(20))
def test_queues_agree_with_a_scan_of_every_session(seed: int) -> None:
    rng = random.Random(seed)
    table = SessionTable()
    modules = (ModuleSpec("null", ()),)
    now, port = 0.0, 0
    for _ in range(400):
        now += rng.choice((0.0, 0.5, 1.0, 7.0))
        live = list(table.values())
        if not live or rng.random() < 0.3:
            port += 1
            request = SessionRequest(parse_match({"udp_dst": port}), modules, rng.randint(1, 30))
            table.reserve(request, rng.randint(1, 3), now)
            continue
        session = rng.choice(live)
        to = rng.choice(sorted(TRANSITIONS[session.state], key=lambda s: s.value))
        changes: dict[str, object] = {}
        if rng.random() < 0.5:
            changes["expires"] = now + rng.uniform(-5, 40)
        if rng.random() < 0.5:
            changes["armed_until"] = now + rng.uniform(-5, 40)
        table.move(session.id, to, **changes)
        margin = rng.choice((0.0, 3.0))
        assert [s.id for s in table.expired(now)] == _scan_expired(table, now)
        assert [s.id for s in table.rearm_due(now, margin)] == _scan_rearm(table, now, margin)
        suspended = sorted({s.node for s in table.values() if s.state is State.SUSPENDED})
        assert table.suspended_nodes() == suspended


def test_entries_of_sessions_gone_do_not_pile_up() -> None:
    table = SessionTable()
    modules = (ModuleSpec("null", ()),)
    for port in range(1, 5001):
        request = SessionRequest(parse_match({"udp_dst": port}), modules, 3600)
        session = table.reserve(request, 1, 0.0)
        table.move(session.id, State.ENDED)
    assert len(table._by_expiry) <= 1024 and len(table._by_timer) <= 1024
