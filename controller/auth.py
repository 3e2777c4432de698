"""Who is calling: signed controller↔agent calls and the operator's REST token.

Node agents and the controller prove who they are to each other with the node's key
(`controller/keyfiles.py`), by HMAC-SHA256 over each request and each answer to it
(docs/security.md has the exact strings):

    X-NetServ-Key    who signs: agent/<dpid> (an agent) or controller/<dpid> (the
                     controller, calling node <dpid>'s agent), 16 hex digits
    X-NetServ-Time   when, in milliseconds since the Unix epoch
    X-NetServ-Nonce  32 hex digits, never used twice
    X-NetServ-MAC    64 hex digits: HMAC-SHA256 under the node's key of the method,
                     the request target, the time, the nonce and the body's SHA-256

An answer carries X-NetServ-Key (the answering side) and X-NetServ-MAC over the
request's nonce, the status and the body's SHA-256, so a process that took over a
port cannot answer for the party that left it. The direction is part of what is
signed, so a request cannot be turned back on its sender.

REST callers are named by `RestAuth.rest_caller`: "operator" for the operator's
token, or whatever the requester hook (the policy's `rest_requester`) says for
another; None for a caller without a known token.

Pure but for `time.time` and `os.urandom` as defaults, which tests replace.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.errors import Unauthenticated
from signaling.dpid import format_dpid
from signaling.errors import SignalingProtocolError
from signaling.freshness import DEFAULT_WINDOW, ReplayGuard

SCHEME = "NetServ-HMAC-SHA256"
KEY = "X-NetServ-Key"
TIME = "X-NetServ-Time"
NONCE = "X-NetServ-Nonce"
MAC = "X-NetServ-MAC"
AGENT, CONTROLLER = "agent", "controller"
OPERATOR = "operator"  # the REST caller that holds the operator's token
BEARER_CHALLENGE = 'Bearer realm="netserv"'
NONCE_BYTES = 16
MIN_KEY_BYTES = 16  # as signaling.auth.MIN_KEY_SIZE; `netserv` makes keys of 32
_KEY_ID = re.compile(r"(agent|controller)/([0-9a-f]{16})\Z")
_TIME = re.compile(r"[0-9]{1,15}\Z")
_NONCE = re.compile(r"[0-9a-f]{32}\Z")
_MAC = re.compile(r"[0-9a-f]{64}\Z")

Headers = Mapping[str, str]


class Unauthorized(Unauthenticated):
    """The caller did not prove who it is, or is not one who may make this call.

    `challenge` is the WWW-Authenticate value of the 401 that answers it.
    """

    def __init__(self, message: str, challenge: str = SCHEME) -> None:
        super().__init__(message)
        self.challenge = challenge


class BadReply(ValueError):
    """An answer that does not carry the expected peer's MAC over this request."""


# --- key ids -----------------------------------------------------------------------
def agent_key_id(dpid: int) -> str:
    """Return the key id node `dpid`'s agent signs with."""
    return f"{AGENT}/{format_dpid(dpid)}"


def controller_key_id(dpid: int) -> str:
    """Return the key id the controller signs with when it calls node `dpid`'s agent."""
    return f"{CONTROLLER}/{format_dpid(dpid)}"


def parse_key_id(key_id: str) -> tuple[str, int] | None:
    """Return (role, dpid) of a key id, or None when it is not one."""
    m = _KEY_ID.match(key_id)
    return (m.group(1), int(m.group(2), 16)) if m else None


# --- the strings signed ------------------------------------------------------------
def body_digest(body: bytes) -> str:
    """Return the hex SHA-256 of a body (of b"" when there is none)."""
    return hashlib.sha256(body).hexdigest()


def request_mac(
    key: bytes, key_id: str, method: str, target: str, time_ms: str, nonce: str, body: bytes
) -> str:
    """Return the hex MAC of a request (see docs/security.md for the string signed)."""
    text = "\n".join(
        [f"{SCHEME} request", key_id, method, target, time_ms, nonce, body_digest(body)]
    )
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def response_mac(key: bytes, key_id: str, nonce: str, status: int, body: bytes) -> str:
    """Return the hex MAC of an answer to the request that carried `nonce`."""
    text = "\n".join([f"{SCHEME} response", key_id, nonce, str(status), body_digest(body)])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sign_request(
    key: bytes,
    key_id: str,
    method: str,
    target: str,
    body: bytes,
    now: float,
    nonce: str,
) -> dict[str, str]:
    """Return the headers that sign a request made at `now` (seconds since the epoch)."""
    time_ms = str(int(now * 1000))
    mac = request_mac(key, key_id, method, target, time_ms, nonce, body)
    return {KEY: key_id, TIME: time_ms, NONCE: nonce, MAC: mac}


def sign_response(key: bytes, key_id: str, nonce: str, status: int, body: bytes) -> dict[str, str]:
    """Return the headers that sign an answer to the request that carried `nonce`."""
    return {KEY: key_id, MAC: response_mac(key, key_id, nonce, status, body)}


# --- the two ends ------------------------------------------------------------------
@dataclass(frozen=True)
class Proof:
    """A request that passed: who signed it, its nonce (to sign the answer) and the key."""

    key_id: str
    nonce: str
    key: bytes = field(repr=False)

    @property
    def dpid(self) -> int:
        """Return the node whose key signed the request."""
        parsed = parse_key_id(self.key_id)
        assert parsed is not None  # a Proof is only made for a valid key id
        return parsed[1]


class Verifier:
    """Checks signed requests: the MAC, the time window and that the nonce is new.

    `keys` returns the key of a key id this side accepts, None for any other. Safe to
    share between threads.
    """

    def __init__(
        self,
        keys: Callable[[str], bytes | None],
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.window = window
        self.clock = clock
        self._guard = ReplayGuard(window)
        self._lock = threading.Lock()

    def verify(self, method: str, target: str, headers: Headers, body: bytes) -> Proof:
        """Return the Proof of a request signed as this module says; raise Unauthorized.

        The nonce is remembered only once the MAC is right, so no one without the key
        can fill the cache.
        """
        key_id, time_ms, nonce, mac = (headers.get(h) for h in (KEY, TIME, NONCE, MAC))
        if key_id is None or mac is None:
            raise Unauthorized(f"this call must be signed ({SCHEME}: see docs/security.md)")
        if not (_TIME.match(time_ms or "") and _NONCE.match(nonce or "") and _MAC.match(mac)):
            raise Unauthorized(f"the {SCHEME} headers are malformed (see docs/security.md)")
        assert time_ms is not None and nonce is not None
        key = self.keys(key_id) if parse_key_id(key_id) else None
        if key is None:
            raise Unauthorized(f"no key is known here for {_shown(key_id)!r}")
        expected = request_mac(key, key_id, method, target, time_ms, nonce, body)
        if not hmac.compare_digest(expected, mac):
            raise Unauthorized(f"the MAC does not match: the call is not signed by {key_id}")
        try:
            with self._lock:
                self._guard.check(key_id, bytes.fromhex(nonce), int(time_ms), self.clock())
        except SignalingProtocolError as exc:
            raise Unauthorized(f"{key_id}: {exc.reason}") from None
        return Proof(key_id, nonce, key)


class Signer:
    """Signs requests as `key_id` and checks that answers come from `peer_key_id`.

    What `jsonhttp.client.call_json` takes as its `signer`.
    """

    def __init__(
        self,
        key: bytes,
        key_id: str,
        peer_key_id: str,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: os.urandom(NONCE_BYTES).hex(),
    ) -> None:
        self._key = key
        self.key_id = key_id
        self.peer_key_id = peer_key_id
        self.clock = clock
        self.nonce = nonce

    def __repr__(self) -> str:  # never print the key
        return f"Signer({self.key_id!r} to {self.peer_key_id!r})"

    def sign(self, method: str, target: str, body: bytes) -> dict[str, str]:
        """Return the headers that sign this request now."""
        return sign_request(
            self._key, self.key_id, method, target, body, self.clock(), self.nonce()
        )

    def check(self, sent: Headers, status: int, headers: Headers, body: bytes) -> None:
        """Raise BadReply unless the answer is signed by the peer for the request `sent`."""
        key_id, mac = headers.get(KEY), headers.get(MAC)
        if key_id is None or mac is None:
            raise BadReply(f"the answer is not signed (by {self.peer_key_id})")
        if key_id != self.peer_key_id:
            raise BadReply(f"the answer is signed by {_shown(key_id)!r}, not {self.peer_key_id}")
        expected = response_mac(self._key, key_id, sent[NONCE], status, body)
        if not hmac.compare_digest(expected, mac):
            raise BadReply(f"the answer's MAC does not match: it is not from {key_id}")


# --- the REST API --------------------------------------------------------------------
def bearer_token(headers: Headers) -> str | None:
    """Return the token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def rest_caller(
    headers: Headers,
    operator_token: str,
    requester: Callable[[str], str | None] | None = None,
) -> str | None:
    """Return who makes a REST call: "operator" for the operator's token, the
    `requester` hook's answer for another token, None without a known token."""
    token = bearer_token(headers)
    if token is None:
        return None
    if hmac.compare_digest(token.encode("utf-8", "replace"), operator_token.encode()):
        return OPERATOR
    return requester(token) if requester is not None else None


class RestAuth:
    """The controller's side of both: REST callers by token, agents by their node's key.

    `node_keys` returns a node's key (None when it has none), `requester` names the
    holder of a token other than the operator's (the policy's `rest_requester`), and
    `token_hint` tells a refused caller where the operator's token is kept.
    """

    def __init__(
        self,
        operator_token: str,
        node_keys: Callable[[int], bytes | None],
        requester: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        token_hint: str = "",
    ) -> None:
        self._token = operator_token
        self.node_keys = node_keys
        self.requester = requester
        self.token_hint = token_hint
        self.verifier = Verifier(self._agent_key, clock=clock)

    def rest_caller(self, headers: Headers) -> str | None:
        """Return who makes this REST call, or None (see `rest_caller`)."""
        return rest_caller(headers, self._token, self.requester)

    def caller(self, headers: Headers) -> str:
        """Return who makes this REST call; raise Unauthorized without a known token."""
        who = self.rest_caller(headers)
        if who is None:
            where = f" (the operator's is in {self.token_hint})" if self.token_hint else ""
            raise Unauthorized(
                f"this call needs a token: send 'Authorization: Bearer TOKEN'{where}",
                BEARER_CHALLENGE,
            )
        return who

    def registration(self, method: str, target: str, headers: Headers, body: bytes) -> Proof:
        """Return the Proof of an agent's registration; raise Unauthorized.

        Only an agent that holds its node's key passes; the body's dpid must then be
        that node's (checked by the caller once the body is read).
        """
        return self.verifier.verify(method, target, headers, body)

    def sign_reply(self, proof: Proof, status: int, body: bytes) -> dict[str, str]:
        """Return the headers that sign the answer to an agent's registration."""
        return sign_response(proof.key, controller_key_id(proof.dpid), proof.nonce, status, body)

    def _agent_key(self, key_id: str) -> bytes | None:
        parsed = parse_key_id(key_id)
        if parsed is None or parsed[0] != AGENT:
            return None
        return self.node_keys(parsed[1])


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:40] + "..."
