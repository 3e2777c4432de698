"""HTTP over a raw socket, for tests that send what no well-behaved client would."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the connection closed with no answer
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the last byte sent to the end of the answer

    def json(self) -> object:
        return json.loads(self.body)


def request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """Return the bytes of a request; Content-Length is the body's unless `headers` says."""
    head = {"Host": "netserv", "Connection": "close", "Content-Length": str(len(body))}
    head.update(headers or {})
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in head.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def exchange(port: int, data: bytes, timeout: float = 5.0, half_close: bool = True) -> Answer:
    """Send `data` to 127.0.0.1:`port`; return the answer read within `timeout` seconds.

    With `half_close`, the sending side is shut after `data`, so a server waiting for
    bytes that were promised sees the end at once instead of waiting for them.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before all was sent
            pass
        sent = time.monotonic()
        raw = _read_answer(sock, sent + timeout)
        seconds = time.monotonic() - sent
    return parse(raw, seconds)


def next_answer(sock: socket.socket, timeout: float = 5.0) -> Answer:
    """Return the next answer on a connection kept open for more (status 0 when none came)."""
    started = time.monotonic()
    raw = _read_answer(sock, started + timeout)
    return parse(raw, time.monotonic() - started)


def _read_answer(sock: socket.socket, deadline: float) -> bytes:
    raw = b""
    while True:
        head, sep, rest = _final(raw).partition(b"\r\n\r\n")
        if sep:
            length = _content_length(head)
            if length is not None and len(rest) >= length:
                return raw
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return raw
        if not chunk:
            return raw
        raw += chunk


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _final(raw: bytes) -> bytes:
    """Return `raw` without the interim answers (100 Continue) in front of the final one."""
    while raw.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in raw:
        raw = raw.partition(b"\r\n\r\n")[2]
    return raw


def parse(raw: bytes, seconds: float) -> Answer:
    """Return the final Answer in the bytes `raw` (status 0 when there is none)."""
    head, _, body = _final(raw).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        return Answer(0, {}, raw, seconds)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = _content_length(head)
    return Answer(int(words[1]), headers, body if length is None else body[:length], seconds)


def has_traceback(body: bytes) -> bool:
    """Return True when `body` looks like it carries a Python traceback."""
    text = body.decode("utf-8", "replace")
    return "Traceback" in text or 'File "' in text or "line " in text and ".py" in text
