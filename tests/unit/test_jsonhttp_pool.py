"""Kept HTTP/1.1 connections in `jsonhttp.client`: reused, dropped when the peer says
so or closed them, and a call on one the peer closed meanwhile made again once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jsonhttp import client
from jsonhttp.client import ClientError, call_json


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 5.0

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server: _Server = self.server  # type: ignore[assignment]
        server.requests.append((self.client_address[1], json.loads(raw or b"null")))
        status = 409 if self.path == "/refuse" else 200
        data = json.dumps({"port": self.client_address[1]} if status == 200 else {"error": "no"})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        if self.path in ("/close", "/drop"):  # /drop: closes without saying so
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[int, object]] = []


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    client._POOL = client._Pool()  # no connection of another test's server
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _url(srv: _Server, path: str = "/") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_calls_to_one_peer_share_a_connection(server: _Server) -> None:
    ports = {call_json(_url(server), "POST", {"n": n})["port"] for n in range(5)}
    assert len(ports) == 1
    assert [body for _, body in server.requests] == [{"n": n} for n in range(5)]


def test_a_connection_the_peer_closes_is_not_kept(server: _Server) -> None:
    first = call_json(_url(server, "/close"), "POST", {})["port"]
    second = call_json(_url(server), "POST", {})["port"]
    assert first != second


def test_a_refusal_keeps_its_status_and_message(server: _Server) -> None:
    with pytest.raises(ClientError) as caught:
        call_json(_url(server, "/refuse"), "POST", {"n": 1})
    assert (caught.value.status, caught.value.message) == (409, "no")


def test_a_kept_connection_closed_by_the_peer_is_replaced(server: _Server) -> None:
    call_json(_url(server), "POST", {"n": 1})
    ((conn, _),) = client._POOL._idle[("127.0.0.1", server.server_address[1])]
    conn.sock.shutdown(2)  # as if the peer had dropped it while idle
    assert call_json(_url(server), "POST", {"n": 2})["port"] != server.requests[0][0]
    assert [body for _, body in server.requests] == [{"n": 1}, {"n": 2}]


def test_a_stale_connection_is_tried_once_more_on_a_new_one(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = call_json(_url(server, "/drop"), "POST", {"n": 1})["port"]
    # The peer's idle time-out racing the call: the kept connection looks open and then
    # fails before any answer.
    monkeypatch.setattr(client._Connection, "idle_open", lambda self: True)
    time.sleep(0.1)  # the peer's close has arrived
    assert len(client._POOL._idle[("127.0.0.1", server.server_address[1])]) == 1
    assert call_json(_url(server), "POST", {"n": 2})["port"] != first
    assert [body for _, body in server.requests] == [{"n": 1}, {"n": 2}]


def test_an_unreachable_peer_is_status_0() -> None:
    client._POOL = client._Pool()
    srv = _Server()
    url = _url(srv)
    srv.server_close()
    with pytest.raises(ClientError) as caught:
        call_json(url, "POST", {}, timeout=1.0)
    assert caught.value.status == 0
