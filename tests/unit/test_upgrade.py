"""Hot upgrade in process: the REST call, the controller's session, the agent's chain.

A real node agent (trusted tier) answers through its control API's own handlers and
fetches the bundles the REST API publishes; frames are run through its dispatcher.
The isolated tier's hand-over over the worker's channel is tested on real processes
(tests/integration/test_upgrade.py).
"""

from __future__ import annotations

import base64
import json
import threading

import pytest

from agentproto.fields import ContractError
from agentproto.messages import ModuleSpec, Upgrade
from controller.errors import Conflict
from controller.requests import resolve_module
from nodes import control, handover
from nodes.archive import pack
from tests.bundles import REFUSES, keeper, module_folder
from tests.unit.conftest import policy_of
from tests.unit.test_repository_rest import api  # noqa: F401  (the fixture)


def publish(
    call, tmp_path, version: str, code: str | None = None, observe_only: bool = False
) -> None:
    manifest = "observe_only = true\n" if observe_only else ""
    folder = module_folder(tmp_path / f"src-{version}", "tally", version, code, manifest)
    body = {"bundle": base64.b64encode(pack(folder)).decode()}
    assert call("POST", "/netserv/modules", body).status == 201


def run(agent, session: dict, frames: int) -> None:
    for _ in range(frames):
        assert agent.dispatcher.dispatch(session["tag"], memoryview(bytearray(60)))


def counted(agent, session: dict) -> dict:
    return agent.session_stats(session["id"]).to_json()["modules"][0]["stats"]


@pytest.fixture
def live(api, tmp_path):  # noqa: F811
    """A session on the state-keeping tally 1.0.0 that counted 5 frames."""
    call, service, sim, agent = api
    publish(call, tmp_path, "1.0.0", keeper("1.0.0"))
    session = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).json
    run(agent, session, 5)
    return call, service, sim, agent, session


def test_an_upgrade_hands_the_state_over_and_the_session_records_the_version(live, tmp_path):
    call, service, sim, agent, session = live
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    flows = list(sim.flows)
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {"module": "tally"})
    assert reply.status == 200, reply.json
    assert reply.json["modules"][0]["version"] == "2.0.0"
    assert counted(agent, session) == {"frames": 5, "version": "2.0.0"}
    run(agent, session, 3)
    assert counted(agent, session) == {"frames": 8, "version": "2.0.0"}
    assert [v["version"] for v in agent.host.loaded().values()] == ["2.0.0"]
    assert [s.modules[0].version for s in service.store.load()] == ["2.0.0"]
    assert sim.flows == flows  # the detour is untouched
    again = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {"version": "2.0.0"})
    assert again.status == 409 and "runs tally 2.0.0 already" in again.json["error"]
    back = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {"version": "1.0.0"})
    assert back.status == 200 and counted(agent, session) == {"frames": 8, "version": "1.0.0"}


def test_a_new_version_that_refuses_the_state_changes_nothing(live, tmp_path):
    call, service, sim, agent, session = live
    publish(call, tmp_path, "2.0.0", keeper("2.0.0", REFUSES))
    loaded, flows = agent.host.loaded(), list(sim.flows)
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {})
    assert reply.status == 502 and reply.json["code"] == "part_failed"
    assert "cannot read the state" in reply.json["error"]
    assert "the old version stays" in reply.json["error"]
    assert service.sessions.get(session["id"]).modules[0].version == "1.0.0"
    assert service.sessions.get(session["id"]).state.value == "active"
    assert [s.modules[0].version for s in service.store.load()] == ["1.0.0"]
    assert agent.host.loaded() == loaded and sim.flows == flows
    run(agent, session, 2)
    assert counted(agent, session) == {"frames": 7, "version": "1.0.0"}


def test_a_module_without_export_starts_afresh(api, tmp_path):  # noqa: F811
    call, service, sim, agent = api
    publish(call, tmp_path, "1.0.0")  # tests.bundles.CODE: no export_state
    session = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).json
    run(agent, session, 4)
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    assert call("POST", f"/netserv/sessions/{session['id']}/upgrade", {}).status == 200
    assert counted(agent, session) == {"frames": 0, "version": "2.0.0"}


def test_a_quarantined_module_is_replaced_by_a_fresh_new_version(api, tmp_path):  # noqa: F811
    call, service, sim, agent = api
    broken = keeper("1.0.0").replace("self.frames += 1", "raise RuntimeError('bug')")
    publish(call, tmp_path, "1.0.0", broken)
    session = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).json
    run(agent, session, 12)  # over its error budget of 10 a second
    assert agent.session_stats(session["id"]).to_json()["modules"][0]["state"] == "quarantined"
    publish(call, tmp_path, "1.0.1", keeper("1.0.1"))
    assert call("POST", f"/netserv/sessions/{session['id']}/upgrade", {}).status == 200
    run(agent, session, 3)
    entry = agent.session_stats(session["id"]).to_json()["modules"][0]
    assert entry["state"] == "running" and entry["stats"] == {"frames": 3, "version": "1.0.1"}


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"module": "counter"}, 400, "does not run it"),
        ({"version": "7.0.0"}, 400, "no version '7.0.0'"),
        ({"version": "x"}, 400, "dot-separated numbers"),
        ({"versio": "2.0.0"}, 400, "unknown key(s) ['versio']"),
        ({"version": "1.0.0"}, 409, "already"),
    ],
)
def test_bad_upgrades_are_refused_and_change_nothing(live, body, status, words):
    call, service, sim, agent, session = live
    before = (service.sessions.all(), agent.host.loaded(), list(sim.flows))
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", body)
    assert reply.status == status and words in reply.json["error"], reply.json
    assert (service.sessions.all(), agent.host.loaded(), list(sim.flows)) == before
    assert call("POST", "/netserv/sessions/999/upgrade", {}).status == 404


def test_the_swap_waits_for_the_batch_the_packet_loop_is_in(live, tmp_path):
    call, service, sim, agent, session = live
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    done = threading.Event()
    agent._between_batches.acquire()  # as the packet loop holds it during a batch
    try:
        upgrading = threading.Thread(
            target=lambda: (
                call("POST", f"/netserv/sessions/{session['id']}/upgrade", {}),
                done.set(),
            )
        )
        upgrading.start()
        assert not done.wait(0.3)
        run(agent, session, 2)  # the batch's frames: still the old version's
        assert counted(agent, session)["version"] == "1.0.0"
    finally:
        agent._between_batches.release()
    upgrading.join(5)
    assert done.is_set() and counted(agent, session) == {"frames": 7, "version": "2.0.0"}


def test_a_refresh_whose_description_resolves_to_a_newer_version_upgrades(live, tmp_path):
    from controller.requests import parse_session_request

    call, service, sim, agent, session = live
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    same = parse_session_request(
        {"match": {"udp_dst": 1}, "module": "tally"}, service.catalog, "operator"
    )
    (refreshed,) = service.refresh(session["id"], 30, expect=same)
    assert refreshed.modules[0].version == "2.0.0" and refreshed.lifetime == 30
    assert counted(agent, session) == {"frames": 5, "version": "2.0.0"}
    moved = parse_session_request(
        {"match": {"udp_dst": 2}, "module": "tally"}, service.catalog, "operator"
    )
    with pytest.raises(Conflict, match="another flow"):
        service.refresh(session["id"], 30, expect=moved)
    assert service.sessions.get(session["id"]).modules[0].version == "2.0.0"


def observed(api, tmp_path):  # noqa: F811
    """A copy session on tally 1.0.0, observe-only, and a version 2.0.0 that is not."""
    call, service, sim, agent = api
    publish(call, tmp_path, "1.0.0", keeper("1.0.0"), observe_only=True)
    session = call("POST", "/netserv/sessions", {"match": {"udp_dst": 1}, "module": "tally"}).json
    assert agent.dispatcher.by_session(session["id"]).copy
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    return call, service, sim, agent, session


def test_a_copy_chain_cannot_be_upgraded_to_a_version_that_is_not_observe_only(api, tmp_path):  # noqa: F811
    call, service, sim, agent, session = observed(api, tmp_path)
    before = (service.sessions.all(), agent.host.loaded(), list(sim.flows))
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {"version": "2.0.0"})
    assert reply.status == 409, reply.json
    assert "tally 2.0.0 is not observe-only" in reply.json["error"]
    assert (service.sessions.all(), agent.host.loaded(), list(sim.flows)) == before
    assert agent.dispatcher.by_session(session["id"]).copy


def test_the_agent_refuses_it_too_when_the_controller_would_not(api, tmp_path):  # noqa: F811
    call, service, sim, agent, session = observed(api, tmp_path)
    spec = resolve_module("tally", {}, "2.0.0", service.catalog)
    loaded, chain = agent.host.loaded(), agent.dispatcher.by_session(session["id"])
    body = json.dumps(Upgrade(session["id"], 0, spec).to_json()).encode()
    status, data, _ = control.answer(agent, "POST", f"/sessions/{session['id']}/upgrade", body)
    assert status == 409 and "tally 2.0.0 not taken" in json.loads(data)["error"]
    assert "not observe-only on this node" in json.loads(data)["error"]
    assert agent.host.loaded() == loaded and chain.copy
    assert counted(agent, session)["version"] == "1.0.0"


def test_a_detour_upgraded_to_an_observe_only_version_stays_a_detour(live, tmp_path):
    call, service, sim, agent, session = live
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"), observe_only=True)
    flows = list(sim.flows)
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {})
    assert reply.status == 200, reply.json
    assert not service.copies(service.sessions.get(session["id"])) and sim.flows == flows
    assert not agent.dispatcher.by_session(session["id"]).copy
    run(agent, session, 2)  # the frames still go back
    assert counted(agent, session) == {"frames": 7, "version": "2.0.0"}


def test_the_upgrade_call_is_checked_by_the_contract():
    spec = ModuleSpec("tally", (), "2.0.0", "a" * 64)
    call = Upgrade(7, 1, spec)
    assert (call.METHOD, call.path) == ("POST", "/sessions/7/upgrade")
    assert Upgrade.from_json(call.to_json(), 7) == call
    for body in ({"position": 8, "module": spec.to_json()}, {"position": 0}, {"module": {}}):
        with pytest.raises(ContractError):
            Upgrade.from_json(body, 7)
    assert control.route("POST", "/sessions/7/upgrade")[1] == 7
    with pytest.raises(control.MethodNotAllowed):
        control.route("GET", "/sessions/7/upgrade")
    for path in ("/sessions/07/upgrade", "/sessions/7/upgrades", "/upgrade/7/upgrade"):
        with pytest.raises(control.NoSuchResource):
            control.route("POST", path)


def test_a_state_is_packed_as_json_or_bytes_and_what_json_cannot_carry_is_refused():
    assert handover.copy({"a": [1, 2.5, "x", None]}) == {"a": [1, 2.5, "x", None]}
    assert handover.copy(b"\x00\xff") == b"\x00\xff"
    assert handover.pack(bytearray(b"ab")) == {"bytes": "YWI="}
    for bad in ({1, 2}, float("nan"), object(), b"x" * handover.MAX_STATE):
        with pytest.raises(handover.HandoverError):
            handover.pack(bad)
    for bad in ({}, {"json": 1, "bytes": ""}, {"bytes": "!!"}, {"bytes": 3}, [1]):
        with pytest.raises(handover.HandoverError):
            handover.unpack(bad)


def test_netserv_session_upgrade_sends_what_it_was_given(tmp_path, monkeypatch):
    from tools import cli

    token = tmp_path / "op.token"
    token.write_text("t0ken\n")
    sent = []
    monkeypatch.setattr(
        "signaling.client.call_json",
        lambda url, method, body, timeout, headers: sent.append((method, url, body)) or {},
    )
    argv = ["session", "--url", "http://c", "--token-file", str(token), "upgrade", "4"]
    assert cli.main([*argv, "--version", "2.0.0"]) == 0
    assert cli.main([*argv, "--module", "tally"]) == 0
    assert sent == [
        ("POST", "http://c/netserv/sessions/4/upgrade", {"version": "2.0.0"}),
        ("POST", "http://c/netserv/sessions/4/upgrade", {"module": "tally"}),
    ]


def test_a_signaling_refresh_upgrades_to_a_version_published_since(api, tmp_path):  # noqa: F811
    from controller.signaling import SignalingHandler
    from signaling.values import Description, ModuleRef
    from tests.unit.test_signaling_handler import (
        FLOW,
        KEY,
        Ack,
        ErrorReply,
        Wall,
        answer,
        ask,
        refresh,
        setup,
    )

    call, service, sim, agent = api
    service.policy = policy_of("alice@h1", keys={7: KEY.secret})
    handler = SignalingHandler(service, Wall())
    publish(call, tmp_path, "1.0.0", keeper("1.0.0"))
    described = Description("alice@h1", FLOW, [ModuleRef("tally")], 30)
    assert isinstance(answer(ask(handler, setup(described))), Ack)
    (made,) = service.sessions.all()
    session = {"id": made.id, "tag": made.tag}
    run(agent, session, 4)
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    assert isinstance(answer(ask(handler, refresh(described, sequence=2))), Ack)
    assert service.sessions.get(made.id).modules[0].version == "2.0.0"
    assert counted(agent, session) == {"frames": 4, "version": "2.0.0"}

    publish(call, tmp_path, "3.0.0", keeper("3.0.0", REFUSES))
    error = answer(ask(handler, refresh(described, sequence=3)))
    assert isinstance(error, ErrorReply) and "cannot read the state" in error.reason
    assert service.sessions.get(made.id).modules[0].version == "2.0.0"
    run(agent, session, 1)
    assert counted(agent, session) == {"frames": 5, "version": "2.0.0"}


def test_only_the_sessions_owner_upgrades_it(live, tmp_path):
    from tests.unit.test_repository_rest import ALICE

    call, service, sim, agent, session = live
    service.policy = policy_of("alice")
    publish(call, tmp_path, "2.0.0", keeper("2.0.0"))
    reply = call("POST", f"/netserv/sessions/{session['id']}/upgrade", {}, token=ALICE)
    assert reply.status == 403, reply.json
    assert counted(agent, session) == {"frames": 5, "version": "1.0.0"}
    assert service.sessions.get(session["id"]).modules[0].version == "1.0.0"
