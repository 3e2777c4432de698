"""A controller that restarts takes its sessions back from its store and reconciles the
switch's flows instead of wiping them: what was right keeps serving throughout.

A restart here is a second NetServService on the same store file, beside the same
simulated switch and the same in-process agent, with a fresh monotonic clock (as a new
process has) that agrees with the first one only on the time of day.
"""

from dataclasses import replace

import pytest

from controller.messages import FlowDelete
from controller.pipeline import present_request
from controller.service import NetServService
from controller.sessions import State
from controller.store import SessionStore
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.unit.conftest import (
    AGENT_PORT,
    COPIES_TRUSTED,
    DPID,
    PORTS,
    Clock,
    InProcessAgents,
    SimSwitches,
    connect,
    end,
    make,
    refresh,
)
from tests.unit.test_service import BODY, beat, frame_of


@pytest.fixture
def first(services, tmp_path):
    """The world of conftest, but with its store in a file."""
    clock, switches, agents = Clock(), SimSwitches(), InProcessAgents()
    path = tmp_path / "controller.sqlite"
    service = NetServService(
        Catalog(services), switches, agents, clock, store=SessionStore(path, clock, clock.wall)
    )
    connect(service, switches, DPID, PORTS)
    agent = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )
    agents.by_dpid[DPID] = agent
    beat(service, agent)
    return service, switches, agents, agent, clock, path


def restart(first, services, downtime: float = 30.0) -> tuple[NetServService, Clock]:
    """Kill the first controller (nothing is torn down) and start another on its store."""
    old, switches, agents, _agent, clock, path = first
    old.store.close()  # what the kernel does for a killed process
    clock.now += downtime  # the agent and the switch live on meanwhile
    fresh = Clock()
    fresh.now = 3.0  # a new process: its monotonic clock says something else
    fresh.boot = clock.wall() - fresh.now
    store = SessionStore(path, fresh, fresh.wall)
    return NetServService(Catalog(services), switches, agents, fresh, store=store), fresh


def served(sim, agent, session, frames: int) -> None:
    """Send `frames` of the session's flow through the switch and the agent."""
    for _ in range(frames):
        [(port, tag)] = frame_of(sim, 9000)
        assert (port, tag) == (AGENT_PORT, session.tag)
        assert agent.dispatcher.dispatch(tag, memoryview(bytearray(60)))


def counted(agent, session) -> int:
    return agent.session_stats(session.id).modules[0].stats["packets"]


def test_a_store_written_by_one_service_is_read_by_another(first, services):
    service, *_ = first
    body = {
        "match": {"ipv4_src": "10.0.0.0/8", "udp_dst": 9000},
        "modules": ["null", {"name": "counter", "params": {"log_every": 7}}],
        "lifetime": 300,
    }
    made = make(service, body)
    again, clock = restart(first, services, downtime=30)
    (back,) = again.sessions.all()
    assert (
        back.id,
        back.node,
        back.tag,
        back.match,
        back.modules,
        back.lifetime,
        back.requester,
    ) == (
        made.id,
        made.node,
        made.tag,
        made.match,
        made.modules,
        made.lifetime,
        made.requester,
    )
    assert back.state is State.ACTIVE
    assert back.expires - clock() == pytest.approx(300 - 30)
    assert back.created - clock() == pytest.approx(-30)
    assert back.armed_until - clock() == pytest.approx(made.armed_until - first[4].now)
    assert again.network.agents[DPID].boot_id == first[3].boot_id


@pytest.mark.parametrize("heartbeat_first", [True, False])
def test_a_restart_leaves_the_detour_and_the_chain_untouched_and_they_keep_counting(
    first, services, heartbeat_first
):
    service, switches, agents, agent, _, _ = first
    sim = switches.sims[DPID]
    session = make(service, {**BODY, "lifetime": 300})
    served(sim, agent, session, 5)
    chain = agent.dispatcher.by_session(session.id)
    again, clock = restart(first, services)
    served(sim, agent, session, 5)  # while no controller is connected yet
    sim.added.clear()
    # Whether the agent's heartbeat or the switch comes first, no chain is attached
    # again, the session is listed so the agent keeps it, and no flow-mod is sent.
    if not heartbeat_first:
        connect(again, switches, DPID, PORTS)
    reply = again.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert reply["sessions"] == [session.id]
    assert agent.reconcile(reply["sessions"], asked_at=agent.clock()) == []
    if heartbeat_first:
        connect(again, switches, DPID, PORTS)
    assert sim.added == [] and sim.deleted == []
    served(sim, agent, session, 5)
    assert agent.dispatcher.by_session(session.id) is chain and counted(agent, session) == 15
    assert sim.packets_of(session.cookie) == 15
    assert again.stats(session.id)["path"]["switch_sent"] == 15


def test_new_ids_never_reuse_those_of_the_sessions_before_the_restart(first, services):
    service, *_ = first
    kept = make(service, BODY)
    ended = make(service, {**BODY, "match": {"udp_dst": 9001}})
    end(service, ended.id)  # the newest: no stored session has its id any more
    again, _ = restart(first, services)
    connect(again, first[1], DPID, PORTS)
    fresh = make(again, {**BODY, "match": {"udp_dst": 9002}})
    assert fresh.id == ended.id + 1 and kept.id < ended.id


def test_a_session_that_expired_while_the_controller_was_away_is_ended_everywhere(first, services):
    service, switches, agents, agent, _, _ = first
    sim = switches.sims[DPID]
    short = make(service, {**BODY, "lifetime": 20})
    long = make(service, {**BODY, "match": {"udp_dst": 9001}, "lifetime": 300})
    again, clock = restart(first, services, downtime=25)
    assert [s.id for s in again.sessions.all()] == [long.id]
    connect(again, switches, DPID, PORTS)
    assert short.cookie not in sim.cookies() and long.cookie in sim.cookies()
    assert [f.cookie for f in sim.deleted] == [short.cookie]
    reply = again.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert agent.reconcile(reply["sessions"], asked_at=agent.clock()) == [short.id]
    assert again.store.load() == again.sessions.all()


@pytest.mark.parametrize("left_in", [State.INSTALLING, State.ENDING])
def test_a_session_caught_being_installed_or_ended_is_ended_and_leaves_nothing(
    first, services, left_in
):
    service, switches, agents, agent, _, _ = first
    sim = switches.sims[DPID]
    session = make(service, BODY)
    # As if the controller died in the middle of a create (its detour and chain made,
    # its requester not yet answered) or of a teardown (nothing removed yet).
    with service.lock:
        service.sessions._sessions[session.id] = replace(session, state=left_in)
        service._persist(replace(session, state=left_in))
    again, clock = restart(first, services)
    assert again.sessions.all() == [] and again.store.load() == []
    connect(again, switches, DPID, PORTS)
    assert session.cookie not in sim.cookies()
    reply = again.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert agent.reconcile(reply["sessions"], asked_at=agent.clock()) == [session.id]
    assert make(again, BODY).id == session.id + 1


def test_a_session_caught_being_refreshed_keeps_its_old_lifetime_everywhere(
    first, services, monkeypatch
):
    service, switches, agents, agent, _, _ = first
    session = make(service, {**BODY, "lifetime": 100})
    # The refresh reached the agent (a longer lifetime there), then the controller died.
    monkeypatch.setattr(service, "_install", lambda *a: (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        refresh(service, session.id, 1000)
    assert service.store.load()[0].state is State.REFRESHING
    assert agent.dispatcher.by_session(session.id).lifetime == 1000
    again, clock = restart(first, services, downtime=10)
    (back,) = again.sessions.all()
    assert back.state is State.ACTIVE and back.expires - clock() == pytest.approx(90)
    beat(again, agent)
    chain = agent.dispatcher.by_session(session.id)
    assert chain.lifetime == 90  # the rest of the lifetime the controller has
    beat(again, agent)
    assert chain.lifetime == 90  # sent once


def test_a_restart_keeps_how_each_sessions_frames_reach_its_chain(first, services):
    service, switches, agents, agent, _, _ = first
    sim = switches.sims[DPID]
    copied = make(service, {**BODY, "module": "monitor", "lifetime": 300})
    detoured = make(service, {**BODY, "match": {"udp_dst": 9001}, "lifetime": 300})
    assert [s.copy for s in service.store.load()] == [True, False]
    manifest = services / "monitor" / "manifest.toml"  # edited, its version kept
    manifest.write_text(manifest.read_text().replace("observe_only = true", ""))
    again, clock = restart(first, services)
    assert again.copies(again.sessions.get(copied.id))
    assert not again.copies(again.sessions.get(detoured.id))
    sim.added.clear()
    connect(again, switches, DPID, PORTS)
    assert sim.added == [] and sim.deleted == []  # the copy rule stays a copy rule
    new = NodeAgent(  # and an agent that restarts gets the copy it is told
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )
    agents.by_dpid[DPID] = new
    agents.health_down = True
    again.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    # ... and refuses, since its manifest no longer says observe-only: the copy ends
    assert [c.session_id for c in new.dispatcher.chains()] == [detoured.id]
    assert [s.id for s in again.sessions.all()] == [detoured.id]


def test_an_agent_that_restarted_while_the_controller_was_away_gets_its_chains(first, services):
    service, switches, agents, old, _, _ = first
    session = make(service, {**BODY, "lifetime": 300})
    again, clock = restart(first, services)
    new = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )
    agents.by_dpid[DPID] = new
    agents.health_down = True  # the old agent's control API is gone
    again.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    assert new.dispatcher.by_session(session.id).tag == session.tag
    assert again.store.load_agents()[0].boot_id == new.boot_id


def test_an_agent_that_died_while_the_controller_was_away_has_its_sessions_suspended(
    first, services
):
    service, switches, agents, _, _, _ = first
    sim = switches.sims[DPID]
    session = make(service, {**BODY, "lifetime": 300})
    again, clock = restart(first, services)
    connect(again, switches, DPID, PORTS)
    assert session.cookie in sim.cookies()  # until the agent is known to be gone
    agents.down = True
    clock.now += again.agent_dead_after + 1
    assert again.tick() == []
    assert session.cookie not in sim.cookies()  # counter fails open: no detour
    assert [(s.id, s.state) for s in again.store.load()] == [(session.id, State.SUSPENDED)]


def test_reconciling_leaves_the_detour_of_a_session_being_installed_to_its_create(
    world, monkeypatch
):
    service, sim, switches, *_ = world
    service.switch_connected(DPID)  # a reconnect, while a create is under way
    service.ports_replaced(DPID, PORTS)
    real, caught = service._install, []

    def install(session, port):  # the detour is in, the session not yet active
        armed = real(session, port)
        caught.extend(service.reconcile(DPID, switches.request(DPID, present_request())))
        return armed

    monkeypatch.setattr(service, "_install", install)
    session = make(service, BODY)
    assert caught == [] and session.cookie in sim.cookies()


def test_while_a_switch_waits_to_be_reconciled_no_detour_is_added_again(world):
    service, sim, *_ = world
    session = make(service, BODY)
    service.switch_connected(DPID)
    service.network.switches[DPID].ports.clear()  # as after a restart: ports not yet known
    assert service.ports_replaced(DPID, PORTS) == []  # the agent's port "appears"
    assert service.reconcile(DPID, sim.answer(present_request())) == []
    assert session.cookie in sim.cookies()


def test_a_switch_whose_flows_cannot_be_read_is_wiped_and_reinstalled(world):
    service, sim, *_ = world
    session = make(service, BODY)
    service.switch_connected(DPID)
    msgs = service.reconcile(DPID, None)
    assert isinstance(msgs[0], FlowDelete) and msgs[0].priority is None
    sim.apply(msgs)
    assert frame_of(sim, 9000) == [(AGENT_PORT, session.tag)]


def test_every_state_change_reaches_the_store(world, monkeypatch):
    service, *_ = world
    seen = []
    monkeypatch.setattr(service.store, "save", lambda s: seen.append(s.state.value))
    monkeypatch.setattr(service.store, "delete", lambda sid: seen.append(f"deleted {sid}"))
    session = make(service, BODY)
    refresh(service, session.id, 9)
    end(service, session.id)
    assert seen == ["installing", "active", "refreshing", "active", "ending", "deleted 1"]


def test_a_store_that_fails_is_logged_and_the_session_still_served(world, caplog):
    service, sim, *_ = world
    service.store.close()
    session = make(service, BODY)
    assert frame_of(sim, 9000) == [(AGENT_PORT, session.tag)]
    assert "not stored" in caplog.text and "is closed" in caplog.text


def test_a_dead_agent_is_forgotten_so_a_restart_does_not_count_its_node_ready(first, services):
    service, switches, agents, _, clock, _ = first
    make(service, {**BODY, "lifetime": 300})
    agents.down = True
    clock.now += service.agent_dead_after + 1
    service.tick()
    assert service.store.load_agents() == []
    assert [s.state for s in service.store.load()] == [State.SUSPENDED]
    again, _ = restart(first, services)
    connect(again, switches, DPID, PORTS)
    assert DPID not in again.network.agents and not again.network.ready(DPID)
    assert [s.state for s in again.sessions.all()] == [State.SUSPENDED]


def test_a_session_whose_nodes_agent_is_not_in_the_store_is_suspended_until_it_is_back(
    first, services
):
    service, switches, agents, agent, _, _ = first
    session = make(service, {**BODY, "lifetime": 300})
    service.store.delete_agent(DPID)  # declared down, and killed before that was written
    again, _ = restart(first, services)
    assert [s.state for s in again.sessions.all()] == [State.SUSPENDED]
    connect(again, switches, DPID, PORTS)
    assert session.cookie not in switches.sims[DPID].cookies()  # fails open
    beat(again, agent)  # the agent is back, its chain held all along
    assert again.sessions.get(session.id).state is State.ACTIVE
    assert frame_of(switches.sims[DPID], 9000) == [(AGENT_PORT, session.tag)]
