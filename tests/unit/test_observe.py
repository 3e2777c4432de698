"""Observe-only chains: the switch copies their flow's frames to the agent and forwards
each frame itself at once; checked on a simulated switch with real in-process agents."""

import shutil

import pytest

from controller import tables
from controller.errors import PartFailed
from controller.match import parse_match
from controller.messages import Output, PopVlan, PushVlan
from controller.pipeline import (
    base_flows,
    reconcile,
    session_detour,
    session_install,
    sessions_rearm,
    to_agent,
)
from controller.requests import ModuleSpec, SessionRequest
from controller.sessions import Session, SessionTable, State
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.sandbox.policy import TierPolicy
from tests.unit.conftest import AGENT_PORT, COPIES_TRUSTED, DPID, make
from tests.unit.flowsim import SimSwitch
from tests.unit.test_failover import down
from tests.unit.test_pipeline import H1, H2, learn_hosts, net, udp  # noqa: F401
from tests.unit.test_service import beat, frame_of

MONITOR = {"match": {"udp_dst": 9000}, "module": "monitor", "lifetime": 600}


def chain_of(*modules: str) -> dict:
    """A session body on UDP 9000 whose chain is `modules`."""
    return {"match": {"udp_dst": 9000}, "modules": list(modules), "lifetime": 600}


TAG, PORT = 7, 4


def test_a_copy_pushes_the_tag_outputs_to_the_agent_pops_the_tag_and_goes_on_to_learn():
    assert to_agent(TAG, PORT) == (PushVlan(TAG), Output(PORT))
    assert to_agent(TAG, PORT, copy=True) == (*to_agent(TAG, PORT), PopVlan())


def session(table: SessionTable, match: dict) -> Session:
    request = SessionRequest(parse_match(match), (ModuleSpec("monitor", ()),), 30)
    return table.move(table.reserve(request, DPID, 0.0).id, State.ACTIVE)


def test_a_copy_rule_is_the_detour_with_the_tag_popped_and_a_goto():
    session = _one({"udp_dst": 9000})
    detour = session_detour(session, AGENT_PORT, 60)
    copy = session_detour(session, AGENT_PORT, 60, copy=True)
    assert copy.actions == to_agent(session.tag, AGENT_PORT, copy=True)
    assert (detour.goto, copy.goto) == (None, tables.LEARN)
    same = ("table", "priority", "match", "cookie", "hard_timeout", "notify_removal")
    assert all(getattr(copy, name) == getattr(detour, name) for name in same)


def test_a_copied_frame_reaches_the_agent_tagged_and_its_destination_untagged(net):  # noqa: F811
    network, sim = net
    learn_hosts(network, sim)
    session = _one({"ipv4_src": "10.0.0.1", "udp_dst": 9000})
    sim.apply(session_install(session, AGENT_PORT, 60, copy=True))
    served = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert served.outputs == [(AGENT_PORT, session.tag), (2, None)]
    assert served.to_controller == []  # a learned host: the frame stays in the datapath
    other = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9001))
    assert other.outputs == [(2, None)]


def test_a_copy_of_an_unlearned_host_is_learned_as_an_unserved_frame_would_be():
    sim = SimSwitch()
    sim.apply(reconcile(base_flows(AGENT_PORT), []))
    session = _one({"udp_dst": 9000})
    sim.apply(session_install(session, AGENT_PORT, 60, copy=True))
    result = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert result.outputs == [(AGENT_PORT, session.tag)]
    assert result.to_controller == [tables.LEARN, tables.FORWARD]  # learned, then flooded


def test_a_rearm_keeps_copies_copies_and_detours_detours():
    table = SessionTable()
    a, b = session(table, {"udp_dst": 9000}), session(table, {"udp_dst": 9001})
    msgs = sessions_rearm([(a, 60), (b, 60)], AGENT_PORT, copies={b.id})
    assert [m.goto for m in msgs[:2]] == [None, tables.LEARN]
    assert msgs[1].actions[-1] == PopVlan() and PopVlan() not in msgs[0].actions


@pytest.fixture
def services(services):
    """The shipped modules and `watch`, an observe-only counter that fails closed (which
    a copy makes moot)."""
    shutil.copytree(services / "counter", services / "watch")
    manifest = (services / "watch" / "manifest.toml").read_text()
    manifest = manifest.replace(
        'name = "counter"', 'name = "watch"\nobserve_only = true\nfailure = "closed"'
    )
    (services / "watch" / "manifest.toml").write_text(manifest)
    return services


@pytest.fixture
def world(world):
    world[4].host.policy = TierPolicy.parse([*COPIES_TRUSTED.trusted, "watch"])
    return world


def test_a_chain_of_observe_only_modules_is_copied_and_the_agent_sends_nothing_back(world):
    service, sim, _, _, agent, _ = world
    session = make(service, chain_of("monitor", "watch"))
    assert service.copies(session)
    result = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert result.outputs == [(AGENT_PORT, session.tag)]  # the copy, tagged
    assert result.to_controller == [tables.LEARN, tables.FORWARD]  # the frame goes on
    tag = session.tag
    assert agent.dispatcher.by_session(session.id).copy
    assert not agent.dispatcher.dispatch(tag, memoryview(bytearray(60)))  # nothing goes back
    stats = service.stats(session.id)
    assert stats["stats"]["packets"] == 1 and stats["stats"]["returned"] == 0
    assert stats["stats"]["modules"][0]["stats"]["packets"] == 1
    path = stats["path"]
    assert path["copy"] and (path["switch_sent"], path["agent_received"]) == (1, 1)
    assert path["lost_before_agent"] == 0
    # nothing is returned or dropped by design: no loss to show
    assert path["agent_returned"] is None and path["module_dropped"] is None


def test_a_mixed_chain_keeps_the_detour(world):
    service, sim, _, _, agent, _ = world
    session = make(service, chain_of("monitor", "counter"))
    assert not service.copies(session)
    assert frame_of(sim, 9000) == [(AGENT_PORT, session.tag)]
    chain = agent.dispatcher.by_session(session.id)
    assert not chain.copy and agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    assert service.stats(session.id)["path"]["copy"] is False


def test_a_dead_agent_neither_black_holes_nor_fails_a_copy_closed(world):
    service, sim, _, agents, agent, clock = world
    copied = make(service, {**MONITOR, "module": "watch"})
    guarded = make(service, {**chain_of("watch", "counter"), "match": {"udp_dst": 9001}})
    assert service.copies(copied) and not service.copies(guarded)
    assert service.fails_closed(guarded) and not service.fails_closed(copied)
    agents.down = True
    down(service, agent)
    assert service.sessions.get(copied.id).state is State.SUSPENDED
    assert frame_of(sim, 9000) == []  # no host is learned in this sim: to the controller
    assert copied.cookie not in sim.cookies()  # the copy rule is out: the normal path
    assert [f.actions for f in sim.with_cookie(guarded.cookie)] == [()]  # the detour: a drop
    agents.down = False
    clock.now += 1
    beat(service, agent)
    assert service.sessions.get(copied.id).state is State.ACTIVE
    assert [p for p, _ in frame_of(sim, 9000)][0] == AGENT_PORT
    assert sim.with_cookie(copied.cookie)[0].goto == tables.LEARN  # a copy again


def test_a_copy_the_agent_refuses_ends_the_session_and_leaves_nothing(world, monkeypatch):
    service, sim, _, _, agent, _ = world
    # The controller's manifests say every module is observe-only; the node's do not.
    monkeypatch.setattr(service, "_observes", lambda spec: True)
    flows = list(sim.flows)
    with pytest.raises(PartFailed, match="counter is not observe-only on this node"):
        make(service, chain_of("monitor", "counter"))
    assert service.sessions.all() == [] and sim.flows == flows
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}
    assert frame_of(sim, 9000) == []  # the normal path: to the controller in this sim


def restarted_agent(service, agent, services, clock) -> NodeAgent:
    """Take `agent` down and register a new one in its place; return it."""
    down(service, agent)
    new = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=agent.host.policy),
        Catalog(services),
        clock,
    )
    service.agents.by_dpid[DPID] = new
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    return new


def test_a_restarted_agent_gets_a_copy_chain_as_a_copy_and_a_detour_as_a_detour(world, services):
    service, sim, _, _, agent, clock = world
    copied = make(service, MONITOR)
    detoured = make(service, {**chain_of("monitor", "counter"), "match": {"udp_dst": 9001}})
    new = restarted_agent(service, agent, services, clock)
    assert new.dispatcher.by_session(copied.id).copy
    assert not new.dispatcher.by_session(detoured.id).copy
    assert sim.with_cookie(copied.cookie)[0].goto == tables.LEARN  # the copy rule again


def test_a_copy_a_restarted_agent_cannot_take_ends_its_session(world, services):
    service, sim, _, _, agent, clock = world
    session = make(service, {**MONITOR, "module": "watch"})
    manifest = services / "watch" / "manifest.toml"  # the node's folder changed meanwhile
    manifest.write_text(manifest.read_text().replace("observe_only = true", ""))
    new = restarted_agent(service, agent, services, clock)
    assert new.dispatcher.chains() == [] and service.sessions.all() == []
    assert session.cookie not in sim.cookies()


def _one(match: dict) -> Session:
    return session(SessionTable(), match)
