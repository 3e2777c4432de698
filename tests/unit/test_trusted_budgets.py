"""Budgets in the trusted tier: a module in the agent's own loop is held to its frame rate
(per frame, only when it declares one) and to its time per frame (measured on a sample of
its frames), and quarantined when it overspends, as an isolated one is."""

from __future__ import annotations

import pytest

from nodes import dispatcher
from nodes.dispatcher import SAMPLE_EVERY, Dispatcher
from nodes.sandbox.budgets import Budget
from nodes.sandbox.guard import Guard, Quarantined
from tests.unit.conftest import Clock
from tests.unit.test_sandbox_chain import Count, FakeIsolated, frames, guard, install


def trusted(failure="open", clock=None, **budget) -> Guard:
    return Guard("trusted", failure, Budget(**budget), clock or Clock())


@pytest.mark.parametrize("failure, forwarded", [("open", 30), ("closed", 10)])
def test_frames_over_a_trusted_modules_rate_pass_it_by(failure, forwarded):
    clock = Clock()
    d = Dispatcher(clock)
    count, after = Count(), Count()
    chain = install(
        d,
        10,
        [("count", count), ("after", after)],
        [trusted(failure, clock, frames_per_second=100), Guard()],
    )
    assert chain.rated
    assert d.run_batch(frames(30)).forwarded == forwarded
    assert len(count.seen) == 10  # a tenth of a second's worth
    assert len(after.seen) == forwarded  # the others went on without it (open) or not at all
    entry = chain.stats()["modules"][0]
    assert entry["over_rate"] == 20 and entry["unprocessed"] == 20
    assert entry["state"] == "running" and chain.dropped == 30 - forwarded


@pytest.mark.parametrize("failure, forwarded", [("open", 30), ("closed", 10)])
def test_a_trusted_modules_rate_holds_in_a_chain_with_an_isolated_module(failure, forwarded):
    clock = Clock()
    d = Dispatcher(clock)
    fake, count = FakeIsolated(), Count()
    chain = install(
        d,
        10,
        [("fake", fake), ("count", count)],
        [guard(), trusted(failure, clock, frames_per_second=100)],
    )
    assert chain.batched
    out = d.run_batch(frames(30))
    assert out.forwarded == forwarded and len(count.seen) == 10
    assert [bytes(f)[0] for f in out.frames] == list(range(30))[
        : forwarded if failure == "closed" else 30
    ]
    assert chain.stats()["modules"][1]["over_rate"] == 20


def test_a_trusted_module_slower_than_its_time_budget_is_quarantined(monkeypatch):
    cpu = [0.0]

    def thread_time() -> float:  # each reading 5 ms after the last: 5 ms a frame
        cpu[0] += 0.005
        return cpu[0]

    monkeypatch.setattr(dispatcher, "thread_time", thread_time)
    d = Dispatcher()
    count = Count()
    chain = install(d, 10, [("count", count)], [trusted(time_per_frame=0.001)])
    assert not chain.rated
    for _ in range(40):
        d.run_batch(frames(SAMPLE_EVERY))
    entry = chain.stats()["modules"][0]
    assert entry["state"] == "quarantined" and "over its time budget" in entry["reason"]
    assert isinstance(chain.modules[0][1], Quarantined)
    # 0.1 s of credit, 5 ms spent and 1 ms earned on each sampled frame (the first
    # earns nothing: the credit is full): the 25th overdraws it, and it runs no more
    assert len(count.seen) == 25 * SAMPLE_EVERY
    assert chain.returned == 0 and chain.packets == 40 * SAMPLE_EVERY


def test_a_trusted_module_within_its_time_budget_runs_on(monkeypatch):
    cpu = [0.0]

    def thread_time() -> float:
        cpu[0] += 0.0005
        return cpu[0]

    monkeypatch.setattr(dispatcher, "thread_time", thread_time)
    d = Dispatcher()
    count = Count()
    chain = install(d, 10, [("count", count)], [trusted(time_per_frame=0.001)])
    for _ in range(100):
        assert d.run_batch(frames(SAMPLE_EVERY)).forwarded == SAMPLE_EVERY
    assert chain.stats()["modules"][0]["state"] == "running"
    assert len(count.seen) == 100 * SAMPLE_EVERY
