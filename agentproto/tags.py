"""A session's tag on the wire between a switch and its node agent: one 802.1Q header.

A detour pushes one VLAN header whose TCI carries the session's tag t (SESSION_TAGS)
in its VLAN id and its priority bits (PCP):

    pcp = (t - 1) // 4094,   vid = (t - 1) % 4094 + 1

so tags 1 to 4094 are written as they were when the VLAN id alone was the tag, and
8 × 4094 = 32,752 sessions fit on one node. One header, not two (QinQ): a frame as
large as the link's MTU still crosses the agent's link (a veth and a packet socket
let one VLAN header past the MTU, not two), and the agent's kernel takes the whole
header off on receive and hands its TCI over as PACKET_AUXDATA, so the agent reads
the tag without touching the frame, and what goes back to the switch is the
original. The DEI bit is never set (OpenFlow 1.3 cannot set it): a TCI with it is no
tag. The controller writes the pair (`controller/pipeline.py`, `to_agent`);
the agent reads it back with `tag_of_tci` (`nodes/packet_io.py`).
"""

from __future__ import annotations

from agentproto.limits import SESSION_TAGS, TAG_PCPS, TAG_VIDS

_SPAN = len(TAG_VIDS)


def tag_tci(tag: int) -> tuple[int, int]:
    """Return the (PCP, VLAN id) that carry session tag `tag`; raise ValueError."""
    if tag not in SESSION_TAGS:
        raise ValueError(f"tag {tag} is outside {SESSION_TAGS.start}..{SESSION_TAGS.stop - 1}")
    pcp, low = divmod(tag - SESSION_TAGS.start, _SPAN)
    return pcp, low + TAG_VIDS.start


def tag_of_tci(tci: int) -> int | None:
    """Return the session tag a 16-bit TCI carries, or None when it carries none (VLAN
    id 0 or 4095, or the DEI bit set)."""
    pcp, dei, vid = tci >> 13, tci >> 12 & 1, tci & 0x0FFF
    if dei or vid not in TAG_VIDS or pcp not in TAG_PCPS:
        return None
    return pcp * _SPAN + vid - TAG_VIDS.start + SESSION_TAGS.start


# Every TCI's tag, for the agent's packet loop to read a batch's tags with one map().
TAG_OF_TCI: tuple[int | None, ...] = tuple(tag_of_tci(tci) for tci in range(1 << 16))
