"""The controller's REST server on the wire: JSON errors, no tracebacks, read time-outs.

Only the controller runs here (no switch): what is tested is its HTTP server.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.auth import Signer, agent_key_id, controller_key_id
from controller.entry import _eventlet_compat
from controller.keyfiles import provision_node_key, read_secret
from tests.rawhttp import Answer, exchange, has_traceback, request
from topo.controller import ControllerProcess

_eventlet_compat()
from controller.rest import READ_TIMEOUT  # noqa: E402

NODE = 0xFE
HEARTBEAT = (
    b'{"dpid": "00000000000000fe", "switch_port": "x-ns", "url": "http://127.0.0.1:9",'
    b' "boot_id": "b"}'
)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        yield ctl


def send(
    ctl: ControllerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **kw,
) -> Answer:
    """Send a request as the operator or, for a registration, as node fe's agent."""
    return exchange(
        ctl.rest_port, request(method, path, body, signed(ctl, method, path, body, headers), **kw)
    )


def signed(
    ctl: ControllerProcess, method: str, path: str, body: bytes, headers: dict[str, str] | None
) -> dict[str, str]:
    """Return `headers` with the operator's token or, registering, node fe's signature."""
    if method == "POST" and path.startswith("/netserv/nodes"):
        key = read_secret(provision_node_key(ctl.secrets, NODE))
        head = Signer(key, agent_key_id(NODE), controller_key_id(NODE)).sign(method, path, body)
    else:
        head = {"Authorization": f"Bearer {ctl.token}"}
    return head | (headers or {})


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/netserv/sessions", b"[" * 100_000 + b"]" * 100_000, 400),
        ("POST", "/netserv/nodes", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
        ("POST", "/netserv/sessions", b'{"match": {"udp_dst": NaN}, "module": "null"}', 400),
        ("POST", "/netserv/sessions", b'{"match": "\xff"}', 400),
        ("POST", "/netserv/sessions", b"[1]", 400),
        ("GET", "/netserv/%ff", b"", 404),
        ("GET", "/netserv/sessions/%31", b"", 404),
        ("GET", "//netserv/nodes", b"", 404),
        ("GET", "/netserv/sessions/" + "9" * 30, b"", 404),
        ("GET", "/netserv/nothing", b"", 404),
        ("PUT", "/netserv/sessions", b"{}", 405),
        ("POST", "/netserv/sessions", b"x" * ((1 << 20) + 1), 413),
    ],
)
def test_bad_requests_get_a_json_error_and_no_traceback(controller, method, path, body, status):
    answer = send(controller, method, path, body)
    assert answer.status == status, answer.body[:300]
    assert not has_traceback(answer.body)
    assert isinstance(answer.json(), dict) and answer.json()["error"]
    assert answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /netserv/nodes HTTP/1.x\r\n\r\n", 400),
        (b"GET /netserv/nodes HTTP/2.0\r\n\r\n", 400),
        (b" /netserv/nodes HTTP/1.1\r\n\r\n", 400),
        (
            b"POST /netserv/sessions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"-1\r\n12\r\n0\r\n\r\n",
            400,
        ),
        (b"GET /netserv/nodes HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    ],
)
def test_malformed_http_gets_a_status_line_and_json(controller, data, status):
    token = f"Authorization: Bearer {controller.token}\r\n".encode()
    data = data.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\n" + token, 1)  # past the token check
    answer = exchange(controller.rest_port, data)
    assert answer.status == status and answer.json()["error"], answer.body
    assert not has_traceback(answer.body)


def test_a_body_that_ends_early_is_refused_at_once(controller):
    answer = send(controller, "POST", "/netserv/sessions", b"{}", headers={"Content-Length": "50"})
    assert answer.status == 400 and "ended after 2 of its 50 bytes" in answer.json()["error"]
    assert answer.seconds < 1


def stalled(port: int, data: bytes) -> socket.socket:
    """Return a connection that sent `data` and then goes quiet, the socket left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def wait_answer(sock: socket.socket, started: float) -> tuple[bytes, float]:
    """Return what the server sent before it closed `sock`, and when (s after `started`)."""
    raw = b""
    with sock:
        while chunk := sock.recv(65536):
            raw += chunk
    return raw, time.monotonic() - started


def test_a_stalled_body_is_given_up_after_the_read_timeout(controller):
    started = time.monotonic()
    sock = stalled(
        controller.rest_port,
        request(
            "POST",
            "/netserv/sessions",
            b'{"match"',
            {"Content-Length": "100", "Authorization": f"Bearer {controller.token}"},
        ),
    )
    raw, seconds = wait_answer(sock, started)
    assert raw.startswith(b"HTTP/1.1 408 ") and b"did not arrive" in raw, raw
    assert READ_TIMEOUT - 0.1 <= seconds <= READ_TIMEOUT + 1


def test_heartbeats_and_reads_stay_prompt_while_clients_stall(controller):
    port, started = controller.rest_port, time.monotonic()
    slow = [
        stalled(port, request("POST", "/netserv/nodes", b'{"dp', {"Content-Length": "500"}))
        for _ in range(20)
    ] + [stalled(port, b"GET /netserv/nodes HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]
    latencies = []
    while time.monotonic() - started < READ_TIMEOUT + 0.5:
        for method, path, body in (
            ("POST", "/netserv/nodes", HEARTBEAT),
            ("GET", "/netserv/nodes", b""),
            ("GET", "/netserv/sessions", b""),
        ):
            answer = send(controller, method, path, body)
            assert answer.status == 200, answer.body
            latencies.append(answer.seconds)
    assert len(latencies) > 30 and max(latencies) < 0.3, sorted(latencies)[-5:]
    for sock in slow:  # every stalled client was dropped after the read time-out
        _, seconds = wait_answer(sock, started)
        assert seconds <= READ_TIMEOUT + 1.5


def test_callers_are_checked_on_the_wire(controller):
    """Eventlet's server hands the checks what was sent: the query is part of what is
    signed, and the challenges reach the client."""
    query = "/netserv/nodes?from=agent"
    assert send(controller, "POST", query, HEARTBEAT).status == 200
    unsigned = exchange(controller.rest_port, request("POST", "/netserv/nodes", HEARTBEAT))
    assert unsigned.status == 401 and unsigned.headers["www-authenticate"] == "NetServ-HMAC-SHA256"
    resigned = signed(controller, "POST", "/netserv/nodes", HEARTBEAT, None)
    moved = exchange(controller.rest_port, request("POST", query, HEARTBEAT, resigned))
    assert moved.status == 401 and "MAC does not match" in moved.json()["error"]
    no_token = exchange(controller.rest_port, request("GET", "/netserv/sessions"))
    assert no_token.status == 401
    assert no_token.headers["www-authenticate"] == 'Bearer realm="netserv"'
    assert str(controller.secrets / "rest.token") in no_token.json()["error"]
    assert send(controller, "GET", "/netserv/sessions").json() == []
