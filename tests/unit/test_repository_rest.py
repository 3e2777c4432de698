"""The module repository through the REST API, with a real node agent in process that
fetches bundles from it: versions chosen per session, and every refusal changes nothing
(no session, no flow, nothing loaded, the repository as it was)."""

from __future__ import annotations

import base64
import json

import pytest

from controller.entry import _eventlet_compat
from nodes.sandbox.policy import TierPolicy
from tests.unit.conftest import COPIES_TRUSTED

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller import rest  # noqa: E402
from controller.auth import RestAuth  # noqa: E402
from controller.modules import ModuleSource  # noqa: E402
from controller.policy import ModuleTrust  # noqa: E402
from controller.repository import Repository  # noqa: E402
from nodes.archive import digest, pack  # noqa: E402
from nodes.bundle import BundleError  # noqa: E402
from tests.bundles import module_folder  # noqa: E402
from tests.unit.conftest import DPID, NODE_KEY, TOKEN, node_signed  # noqa: E402

ALICE = "alice-token-0123456789abcdef"  # a requester, not the operator


class Reply:
    def __init__(self, resp) -> None:
        self.status = resp.status_int
        self.json = json.loads(resp.body)


@pytest.fixture
def api(world, tmp_path):
    """The REST API over the in-process world, with a repository; the agent fetches its
    bundles through the same API, signed with the node's key."""
    service, sim, _switches, _agents, node_agent, _clock = world
    service.catalog = ModuleSource(
        service.catalog, Repository(tmp_path / "repo"), lambda: service.policy.modules
    )
    auth = RestAuth(TOKEN, {DPID: NODE_KEY}.get, requester={ALICE: "alice"}.get)
    app = WSGIApplication()
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: auth})
    served = rest.guard(app)

    def call(method, path, body=None, token=TOKEN, signed=False) -> Reply:
        data = b"" if body is None else json.dumps(body).encode()
        req = Request.blank(path, method=method)
        if body is not None:
            req.body = data
        if signed:
            req.headers.update(node_signed(method, path, data))
        elif token:
            req.headers["Authorization"] = f"Bearer {token}"
        return Reply(req.get_response(served))

    def fetch(name, version):
        reply = call("GET", f"/netserv/modules/{name}/{version}/bundle", signed=True)
        if reply.status != 200:
            raise BundleError(reply.json["error"])
        return base64.b64decode(reply.json["bundle"])

    node_agent.bundles.fetch = fetch
    node_agent.host.policy = TierPolicy.parse([*COPIES_TRUSTED.trusted, "tally"])
    return call, service, sim, node_agent


def publish_body(tmp_path, version="1.0.0", **change) -> dict:
    data = pack(module_folder(tmp_path / f"src-{version}", "tally", version, **change))
    return {"bundle": base64.b64encode(data).decode()}


def nothing_changed(service, sim, agent, flows) -> bool:
    return sim.flows == flows and service.sessions.all() == [] and agent.host.loaded() == {}


def test_publish_list_show_and_a_session_that_loads_the_bundle(api, tmp_path):
    call, service, sim, agent = api
    body = publish_body(tmp_path)
    sha = digest(base64.b64decode(body["bundle"]))
    reply = call("POST", "/netserv/modules", body)
    assert reply.status == 201 and reply.json["published"] is True
    assert (reply.json["sha256"], reply.json["source"], reply.json["signer"]) == (
        sha,
        "repository",
        None,
    )
    again = call("POST", "/netserv/modules", body)
    assert again.status == 200 and again.json["published"] is False
    listed = [m for m in call("GET", "/netserv/modules").json["modules"] if m["name"] == "tally"]
    assert [(m["version"], m["source"], m["default"]) for m in listed] == [
        ("1.0.0", "repository", True)
    ]
    shown = call("GET", "/netserv/modules/tally").json
    assert [v["version"] for v in shown["versions"]] == ["1.0.0"]
    assert call("GET", "/netserv/modules/tally/1.0.0").json["sha256"] == sha
    assert call("GET", "/netserv/modules/counter/1.0.0").json["source"] == "path"
    assert call("GET", "/netserv/modules/tally/9.9").status == 404
    assert call("GET", "/netserv/modules/nope").status == 404

    made = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"})
    assert made.status == 201
    assert made.json["modules"] == [
        {"name": "tally", "params": {}, "version": "1.0.0", "sha256": sha}
    ]
    loaded = {f"tally@{sha}": {"version": "1.0.0", "sessions": 1, "tier": "trusted"}}
    assert agent.host.loaded() == loaded
    stats = agent.session_stats(made.json["id"]).to_json()["modules"][0]
    assert stats["name"] == "tally" and stats["stats"]["version"] == "1.0.0"
    call("DELETE", f"/netserv/sessions/{made.json['id']}")
    assert agent.host.loaded() == {}


def test_a_session_names_a_version_or_gets_the_newest_and_keeps_it(api, tmp_path):
    call, service, sim, agent = api
    assert call("POST", "/netserv/modules", publish_body(tmp_path, "1.0.0")).status == 201
    old = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).json
    assert call("POST", "/netserv/modules", publish_body(tmp_path, "2.0.0")).status == 201
    new = call("POST", "/netserv/sessions", {"match": {"udp_dst": 2}, "module": "tally"}).json
    pinned = call(
        "POST",
        "/netserv/sessions",
        {"match": {"udp_dst": 3}, "modules": [{"name": "tally", "version": "1.0.0"}]},
    ).json
    versions = {
        s["id"]: agent.session_stats(s["id"]).to_json()["modules"][0]["stats"]["version"]
        for s in (old, new, pinned)
    }
    assert versions == {old["id"]: "1.0.0", new["id"]: "2.0.0", pinned["id"]: "1.0.0"}
    assert [s.modules[0].version for s in service.sessions.all()] == ["1.0.0", "2.0.0", "1.0.0"]
    assert sorted(v["sessions"] for v in agent.host.loaded().values()) == [1, 2]

    flows = list(sim.flows)
    busy = call("DELETE", "/netserv/modules/tally/1.0.0")
    assert busy.status == 409 and f"session(s) [{old['id']}, {pinned['id']}]" in busy.json["error"]
    assert call("GET", "/netserv/modules/tally/1.0.0").status == 200 and sim.flows == flows
    for session in (old, pinned):
        call("DELETE", f"/netserv/sessions/{session['id']}")
    removed = call("DELETE", "/netserv/modules/tally/1.0.0")
    assert removed.status == 200 and removed.json["removed"] is True
    assert [v["version"] for v in call("GET", "/netserv/modules/tally").json["versions"]] == [
        "2.0.0"
    ]
    gone = call(
        "POST",
        "/netserv/sessions",
        {"match": {"udp_dst": 4}, "module": "tally", "version": "1.0.0"},
    )
    assert gone.status == 400 and "no version '1.0.0'" in gone.json["error"]


def test_only_the_operator_publishes_or_removes(api, tmp_path):
    call, service, sim, agent = api
    body = publish_body(tmp_path)
    assert call("POST", "/netserv/modules", body, token=None).status == 401
    assert call("POST", "/netserv/modules", body, token=ALICE).status == 403
    assert call("GET", "/netserv/modules/tally").status == 404
    call("POST", "/netserv/modules", body)
    assert call("DELETE", "/netserv/modules/tally/1.0.0", token=ALICE).status == 403
    assert call("DELETE", "/netserv/modules/counter/1.0.0").status == 404  # a folder's
    assert call("GET", "/netserv/modules/tally/1.0.0/bundle").status == 401  # agents only


@pytest.mark.parametrize(
    "body, status, code, words",
    [
        ({}, 400, "invalid_request", "'bundle' is required"),
        ({"bundle": "%%%"}, 400, "invalid_request", "not base64"),
        ({"bundle": "", "extra": 1}, 400, "invalid_request", "unknown key"),
        ({"bundle": base64.b64encode(b"x" * 2000).decode()}, 400, "bad_bundle", "not a bundle"),
        ({"bundle": "", "signature": {"key": 1}}, 400, "invalid_request", "'signature'"),
    ],
)
def test_malformed_publish_bodies_are_refused(api, body, status, code, words):
    call, service, sim, agent = api
    reply = call("POST", "/netserv/modules", body)
    assert (reply.status, reply.json["code"]) == (status, code) and words in reply.json["error"]
    assert call("GET", "/netserv/modules/tally").status == 404


def test_a_bundle_with_a_syntax_error_or_an_unsigned_one_under_a_strict_policy_is_refused(
    api, tmp_path
):
    call, service, sim, agent = api
    bad = call("POST", "/netserv/modules", publish_body(tmp_path, code="def f(:\n"))
    assert bad.status == 400 and bad.json["code"] == "bad_bundle"
    assert "tally/module.py line 1: syntax error" in bad.json["error"]
    service.policy = type(service.policy)(
        service.policy.requesters, modules=ModuleTrust(allow_unsigned=False)
    )
    unsigned = call("POST", "/netserv/modules", publish_body(tmp_path))
    assert unsigned.status == 403 and unsigned.json["code"] == "untrusted_bundle"
    assert call("GET", "/netserv/modules/tally").status == 404


def test_the_agent_refuses_bytes_that_are_not_the_sessions_bundle(api, tmp_path):
    call, service, sim, agent = api
    call("POST", "/netserv/modules", publish_body(tmp_path))
    real = agent.bundles.fetch
    agent.bundles.fetch = lambda name, version: real(name, version) + b"\0" * 512
    flows = list(sim.flows)
    reply = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"})
    assert reply.status == 502 and "not" in reply.json["error"] and "sha256" in reply.json["error"]
    assert nothing_changed(service, sim, agent, flows)
    agent.bundles.fetch = real  # a later session fetches again, and gets it right
    assert (
        call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).status
        == 201
    )


def test_a_bundle_whose_import_fails_is_refused_at_the_agent(api, tmp_path):
    call, service, sim, agent = api
    code = "import no_such_package_here\nclass Tally: pass\n"
    assert call("POST", "/netserv/modules", publish_body(tmp_path, code=code)).status == 201
    flows = list(sim.flows)
    reply = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"})
    assert reply.status == 502 and "no_such_package_here" in reply.json["error"]
    assert nothing_changed(service, sim, agent, flows)
