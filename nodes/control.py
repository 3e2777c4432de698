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
Errors are {"error": message}, mapped in `_error` only:

| error                                           | status |
| ----------------------------------------------- | ------ |
| malformed body or field (ContractError)         | 400    |
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
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

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
from jsonhttp.strict import decode_json
from nodes.agent import AttachError, NodeAgent, chain_stats

log = logging.getLogger("netserv.control")
MAX_BODY = 1 << 20
READ_TIMEOUT = 2.0  # seconds a client may stall while sending a request before it is dropped
BACKLOG = 128  # connections the kernel queues before the server accepts them
INTERNAL_ERROR = "internal error; the agent's log has the details"
_LENGTH = re.compile(r"[0-9]{1,16}\Z")
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


class _Server(ThreadingHTTPServer):
    request_queue_size = BACKLOG  # the default of 5 made concurrent teardowns wait 1 s
    daemon_threads = True

    def __init__(self, address: tuple[str, int], agent: NodeAgent) -> None:
        key, dpid = agent.config.key, agent.config.dpid
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the agent of node {dpid:016x} has no key: it would take no call")
        super().__init__(address, _RequestHandler)
        self.agent = agent
        self.key_id = agent_key_id(dpid)
        controller = controller_key_id(dpid)
        self.verifier = Verifier(lambda key_id: key if key_id == controller else None)

    def sign(self, proof: Proof, status: int, data: bytes) -> dict[str, str]:
        """Return the headers that sign the answer to the request `proof` stands for."""
        return sign_response(proof.key, self.key_id, proof.nonce, status, data)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.1: the controller keeps its connection for the next call; one that idles
    # for READ_TIMEOUT is dropped like a stalled read.
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes; with Nagle's algorithm on a kept
    # connection the body would wait for the ACK of the head, which the client delays.
    disable_nagle_algorithm = True
    timeout = READ_TIMEOUT  # applied to the connection's socket: reads give up after it

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>; every method goes through the route table,
        # which answers 405 for the ones a path does not take.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        proof = None
        try:
            raw = self._raw_body()
            # Before routing, so that a caller without the key learns nothing, not
            # even which paths or sessions exist.
            proof = self.server.verifier.verify(self.command, self.path, self.headers, raw)
        except Exception as exc:
            status, data, headers = _refusal(exc)
        else:
            status, data, headers = answer(self.server.agent, self.command, self.path, raw)
        if status >= 400:
            self.close_connection = True  # the body may be left unread
        if proof is not None:
            headers.update(self.server.sign(proof, status, data))
        self._send(status, data, headers)

    def _raw_body(self) -> bytes:
        """Return the request's body as sent (b"" when there is none)."""
        if "Transfer-Encoding" in self.headers:
            raise BadRequest("send the body with a Content-Length, not a Transfer-Encoding")
        raw_length = self.headers.get("Content-Length", "0").strip()
        if not _LENGTH.match(raw_length):
            raise BadRequest(f"Content-Length {_shown(raw_length)!r} is not a byte count")
        length = int(raw_length)
        if length > MAX_BODY:
            raise BodyTooLarge(f"the body may be {MAX_BODY} bytes at most, not {length}")
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            raise BodyTimeout(f"the body did not arrive within {READ_TIMEOUT:g} s") from None
        except OSError as exc:  # the client reset the connection
            raise BadRequest(f"the body could not be read: {exc}") from None
        if len(raw) < length:
            raise BadRequest(f"the body ended after {len(raw)} of its {length} bytes")
        return raw

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError as exc:  # the client went away; nothing to answer
            log.debug("cannot answer %s: %s", self.client_address, exc)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer a request http.server itself refused (bad request line, headers) in JSON."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._send(code, json.dumps({"error": text}).encode(), {})

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug(fmt, *args)


def make_server(agent: NodeAgent, host: str, port: int) -> ThreadingHTTPServer:
    """Return an HTTP server (not yet serving) bound to host:port for `agent`."""
    return _Server((host, port), agent)
