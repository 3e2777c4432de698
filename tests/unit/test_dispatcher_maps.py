"""The dispatcher finds chains by tag and by session among 10,000, without a scan."""

from __future__ import annotations

import time

from nodes.dispatcher import Chain, Dispatcher


def chain(session_id: int, tag: int) -> Chain:
    return Chain(session_id, tag, [], expires=0, lifetime=1)


def test_chains_are_found_by_tag_and_session_as_they_come_and_go() -> None:
    d = Dispatcher()
    first = chain(1, 5000)
    d.put(first)
    again = chain(1, 6000)  # the same session re-attached under another tag
    assert d.put(again) is first
    assert d.by_tag(5000) is None and d.by_tag(6000) is again and d.by_session(1) is again
    other = chain(2, 6000)  # another session's chain takes the tag
    d.put(other)
    assert d.by_tag(6000) is other and d.by_session(1) is None and d.by_session(2) is other
    assert len(d) == 1
    assert d.remove(1) is None and d.remove(2) is other
    assert d.chains() == [] and d.by_tag(6000) is None and len(d) == 0


def test_attaching_and_detaching_cost_the_same_with_10000_chains() -> None:
    d = Dispatcher()

    def put_remove(first: int, count: int) -> float:
        start = time.perf_counter()
        for i in range(first, first + count):
            d.put(chain(i, i))
        for i in range(first, first + count):
            d.remove(i)
        return time.perf_counter() - start

    # The best of several runs: a busy machine or the collector only ever slows one.
    alone = min(put_remove(1, 200) for _ in range(5))
    for i in range(1000, 11_000):
        d.put(chain(i, i))
    crowded = min(put_remove(20_000, 200) for _ in range(5))
    # A scan and a copy of every chain per change made this about 150 times slower.
    assert crowded < alone * 10, (alone, crowded)
    assert len(d.chains()) == 10_000 and d.by_session(5000).tag == 5000
