"""The one JSON-over-HTTP call of every NetServ client: requesters, the controller
calling agents, agents registering with the controller.

Plain-HTTP calls keep their connection open (HTTP/1.1) for the next call to the same
peer: a session's setup makes two calls on loopback (requester → controller →
agent), and a TCP handshake and teardown for each cost the controller about as much
as its own work on the call. HTTPS calls go through urllib, one connection each.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

from jsonhttp import wire


class ClientError(Exception):
    """The peer refused a request (`status` set) or could not be reached (`status` 0).

    An answer that should be signed by the peer and is not counts as no answer
    (status 0): whoever sent it is not the peer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Signer(Protocol):
    """Signs requests and checks answers (`controller.auth.Signer` is one)."""

    def sign(self, method: str, target: str, body: bytes) -> dict[str, str]:
        """Return the headers that sign a request for `target` (path and query)."""

    def check(
        self, sent: Mapping[str, str], status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        """Raise ValueError unless the answer is the peer's to the request signed by `sent`."""


def call_json(
    url: str,
    method: str = "GET",
    body: object = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
    signer: Signer | None = None,
) -> Any:
    """Send `body` as JSON to `url`, with `headers`; return the decoded JSON reply.

    With `signer`, the request is signed and the answer, refusals included, must be
    signed by the peer. Raise ClientError with the HTTP status and the peer's `error`
    message when it refuses, or with status 0 when it cannot be reached, its reply is
    not JSON, or the reply is not signed as `signer` expects.
    """
    data = b"" if body is None else json.dumps(body).encode()
    payload = data if body is not None else None
    sent = {"Content-Type": "application/json", **(headers or {})}
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if signer is not None:
        sent.update(signer.sign(method, target, data))
    try:
        if parts.scheme == "http":
            status, answer, raw = _pooled(parts, target, method, payload, sent, timeout)
        else:
            status, answer, raw = _opened(url, method, payload, sent, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ClientError(0, f"cannot reach {url}: {exc}") from None
    if status >= 400:
        try:
            message = json.loads(raw).get("error") or raw.decode(errors="replace")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace") or http.client.responses.get(status, "")
        _check(signer, sent, status, answer, raw, url, message)
        raise ClientError(status, message)
    _check(signer, sent, status, answer, raw, url)
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ClientError(0, f"cannot reach {url}: {exc}") from None


def _opened(
    url: str, method: str, data: bytes | None, sent: Mapping[str, str], timeout: float
) -> tuple[int, Mapping[str, str], bytes]:
    """Make one request through urllib (HTTPS: a connection each); return the status,
    headers and body of the answer, refusals included."""
    req = urllib.request.Request(url, data=data, method=method)
    for name, value in sent.items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _check(
    signer: Signer | None,
    sent: Mapping[str, str],
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    url: str,
    message: str = "",
) -> None:
    """Raise ClientError(0) when `signer` expects a signed answer and this one is not."""
    if signer is None:
        return
    try:
        signer.check(sent, status, headers, raw)
    except ValueError as exc:
        said = f" ({status}: {message})" if message else f" ({status})"
        raise ClientError(0, f"no answer from the peer at {url}: {exc}{said}") from None


class _Connection:
    """A connection to a plain-HTTP peer: its socket and the buffered reader of its answers."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout)
        # A kept connection's next request must not wait for the ACK of this one's.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def exchange(
        self, method: str, target: str, data: bytes | None, sent: Mapping[str, str], timeout: float
    ) -> tuple[int, wire.Headers, bytes, bool]:
        """Send one request; return the answer's status, headers and body, and whether
        the peer keeps the connection open for another."""
        self.sock.settimeout(timeout)
        fields = {"Host": self.host, **sent}
        if data is not None or method in ("POST", "PUT", "PATCH"):
            fields["Content-Length"] = str(len(data or b""))
        self.sock.sendall(wire.head(f"{method} {target} HTTP/1.1", fields) + (data or b""))
        while True:
            first, headers = wire.read_head(self.rfile)
            if not first:
                raise _Closed("the peer closed the connection without an answer")
            version, _, rest = first.partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
                raise wire.HeadError(f"not an HTTP/1 status line: {first[:60]!r}")
            status = int(code)
            if status >= 200 or status == 101:
                break  # 1xx answers before the final one carry nothing for us
        keep = wire.keeps_open(version, headers)
        if method == "HEAD" or status in (204, 304):
            return status, headers, b"", keep
        if "chunked" in (headers.get("transfer-encoding") or "").lower():
            return status, headers, wire.read_chunked(self.rfile, MAX_ANSWER), keep
        length = wire.content_length(headers)
        if length is None:  # the body runs to the end of the connection
            body = self.rfile.read(MAX_ANSWER + 1)
            if len(body) > MAX_ANSWER:
                raise wire.HeadError(f"the answer is longer than {MAX_ANSWER} bytes")
            return status, headers, body, False
        if length > MAX_ANSWER:
            raise wire.HeadError(f"the answer is longer than {MAX_ANSWER} bytes: {length}")
        return status, headers, wire.read_body(self.rfile, length), keep

    def idle_open(self) -> bool:
        """Return whether an idle connection's peer has neither closed it nor sent
        anything (which no peer does between answers)."""
        try:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (OSError, IndexError):
            return False
        return state == _TCP_ESTABLISHED

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class _Closed(ConnectionError):
    """The peer closed a kept connection before answering (its idle time-out)."""


class _Pool:
    """Idle connections by peer (host, port), each taken by one call at a time.

    A connection idle for longer than IDLE is closed rather than reused: servers drop
    idle ones after a few seconds (the agent after 2 s, the controller's REST after
    its read time-out), and one dropped while a request is on its way fails that call.
    """

    IDLE = 1.5  # seconds
    KEEP = 16  # idle connections kept per peer; more concurrent calls open more

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[_Connection, float]]] = {}
        self._lock = threading.Lock()

    def take(self, host: str, port: int) -> _Connection | None:
        """Return an idle connection to host:port that still looks open, else None."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get((host, port))
                if not idle:
                    return None
                conn, since = idle.pop()
            if now - since < self.IDLE and conn.idle_open():
                return conn
            conn.close()

    def give(self, host: str, port: int, conn: _Connection) -> None:
        """Keep `conn` (its last answer read whole) for the next call to host:port."""
        with self._lock:
            idle = self._idle.setdefault((host, port), [])
            if len(idle) < self.KEEP:
                idle.append((conn, time.monotonic()))
                return
        conn.close()


_TCP_ESTABLISHED = 1  # tcp_info.tcpi_state: a peer that closed puts it in CLOSE_WAIT
MAX_ANSWER = 64 << 20  # bytes: the largest answer taken (a module bundle is far smaller)
_POOL = _Pool()
# Failures of a kept connection that mean the peer closed it before reading the request
# (its idle time-out raced the call): the call is made once more on a new connection, as
# xmlrpc.client does. A peer that answered has read the request; these come before that.
_STALE = (_Closed, BrokenPipeError, ConnectionResetError)


def _pooled(
    parts: urllib.parse.SplitResult,
    target: str,
    method: str,
    data: bytes | None,
    sent: Mapping[str, str],
    timeout: float,
) -> tuple[int, Mapping[str, str], bytes]:
    """Make one request over a kept HTTP/1.1 connection to a plain-HTTP peer; return
    the status, headers and body of the answer."""
    host, port = parts.hostname or "", parts.port or 80
    conn = _POOL.take(host, port)
    fresh = conn is None
    for _ in range(2):
        if conn is None:
            conn = _Connection(host, port, timeout)
        try:
            status, headers, raw, keep = conn.exchange(method, target, data, sent, timeout)
            break
        except _STALE:
            conn.close()
            if fresh:
                raise
            conn, fresh = None, True
        except BaseException:
            conn.close()
            raise
    if keep:
        _POOL.give(host, port, conn)
    else:
        conn.close()
    return status, headers, raw
