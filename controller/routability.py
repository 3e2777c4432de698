"""The controller's side of the return-routability check, pure: `now` is passed in,
sending and receiving are the caller's (docs/signaling.md, "Return-routability").

A request that claims a flow by one of its endpoint addresses is held (its sessions
reserved PENDING_ROUTABILITY, `controller/sessions.py`) while the controller sends a
CHALLENGE with a cookie to that address, out of the switch port where the host with
that address is attached. Only a CHALLENGE-RESPONSE that echoes the cookie, from that
address, coming in by that port, before the time-out, lets it go on. So a requester
that is not at the address it claims never sees the cookie and cannot take the flow.

    address = endpoint_to_check(policy, request)    # None: the requester is not checked
    check, new = checks.start(key, address, at, nonce, now)   # new: send the CHALLENGE
    checks.answered(source, at, session_id, sequence, cookie, now) -> Check | None
    checks.resend_due(now) -> [Check]              # send their CHALLENGE again
    checks.expired(now) -> [Check]                 # refuse them: NotRoutable (304)

A check is pending from `start` until it is answered, expires or is cancelled; it
then leaves the table, and nothing about it is remembered.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import struct
from dataclasses import dataclass, replace

from controller.errors import NotEndpoint, NotRoutable, Unavailable
from controller.policy import Policy
from controller.requests import SessionRequest
from signaling import wire

TIMEOUT = 3.0  # seconds from the first CHALLENGE to the refusal
TRANSMISSIONS = 3  # CHALLENGEs sent within the time-out, evenly spaced
MAX_PENDING = 1024  # checks held at once: a flood of claims cannot grow the table

# (requester, session id, sequence number) of the request under check: a retransmitted
# request has the same, and so joins the check already running.
Key = tuple[str, int, int]
At = tuple[int, int]  # (datapath id, port): where the challenged host is attached


@dataclass(frozen=True)
class Check:
    """One pending check: the request it holds, the address challenged and where that
    host is attached, the cookie."""

    key: Key
    endpoint: str
    at: At
    cookie: bytes
    deadline: float
    next_send: float
    sent: int = 1

    def __repr__(self) -> str:  # the cookie is the check's secret until it is answered
        return f"Check({self.key!r}, endpoint={self.endpoint!r}, at={self.at}, sent={self.sent})"

    def refusal(self) -> NotRoutable:
        """Return the error that refuses the held request when the check fails."""
        requester, session_id, _ = self.key
        return NotRoutable(
            f"{self.endpoint} did not answer the return-routability check of requester"
            f" {requester!r}'s session {session_id:#x}: the claim is not from that endpoint"
        )


def endpoint_to_check(policy: Policy, request: SessionRequest) -> str | None:
    """Return the address the return-routability check challenges before `request` is
    installed: its first single host (source before destination) inside the
    requester's prefixes. Return None when the requester is not checked: one the policy
    trusts with any flow (`prefixes = "any"`, the operator). Raise NotEndpoint when
    the claim names no such host, so that the check cannot be made."""
    if policy.requester(request.requester).prefixes is None:
        return None
    endpoint = policy.claimed_endpoint(request.requester, request)
    if endpoint is None:
        raise NotEndpoint(
            f"the flow claimed names no single host inside the prefixes of requester"
            f" {request.requester!r}: the return-routability check needs one to challenge"
        )
    return endpoint


class ReturnRoutability:
    """The pending checks, by the request they hold.

    A cookie is an HMAC, under a secret drawn when the controller starts, of the
    request (requester, session id, sequence number, the nonce of its first
    transmission) and the address challenged: no one without the secret can make one,
    and no two checks share one.
    """

    def __init__(
        self,
        timeout: float = TIMEOUT,
        max_pending: int = MAX_PENDING,
        secret: bytes | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("the return-routability time-out must be above 0 s")
        self.timeout = timeout
        self.resend = timeout / TRANSMISSIONS
        self.max_pending = max_pending
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._pending: dict[Key, Check] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: Key) -> bool:
        return key in self._pending

    def cookie(self, key: Key, nonce: bytes, endpoint: str) -> bytes:
        """Return the cookie of the check of request `key` (first sent with `nonce`)
        that challenges `endpoint`."""
        requester, session_id, sequence = key
        raw = requester.encode()
        address = ipaddress.ip_address(endpoint).packed
        text = struct.pack("!B", len(raw)) + raw + struct.pack("!QI", session_id, sequence)
        mac = hmac.new(self._secret, text + nonce + address, hashlib.sha256)
        return mac.digest()[: wire.NONCE_SIZE]

    def start(
        self, key: Key, endpoint: str, at: At, nonce: bytes, now: float
    ) -> tuple[Check, bool]:
        """Begin checking the request `key` (whose transmission carried `nonce`) by
        challenging `endpoint` (an address), attached at `at`.

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
        endpoint = str(ipaddress.ip_address(endpoint))
        check = Check(
            key=key,
            endpoint=endpoint,
            at=at,
            cookie=self.cookie(key, nonce, endpoint),
            deadline=now + self.timeout,
            next_send=now + self.resend,
        )
        self._pending[key] = check
        return check, True

    def answered(
        self, source: str, at: At, session_id: int, sequence: int, cookie: bytes, now: float
    ) -> Check | None:
        """Return the check that a CHALLENGE-RESPONSE from address `source`, punted by
        switch port `at`, confirms, and end it; or None when it confirms none (no such
        check, another address or port, a wrong cookie, too late), which changes
        nothing: a forged answer cannot end a check either."""
        try:
            source = str(ipaddress.ip_address(source))
        except ValueError:
            return None
        for key, check in self._pending.items():
            if (
                key[1:] == (session_id, sequence)
                and check.endpoint == source
                and check.at == at
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
