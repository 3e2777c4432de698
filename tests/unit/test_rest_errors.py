"""REST errors: every answer is JSON, bad input of any shape a 4xx that says why, no traceback."""

import io
import json
import logging

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller import rest  # noqa: E402
from controller.tables import SESSION_ID_MAX  # noqa: E402
from tests.unit.conftest import TOKEN, node_signed  # noqa: E402

GOOD = b'{"match": {"udp_dst": 9000}, "module": "counter"}'


class Reply:
    def __init__(self, resp) -> None:
        self.status = resp.status_int
        self.content_type = resp.content_type
        self.text = resp.body.decode("utf-8", "replace")
        self.json = json.loads(resp.body)
        self.headers = resp.headers


@pytest.fixture
def api(world, rest_auth):
    """Call the REST API as eventlet's server does: through the guard, with the raw path,
    as the operator (with its token) or, registering, as node 1's agent."""
    service, sim, *_ = world
    app = WSGIApplication()
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: rest_auth})
    served = rest.guard(app)

    def call(method, path, body=None, environ=None) -> Reply:
        req = Request.blank(path, method=method)
        req.environ["RAW_PATH_INFO"] = path.split("?", 1)[0]
        if body is not None:
            req.body = body
        if (method, path) == ("POST", "/netserv/nodes"):
            req.headers.update(node_signed(method, path, body or b""))
        else:
            req.headers["Authorization"] = f"Bearer {TOKEN}"
        req.environ.update(environ or {})
        reply = Reply(req.get_response(served))
        assert reply.content_type == "application/json", reply.text
        assert "Traceback" not in reply.text and 'File "' not in reply.text
        return reply

    return call, service, sim


def state(service, sim):
    return [s.to_json(0) for s in service.sessions.all()], list(sim.flows)


DEEP = [
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested deeper"),
    (b"[" * 100_000, "nested deeper"),  # unclosed
    (b'{"match": ' + b"[" * 40 + b"]" * 40 + b', "module": "null"}', "nested deeper"),
]
BAD_JSON = DEEP + [
    (b'{"match": {"udp_dst": NaN}, "module": "null"}', "NaN"),
    (b'{"match": {"udp_dst": 1}, "module": "counter", "lifetime": Infinity}', "Infinity"),
    (b'{"match": {"udp_dst": -Infinity}, "module": "null"}', "Infinity"),
    (b'{"match": {"udp_dst": 1e400}, "module": "null"}', "too large"),
    (b'{"match": {"udp_dst": 1}, "module": "null", "lifetime": ' + b"9" * 5000 + b"}", "digits"),
    (b'{"match": {"udp_dst": 1}, "module": "nu\xffll"}', "UTF-8"),
    (b"\xff\xfe{\x00}\x00", "UTF-8"),  # UTF-16, which json.loads would guess
    (b'{"match": {"udp_dst": 1}, "module": "\\ud800"}', "surrogate"),
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (b'"a string"', "JSON object"),
    (b"12", "JSON object"),
    (b"null", "JSON object"),
    (b"true", "JSON object"),
    # the last of a repeated key would win: a name given as an object and then as a string
    (b'{"match": {"udp_dst": 1}, "module": {"name": "counter"}, "module": "counter"}', "twice"),
    (
        b'{"match": {"udp_dst": 1}, "modules": [{"name": {"name": "counter"}, "name": "counter"}]}',
        "twice",
    ),
]


@pytest.mark.parametrize("body, words", BAD_JSON)
@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/netserv/sessions"),
        ("POST", "/netserv/sessions/1/refresh"),
        ("POST", "/netserv/nodes"),
    ],
)
def test_bad_json_of_any_shape_is_a_400_that_says_why(api, method, path, body, words):
    call, service, sim = api
    session = call("POST", "/netserv/sessions", GOOD).json
    before = state(service, sim)
    reply = call(method, path, body)
    assert reply.status == 400 and words in reply.json["error"], reply.json
    assert state(service, sim) == before
    assert service.sessions.get(session["id"]).lifetime == session["lifetime"]


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"match": {"udp_dst": 1}, "module": {"name": "counter"}}', "named by a string"),
        (b'{"match": {"udp_dst": 1}, "modules": [{"name": {"name": "counter"}}]}', "string"),
        (b'{"match": {"udp_dst": 1}, "module": "counter", "params": {"log_every": -1}}', "between"),
        (
            b'{"match": {"udp_dst": 1}, "module": "counter", "params": {"log_every": '
            + str(2**64).encode()
            + b"}}",
            "between",
        ),
        (
            b'{"match": {"udp_dst": 1}, "module": "counter", "params": {"log_every": 1'
            + b"0" * 4000
            + b"}}",
            "between",
        ),
    ],
)
def test_module_names_and_parameters_are_checked(api, body, words):
    call, service, sim = api
    before = state(service, sim)
    reply = call("POST", "/netserv/sessions", body)
    assert reply.status == 400 and words in reply.json["error"]
    assert state(service, sim) == before


def test_a_refresh_body_that_is_not_an_object_is_refused(api):
    call, service, _ = api
    session = call("POST", "/netserv/sessions", GOOD).json
    for body in (b"[99]", b"99", b'"x"'):
        assert call("POST", f"/netserv/sessions/{session['id']}/refresh", body).status == 400
    assert call("POST", f"/netserv/sessions/{session['id']}/refresh", b"").status == 200


NOT_SESSION_1 = [
    "+1",
    "01",
    "%31",
    "%2B1",
    "%201",
    "1.0",
    "1e0",
    "0x1",
    "1%00",
    "1%20",
    "0",
    "-1",
    "9" * 30,
    "9" * 5000,
    str(SESSION_ID_MAX + 1),
    "%ff",
    "%D9%A1",  # ARABIC-INDIC DIGIT ONE, which int() takes for 1
]


@pytest.mark.parametrize("sid", NOT_SESSION_1)
@pytest.mark.parametrize(
    "method, suffix, body",
    [
        ("GET", "", None),
        ("DELETE", "", None),
        ("GET", "/stats", None),
        ("POST", "/refresh", b'{"lifetime": 5}'),
    ],
)
def test_only_canonical_decimal_ids_name_a_session(api, sid, method, suffix, body):
    call, service, sim = api
    session = call("POST", "/netserv/sessions", GOOD).json
    assert session["id"] == 1
    before = state(service, sim)
    reply = call(method, f"/netserv/sessions/{sid}{suffix}", body)
    assert reply.status == 404, reply.json
    assert state(service, sim) == before and service.sessions.get(1).lifetime == 60


def test_the_largest_session_id_is_a_plain_not_found(api):
    call, *_ = api
    reply = call("GET", f"/netserv/sessions/{SESSION_ID_MAX}")
    assert reply.status == 404 and reply.json["error"] == f"no session {SESSION_ID_MAX}"


def test_unknown_paths_and_methods_are_json(api):
    call, *_ = api
    assert call("GET", "/netserv/nothing").status == 404
    assert call("GET", "/").status == 404
    assert call("GET", "/netserv/sessions/1/stats/x").status == 404
    reply = call("PUT", "/netserv/sessions")
    assert reply.status == 405 and "GET" in reply.json["error"]
    assert set(reply.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert call("DELETE", "/netserv/modules").status == 405


def test_the_body_is_read_within_its_limits(api):
    call, service, sim = api
    before = state(service, sim)
    reply = call("POST", "/netserv/sessions", b"x" * (rest.MAX_BODY + 1))
    assert reply.status == 413
    short = {"wsgi.input": io.BytesIO(GOOD), "CONTENT_LENGTH": str(len(GOOD) + 10)}
    reply = call("POST", "/netserv/sessions", environ=short)
    assert reply.status == 400 and "ended after" in reply.json["error"]

    class Stalled(io.RawIOBase):
        def read(self, n=-1):
            raise TimeoutError("timed out")

    slow = {"wsgi.input": Stalled(), "CONTENT_LENGTH": "10"}
    reply = call("POST", "/netserv/sessions", environ=slow)
    assert reply.status == 408 and "did not arrive" in reply.json["error"]

    class BrokenChunks(io.RawIOBase):  # what eventlet raises for a chunk size of -1
        def read(self, n=-1):
            raise OSError("unexpected end of file while parsing chunked data")

    broken = {"wsgi.input": BrokenChunks(), "CONTENT_LENGTH": "10"}
    reply = call("POST", "/netserv/sessions", environ=broken)
    assert reply.status == 400 and "could not be read" in reply.json["error"]
    assert state(service, sim) == before


def test_an_unexpected_error_is_a_json_500_without_details(api, caplog, monkeypatch):
    call, service, _ = api

    def broken(*_args):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(service, "create", broken)
    with caplog.at_level(logging.ERROR, logger="netserv.rest"):
        reply = call("POST", "/netserv/sessions", GOOD)
    assert reply.status == 500 and "secret" not in reply.text
    assert reply.json == {"error": rest.INTERNAL_ERROR}
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_an_error_outside_any_handler_is_a_json_500_too(world, caplog):
    def crashing_app(environ, start_response):
        raise KeyError("inside routing")

    req = Request.blank("/netserv/sessions")
    with caplog.at_level(logging.ERROR, logger="netserv.rest"):
        resp = req.get_response(rest.guard(crashing_app))
    assert resp.status_int == 500 and json.loads(resp.body) == {"error": rest.INTERNAL_ERROR}
    assert "inside routing" in caplog.text


def test_a_teardown_reports_the_ended_state(api):
    call, *_ = api
    session = call("POST", "/netserv/sessions", GOOD).json
    final = call("DELETE", f"/netserv/sessions/{session['id']}").json
    assert final["state"] == "ended" and final["ended"] == "teardown"
    assert "stats" in final
