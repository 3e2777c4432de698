"""The overlap index answers exactly as testing every held match one by one would."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.flowindex import OverlapIndex
from controller.match import FlowMatch, overlaps, parse_match
from controller.requests import OPERATOR, SessionRequest
from controller.sessions import SessionTable, State

# Few values per field, so that random matches overlap often and often do not.
FIELDS = {
    "ipv4_src": st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.1.0/24", "10.0.0.0/8"]),
    "ipv4_dst": st.sampled_from(["10.0.0.1", "10.0.0.0/30", "10.1.0.0/16"]),
    "udp_dst": st.sampled_from([1, 2]),
    "eth_src": st.sampled_from(["00:00:00:00:00:01", "00:00:00:00:00:00/01:00:00:00:00:00"]),
    "in_port": st.sampled_from([1, 2]),
}
matches = (
    st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1)
    .flatmap(lambda names: st.fixed_dictionaries({n: FIELDS[n] for n in names}))
    .map(parse_match)
)


def brute(held: dict[int, FlowMatch], probe: FlowMatch) -> int | None:
    return min((k for k, m in held.items() if overlaps(m, probe)), default=None)


@settings(max_examples=80, deadline=None)
@given(st.lists(matches, max_size=12), st.lists(st.integers(0, 11)), st.lists(matches, max_size=6))
def test_the_index_finds_the_lowest_overlapping_key_as_a_scan_would(
    added: list[FlowMatch], removed: list[int], probes: list[FlowMatch]
) -> None:
    index, held = OverlapIndex(), {}
    for key, match in enumerate(added):
        index.add(key, match)
        held[key] = match
        assert index.overlapping(match) == brute(held, match)  # projections made early
    for key in removed:
        index.remove(key)
        held.pop(key, None)
    assert len(index) == len(held)
    for probe in probes + added:
        assert index.overlapping(probe) == brute(held, probe)


def test_an_empty_index_and_disjoint_fields():
    index = OverlapIndex()
    assert index.overlapping(parse_match({"udp_dst": 1})) is None
    index.add(7, parse_match({"in_port": 1}))
    # No field in common: some frame matches both.
    assert index.overlapping(parse_match({"udp_dst": 1})) == 7
    index.remove(7)
    index.remove(7)  # forgetting twice is no error
    assert len(index) == 0 and index.overlapping(parse_match({"in_port": 1})) is None


def _request(i: int) -> SessionRequest:
    match = parse_match({"ipv4_src": f"10.0.{i >> 8}.{i & 255}", "udp_dst": 9000})
    return SessionRequest(match, (), 60, OPERATOR)


def test_reserving_costs_the_same_with_ten_thousand_sessions_held():
    table = SessionTable()

    def rate(first: int, count: int) -> float:
        start = time.perf_counter()
        for i in range(first, first + count):
            table.reserve(_request(i), 1, 0)
        return count / (time.perf_counter() - start)

    empty = rate(0, 500)
    for i in range(500, 10_000):
        table.reserve(_request(i), 1, 0)
    full = rate(10_000, 500)
    # A scan over every held session made this about 100 times slower at 10,000.
    assert full > empty / 3, (empty, full)
    # The same match conflicts, at the lowest id, and an ended session frees its space.
    assert table.get(1).match == _request(0).match
    table.move(1, State.ENDED)
    assert table.reserve(_request(0), 1, 0).id == 10_501
