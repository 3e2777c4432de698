"""HTTP/1.1 message heads as NetServ's peers exchange them: read and written here only.

Python's `http.client` and `http.server` read a head with the `email` package's parser,
and build it a header at a time: on a session's setup, which makes two calls on
loopback (requester → controller → agent), that was a good part of every process's
time. A head here is a line split on spaces and `name: value` lines split once, read
with the buffered reader's C `readline`, within the limits `http.server` keeps
(MAX_LINE bytes a line, MAX_HEADERS lines).

What is read is checked as strictly as the callers need: a line too long, too many
header (or trailer, or leading empty) lines, a header line without a colon, a
Content-Length or chunk size that is not only digits (decimal, hexadecimal), or a head
or body cut short by the peer raise HeadError with a message that says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import IO

MAX_LINE = 65536
MAX_HEADERS = 100
MAX_LENGTH_DIGITS = 18  # a Content-Length of up to 10**18 - 1 bytes
_HEX = frozenset(b"0123456789abcdefABCDEF")


class HeadError(ValueError):
    """The head is malformed, over a limit, or cut short (`cut`: the peer closed).

    `status` is the answer a server gives it: 400, or 414, 431 or 413 for a first line,
    a head or a body over the limits.
    """

    def __init__(self, message: str, cut: bool = False, status: int = 400) -> None:
        super().__init__(message)
        self.cut = cut
        self.status = status


class Headers(dict[str, str]):
    """Header values by lower-cased name; `get` and `[]` take any case.

    A name sent twice keeps its values joined with ", " (RFC 9110, 5.3).
    """

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


def read_line(rfile: IO[bytes]) -> bytes:
    """Return the next line of `rfile` without its CRLF; raise HeadError when it is over
    MAX_LINE, or (`cut`) when the stream ends before the line does."""
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise HeadError(f"a line of the message is longer than {MAX_LINE} bytes", status=431)
    if not line.endswith(b"\n"):
        raise HeadError("the peer closed the connection in the middle of a line", cut=True)
    return line.rstrip(b"\r\n")


def read_head(rfile: IO[bytes]) -> tuple[str, Headers]:
    """Read a message head from `rfile`; return its first line and its headers.

    The first line is "" when the peer closed before sending one (a kept connection's
    end). Empty lines before the first line are skipped (RFC 9112, 2.2).
    """
    line = b""
    for _ in range(MAX_HEADERS):
        raw = rfile.readline(MAX_LINE + 1)
        if not raw:
            return "", Headers()
        line = raw.rstrip(b"\r\n")
        if len(raw) > MAX_LINE:
            raise HeadError(f"the first line is longer than {MAX_LINE} bytes", status=414)
        if line:
            break
    else:
        raise HeadError(f"more than {MAX_HEADERS} empty lines came before the head")
    first = line.decode("latin-1")
    fields: dict[str, str] = {}  # a plain dict while it fills: its methods are C's
    for _ in range(MAX_HEADERS + 1):
        raw = rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise HeadError(f"a header line is longer than {MAX_LINE} bytes", status=431)
        if not raw.endswith(b"\n"):
            raise HeadError("the peer closed the connection in the middle of a head", cut=True)
        text = raw.rstrip(b"\r\n")
        if not text:
            return first, Headers(fields)
        name, colon, value = text.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(f"a header line is not 'name: value': {text[:60]!r}")
        key, value = name.lower(), value.strip()
        if key in fields:
            value = fields[key] + ", " + value
        fields[key] = value
    raise HeadError(f"the head has more than {MAX_HEADERS} header lines", status=431)


def head(first: str, headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> bytes:
    """Return a head: `first` (a request or status line) and `headers`, CRLF-ended."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = [first, *(f"{name}: {value}" for name, value in pairs), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def keeps_open(version: str, headers: Headers) -> bool:
    """Return whether a message of HTTP `version` with `headers` leaves its connection
    open for another: HTTP/1.1 unless it says close, HTTP/1.0 only if it asks keep-alive
    (RFC 9112, 9.3)."""
    connection = (headers.get("connection") or "").lower()
    return "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)


def content_length(headers: Headers) -> int | None:
    """Return the body's length the headers give (None: not given); raise HeadError when
    it is not a decimal count or a body is sent chunked (not spoken here)."""
    if "transfer-encoding" in headers:
        raise HeadError("a chunked body is not taken here: send Content-Length")
    text = headers.get("content-length")
    if text is None:
        return None
    if not text.isdigit() or not text.isascii():
        raise HeadError(f"Content-Length is not a count of bytes: {text[:40]!r}")
    if len(text) > MAX_LENGTH_DIGITS:  # and int() refuses more than 4300 digits
        raise HeadError(f"Content-Length has {len(text)} digits: no body is that long")
    return int(text)


def read_body(rfile: IO[bytes], length: int) -> bytes:
    """Return `length` bytes of `rfile`; raise HeadError(cut=True) when the peer closed
    before they all came."""
    body = rfile.read(length) if length else b""
    if len(body) < length:
        raise HeadError(f"the peer closed after {len(body)} of {length} bytes", cut=True)
    return body


def read_chunked(rfile: IO[bytes], limit: int) -> bytes:
    """Return a chunked body (RFC 9112, 7.1) of at most `limit` bytes, its trailers
    skipped; raise HeadError when it is malformed, longer, or cut short."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = read_line(rfile)
        text = line.partition(b";")[0].strip()
        # Only hexadecimal digits: int() would also take "0x1a", "1_0", "+1a" or "-1".
        if not text or not _HEX.issuperset(text):
            raise HeadError(f"a chunk's size is not hexadecimal: {text[:20]!r}")
        chunk = int(text, 16)
        size += chunk
        if size > limit:
            raise HeadError(f"the body is longer than {limit} bytes", status=413)
        if not chunk:
            for _ in range(MAX_HEADERS + 1):  # trailers, up to the empty line
                if not read_line(rfile):
                    return b"".join(parts)
            raise HeadError(f"the body has more than {MAX_HEADERS} trailer lines")
        parts.append(read_body(rfile, chunk))
        if read_line(rfile):
            raise HeadError("a chunk is longer than its size says")
