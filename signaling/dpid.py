"""Datapath ids as text: 16 hex digits, as Ryu's REST APIs show them.

Inside NetServ a datapath id is an int; it becomes text only at the edges (REST, the
agents' registration, command lines), and every edge reads it with `parse_dpid`.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]{1,16}")


def parse_dpid(raw: object) -> int:
    """Return the datapath id `raw` names: an int, or up to 16 hex digits with or without 0x.

    "1", "0x1" and "0000000000000001" are all 1; "10" is 16. Raise ValueError saying
    what is wrong otherwise.
    """
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 1 << 64:
        return raw
    if isinstance(raw, str) and _HEX.fullmatch(raw):
        return int(raw, 16)
    raise ValueError(f"{raw!r} is not a datapath id (up to 16 hex digits, e.g. 0000000000000001)")


def format_dpid(dpid: int) -> str:
    """Return `dpid` as Ryu's REST APIs show it: 16 hex digits."""
    return f"{dpid:016x}"
