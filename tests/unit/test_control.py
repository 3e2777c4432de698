"""The agent's control API on a real socket: every request answered, in JSON, promptly."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from controller.auth import Signer, agent_key_id, controller_key_id
from controller.tables import SESSION_ID_MAX
from nodes import control
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.rawhttp import exchange, has_traceback, next_answer, request

SERVICES = Path(__file__).resolve().parents[2] / "services"
ATTACH = b'{"tag": 5, "lifetime": 30, "modules": [{"name": "counter"}]}'
KEY = bytes(range(32))  # node 1's key


class Served:
    """A node agent's control API on a real socket; `send` calls it as the controller."""

    def __init__(self, start: bool = True) -> None:
        config = AgentConfig(1, "s1-na", "s1-ns", "http://c", key=KEY)
        self.agent = NodeAgent(config, Catalog(SERVICES))
        self.server = control.make_server(self.agent, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.signer = Signer(KEY, controller_key_id(1), agent_key_id(1))
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        if start:
            self.thread.start()

    def signed(self, method: str, path: str, body: bytes = b"", headers=None) -> dict:
        """Return `headers` with the controller's signature of the request added."""
        return {**self.signer.sign(method, path, body), **(headers or {})}

    def send(self, method: str, path: str, body: bytes = b"", headers=None, **kw):
        return exchange(
            self.port, request(method, path, body, self.signed(method, path, body, headers), **kw)
        )

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        for chain in self.agent.dispatcher.chains():
            self.agent.detach(chain.session_id)


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def test_the_endpoints_keep_their_json(served):
    assert served.send("GET", "/health").json()["dpid"] == "0000000000000001"
    attached = served.send("PUT", "/sessions/7", ATTACH)
    assert attached.status == 201 and attached.json()["session"] == 7
    assert attached.json()["modules"][0]["name"] == "counter"
    assert [c["session"] for c in served.send("GET", "/sessions").json()] == [7]
    assert served.send("GET", "/sessions/7").json()["tag"] == 5
    assert served.send("PATCH", "/sessions/7", b'{"lifetime": 99}').status == 200
    assert served.agent.dispatcher.by_session(7).lifetime == 99
    final = served.send("DELETE", "/sessions/7")
    assert final.status == 200 and final.json()["session"] == 7
    assert served.send("GET", "/sessions/7").status == 404
    assert served.agent.dispatcher.chains() == [] and served.agent.host.loaded() == {}


BIG = "9" * 30


@pytest.mark.parametrize(
    "method, path, body, headers, status",
    [
        ("GET", f"/sessions/{BIG}", b"", {}, 404),
        ("DELETE", f"/sessions/{BIG}", b"", {}, 404),
        ("PATCH", f"/sessions/{BIG}", b'{"lifetime": 5}', {}, 404),
        ("PUT", f"/sessions/{BIG}", ATTACH, {}, 404),
        ("PUT", "/sessions/" + "9" * 5000, ATTACH, {}, 404),
        ("PUT", f"/sessions/{SESSION_ID_MAX + 1}", ATTACH, {}, 404),
        ("PUT", "/sessions/%31", ATTACH, {}, 404),
        ("PUT", "/sessions/+1", ATTACH, {}, 404),
        ("PUT", "/sessions/01", ATTACH, {}, 404),
        ("PUT", "/sessions/0", ATTACH, {}, 404),
        ("PUT", "/sessions/1.0", ATTACH, {}, 404),
        ("GET", "/sessions/", b"", {}, 404),
        ("GET", "/sessions/1/x", b"", {}, 404),
        ("GET", "/nothing", b"", {}, 404),
        ("GET", "/health/", b"", {}, 404),
        ("GET", "/\xff", b"", {}, 404),
        ("POST", "/sessions/1", ATTACH, {}, 405),
        ("PUT", "/health", b"{}", {}, 405),
        ("BREW", "/sessions", b"", {}, 405),
        ("PUT", "/sessions/1", ATTACH, {"Content-Length": "abc"}, 400),
        ("PUT", "/sessions/1", ATTACH, {"Content-Length": "-5"}, 400),
        ("PUT", "/sessions/1", ATTACH, {"Content-Length": "9" * 30}, 400),
        ("PUT", "/sessions/1", ATTACH, {"Content-Length": str(10**7)}, 413),
        ("PUT", "/sessions/1", ATTACH, {"Content-Length": "500"}, 400),
        ("PUT", "/sessions/1", ATTACH, {"Transfer-Encoding": "chunked"}, 400),
        ("PUT", "/sessions/1", b"[" * 100_000 + b"]" * 100_000, {}, 400),
        ("PUT", "/sessions/1", b'{"tag": NaN, "lifetime": 5, "modules": ["null"]}', {}, 400),
        ("PUT", "/sessions/1", b'{"tag": 5, "tag": 6}', {}, 400),
        ("PUT", "/sessions/1", b"\xff", {}, 400),
        ("PUT", "/sessions/1", b"[1]", {}, 400),
        ("PATCH", "/sessions/1", b"[1]", {}, 400),
    ],
)
def test_every_request_gets_a_json_answer(served, method, path, body, headers, status):
    answer = served.send(method, path, body, headers)
    assert answer.status == status, answer.body[:300]
    assert not has_traceback(answer.body) and answer.json()["error"]
    assert served.agent.dispatcher.chains() == []
    assert served.send("GET", "/health").status == 200  # and the server still serves


def test_a_long_session_id_does_not_attach_a_chain(served):
    """The issue's case: the agent answers, and makes nothing, for a 30-digit id."""
    answer = served.send("PUT", f"/sessions/{BIG}", ATTACH)
    assert answer.status == 404 and "no session" in answer.json()["error"]
    assert served.agent.dispatcher.chains() == [] and served.agent.host.loaded() == {}


def test_an_unexpected_error_is_a_json_500_without_details(served, monkeypatch, caplog):
    def broken():
        raise RuntimeError("secret detail")

    monkeypatch.setattr(served.agent, "status", broken)
    answer = served.send("GET", "/health")
    assert answer.status == 500 and answer.json() == {"error": control.INTERNAL_ERROR}
    assert "secret detail" in caplog.text


def test_a_stalled_body_is_given_up_after_the_read_timeout(served):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request("PUT", "/sessions/1", b'{"tag"', {"Content-Length": "60"}))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    seconds = time.monotonic() - started
    assert b" 408 " in raw.split(b"\r\n")[0] and b"did not arrive" in raw, raw
    assert control.READ_TIMEOUT - 0.1 <= seconds <= control.READ_TIMEOUT + 1


def test_a_kept_connection_takes_call_after_call_until_it_idles(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        for method, path, body, status in [
            ("PUT", "/sessions/7", ATTACH, 201),
            ("GET", "/health", b"", 200),
            ("DELETE", "/sessions/7", b"", 200),
        ]:
            keep = served.signed(method, path, body, {"Connection": None})
            sock.sendall(request(method, path, body, keep))
            answer = next_answer(sock)
            assert answer.status == status and "connection" not in answer.headers
        started = time.monotonic()
        assert sock.recv(1) == b""  # dropped once idle for READ_TIMEOUT
        assert control.READ_TIMEOUT - 0.1 <= time.monotonic() - started <= control.READ_TIMEOUT + 1


def test_a_refusal_or_connection_close_ends_the_connection(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            request(
                "GET",
                "/sessions/9",
                b"",
                served.signed("GET", "/sessions/9", b"", {"Connection": None}),
            )
        )
        answer = next_answer(sock)
        assert answer.status == 404 and answer.headers["connection"] == "close"
        assert sock.recv(1) == b""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            request("GET", "/health", b"", served.signed("GET", "/health"), version="HTTP/1.0")
        )
        answer = next_answer(sock)
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert sock.recv(1) == b""


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health\r\n\r\n",
        b"GET /health HTTP/2.0\r\n\r\n",
        b"GET /health HTTP/1.1 x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",  # cut short
    ],
)
def test_a_malformed_head_is_a_json_400_that_closes(served, head):
    answer = exchange(served.port, head)
    assert answer.status == 400 and answer.headers["connection"] == "close"
    assert "head" in answer.json()["error"] or "request line" in answer.json()["error"]
    assert served.send("GET", "/health").status == 200


def test_a_client_that_expects_100_continue_gets_it(served):
    sent = served.signed(
        "PUT", "/sessions/7", ATTACH, {"Expect": "100-continue", "Connection": None}
    )
    head = request("PUT", "/sessions/7", b"", {**sent, "Content-Length": str(len(ATTACH))})
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(100) == control.CONTINUE
        sock.sendall(ATTACH)
        assert next_answer(sock).status == 201


def test_requests_are_answered_while_clients_stall(served):
    slow = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(20)]
    try:
        for sock in slow[:10]:
            sock.sendall(request("PUT", "/sessions/1", b"{", {"Content-Length": "60"}))
        for sock in slow[10:]:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        latencies = [served.send("GET", "/health").seconds for _ in range(20)]
        assert max(latencies) < 0.3
    finally:
        for sock in slow:
            sock.close()


def test_a_burst_of_connections_is_queued_not_dropped():
    """More connections than the old backlog of 5 arrive before the server accepts any:
    with that backlog the kernel dropped the extra SYNs and clients retried after 1 s."""
    served = Served(start=False)
    answers: list[int] = []

    def client() -> None:
        answers.append(served.send("GET", "/health").status)

    clients = [threading.Thread(target=client) for _ in range(40)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(0.3)  # every client has connected (or is retrying) before anyone is served
        started = time.monotonic()
        served.thread.start()
        for thread in clients:
            thread.join(10)
        assert answers == [200] * 40
        assert time.monotonic() - started < 0.9
    finally:
        served.close()


def test_routes_are_a_table():
    handler, session_id = control.route("GET", "/sessions/12?x=1")
    assert handler is control.ROUTES[("GET", control.SESSION)] and session_id == 12
    assert control.route("GET", "/health") == (control.ROUTES[("GET", "/health")], 0)
    with pytest.raises(control.MethodNotAllowed) as err:
        control.route("POST", "/sessions")
    assert err.value.allowed == ["GET"]
    for path in ("/sessions/01", "/sessions/x", "/other"):
        with pytest.raises(control.NoSuchResource):
            control.route("GET", path)


@pytest.mark.parametrize("lifetime", [b"0", b"-1", b"86401", b"1" + b"0" * 400, b"true", b"1.5"])
def test_a_lifetime_the_controller_could_not_send_changes_nothing(served, lifetime):
    assert served.send("PUT", "/sessions/7", ATTACH).status == 201
    before = served.agent.dispatcher.by_session(7)
    expires, kept = before.expires, before.lifetime
    answer = served.send("PATCH", "/sessions/7", b'{"lifetime": ' + lifetime + b"}")
    assert answer.status == 400, answer.json()
    chain = served.agent.dispatcher.by_session(7)
    assert (chain.expires, chain.lifetime) == (expires, kept)


# --- who may call ------------------------------------------------------------------
UNSIGNED = [
    ("GET", "/health", b""),
    ("GET", "/sessions", b""),
    ("GET", "/sessions/7", b""),
    ("PUT", "/sessions/7", b'{"tag": 5, "lifetime": 30, "modules": [{"name": "null"}]}'),
    ("PATCH", "/sessions/7", b'{"lifetime": 1}'),
    ("DELETE", "/sessions/7", b""),
    ("GET", "/nothing", b""),
    ("POST", "/sessions/7", b""),
]


def _chain_of(served) -> tuple:
    chain = served.agent.dispatcher.by_session(7)
    return chain.tag, [name for name, _ in chain.modules], chain.lifetime, chain.expires


@pytest.mark.parametrize("method, path, body", UNSIGNED)
def test_an_unsigned_call_is_refused_and_tells_nothing(served, method, path, body):
    assert served.send("PUT", "/sessions/7", ATTACH).status == 201
    before = _chain_of(served)
    answer = exchange(served.port, request(method, path, body))
    assert answer.status == 401 and answer.headers["www-authenticate"] == "NetServ-HMAC-SHA256"
    (message,) = answer.json().values()
    assert "signed" in message and "7" not in message and "counter" not in message
    assert "x-netserv-mac" not in answer.headers  # nothing is signed for a stranger
    assert _chain_of(served) == before


def _forged(served, how: str, method: str, path: str, body: bytes) -> dict:
    """Return the headers of a request signed wrongly in one way."""
    if how == "wrong key":
        return Signer(bytes(32), controller_key_id(1), agent_key_id(1)).sign(method, path, body)
    if how == "another node's key id":
        return Signer(KEY, controller_key_id(2), agent_key_id(2)).sign(method, path, body)
    if how == "the agent's own key id":  # a request of the agent's, turned back on it
        return Signer(KEY, agent_key_id(1), controller_key_id(1)).sign(method, path, body)
    if how == "stale":
        return Signer(KEY, controller_key_id(1), "", clock=lambda: time.time() - 31).sign(
            method, path, body
        )
    if how == "from the future":
        return Signer(KEY, controller_key_id(1), "", clock=lambda: time.time() + 31).sign(
            method, path, body
        )
    headers = served.signer.sign(method, path, body)
    if how == "flipped bit":
        mac = bytearray.fromhex(headers["X-NetServ-MAC"])
        mac[0] ^= 1
        headers["X-NetServ-MAC"] = mac.hex()
    elif how == "another body":
        headers = served.signer.sign(method, path, body.replace(b'"null"', b'"counter"'))
    elif how == "another path":
        headers = served.signer.sign(method, "/sessions/8", body)
    elif how == "another method":
        headers = served.signer.sign("PATCH", path, body)
    elif how == "no MAC":
        del headers["X-NetServ-MAC"]
    elif how == "bad nonce":
        headers["X-NetServ-Nonce"] = "zz" * 16
    return headers


@pytest.mark.parametrize(
    "how",
    [
        "wrong key",
        "another node's key id",
        "the agent's own key id",
        "stale",
        "from the future",
        "flipped bit",
        "another body",
        "another path",
        "another method",
        "no MAC",
        "bad nonce",
    ],
)
def test_a_call_not_signed_by_the_controller_for_this_node_changes_nothing(served, how):
    assert served.send("PUT", "/sessions/7", ATTACH).status == 201
    before = _chain_of(served)
    body = b'{"tag": 5, "lifetime": 30, "modules": [{"name": "null"}]}'  # another chain
    answer = exchange(
        served.port,
        request("PUT", "/sessions/7", body, _forged(served, how, "PUT", "/sessions/7", body)),
    )
    assert answer.status == 401, answer.json()
    assert _chain_of(served) == before


def test_a_replayed_call_is_refused(served):
    """A teardown seen once cannot be played again to end the chain that came after."""
    assert served.send("PUT", "/sessions/7", ATTACH).status == 201
    delete = served.signed("DELETE", "/sessions/7")
    assert exchange(served.port, request("DELETE", "/sessions/7", b"", delete)).status == 200
    assert served.send("PUT", "/sessions/7", ATTACH).status == 201
    again = exchange(served.port, request("DELETE", "/sessions/7", b"", delete))
    assert again.status == 401 and "seen already" in again.json()["error"]
    assert served.agent.dispatcher.by_session(7) is not None


def test_answers_are_signed_by_the_agent_for_the_request(served):
    sent = served.signed("PUT", "/sessions/7", ATTACH)
    answer = exchange(served.port, request("PUT", "/sessions/7", ATTACH, sent))
    assert answer.status == 201 and answer.headers["x-netserv-key"] == agent_key_id(1)
    headers = {"X-NetServ-Key": answer.headers["x-netserv-key"]}
    headers["X-NetServ-MAC"] = answer.headers["x-netserv-mac"]
    served.signer.check(sent, 201, headers, answer.body)
    refused = exchange(
        served.port, request("GET", "/sessions/9", b"", served.signed("GET", "/sessions/9"))
    )
    assert refused.status == 404 and refused.headers["x-netserv-key"] == agent_key_id(1)
    with pytest.raises(ValueError, match="MAC"):
        served.signer.check(sent, 200, headers, answer.body)  # another status
    with pytest.raises(ValueError, match="MAC"):
        other = served.signed("PUT", "/sessions/7", ATTACH)  # another request's nonce
        served.signer.check(other, 201, headers, answer.body)


def test_the_controllers_client_calls_the_agent(served):
    from controller.agent_client import agent_call
    from jsonhttp.client import ClientError

    url = f"http://127.0.0.1:{served.port}"
    body = {"tag": 5, "lifetime": 30, "modules": [{"name": "counter"}]}
    assert agent_call(KEY, 1, url, "PUT", "/sessions/7", body)["session"] == 7
    assert agent_call(KEY, 1, url, "GET", "/health")["sessions"] == [7]
    with pytest.raises(ClientError) as refused:
        agent_call(KEY, 1, url, "GET", "/sessions/8")
    assert refused.value.status == 404  # a signed refusal is the agent's
    with pytest.raises(ClientError) as wrong:
        agent_call(bytes(32), 1, url, "GET", "/health")
    assert wrong.value.status == 0 and "not signed" in wrong.value.message


def test_an_agent_without_a_key_does_not_serve():
    agent = NodeAgent(AgentConfig(1, "s1-na", "s1-ns", "http://c"), Catalog(SERVICES))
    with pytest.raises(ValueError, match="no key"):
        control.make_server(agent, "127.0.0.1", 0)
