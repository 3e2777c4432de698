"""A session's tag on the wire: written by the detour's actions, read back by the agent."""

from __future__ import annotations

import pytest

from agentproto.limits import SESSION_TAGS
from agentproto.tags import TAG_OF_TCI, tag_of_tci, tag_tci
from controller.messages import FlowAdd, Output, PopVlan, PushVlan
from controller.pipeline import to_agent
from tests.unit.flowsim import SimSwitch


def test_every_tag_is_one_tci_and_back() -> None:
    assert len(SESSION_TAGS) >= 10_000  # a node holds 10,000 sessions
    seen = set()
    for tag in SESSION_TAGS:
        pcp, vid = tag_tci(tag)
        tci = pcp << 13 | vid
        assert TAG_OF_TCI[tci] == tag_of_tci(tci) == tag
        seen.add(tci)
    assert len(seen) == len(SESSION_TAGS)


def test_the_first_4094_tags_are_the_vlan_id_alone() -> None:
    assert [tag_tci(t) for t in (1, 4094, 4095, 8188, SESSION_TAGS[-1])] == [
        (0, 1),
        (0, 4094),
        (1, 1),
        (1, 4094),
        (7, 4094),
    ]


@pytest.mark.parametrize("tci", [0, 4095, 0x1000 | 5, 0x2000, 0x2FFF, 0xF005])
def test_a_tci_no_detour_writes_is_no_tag(tci: int) -> None:
    # VLAN id 0 (priority only) or 4095 (reserved), or the DEI bit set
    assert tag_of_tci(tci) is None and TAG_OF_TCI[tci] is None


@pytest.mark.parametrize("tag", [0, SESSION_TAGS.stop, -1])
def test_a_number_outside_the_range_is_refused(tag: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        tag_tci(tag)


def test_the_detour_pushes_one_header_and_a_copy_pops_it_again() -> None:
    assert to_agent(5, 9) == (PushVlan(5, 0), Output(9))
    assert to_agent(10_000, 9) == (PushVlan(10_000 - 2 * 4094, 2), Output(9))
    assert to_agent(10_000, 9, copy=True) == (
        PushVlan(1812, 2),
        Output(9),
        PopVlan(),
    )


def test_a_switch_sends_the_agent_the_tag_and_a_restored_copy_on_untagged() -> None:
    frame = {"in_port": 1, "eth_type": 0x0800}
    sim = SimSwitch()
    sim.apply([FlowAdd(0, 1000, (("in_port", 1),), actions=(*to_agent(9000, 7, True), Output(2)))])
    assert sim.process(frame).outputs == [(7, 9000), (2, None)]
