"""Who may call the REST API: the token for sessions, the node's key for registrations."""

from __future__ import annotations

import json

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller import rest  # noqa: E402
from controller.auth import MAC, NONCE, RestAuth, Signer, agent_key_id, controller_key_id  # noqa: E402
from controller.policy import load_policy  # noqa: E402
from tests.unit.conftest import DPID, NODE_KEY, TOKEN, node_signed  # noqa: E402
from tests.unit.test_policy import digest  # noqa: E402

GOOD = b'{"match": {"udp_dst": 9000}, "module": "counter"}'
OTHER_KEY = bytes(range(100, 132))  # node 2's key
REQUESTER_TOKEN = "f" * 64


@pytest.fixture
def api(world):
    """The REST API as eventlet serves it; `call` sends exactly the headers it is given."""
    service, sim, *_ = world
    keys = {DPID: NODE_KEY, 2: OTHER_KEY}
    auth = RestAuth(TOKEN, keys.get, requester={REQUESTER_TOKEN: "alice"}.get)
    app = WSGIApplication()
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: auth})
    served = rest.guard(app)

    def call(method, path, body=b"", headers=None):
        req = Request.blank(path, method=method, headers=headers or {})
        req.environ["RAW_PATH_INFO"] = path
        req.body = body
        return req.get_response(served)

    return call, service, sim


OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def state(service, sim):
    agent = service.network.agents[DPID]
    return (
        [s.to_json(0) for s in service.sessions.all()],
        list(sim.flows),
        (agent.url, agent.switch_port, agent.boot_id, service.network.agent_port(DPID)),
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {TOKEN[:-1]}0"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        node_signed("POST", "/netserv/sessions", GOOD),  # a node's key is not a token
    ],
)
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/netserv/sessions", GOOD),
        ("POST", "/netserv/sessions/1/refresh", b'{"lifetime": 5}'),
        ("DELETE", "/netserv/sessions/1", b""),
        ("GET", "/netserv/sessions", b""),
        ("GET", "/netserv/sessions/1", b""),
        ("GET", "/netserv/sessions/1/stats", b""),
    ],
)
def test_sessions_need_a_token_and_change_nothing_without(api, headers, method, path, body):
    call, service, sim = api
    made = call("POST", "/netserv/sessions", GOOD, OPERATOR)
    assert made.status_int == 201 and made.json["id"] == 1
    before = state(service, sim)
    answer = call(method, path, body, headers)
    assert (
        answer.status_int == 401 and answer.headers["WWW-Authenticate"] == 'Bearer realm="netserv"'
    )
    message = answer.json["error"]
    assert answer.json["code"] == "unauthenticated"
    assert "needs a token" in message and "9000" not in message
    assert state(service, sim) == before


def test_no_body_is_read_for_a_caller_without_a_token(api):
    call, service, sim = api
    before = state(service, sim)
    assert call("POST", "/netserv/sessions", b"x" * (rest.MAX_BODY + 1)).status_int == 401
    assert call("POST", "/netserv/sessions", b"{not json").status_int == 401
    assert state(service, sim) == before


def test_nodes_modules_and_topology_are_open_and_a_requester_token_is_a_caller(api, tmp_path):
    call, service, sim = api
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[requesters.alice]\ntokens = ["{digest(REQUESTER_TOKEN)}"]\n'
        'prefixes = "any"\nmodules = "all"\n'
    )
    service.policy = load_policy(policy)  # the requester hook's own answer must match it
    assert call("GET", "/netserv/nodes").json[0]["ready"]
    assert "counter" in {m["name"] for m in call("GET", "/netserv/modules").json["modules"]}
    assert call("GET", "/netserv/topology").json["switches"][0]["ready"]
    requester = {"Authorization": f"Bearer {REQUESTER_TOKEN}"}
    assert call("POST", "/netserv/sessions", GOOD, requester).status_int == 201
    assert [s["id"] for s in call("GET", "/netserv/sessions", b"", requester).json] == [1]


# --- registrations -------------------------------------------------------------------
def registration(boot_id: str, port: str = "s1-eth2", url: str = "http://127.0.0.1:9") -> bytes:
    """A registration that would move node 1's agent to another port and control API."""
    body = {"dpid": "0000000000000001", "switch_port": port, "url": url, "boot_id": boot_id}
    return json.dumps(body).encode()


def test_an_unsigned_registration_cannot_move_or_replace_the_agent(api):
    call, service, sim = api
    call("POST", "/netserv/sessions", GOOD, OPERATOR)
    before = state(service, sim)
    current = service.network.agents[DPID].boot_id
    for body in (registration("fake"), registration(current)):  # replace it, or move it
        for headers in ({}, OPERATOR):  # the operator's token is not the node's key
            answer = call("POST", "/netserv/nodes", body, headers)
            assert answer.status_int == 401, answer.json
            assert answer.headers["WWW-Authenticate"] == "NetServ-HMAC-SHA256"
            assert MAC not in answer.headers  # nothing is signed for a stranger
    assert state(service, sim) == before


@pytest.mark.parametrize(
    "how, words",
    [
        ("another node's key", "signed with node 0000000000000002's key"),
        ("another node's key, this node's key id", "MAC does not match"),
        ("a key no node has", "MAC does not match"),
        ("a node without a key", "no key is known"),
        ("the controller's key id", "no key is known"),
        ("another body", "MAC does not match"),
        ("stale", "timestamp"),
    ],
)
def test_a_registration_signed_wrongly_is_refused(api, how, words):
    call, service, sim = api
    call("POST", "/netserv/sessions", GOOD, OPERATOR)
    before = state(service, sim)
    body, path = registration("fake"), "/netserv/nodes"
    if how == "another node's key":
        headers = node_signed("POST", path, body, dpid=2, key=OTHER_KEY)
    elif how == "another node's key, this node's key id":
        headers = node_signed("POST", path, body, key=OTHER_KEY)
    elif how == "a key no node has":
        headers = node_signed("POST", path, body, key=bytes(32))
    elif how == "a node without a key":
        headers = node_signed("POST", path, body.replace(b"01", b"03"), dpid=3, key=NODE_KEY)
        body = body.replace(b"01", b"03")
    elif how == "the controller's key id":
        headers = Signer(NODE_KEY, controller_key_id(1), agent_key_id(1)).sign("POST", path, body)
    elif how == "another body":
        headers = node_signed("POST", path, registration("other"))
    else:
        stale = Signer(NODE_KEY, agent_key_id(1), "", clock=lambda: 1_000_000.0)
        headers = stale.sign("POST", path, body)
    answer = call("POST", path, body, headers)
    assert answer.status_int == 401 and words in answer.json["error"], answer.json
    assert state(service, sim) == before


def test_a_signed_registration_is_taken_once_and_answered_signed(api):
    call, service, sim = api
    agent = service.network.agents[DPID]
    body = registration(agent.boot_id, port=agent.switch_port, url=agent.url)  # a heartbeat
    headers = node_signed("POST", "/netserv/nodes", body)
    answer = call("POST", "/netserv/nodes", body, headers)
    assert answer.status_int == 200 and answer.json["dpid"] == "0000000000000001"
    signer = Signer(NODE_KEY, agent_key_id(1), controller_key_id(1))
    signer.check(headers, 200, answer.headers, answer.body)
    replayed = call("POST", "/netserv/nodes", body, headers)
    assert replayed.status_int == 401 and "seen already" in replayed.json["error"]
    # Refusals of a signed registration are signed too: the agent may trust a 409.
    moved = registration(agent.boot_id, port="s1-eth2", url=agent.url)
    headers = node_signed("POST", "/netserv/nodes", moved)
    refused = call("POST", "/netserv/nodes", moved, headers)
    assert refused.status_int == 409 and "keeps them" in refused.json["error"]
    signer.check(headers, 409, refused.headers, refused.body)
    assert headers[NONCE] != node_signed("POST", "/netserv/nodes", moved)[NONCE]
