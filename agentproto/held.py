"""The sessions a node holds, in a few bytes: what the heartbeat compares.

Every HEARTBEAT seconds the agent tells the controller which sessions it holds chains
for, so that the controller can name the orphans (the chains of sessions it no longer
knows: it restarted, or a teardown never reached the agent). Listing 10,000 ids each
time would cost both sides work that grows with the sessions, for an answer that is
almost always "the same". So the agent sends a digest of its set (`Held`: how many,
and the sum of a hash of each id), which both sides keep up to date one id at a time
(`HeldSet`) as sessions come and go; the controller answers with its full list only
when its own digest for the node differs (`agentproto/messages.py`'s
`RegistrationReply`). A sum is order-independent and takes an id out as cheaply as it
put it in; with the count beside it, two different sets of session ids have the same
digest with a probability of about 2**-64.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from agentproto.fields import ContractError, count, fields, text, whole

DIGEST_BITS = 64
_MASK = (1 << DIGEST_BITS) - 1
_HEX = frozenset("0123456789abcdef")


def id_hash(session_id: int) -> int:
    """Return the 64-bit hash of a session id that digests add up: a fixed hash (not
    Python's `hash`, which is the id itself and differs between builds), so both sides
    compute the same."""
    raw = hashlib.blake2b(session_id.to_bytes(8, "big"), digest_size=8).digest()
    return int.from_bytes(raw, "big")


@dataclass(frozen=True)
class Held:
    """A digest of a set of session ids: how many, and the sum of their `id_hash`es
    modulo 2**64."""

    count: int
    digest: int

    def __post_init__(self) -> None:
        count(self.count, "held count")
        whole(self.digest, "held digest", 0, _MASK)

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "digest": f"{self.digest:016x}"}

    @classmethod
    def from_json(cls, raw: object) -> Held:
        """Return the digest `raw` is ({count, digest: 16 hex digits}); raise ContractError."""
        body = fields(raw, "held", ("count", "digest"))
        digest = text(body["digest"], "held digest")
        if len(digest) != DIGEST_BITS // 4 or not set(digest) <= _HEX:
            raise ContractError(f"held digest must be 16 hex digits, got {digest[:40]!r}")
        return cls(body["count"], int(digest, 16))  # type: ignore[arg-type]


def held_of(session_ids: Iterable[int]) -> Held:
    """Return the digest of `session_ids` (distinct ids), computed whole."""
    ids = list(session_ids)
    return Held(len(ids), sum(id_hash(i) for i in ids) & _MASK)


class HeldSet:
    """A digest kept up to date one id at a time: `add` and `remove` cost the same with
    10 or 10,000 ids, and `held` reads it. The caller adds an id only when it was not
    in the set and removes one only when it was (it keeps the set itself)."""

    __slots__ = ("_count", "_sum")

    def __init__(self) -> None:
        self._count = 0
        self._sum = 0

    def add(self, session_id: int) -> None:
        self._count += 1
        self._sum = (self._sum + id_hash(session_id)) & _MASK

    def remove(self, session_id: int) -> None:
        self._count -= 1
        self._sum = (self._sum - id_hash(session_id)) & _MASK

    @property
    def held(self) -> Held:
        """Return the digest of the set as it is now."""
        return Held(self._count, self._sum)
