"""The REST layer on Ryu's WSGI router: status codes, messages, nothing changed on error."""

import json

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller.rest import AUTH, INSTANCE, RestApi  # noqa: E402
from tests.unit.conftest import TOKEN, node_signed  # noqa: E402


@pytest.fixture
def api(world, rest_auth):
    service, sim, *_ = world
    app = WSGIApplication()
    app.register(RestApi, {INSTANCE: service, AUTH: rest_auth})

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, object]:
        """Call as the operator (with its token) or, registering, as node 1's agent."""
        req = Request.blank(path, method=method)
        if body is not None:
            req.body = body
        if (method, path) == ("POST", "/netserv/nodes"):
            req.headers.update(node_signed(method, path, body or b""))
        else:
            req.headers["Authorization"] = f"Bearer {TOKEN}"
        resp = req.get_response(app)
        return resp.status_int, json.loads(resp.body)

    return call, service, sim


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "not JSON"),
        (b'"a string"', 400, "JSON object"),
        (b'{"match": {"udp_dst": 9000}, "module": "nope"}', 400, "unknown module"),
        (b'{"match": {"udp_port": 9000}, "module": "counter"}', 400, "unknown match field"),
        (b'{"match": {"udp_dst": 9000}, "module": "counter", "lifetime": -1}', 400, "lifetime"),
        (b'{"match": {"udp_dst": 9000}, "module": "broken"}', 502, "cannot start"),
        (
            b'{"match": {"udp_dst": 1}, "module": "null", "node": "00000000000000ee"}',
            404,
            "no NetServ",
        ),
    ],
)
def test_refused_requests_change_nothing(api, body, status, words):
    call, service, sim = api
    flows = list(sim.flows)
    got, reply = call("POST", "/netserv/sessions", body)
    assert got == status and words in reply["error"]
    assert sim.flows == flows and service.sessions.all() == []


def test_session_lifecycle_over_rest(api):
    call, service, sim = api
    got, session = call(
        "POST", "/netserv/sessions", b'{"match": {"udp_dst": 9000}, "module": "counter"}'
    )
    assert got == 201 and session["state"] == "active" and session["node"] == "0000000000000001"
    assert call("GET", "/netserv/sessions")[1][0]["id"] == session["id"]
    assert call("GET", f"/netserv/sessions/{session['id']}/stats")[1]["stats"]["packets"] == 0
    got, refreshed = call("POST", f"/netserv/sessions/{session['id']}/refresh", b'{"lifetime": 99}')
    assert got == 200 and refreshed["lifetime"] == 99
    assert (
        call("POST", "/netserv/sessions", b'{"match": {"udp_dst": 9000}, "module": "null"}')[0]
        == 409
    )
    got, final = call("DELETE", f"/netserv/sessions/{session['id']}")
    assert got == 200 and final["ended"] == "teardown"
    assert call("GET", f"/netserv/sessions/{session['id']}")[0] == 404
    assert call("DELETE", "/netserv/sessions/abc")[0] == 404


def test_nodes_and_modules(api):
    call, *_ = api
    (node,) = call("GET", "/netserv/nodes")[1]
    assert node["ready"] and node["agent_port"] == 4
    modules = call("GET", "/netserv/modules")[1]
    assert {"counter", "null", "broken"} <= {m["name"] for m in modules["modules"]}
    assert call("POST", "/netserv/nodes", b'{"dpid": 1}')[0] == 400
