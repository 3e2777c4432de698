"""The OpenFlow pipeline's layout, declared once: tables, priority bands and cookies.

Every flow the controller emits names its table and band from here, and
`check_flow` rejects a flow that falls outside its table's declared bands, so a
typo in a priority cannot silently shadow another band.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CLASSIFY = 0
LEARN = 1  # known (in_port, eth_src) pairs; a miss copies the frame to the controller
FORWARD = 2  # known eth_dst → port; a miss goes to the controller, which floods
TABLES = {"classify": CLASSIFY, "learn": LEARN, "forward": FORWARD}


@dataclass(frozen=True)
class Band:
    """A range of priorities inside one table, owned by one kind of flow."""

    table: int
    low: int
    high: int

    def __contains__(self, priority: int) -> bool:
        return self.low <= priority <= self.high


# table 0: classify
CLASSIFY_MISS = Band(CLASSIFY, 0, 0)
SESSION = Band(CLASSIFY, 1000, 1999)  # detours; higher inside the band = more specific match
SIGNALING = Band(CLASSIFY, 2000, 2999)  # on-path signaling punted through a meter (roadmap)
AGENT_RETURN = Band(CLASSIFY, 3000, 3000)  # frames coming back from a node agent
# table 1: learn
LEARN_MISS = Band(LEARN, 0, 0)
LEARNED_SRC = Band(LEARN, 100, 100)
# table 2: forward
FORWARD_MISS = Band(FORWARD, 0, 0)
LEARNED_DST = Band(FORWARD, 100, 100)

BANDS = (
    CLASSIFY_MISS,
    SESSION,
    SIGNALING,
    AGENT_RETURN,
    LEARN_MISS,
    LEARNED_SRC,
    FORWARD_MISS,
    LEARNED_DST,
)

# Cookies say who owns a flow: the high 16 bits mark every NetServ flow (so other apps,
# e.g. ofctl_rest, can coexist), the next 8 the kind, the low 40 bits a session id.
COOKIE_PREFIX = 0x4E53 << 48  # "NS"
COOKIE_PREFIX_MASK = 0xFFFF << 48
KIND_SHIFT = 40
KIND_MASK = 0xFF << KIND_SHIFT
KIND_BASE = 0
KIND_LEARNED = 1
KIND_SESSION = 2
SESSION_ID_MAX = (1 << KIND_SHIFT) - 1
COOKIE_ALL = (1 << 64) - 1


def cookie(kind: int, ident: int = 0) -> int:
    """Return the 64-bit cookie for a flow of `kind`, carrying `ident` (a session id)."""
    if not 0 <= ident <= SESSION_ID_MAX:
        raise ValueError(f"cookie ident {ident} out of range")
    return COOKIE_PREFIX | (kind << KIND_SHIFT) | ident


def session_cookie(session_id: int) -> int:
    """Return the cookie that marks every flow owned by session `session_id`."""
    return cookie(KIND_SESSION, session_id)


def session_of_cookie(value: int) -> int | None:
    """Return the session id a cookie carries, or None when it is not a session's."""
    if value & (COOKIE_PREFIX_MASK | KIND_MASK) != COOKIE_PREFIX | (KIND_SESSION << KIND_SHIFT):
        return None
    return value & SESSION_ID_MAX


def session_id_of_text(text: str) -> int | None:
    """Return the session id `text` spells in canonical decimal (as paths carry it), or None.

    Only 1..SESSION_ID_MAX written plainly: no sign, no leading zero, no other digits.
    """
    if not _SESSION_ID_TEXT.match(text):
        return None
    value = int(text)
    return value if value <= SESSION_ID_MAX else None


_SESSION_ID_TEXT = re.compile(r"[1-9][0-9]{0,15}\Z")


def check_flow(table: int, priority: int) -> None:
    """Raise ValueError unless (table, priority) lies inside a declared band."""
    if not any(b.table == table and priority in b for b in BANDS):
        raise ValueError(f"priority {priority} in table {table} is outside every declared band")
