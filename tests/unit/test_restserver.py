"""The controller's HTTP/1.1 server (`controller/restserver.py`) on a real socket, with a
small WSGI app: kept connections, bodies in every framing, refusals in JSON."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from controller import restserver


def echo(environ, start_response):
    """Answer with what the request carried; /skip reads no body."""
    body = b"" if environ["PATH_INFO"] == "/skip" else environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "raw": environ["RAW_PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "length": environ.get("CONTENT_LENGTH"),
        "token": environ.get("HTTP_AUTHORIZATION"),
        "body": body.decode(),
    }
    data = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


@pytest.fixture
def port() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def spawn(fn, *args):
        threading.Thread(target=fn, args=args, daemon=True).start()

    threading.Thread(
        target=restserver.serve, args=(listener, echo, 2.0, 1000, spawn), daemon=True
    ).start()
    yield listener.getsockname()[1]
    listener.close()


def talk(port: int, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send `requests` one after the other on one connection; return each answer, until
    the server closes it."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        rfile = sock.makefile("rb")
        for data in requests:
            try:
                sock.sendall(data)
            except OSError:
                break
            line = rfile.readline()
            if not line:
                break
            headers: dict[str, str] = {}
            while (text := rfile.readline().rstrip(b"\r\n")) != b"":
                name, _, value = text.decode().partition(":")
                headers[name.lower()] = value.strip()
            body = rfile.read(int(headers.get("content-length", "0")))
            answers.append((int(line.split()[1]), headers, body))
            if headers.get("connection") == "close":
                break
    return answers


def test_a_kept_connection_serves_requests_one_after_the_other(port: int) -> None:
    post = b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 2\r\nAuthorization: t\r\n\r\nhi"
    answers = talk(port, post, b"GET /b HTTP/1.1\r\n\r\n")
    assert [status for status, _, _ in answers] == [200, 200]
    first = json.loads(answers[0][2])
    assert (first["method"], first["path"], first["query"], first["token"]) == (
        "POST",
        "/a",
        "x=1",
        "t",
    )
    assert (first["length"], first["body"]) == ("2", "hi")
    assert json.loads(answers[1][2])["path"] == "/b"


def test_http_1_0_closes_unless_it_asks_to_keep(port: int) -> None:
    assert len(talk(port, b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n")) == 1
    kept = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert len(talk(port, kept, kept)) == 2


def test_a_chunked_body_is_read_whole_and_given_a_length(port: int) -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\n th\r\n0\r\n\r\n"
    ((status, _, body),) = talk(port, data)
    assert status == 200 and json.loads(body)["body"] == "hi th"
    assert json.loads(body)["length"] == "5"


def test_a_client_waiting_for_100_continue_gets_it_before_the_answer(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"ok")
        assert b'"body": "ok"' in sock.recv(4096)


def test_head_gets_the_headers_and_no_body(port: int) -> None:
    ((status, headers, body),) = talk(port, b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status == 200 and int(headers["content-length"]) > 0 and body == b""


def test_a_body_left_unread_closes_the_connection_after_the_answer(port: int) -> None:
    skip = b"POST /skip HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    answers = talk(port, skip, b"GET / HTTP/1.1\r\n\r\n")
    assert len(answers) == 1 and answers[0][1]["connection"] == "close"


@pytest.mark.parametrize(
    "data, status, says",
    [
        (b"GET / HTTP/2.0\r\n\r\n", 400, "HTTP/1.0 and HTTP/1.1"),
        (b"GET /\r\n\r\n", 400, "not a request line"),
        (b"get / HTTP/1.1\r\n\r\n", 400, "not a request line"),
        (b"GET x HTTP/1.1\r\n\r\n", 400, "not a request line"),
        (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400, "name: value"),
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", 431, "header lines"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "first line"),
        (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413, "digits"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "hexadecimal"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7d1\r\n", 413, "longer than"),
    ],
)
def test_what_the_http_layer_cannot_read_is_refused_in_json(port, data, status, says) -> None:
    ((got, headers, body),) = talk(port, data)
    assert got == status and headers["connection"] == "close"
    assert headers["content-type"] == "application/json" and says in json.loads(body)["error"]
