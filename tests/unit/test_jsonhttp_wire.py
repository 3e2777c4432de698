"""HTTP/1.1 heads and bodies as `jsonhttp.wire` reads and writes them: what a peer may
send is taken, and everything else is a HeadError that says why."""

from __future__ import annotations

import io

import pytest

from jsonhttp import wire
from jsonhttp.wire import HeadError, Headers


def _head(data: bytes) -> tuple[str, Headers]:
    return wire.read_head(io.BufferedReader(io.BytesIO(data)))


def _stream(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(data))


# --- heads ---------------------------------------------------------------------------
def test_a_head_is_its_first_line_and_its_headers_by_any_case():
    first, headers = _head(
        b"PUT /sessions/7 HTTP/1.1\r\nContent-Length: 5\r\nX-NetServ-MAC: ab\r\n\r\n"
    )
    assert first == "PUT /sessions/7 HTTP/1.1"
    assert headers == {"content-length": "5", "x-netserv-mac": "ab"}
    assert headers["CONTENT-LENGTH"] == headers.get("Content-Length") == "5"
    assert "X-NETSERV-MAC" in headers and "x-netserv-key" not in headers
    assert headers.get("Missing") is None and headers.get("Missing", "x") == "x"
    assert 5 not in headers  # not a name: not there, no error
    with pytest.raises(KeyError):
        headers["Missing"]


def test_values_lose_their_surrounding_spaces_and_keep_their_colons():
    _, headers = _head(b"GET / HTTP/1.1\r\nHost:  a:80 \r\nEmpty:\r\n\r\n")
    assert headers["host"] == "a:80" and headers["empty"] == ""


def test_a_name_sent_twice_keeps_both_values_joined():
    _, headers = _head(b"GET / HTTP/1.1\r\nVia: a\r\nvia: b\r\nVIA: c\r\n\r\n")
    assert headers["via"] == "a, b, c"


def test_bare_line_feeds_end_lines_too():
    assert _head(b"GET / HTTP/1.1\nA: 1\n\n") == ("GET / HTTP/1.1", {"a": "1"})


def test_empty_lines_before_the_first_are_skipped():
    assert _head(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == ("GET / HTTP/1.1", {})


def test_a_stream_that_ends_before_a_head_is_no_head():
    assert _head(b"") == ("", {})
    assert _head(b"\r\n") == ("", {})


def test_a_head_is_read_up_to_its_end_only():
    rfile = _stream(b"GET /a HTTP/1.1\r\n\r\nbodyGET /b HTTP/1.1\r\n\r\n")
    assert wire.read_head(rfile)[0] == "GET /a HTTP/1.1"
    assert rfile.read(4) == b"body"
    assert wire.read_head(rfile)[0] == "GET /b HTTP/1.1"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # no empty line
        b"GET / HTTP/1.1\r\nHost: x",  # the last line unended
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1",
    ],
)
def test_a_head_cut_short_says_so(data):
    with pytest.raises(HeadError, match="closed") as err:
        _head(data)
    assert err.value.cut


@pytest.mark.parametrize(
    "line",
    [b"no colon", b": no name", b"Name : space before the colon", b" Folded: x", b"\tTab: x"],
)
def test_a_header_line_not_name_colon_value_is_refused(line):
    with pytest.raises(HeadError, match="not 'name: value'") as err:
        _head(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n")
    assert not err.value.cut


def test_lines_over_the_limit_are_refused():
    long = b"a" * (wire.MAX_LINE + 1)
    with pytest.raises(HeadError, match="first line is longer"):
        _head(b"GET /" + long + b" HTTP/1.1\r\n\r\n")
    with pytest.raises(HeadError, match="header line is longer"):
        _head(b"GET / HTTP/1.1\r\nX: " + long + b"\r\n\r\n")
    fits = b"X: " + b"a" * (wire.MAX_LINE - 5) + b"\r\n"  # MAX_LINE bytes with its CRLF
    assert len(_head(b"GET / HTTP/1.1\r\n" + fits + b"\r\n")[1]["x"]) == wire.MAX_LINE - 5


def test_more_header_lines_than_the_limit_are_refused():
    lines = b"".join(b"X-%d: v\r\n" % n for n in range(wire.MAX_HEADERS))
    assert len(_head(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")[1]) == wire.MAX_HEADERS
    with pytest.raises(HeadError, match="more than"):
        _head(b"GET / HTTP/1.1\r\n" + lines + b"X-last: v\r\n\r\n")
    with pytest.raises(HeadError, match="more than"):  # repeats count too
        _head(b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * (wire.MAX_HEADERS + 1) + b"\r\n")


def test_more_empty_lines_than_the_limit_before_a_head_are_refused():
    assert _head(b"\r\n" * (wire.MAX_HEADERS - 1) + b"GET / HTTP/1.1\r\n\r\n")[0]
    with pytest.raises(HeadError, match="empty lines"):
        _head(b"\r\n" * wire.MAX_HEADERS + b"GET / HTTP/1.1\r\n\r\n")


def test_a_head_written_is_read_back():
    pairs = [("Content-Type", "application/json"), ("Via", "a"), ("Via", "b")]
    data = wire.head("HTTP/1.1 201 Created", pairs)
    assert data == (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nVia: a\r\nVia: b\r\n\r\n"
    )
    assert _head(data) == (
        "HTTP/1.1 201 Created",
        {"content-type": "application/json", "via": "a, b"},
    )
    assert wire.head("GET / HTTP/1.1", {"Host": "h"}) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert wire.head("GET / HTTP/1.1", {}) == b"GET / HTTP/1.1\r\n\r\n"


# --- bodies --------------------------------------------------------------------------
def _length(*lines: str) -> int | None:
    return wire.content_length(_head(("GET / HTTP/1.1\r\n" + "".join(lines) + "\r\n").encode())[1])


def test_content_length_is_a_count_of_bytes():
    assert _length() is None
    assert _length("Content-Length: 0\r\n") == 0
    assert _length("content-length:  42 \r\n") == 42
    assert _length("Content-Length: " + "9" * wire.MAX_LENGTH_DIGITS + "\r\n") == int("9" * 18)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "-5", "+5", "1.0", "0x10", "1_0", "1 2", "\uff15", "\u0665", "5, 5"],
)
def test_a_content_length_not_a_count_is_refused(value):
    _, headers = _head(f"GET / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n".encode())
    with pytest.raises(HeadError, match="not a count"):
        wire.content_length(headers)


@pytest.mark.parametrize("digits", [wire.MAX_LENGTH_DIGITS + 1, 5000])
def test_a_content_length_of_too_many_digits_is_refused(digits):
    with pytest.raises(HeadError, match="digits"):
        _length("Content-Length: " + "9" * digits + "\r\n")


@pytest.mark.parametrize("value", ["chunked", "gzip, chunked", "identity"])
def test_a_body_sent_with_a_transfer_encoding_is_refused(value):
    with pytest.raises(HeadError, match="chunked"):
        _length(f"Transfer-Encoding: {value}\r\n", "Content-Length: 5\r\n")


def test_a_body_is_read_to_its_length_only():
    rfile = _stream(b"0123456789")
    assert wire.read_body(rfile, 0) == b""
    assert wire.read_body(rfile, 4) == b"0123"
    assert rfile.read() == b"456789"


def test_a_body_cut_short_says_so():
    with pytest.raises(HeadError, match="after 3 of 5 bytes") as err:
        wire.read_body(_stream(b"abc"), 5)
    assert err.value.cut


# --- chunked bodies ------------------------------------------------------------------
def _chunked(data: bytes, limit: int = 1000) -> bytes:
    return wire.read_chunked(_stream(data), limit)


def test_a_chunked_body_is_its_chunks_joined():
    assert _chunked(b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n") == (
        b"hello 0123456789"
    )
    assert _chunked(b"0\r\n\r\n") == b""
    assert _chunked(b"00a \r\n0123456789\r\n0\r\n\r\n") == b"0123456789"


def test_a_chunked_body_is_read_up_to_its_end_only():
    rfile = _stream(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert wire.read_chunked(rfile, 10) == b"abc"
    assert rfile.read() == b"GET / HTTP/1.1\r\n\r\n"


def test_a_chunked_bodys_trailers_are_skipped():
    rfile = _stream(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\nnext")
    assert wire.read_chunked(rfile, 10) == b"abc" and rfile.read() == b"next"
    many = b"3\r\nabc\r\n0\r\n" + b"X: 1\r\n" * (wire.MAX_HEADERS + 1) + b"\r\n"
    with pytest.raises(HeadError, match="trailer lines"):
        _chunked(many)


def test_a_chunked_body_over_the_limit_is_refused():
    assert _chunked(b"5\r\nhello\r\n0\r\n\r\n", limit=5) == b"hello"
    with pytest.raises(HeadError, match="longer than 5 bytes"):
        _chunked(b"3\r\nhel\r\n3\r\nlo!\r\n0\r\n\r\n", limit=5)
    with pytest.raises(HeadError, match="longer than"):  # refused before it is read
        _chunked(b"fffffffffffffffff\r\n", limit=5)


@pytest.mark.parametrize(
    "size", [b"", b"x", b"-1", b"+5", b"0x5", b"5_0", b"5 5", b"\xd9\xa5", b";ext"]
)
def test_a_chunk_size_not_hexadecimal_is_refused(size):
    with pytest.raises(HeadError, match="not hexadecimal"):
        _chunked(size + b"\r\nhello\r\n0\r\n\r\n")


def test_a_chunk_longer_than_its_size_is_refused():
    with pytest.raises(HeadError, match="longer than its size"):
        _chunked(b"3\r\nhello\r\n0\r\n\r\n")


def test_a_chunk_size_line_over_the_limit_is_refused():
    with pytest.raises(HeadError, match="longer than"):
        _chunked(b"5;" + b"e" * wire.MAX_LINE + b"\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing at all
        b"5",  # the size line unended
        b"5\r\nhel",  # in a chunk's data
        b"5\r\nhello",  # before the CRLF after a chunk
        b"5\r\nhello\r\n",  # before the last chunk
        b"5\r\nhello\r\n0\r\n",  # before the empty line that ends the trailers
        b"5\r\nhello\r\n0\r\nX: 1\r\n",
    ],
)
def test_a_chunked_body_cut_short_says_so(data):
    with pytest.raises(HeadError) as err:
        _chunked(data)
    assert err.value.cut, err.value


@pytest.mark.parametrize(
    "version, connection, kept",
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "Keep-Alive", True),
    ],
)
def test_a_connection_stays_open_as_its_version_and_connection_header_say(
    version: str, connection: str | None, kept: bool
) -> None:
    headers = wire.Headers() if connection is None else wire.Headers(connection=connection)
    assert wire.keeps_open(version, headers) is kept
