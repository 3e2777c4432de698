"""The controller's HTTP/1.1 server: Ryu's REST application (WSGI) on the eventlet hub.

Ryu serves its WSGI application with `eventlet.wsgi`, built on `http.server`: each
request's head went through the `email` package's parser and an environ of some forty
keys, and each answer was logged. On a session's setup that was about a fifth of the
controller's CPU, on its one thread. Here a head is read with `jsonhttp.wire`, the
environ holds what WSGI and Ryu's router use, and the answer goes out in one write.

What a client sees is what it saw from `eventlet.wsgi` hardened (`ryucompat.harden_rest`):
- a connection per greenthread (at most MAX_CONNECTIONS; more wait in the backlog), kept
  open between requests (HTTP/1.1, or HTTP/1.0 asking keep-alive) until the client is
  silent for `timeout` seconds: also the most a request's head or body may stall;
- a request the HTTP layer cannot read is answered in JSON and the connection closed: a
  broken request line or header line, or a version other than HTTP/1.0 or 1.1, 400; a
  head over `jsonhttp.wire`'s limits, 431; a chunked body that is malformed, 400, and one
  longer than the application takes (`max_body`), 413;
- `Expect: 100-continue` is answered when the application first reads the body;
- a body the application did not read whole closes the connection after the answer.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import IO, Any

from jsonhttp import wire

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024  # as eventlet.wsgi's pool
_OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Refused(Exception):
    """A request the HTTP layer answers itself (status, message), closing the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Body(io.RawIOBase):
    """A request's body as the application reads it: at most `length` bytes of the
    connection, a 100 Continue sent first when the client waits for one."""

    def __init__(self, rfile: IO[bytes], length: int, send_continue: Callable[[], None] | None):
        super().__init__()
        self.rfile, self.left, self.send_continue = rfile, length, send_continue

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.send_continue is not None:
            self.send_continue()
            self.send_continue = None
        want = self.left if size is None or size < 0 else min(size, self.left)
        data = self.rfile.read(want) if want else b""
        self.left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def serve(
    listener: Any, app: WsgiApp, timeout: float, max_body: int, spawn: Callable[..., Any]
) -> None:
    """Accept connections on `listener` (a green socket) for ever, each served by `app`
    on a greenthread of `spawn` (a GreenPool's spawn_n, which waits when it is full)."""
    port = listener.getsockname()[1]
    while True:
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if listener.fileno() == -1:  # closed: the server stops
                return
            if exc.errno in _OUT_OF:  # wait for a descriptor or memory, do not die
                log.warning("REST: accept failed: %s", exc)
                time.sleep(0.1)  # green in the controller: Ryu patches time
            continue  # a connection reset before it was accepted, and the like
        spawn(_connection, sock, address, port, app, timeout, max_body)


def _connection(
    sock: Any, address: Any, port: int, app: WsgiApp, timeout: float, max_body: int
) -> None:
    sock.settimeout(timeout)
    rfile = sock.makefile("rb")
    try:
        while _one(sock, rfile, address, port, app, max_body):
            pass
    except (TimeoutError, ConnectionError, BrokenPipeError):
        pass  # a silent or lost client: nothing to answer
    except OSError as exc:
        log.debug("REST: connection from %s ended: %s", address, exc)
    except Exception:  # a bug: the application's own errors are answered by guard()
        log.exception("REST: connection from %s failed", address)
    finally:
        rfile.close()
        sock.close()


def _one(sock: Any, rfile: IO[bytes], address: Any, port: int, app: WsgiApp, max_body: int) -> bool:
    """Serve one request; return whether the connection stays open for another."""
    try:
        first, headers = wire.read_head(rfile)
        if not first:
            return False
        method, target, version = _request_line(first)
        environ = _environ(method, target, version, headers, address, port)
        body, chunked = _body(rfile, headers, max_body, sock, version)
    except Refused as exc:
        _refuse(sock, exc.status, str(exc))
        return False
    except wire.HeadError as exc:
        if not exc.cut:
            _refuse(sock, exc.status, str(exc))
        return False
    environ["wsgi.input"] = body
    if chunked is not None:
        environ["CONTENT_LENGTH"] = str(chunked)
    answered: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None):
        answered[:] = [status, response_headers]
        return lambda data: None  # no streaming writes: the application returns its body

    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    status, response_headers = answered
    keep = wire.keeps_open(version, headers) and body.left == 0
    fields = [(k, v) for k, v in response_headers if k.lower() != "content-length"]
    fields.append(("Content-Length", str(len(data))))
    if not keep:
        fields.append(("Connection", "close"))
    if method == "HEAD":
        data = b""  # its Content-Length says what a GET would get
    sock.sendall(wire.head(f"HTTP/1.1 {status}", fields) + data)
    log.debug("REST: %s %s %s %s", environ["REMOTE_ADDR"], method, target, status[:3])
    return keep


def _request_line(first: str) -> tuple[str, str, str]:
    words = first.split(" ")
    if len(words) != 3 or not words[0] or not words[1]:
        raise Refused(400, f"not a request line (method, target, version): {first[:60]!r}")
    method, target, version = words
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Refused(400, "only HTTP/1.0 and HTTP/1.1 are spoken here")
    if not method.isalpha() or not method.isupper() or not target.startswith("/"):
        raise Refused(400, f"not a request line (method, target, version): {first[:60]!r}")
    return method, target, version


def _environ(
    method: str, target: str, version: str, headers: wire.Headers, address: Any, port: int
) -> dict[str, Any]:
    raw, _, query = target.partition("?")
    # A TCP peer is (host, port, ...); a Unix socket's is a path, often empty.
    host, peer_port = (address[0], address[1]) if isinstance(address, tuple) else ("", "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote(raw, encoding="latin-1"),
        "RAW_PATH_INFO": raw,  # the router decodes PATH_INFO; guard() routes only plain paths
        "QUERY_STRING": query,
        "SERVER_NAME": "netserv",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": version,
        "REMOTE_ADDR": host,
        "REMOTE_PORT": str(peer_port),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": _LOG_STREAM,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return environ


def _body(
    rfile: IO[bytes], headers: wire.Headers, max_body: int, sock: Any, version: str
) -> tuple[Body, int | None]:
    """Return the request's body as the application reads it, and its length when it
    came chunked (read here, whole, to give the application a Content-Length)."""
    waits = (headers.get("expect") or "").lower() == "100-continue" and version == "HTTP/1.1"
    send_continue = (lambda: sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")) if waits else None
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        if send_continue:
            send_continue()
        try:
            data = wire.read_chunked(rfile, max_body)
        except wire.HeadError as exc:
            raise Refused(exc.status, f"the chunked body could not be read: {exc}") from None
        return Body(io.BytesIO(data), len(data), None), len(data)
    length = headers.get("content-length")
    if length is None:
        return Body(rfile, 0, None), None
    if not length.isascii() or not length.isdigit():
        raise Refused(400, f"Content-Length is not a count of bytes: {length[:40]!r}")
    if len(length) > wire.MAX_LENGTH_DIGITS:  # and int() refuses more than 4300 digits
        raise Refused(413, f"Content-Length has {len(length)} digits: no body is that long")
    return Body(rfile, int(length), send_continue), None


def _refuse(sock: Any, status: int, message: str) -> None:
    """Answer a request the HTTP layer could not read, in JSON, and say the connection ends."""
    body = json.dumps({"error": message}).encode()
    fields = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    reason = {
        400: "Bad Request",
        413: "Content Too Large",
        414: "URI Too Long",
        431: "Request Header Fields Too Large",
    }
    try:
        sock.sendall(wire.head(f"HTTP/1.1 {status} {reason.get(status, '')}", fields) + body)
    except OSError:
        pass


class _LogStream:
    """wsgi.errors: what an application writes there goes to the log."""

    def write(self, text: str) -> None:
        if text.strip():
            log.warning("REST: %s", text.rstrip())

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_LOG_STREAM = _LogStream()
