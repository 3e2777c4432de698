"""The controller's side of the return-routability check, pure: `now` is passed in,
sending and receiving are the caller's (docs/signaling.md, "Return-routability").

A request that claims a flow by one of its endpoint addresses is held while the
controller sends a CHALLENGE with a random cookie to that address; only a
CHALLENGE-RESPONSE that echoes the cookie, from that address, before the time-out,
lets it go on. So a requester that is not at the address it claims never sees the
cookie and cannot take the flow.

    check, new = checks.start(key, endpoint, now)   # new: send the CHALLENGE now
    checks.answered(source, session_id, sequence, cookie, now) -> Check | None
    checks.resend_due(now) -> [Check]              # send their CHALLENGE again
    checks.expired(now) -> [Check]                 # refuse them: NotEndpoint (300)

A check is pending from `start` until it is answered, expires or is cancelled; it
then leaves the table, and nothing about it is remembered.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from controller.errors import NotEndpoint, Unavailable
from signaling import wire

TIMEOUT = 3.0  # seconds from the first CHALLENGE to the refusal
RESEND = 1.0  # seconds between CHALLENGE transmissions (three within the time-out)
MAX_PENDING = 1024  # checks held at once: a flood of claims cannot grow the table

# (requester, session id, sequence number) of the request under check: a retransmitted
# request has the same, and so joins the check already running.
Key = tuple[str, int, int]


@dataclass(frozen=True)
class Check:
    """One pending check: the request it holds, the address challenged, the cookie."""

    key: Key
    endpoint: str
    cookie: bytes
    deadline: float
    next_send: float
    sent: int = 1

    def __repr__(self) -> str:  # the cookie is the check's secret until it is answered
        return f"Check({self.key!r}, endpoint={self.endpoint!r}, sent={self.sent})"

    def refusal(self) -> NotEndpoint:
        """Return the error that refuses the held request when the check fails."""
        requester, session_id, _ = self.key
        return NotEndpoint(
            f"{self.endpoint} did not answer the return-routability check of requester"
            f" {requester!r}'s session {session_id:#x}: the claim is not from that endpoint"
        )


class ReturnRoutability:
    """The pending checks, by the request they hold."""

    def __init__(
        self,
        timeout: float = TIMEOUT,
        resend: float = RESEND,
        max_pending: int = MAX_PENDING,
        cookies: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.timeout = timeout
        self.resend = resend
        self.max_pending = max_pending
        self._cookies = cookies
        self._pending: dict[Key, Check] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, key: Key, endpoint: str, now: float) -> tuple[Check, bool]:
        """Begin checking the request `key` by challenging `endpoint` (an address).

        Return (check, True) for a new check, whose CHALLENGE the caller sends now, or
        the running check and False for a retransmitted request. Raise Unavailable when
        MAX_PENDING checks are running already.
        """
        running = self._pending.get(key)
        if running is not None:
            return running, False
        if len(self._pending) >= self.max_pending:
            raise Unavailable(
                f"{self.max_pending} return-routability checks are running; try again later"
            )
        check = Check(
            key=key,
            endpoint=str(ipaddress.ip_address(endpoint)),
            cookie=self._cookies(wire.NONCE_SIZE),
            deadline=now + self.timeout,
            next_send=now + self.resend,
        )
        self._pending[key] = check
        return check, True

    def answered(
        self, source: str, session_id: int, sequence: int, cookie: bytes, now: float
    ) -> Check | None:
        """Return the check a CHALLENGE-RESPONSE from `source` confirms, and end it; or
        None when it confirms none (no such check, another address, a wrong cookie, too
        late), which changes nothing: a forged answer cannot end a check either."""
        try:
            source = str(ipaddress.ip_address(source))
        except ValueError:
            return None
        for key, check in self._pending.items():
            if (
                key[1:] == (session_id, sequence)
                and check.endpoint == source
                and now <= check.deadline
                and hmac.compare_digest(check.cookie, cookie)
            ):
                del self._pending[key]
                return check
        return None

    def resend_due(self, now: float) -> list[Check]:
        """Return the running checks whose CHALLENGE is to be sent again now."""
        due = []
        for key, check in self._pending.items():
            if check.next_send <= now < check.deadline:
                check = replace(check, next_send=now + self.resend, sent=check.sent + 1)
                self._pending[key] = check
                due.append(check)
        return due

    def expired(self, now: float) -> list[Check]:
        """End and return the checks whose time-out has passed unanswered; the caller
        refuses each held request with `check.refusal()`."""
        gone = [check for check in self._pending.values() if check.deadline < now]
        for check in gone:
            del self._pending[check.key]
        return gone

    def cancel(self, key: Key) -> None:
        """End the check of `key` if one runs (its request was withdrawn)."""
        self._pending.pop(key, None)
