"""The OpenFlow pipeline's layout, declared once: tables, priority bands, cookies, timers.

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
SIGNALING = Band(CLASSIFY, 2000, 2999)  # on-path signaling, punted through SIGNALING_METER
AGENT_RETURN = Band(CLASSIFY, 3000, 3000)  # frames coming back from a node agent
# Link probes (LLDP) to the controller, above everything: no session's match may detour
# them, and one an agent sends back (it returns frames it has no session for) is punted too.
DISCOVERY = Band(CLASSIFY, 4000, 4000)
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
    DISCOVERY,
    LEARN_MISS,
    LEARNED_SRC,
    FORWARD_MISS,
    LEARNED_DST,
)

# The one meter NetServ installs on every switch: the signaling punt goes through it, so a
# flood of signaling datagrams cannot swamp the controller (it runs on one event loop,
# and a SETUP costs it agent calls and a barrier, tens of milliseconds). Legitimate
# signaling is sparse: a SETUP per session, then a REFRESH per third of its lifetime, and
# only the first switch on a path punts it; 100 a second per switch is far above that and
# well within what the controller answers. The burst lets a handful of requests that
# arrive together (several requesters starting at once, retransmissions) through whole.
# Numbered like the cookies' prefix, "NS", away from the low ids other apps number from.
SIGNALING_METER = 0x4E53
SIGNALING_RATE = 100  # packets per second
SIGNALING_BURST = 20  # packets

# Cookies say who owns a flow: the high 16 bits mark every NetServ flow (so other apps,
# e.g. ofctl_rest, can coexist), the next 8 the kind, the low 40 bits a session id.
COOKIE_PREFIX = 0x4E53 << 48  # "NS"
COOKIE_PREFIX_MASK = 0xFFFF << 48
KIND_SHIFT = 40
KIND_MASK = 0xFF << KIND_SHIFT
KIND_BASE = 0
KIND_LEARNED = 1
KIND_SESSION = 2
KIND_SIGNALING = 3  # the signaling punt; its packet-ins carry this cookie
KIND_DISCOVERY = 4  # the LLDP punt; its packet-ins carry this cookie
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


# A detour's hard timeout (a 16-bit field, at most 65,535 s) is the switch's own safety
# net for a controller that died, not the session's lifetime (up to 86,400 s): it is
# capped, and the controller re-arms it before it runs out by adding the identical flow
# again (Open vSwitch then restarts the timer and keeps the flow's counters). One hour:
# far longer than a controller takes to restart (so detours can outlast a restart once
# flows are reconciled instead of wiped), well inside the field, short enough that a
# controller gone for good leaves no detour for more than an hour, and cheap: one
# flow-mod per long session per hour (10,000 sessions: about 3 a second).
HARD_TIMEOUT_MAX = 0xFFFF
HARD_TIMEOUT_CAP = 3600
# The controller takes another cap from this environment variable (tests set a few seconds
# to see it re-arm the timers).
HARD_TIMEOUT_CAP_ENV = "NETSERV_HARD_TIMEOUT_CAP"
# Re-arm this long before the timer runs out: room for the once-a-second tick, a slow
# barrier (5 s) and several retries when the switch is briefly away. With a small cap
# (tests) the margin shrinks to half of it.
REARM_MARGIN = 60


def parse_hard_timeout_cap(raw: str | None) -> int:
    """Return the hard-timeout cap `raw` names (seconds), HARD_TIMEOUT_CAP when unset.

    Raise ValueError unless it is a whole number from 1 to HARD_TIMEOUT_MAX.
    """
    text = (raw or "").strip()
    if not text:
        return HARD_TIMEOUT_CAP
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= HARD_TIMEOUT_MAX:
        raise ValueError(
            f"the hard timeout cap must be whole seconds from 1 to {HARD_TIMEOUT_MAX}, got {raw!r}"
        )
    return int(text)


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
