"""The policy at the gate: REST callers as requesters, refusals that change nothing,
each error mapped to an HTTP status and a signaling code, refusals counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller import errors, rest  # noqa: E402
from controller.auth import RestAuth  # noqa: E402
from controller.errors import (  # noqa: E402
    ModuleNotAllowed,
    NotEndpoint,
    NotOwner,
    QuotaExceeded,
    UnknownRequester,
    signaling_code,
)
from controller.policy import OPERATOR, load_policy  # noqa: E402
from signaling.errors import ErrorCode, SignalingProtocolError  # noqa: E402
from tests.unit.conftest import make  # noqa: E402
from tests.unit.test_policy import ALICE_TOKEN, BOB_TOKEN, digest  # noqa: E402

OPERATOR_TOKEN = "operator-token-0123456789abcdef"
OPERATOR_FILE_TOKEN = "rest-token-file-0123456789abcdef"  # the secrets folder's rest.token
POLICY = f"""
[operator]
tokens = ["{digest(OPERATOR_TOKEN)}"]

[requesters.alice]
tokens = ["{digest(ALICE_TOKEN)}"]
prefixes = ["10.0.0.1/32"]
modules = ["counter"]
max_sessions = 1

[requesters.bob]
tokens = ["{digest(BOB_TOKEN)}"]
prefixes = "any"
modules = "all"
"""
ALICE_FLOW = {"match": {"ipv4_src": "10.0.0.1", "udp_dst": 9000}, "module": "counter"}


def _auth(service) -> RestAuth:
    """The REST callers' check as the controller makes it: the operator's own token
    (rest.token; unused here), else whoever the policy in force names."""
    return RestAuth(
        OPERATOR_FILE_TOKEN,
        {}.get,
        requester=lambda token: service.policy.rest_requester(token),
    )


class Reply:
    def __init__(self, resp) -> None:
        self.status = resp.status_int
        self.json = json.loads(resp.body)
        self.headers = resp.headers


@pytest.fixture
def api(world, tmp_path: Path):
    """The REST API over the in-process world, with a policy file loaded."""
    service, sim, *_ = world
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    service.policy = load_policy(path)
    app = WSGIApplication()
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: _auth(service)})
    served = rest.guard(app)

    def call(method, path, body=None, token=None, header=None) -> Reply:
        req = Request.blank(path, method=method)
        req.environ["RAW_PATH_INFO"] = path
        if body is not None:
            req.body = json.dumps(body).encode()
        if token is not None:
            req.headers["Authorization"] = f"Bearer {token}"
        if header is not None:
            req.headers["Authorization"] = header
        return Reply(req.get_response(served))

    return call, service, sim, path


def state(service, sim):
    return [s.to_json(0) for s in service.sessions.all()], sorted(map(repr, sim.flows))


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic YWxpY2U6eA==", "Bearer wrong-token-0123456789", "x"],
)
def test_a_call_without_a_known_token_is_a_401_and_changes_nothing(api, header):
    call, service, sim, _ = api
    before = state(service, sim)
    reply = call("POST", "/netserv/sessions", ALICE_FLOW, header=header)
    assert reply.status == 401 and reply.json["code"] == "unauthenticated", reply.json
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="netserv"'
    assert state(service, sim) == before
    assert service.rejections.count("rest", "unauthenticated") == 1


def test_a_token_makes_its_holder_the_sessions_requester(api):
    call, service, sim, _ = api
    reply = call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN)
    assert reply.status == 201 and reply.json["requester"] == "alice"
    assert service.sessions.get(reply.json["id"]).requester == "alice"
    assert service.sessions.get(reply.json["id"]).cookie in sim.cookies()


@pytest.mark.parametrize(
    "body, status, code, words",
    [
        (
            {"match": {"ipv4_src": "10.0.0.2", "udp_dst": 9000}, "module": "counter"},
            403,
            "not_endpoint",
            "no endpoint of the flow (ipv4_src=10.0.0.2/32)",
        ),
        ({"match": {"udp_dst": 9000}, "module": "counter"}, 403, "not_endpoint", "no address"),
        (ALICE_FLOW | {"module": "null"}, 403, "module_not_allowed", "module 'null'"),
    ],
)
def test_a_claim_the_policy_forbids_is_refused_and_changes_nothing(api, body, status, code, words):
    call, service, sim, _ = api
    before = state(service, sim)
    reply = call("POST", "/netserv/sessions", body, token=ALICE_TOKEN)
    assert reply.status == status and reply.json["code"] == code, reply.json
    assert words in reply.json["error"]
    assert state(service, sim) == before
    assert service.rejections.count("rest", code) == 1


def test_a_requester_over_its_quota_gets_a_429(api):
    call, service, sim, _ = api
    assert call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN).status == 201
    before = state(service, sim)
    other = {"match": {"ipv4_dst": "10.0.0.1", "udp_dst": 9001}, "module": "counter"}
    reply = call("POST", "/netserv/sessions", other, token=ALICE_TOKEN)
    assert reply.status == 429 and reply.json["code"] == "quota_exceeded"
    assert state(service, sim) == before
    # others are not held to alice's quota
    assert call("POST", "/netserv/sessions", other, token=BOB_TOKEN).status == 201


def test_only_the_owner_or_the_operator_ends_or_refreshes_a_session(api):
    call, service, sim, _ = api
    sid = call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN).json["id"]
    before = state(service, sim)
    for method, path in (
        ("DELETE", f"/netserv/sessions/{sid}"),
        ("POST", f"/netserv/sessions/{sid}/refresh"),
    ):
        reply = call(method, path, {} if method == "POST" else None, token=BOB_TOKEN)
        assert reply.status == 403 and reply.json["code"] == "not_owner"
        assert state(service, sim) == before
        assert call(method, path, {} if method == "POST" else None).status == 401
    assert (
        call("POST", f"/netserv/sessions/{sid}/refresh", {"lifetime": 9}, token=ALICE_TOKEN).status
        == 200
    )
    assert call("DELETE", f"/netserv/sessions/{sid}", token=OPERATOR_TOKEN).status == 200
    assert service.sessions.all() == []


def test_a_refresh_is_held_to_a_reloaded_policy(api):
    call, service, sim, path = api
    sid = call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN).json["id"]
    path.write_text(POLICY.replace('modules = ["counter"]', 'modules = ["null"]'))
    assert call("POST", "/netserv/policy/reload", token=OPERATOR_TOKEN).status == 200
    before = service.sessions.get(sid)
    reply = call("POST", f"/netserv/sessions/{sid}/refresh", {"lifetime": 99}, token=ALICE_TOKEN)
    assert reply.status == 403 and reply.json["code"] == "module_not_allowed"
    assert service.sessions.get(sid) == before


def test_sessions_are_read_with_any_known_token_and_the_rest_without(api):
    call, *_ = api
    assert call("GET", "/netserv/sessions").status == 401  # they name others' flows
    assert call("GET", "/netserv/sessions", token=ALICE_TOKEN).status == 200
    for path in ("/netserv/nodes", "/netserv/modules"):
        assert call("GET", path).status == 200


def test_the_policy_view_is_the_operators_and_counts_refusals(api):
    call, service, *_ = api
    call("POST", "/netserv/sessions", ALICE_FLOW, token="wrong-token-0123456789")
    call("POST", "/netserv/sessions", ALICE_FLOW | {"module": "null"}, token=ALICE_TOKEN)
    call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN)
    assert call("GET", "/netserv/policy").status == 401
    assert call("GET", "/netserv/policy", token=ALICE_TOKEN).json["code"] == "forbidden"
    view = call("GET", "/netserv/policy", token=OPERATOR_TOKEN).json
    assert view["file"] == str(service.policy.source)
    alice = next(r for r in view["requesters"] if r["id"] == "alice")
    assert alice["sessions"] == 1 and alice["max_sessions"] == 1
    assert view["rejections"]["rest"] == {
        "forbidden": 1,
        "module_not_allowed": 1,
        "unauthenticated": 2,
    }


def test_a_bad_reload_keeps_the_policy_in_use(api):
    call, service, _, path = api
    old = service.policy
    path.write_text(POLICY + "\n[requesters.carol]\nprefixes = 5\n")
    reply = call("POST", "/netserv/policy/reload", token=OPERATOR_TOKEN)
    assert reply.status == 422 and reply.json["code"] == "invalid_policy"
    assert "line 16: requesters.carol: 'modules' is required" in reply.json["error"]
    assert service.policy is old
    assert call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN).status == 201


def test_a_good_reload_takes_effect_for_the_next_request(api):
    call, service, _, path = api
    path.write_text(POLICY.replace('"10.0.0.1/32"', '"10.0.0.2/32"'))
    assert call("POST", "/netserv/sessions", ALICE_FLOW, token=ALICE_TOKEN).status == 201
    view = call("POST", "/netserv/policy/reload", token=OPERATOR_TOKEN).json
    assert next(r for r in view["requesters"] if r["id"] == "alice")["prefixes"] == ["10.0.0.2/32"]
    other = ALICE_FLOW | {"match": {"ipv4_src": "10.0.0.1", "udp_dst": 1}}
    assert call("POST", "/netserv/sessions", other, token=ALICE_TOKEN).status == 403


def test_without_a_policy_file_the_operators_token_is_the_only_caller(world):
    service, *_ = world
    app = WSGIApplication()
    auth = _auth(service)
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: auth})
    body = json.dumps({"match": {"udp_dst": 9000}, "module": "counter"}).encode()
    req = Request.blank("/netserv/sessions", method="POST")
    req.environ["RAW_PATH_INFO"] = "/netserv/sessions"
    req.body = body
    req.headers["Authorization"] = f"Bearer {ALICE_TOKEN}"
    assert req.get_response(rest.guard(app)).status_int == 401
    req.headers["Authorization"] = f"Bearer {OPERATOR_FILE_TOKEN}"
    reply = req.get_response(rest.guard(app))
    assert reply.status_int == 201 and json.loads(reply.body)["requester"] == OPERATOR
    req = Request.blank("/netserv/policy/reload", method="POST")
    req.environ["RAW_PATH_INFO"] = "/netserv/policy/reload"
    req.headers["Authorization"] = f"Bearer {OPERATOR_FILE_TOKEN}"
    reply = req.get_response(rest.guard(app))
    assert reply.status_int == 400 and b"without a policy file" in reply.body


# --- the service's gate, whatever the transport ---------------------------------------


def test_the_gate_refuses_before_anything_is_reserved(api):
    _, service, sim, _ = api
    before = state(service, sim)
    next_id = service.sessions._next_id
    for requester, body, error in [
        ("mallory", ALICE_FLOW, UnknownRequester),
        ("alice", ALICE_FLOW | {"match": {"ipv4_src": "10.0.0.9"}}, NotEndpoint),
        ("alice", ALICE_FLOW | {"module": "null"}, ModuleNotAllowed),
    ]:
        with pytest.raises(error):
            make(service, body, requester)
    make(service, ALICE_FLOW, "alice")
    after_one = state(service, sim)
    with pytest.raises(QuotaExceeded):
        make(service, ALICE_FLOW | {"match": {"ipv4_dst": "10.0.0.1"}}, "alice")
    assert state(service, sim) == after_one and after_one != before
    assert service.sessions._next_id == next_id + 1  # no id spent on a refusal
    with pytest.raises(NotOwner):
        service.teardown(service.sessions.all()[0].id, requester="bob")


# --- one map to HTTP, one to signaling codes ------------------------------------------


def _errors() -> list[type[errors.NetServError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, errors.NetServError)
        and c is not errors.NetServError
    ]


@pytest.mark.parametrize(
    "error, status, code",
    [
        (errors.InvalidRequest, 400, ErrorCode.INVALID_REQUEST),
        (errors.Unauthenticated, 401, ErrorCode.BAD_AUTH),
        (errors.UnknownRequester, 401, ErrorCode.UNKNOWN_REQUESTER),
        (errors.Forbidden, 403, ErrorCode.NOT_ENDPOINT),
        (errors.NotEndpoint, 403, ErrorCode.NOT_ENDPOINT),
        (errors.ModuleNotAllowed, 403, ErrorCode.MODULE_NOT_ALLOWED),
        (errors.NotOwner, 403, ErrorCode.UNKNOWN_SESSION),
        (errors.NotFound, 404, ErrorCode.UNKNOWN_SESSION),
        (errors.Conflict, 409, ErrorCode.CONFLICT),
        (errors.PolicyError, 422, ErrorCode.INTERNAL_ERROR),
        (errors.QuotaExceeded, 429, ErrorCode.QUOTA_EXCEEDED),
        (errors.PartFailed, 502, ErrorCode.PART_FAILED),
        (errors.Unavailable, 503, ErrorCode.NODE_UNAVAILABLE),
    ],
)
def test_each_error_has_one_status_and_one_signaling_code(error, status, code):
    response = rest.error_response(error("why"), {})
    assert response.status_int == status
    assert json.loads(response.body) == {"error": "why", "code": error.code}
    assert signaling_code(error("why")) is code


def test_every_error_type_is_mapped_and_has_its_own_code_name():
    for error in _errors():
        assert rest.error_response(error("why"), {}).status_int != 500, error
        if error is not errors.PolicyError:  # the operator's, never a requester's
            assert signaling_code(error("why")) is not ErrorCode.INTERNAL_ERROR, error
    assert len({e.code for e in _errors()}) == len(_errors())


def test_refusals_of_both_transports_are_counted_apart_by_code(caplog):
    counts = errors.Rejections()
    counts.record(errors.QuotaExceeded("full"), "rest", "alice")
    counts.record(errors.QuotaExceeded("full"), "signaling", "alice")
    counts.record(SignalingProtocolError(ErrorCode.REPLAY, "seen"), "signaling", "bob")
    counts.record(SignalingProtocolError(ErrorCode.MALFORMED, "junk"), "signaling", None)
    assert counts.to_json() == {
        "rest": {"quota_exceeded": 1},
        "signaling": {"malformed": 1, "quota_exceeded": 1, "replay": 1},
    }
    assert "refused (signaling, replay) from bob: replay (201): seen" in caplog.text


def test_anything_else_is_an_internal_error_on_both_transports():
    assert signaling_code(RuntimeError("bug")) is ErrorCode.INTERNAL_ERROR
    assert rest.error_response(RuntimeError("bug"), {}).status_int == 500
