"""The agent's control API: JSON over HTTP, spoken by the controller only.

Every call must be signed by the controller with the node's key (`controller/auth.py`,
docs/security.md): any other, to any path, is a 401 that says nothing of the node or
its sessions. Every answer to a signed call is signed by the agent, so the controller
knows it came from here.

| method | path           | does                                                    |
| ------ | -------------- | ------------------------------------------------------- |
| GET    | /health        | the agent's identity, loaded modules, I/O counters      |
| GET    | /sessions      | every attached chain's counters                         |
| GET    | /sessions/{id} | one chain's counters, with the node's under "node"      |
| PUT    | /sessions/{id} | attach {tag, lifetime, modules: [{name, params,         |
|        |                | version, sha256}], copy} → 201; a bundle the agent      |
|        |                | lacks is fetched from the controller first; copy (true; |
|        |                | absent: false) says the switch copies the frames        |
| PATCH  | /sessions/{id} | refresh {lifetime}                                      |
| DELETE | /sessions/{id} | detach; returns the final counters                      |
| POST   | /sessions/{id}/| upgrade {position, module: {name, params, version,      |
|        | upgrade        | sha256}}: another version of the module at that place   |
|        |                | of the chain, its state handed over                     |

The bodies and answers are the contract's messages (`agentproto/messages.py`: Attach,
Refresh, Upgrade, ChainStats, AgentStatus), read and built with it only. {id} is a session id
in canonical decimal (1 to SESSION_ID_MAX), as the controller writes it. Bodies are
JSON objects read as strictly as the controller reads its own
(`jsonhttp.strict.decode_json`), at most MAX_BODY bytes, sent within READ_TIMEOUT.
Connections are HTTP/1.1 (heads read and written by `jsonhttp.wire`), each served by a
thread of its own and kept for the next call until idle for READ_TIMEOUT; a refusal
closes its connection. Errors are {"error": message}, mapped in `_error` only:

| error                                           | status |
| ----------------------------------------------- | ------ |
| malformed request line or header (the request's | 400    |
| head, as `jsonhttp.wire` reads it), body or     |        |
| field (ContractError)                           |        |
| not signed by the controller with the node key  | 401    |
| no such session or path                         | 404    |
| a method the path does not take                 | 405    |
| the body did not arrive within READ_TIMEOUT     | 408    |
| the tag belongs to another session; an upgrade  | 409    |
| names a module not at that place of the chain,  |        |
| or one not observe-only into a copy chain       |        |
| the body is larger than MAX_BODY                | 413    |
| a module cannot be loaded or set up, or take    | 422    |
| the state of the version it replaces; a copy    |        |
| attach of a module not observe-only here        |        |
| internal error (details in the agent's log)     | 500    |
"""

from __future__ import annotations

import json
import logging
import socketserver
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar

from agentproto.fields import ContractError
from agentproto.messages import Attach, ChainQuery, Detach, Refresh, StatusQuery, Upgrade
from controller.auth import (
    MIN_KEY_BYTES,
    Proof,
    Unauthorized,
    Verifier,
    agent_key_id,
    controller_key_id,
    sign_response,
)
from controller.tables import SESSION_ID_MAX, session_id_of_text
from jsonhttp import wire
from jsonhttp.strict import decode_json
from nodes.agent import AttachError, NodeAgent, chain_stats

log = logging.getLogger("netserv.control")
MAX_BODY = 1 << 20
READ_TIMEOUT = 2.0  # seconds a client may stall while sending a request before it is dropped
BACKLOG = 128  # connections the kernel queues before the server accepts them
INTERNAL_ERROR = "internal error; the agent's log has the details"
REASONS = {s.value: s.phrase for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
T = TypeVar("T")


class ControlError(Exception):
    """A request the control API refuses; the message says why."""


class BadRequest(ControlError):
    """The body or one of its fields is malformed."""


class NoSuchResource(ControlError):
    """The path names no resource (no such session, or no such path)."""


class MethodNotAllowed(ControlError):
    """The path exists, but not for this method."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class BodyTimeout(ControlError):
    """The body did not arrive within READ_TIMEOUT."""


class BodyTooLarge(ControlError):
    """The body is longer than MAX_BODY."""


STATUS: dict[type[Exception], int] = {
    ControlError: 400,
    BadRequest: 400,
    Unauthorized: 401,
    NoSuchResource: 404,
    MethodNotAllowed: 405,
    BodyTimeout: 408,
    BodyTooLarge: 413,
}


@dataclass(frozen=True)
class Call:
    """What a handler gets: the agent, the session the path names, and the body as sent."""

    agent: NodeAgent
    session_id: int
    raw: bytes

    def read(self, parse: Callable[[object, int], T]) -> T:
        """Return the body read by `parse` (a request's from_json) for the path's
        session; raise BadRequest saying what breaks the contract."""
        try:
            return parse(_decode(self.raw), self.session_id)
        except ContractError as exc:
            raise BadRequest(str(exc)) from None


def _health(call: Call) -> tuple[int, object]:
    return 200, call.agent.status().to_json()


def _list(call: Call) -> tuple[int, object]:
    return 200, [chain_stats(c).to_json() for c in call.agent.dispatcher.chains()]


def _show(call: Call) -> tuple[int, object]:
    try:
        return 200, call.agent.session_stats(call.session_id).to_json()
    except KeyError:  # NodeAgent.session_stats's way of saying "no such chain"
        raise NoSuchResource(f"no session {call.session_id}") from None


def _attach(call: Call) -> tuple[int, object]:
    return 201, chain_stats(call.agent.attach(call.read(Attach.from_json))).to_json()


def _refresh(call: Call) -> tuple[int, object]:
    request = call.read(Refresh.from_json)
    try:
        chain = call.agent.refresh(request)
    except KeyError:  # NodeAgent.refresh's way of saying "no such chain"
        raise NoSuchResource(f"no session {call.session_id}") from None
    return 200, chain_stats(chain).to_json()


def _upgrade(call: Call) -> tuple[int, object]:
    request = call.read(Upgrade.from_json)
    try:
        chain = call.agent.upgrade(request)
    except KeyError:  # NodeAgent.upgrade's way of saying "no such chain"
        raise NoSuchResource(f"no session {call.session_id}") from None
    return 200, chain_stats(chain).to_json()


def _detach(call: Call) -> tuple[int, object]:
    stats = call.agent.detach(call.session_id)
    if stats is None:
        raise NoSuchResource(f"no session {call.session_id}")
    return 200, stats.to_json()


Handler = Callable[[Call], tuple[int, object]]
SESSION = Attach.ROUTE  # every call about one session has this path
ROUTES: dict[tuple[str, str], Handler] = {
    (StatusQuery.METHOD, StatusQuery.ROUTE): _health,
    ("GET", "/sessions"): _list,  # not the controller's: for people and tests
    (ChainQuery.METHOD, ChainQuery.ROUTE): _show,
    (Attach.METHOD, Attach.ROUTE): _attach,
    (Refresh.METHOD, Refresh.ROUTE): _refresh,
    (Detach.METHOD, Detach.ROUTE): _detach,
    (Upgrade.METHOD, Upgrade.ROUTE): _upgrade,
}


def route(method: str, target: str) -> tuple[Handler, int]:
    """Return the handler for `method` on the request target and the session id it names.

    The id is 0 for paths without one. Raise NoSuchResource for a path that names
    nothing (an id not in canonical decimal included) and MethodNotAllowed when the path
    exists for other methods only.
    """
    path = target.partition("?")[0]
    pattern, session_id = path, 0
    head, _, last = path.rpartition("/")
    if head.rpartition("/")[0] == "/sessions" and last == "upgrade":
        head, _, last = head.rpartition("/")
        pattern = Upgrade.ROUTE
    elif head == "/sessions":
        pattern = SESSION
    allowed = [m for m, p in ROUTES if p == pattern]
    if not allowed:
        raise NoSuchResource(f"no resource {_shown(path)}")
    if (method, pattern) not in ROUTES:
        raise MethodNotAllowed(f"{pattern} takes {', '.join(allowed)}, not {method}", allowed)
    if pattern in (SESSION, Upgrade.ROUTE):
        session_id = session_id_of_text(last) or 0
        if not session_id:
            raise NoSuchResource(
                f"no session {_shown(last)!r}: ids are 1 to {SESSION_ID_MAX}, in decimal"
            )
    return ROUTES[(method, pattern)], session_id


def _decode(raw: bytes) -> dict[str, object]:
    """Return a request's body as a JSON object ({} when there is none); raise BadRequest."""
    if not raw:
        return {}
    try:
        body = decode_json(raw)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON as NetServ takes it: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def _error(exc: Exception) -> tuple[int, str]:
    """Return (status, message) for an exception raised while answering a request.

    A ContractError that is not the request's (BadRequest) is the agent's own answer
    breaking the contract: an internal error.
    """
    if isinstance(exc, (ControlError, Unauthorized)):
        return next(STATUS[c] for c in type(exc).__mro__ if c in STATUS), str(exc)
    if isinstance(exc, AttachError):  # the agent's own refusals carry their status
        return exc.status, str(exc)
    log.error("internal error", exc_info=exc)
    return 500, INTERNAL_ERROR


def answer(
    agent: NodeAgent, method: str, target: str, raw: bytes
) -> tuple[int, bytes, dict[str, str]]:
    """Answer a call to `agent`'s control API whose caller is proven (or need not be, in
    process): return the status, the JSON body and the headers to add.

    Every outcome is an answer: a refusal is {"error": message} with its status.
    """
    try:
        handler, session_id = route(method, target)
        status, body = handler(Call(agent, session_id, raw))
        return status, json.dumps(body).encode(), {}
    except Exception as exc:
        return _refusal(exc)


def _refusal(exc: Exception) -> tuple[int, bytes, dict[str, str]]:
    """Return the status, body and headers that answer `exc`."""
    status, message = _error(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.challenge
    return status, json.dumps({"error": message}).encode(), headers


class _Server(socketserver.ThreadingTCPServer):
    request_queue_size = BACKLOG  # the default of 5 made concurrent teardowns wait 1 s
    daemon_threads = True
    allow_reuse_address = True  # a restarted agent takes its port back at once

    def __init__(self, address: tuple[str, int], agent: NodeAgent) -> None:
        key, dpid = agent.config.key, agent.config.dpid
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the agent of node {dpid:016x} has no key: it would take no call")
        super().__init__(address, _Connection)
        self.agent = agent
        self.key_id = agent_key_id(dpid)
        controller = controller_key_id(dpid)
        self.verifier = Verifier(lambda key_id: key if key_id == controller else None)

    def sign(self, proof: Proof, status: int, data: bytes) -> dict[str, str]:
        """Return the headers that sign the answer to the request `proof` stands for."""
        return sign_response(proof.key, self.key_id, proof.nonce, status, data)


class _Connection(socketserver.StreamRequestHandler):
    """One client's connection, in a thread of its own: HTTP/1.1 requests answered in
    turn, their heads read and written with `jsonhttp.wire`."""

    server: _Server
    # Applied to the socket: a read gives up after it, so a connection kept idle for
    # READ_TIMEOUT is dropped like a stalled request.
    timeout = READ_TIMEOUT
    # An answer is one write, but the next request on a kept connection must not wait
    # for the ACK of the last answer, which the client delays.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        while self._answer_one():
            pass

    def _answer_one(self) -> bool:
        """Read one request and answer it; return whether the connection stays open."""
        try:
            first, headers = wire.read_head(self.rfile)
        except wire.HeadError as exc:
            return self._send(*_refusal(BadRequest(f"malformed request head: {exc}")), False)
        except OSError:  # idle past READ_TIMEOUT, or the client reset the connection
            return False
        if not first:  # the client closed a kept connection
            return False
        try:
            method, target, keep = _request_line(first, headers)
            raw = self._body(headers)
            # Before routing, so that a caller without the key learns nothing, not
            # even which paths or sessions exist.
            proof = self.server.verifier.verify(method, target, headers, raw)
        except Exception as exc:
            return self._send(*_refusal(exc), False)
        status, data, extra = answer(self.server.agent, method, target, raw)
        extra.update(self.server.sign(proof, status, data))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s → %d", self.client_address[0], method, _shown(target), status)
        return self._send(status, data, extra, keep and status < 400)

    def _body(self, headers: wire.Headers) -> bytes:
        """Return the request's body as sent (b"" when there is none)."""
        try:
            length = wire.content_length(headers) or 0
        except wire.HeadError as exc:
            raise BadRequest(str(exc)) from None
        if length > MAX_BODY:
            raise BodyTooLarge(f"the body may be {MAX_BODY} bytes at most, not {length}")
        try:
            if length and (headers.get("expect") or "").lower() == "100-continue":
                self.connection.sendall(CONTINUE)  # curl waits for it before a large body
            return wire.read_body(self.rfile, length)
        except TimeoutError:
            raise BodyTimeout(f"the body did not arrive within {READ_TIMEOUT:g} s") from None
        except wire.HeadError as exc:
            raise BadRequest(f"the body was cut short: {exc}") from None
        except OSError as exc:  # the client reset the connection
            raise BadRequest(f"the body could not be read: {exc}") from None

    def _send(self, status: int, data: bytes, extra: dict[str, str], keep: bool) -> bool:
        """Send an answer, its head and body in one write; return `keep` when it went out.

        A refusal closes the connection: its request's body may be left unread.
        """
        fields = {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}
        if not keep:
            fields["Connection"] = "close"
        try:
            self.connection.sendall(
                wire.head(f"HTTP/1.1 {status} {REASONS.get(status, '')}", fields) + data
            )
        except OSError as exc:  # the client went away; nothing to answer
            log.debug("cannot answer %s: %s", self.client_address, exc)
            return False
        return keep


def _request_line(first: str, headers: wire.Headers) -> tuple[str, str, bool]:
    """Return a request line's method and target, and whether the client keeps the
    connection for another request; raise BadRequest when it is not HTTP/1's."""
    words = first.split()
    if len(words) != 3 or not words[2].startswith("HTTP/1.") or not words[2][7:].isdigit():
        raise BadRequest(f"not an HTTP/1 request line: {_shown(first)!r}")
    return words[0], words[1], wire.keeps_open(words[2], headers)


def make_server(agent: NodeAgent, host: str, port: int) -> socketserver.ThreadingTCPServer:
    """Return a server (not yet serving) of `agent`'s control API bound to host:port."""
    return _Server((host, port), agent)
