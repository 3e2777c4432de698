"""The session service against a simulated switch and real, in-process node agents."""

import pytest

from controller.errors import Conflict, NotFound, PartFailed, Unavailable
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.unit.conftest import AGENT_PORT, DPID
from tests.unit.flowsim import SimSwitch


def frame_of(sim: SimSwitch, dport: int) -> list:
    return sim.process(
        {
            "in_port": 1,
            "eth_src": "00:00:00:00:00:01",
            "eth_dst": "00:00:00:00:00:02",
            "eth_type": 0x0800,
            "ip_proto": 17,
            "ipv4_src": "10.0.0.1",
            "ipv4_dst": "10.0.0.2",
            "udp_dst": dport,
        }
    ).outputs


def beat(service, agent) -> None:
    """The agent's periodic registration, which is its heartbeat."""
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )


BODY = {"match": {"udp_dst": 9000}, "module": "counter", "lifetime": 5}


def test_create_detours_the_flow_and_the_agent_counts_it(world):
    service, sim, _, _, agent, _ = world
    session = service.create(BODY)
    [(port, tag)] = frame_of(sim, 9000)
    assert port == AGENT_PORT and tag == session.tag
    for _ in range(3):
        assert agent.dispatcher.dispatch(tag, memoryview(bytearray(60)))
    assert service.stats(session.id)["stats"]["modules"][0]["stats"]["packets"] == 3
    final = service.teardown(session.id)
    assert final["stats"]["packets"] == 3 and final["ended"] == "teardown"
    assert session.cookie not in sim.cookies()
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_agent_refusal_leaves_no_session_flow_or_module(world):
    service, sim, _, _, agent, _ = world
    before = set(sim.cookies())
    with pytest.raises(PartFailed, match="cannot start"):
        service.create({"match": {"udp_dst": 9000}, "modules": ["counter", "broken"]})
    assert service.sessions.all() == [] and sim.cookies() == before
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_switch_failure_undoes_the_agent_chain(world):
    service, sim, switches, _, agent, _ = world
    switches.fail = Unavailable("switch gone")
    with pytest.raises(Unavailable):
        service.create(BODY)
    assert service.sessions.all() == [] and agent.dispatcher.chains() == []


def test_unreachable_agent_changes_nothing(world):
    service, sim, _, agents, _, _ = world
    agents.down = True
    before = set(sim.cookies())
    with pytest.raises(Unavailable):
        service.create(BODY)
    assert service.sessions.all() == [] and sim.cookies() == before


def test_conflict_and_unknown_session(world):
    service, *_ = world
    service.create(BODY)
    with pytest.raises(Conflict):
        service.create(BODY)
    with pytest.raises(NotFound):
        service.teardown(99)


def test_lifetime_expiry_and_refresh(world):
    service, sim, _, _, agent, clock = world
    session = service.create(BODY)
    clock.now += 4
    service.refresh(session.id, {"lifetime": 10})
    clock.now += 9
    beat(service, agent)
    assert service.tick() == []
    clock.now += 2
    beat(service, agent)
    assert service.tick() == [session.id]
    assert service.sessions.all() == [] and session.cookie not in sim.cookies()
    assert agent.dispatcher.chains() == []


def test_a_silent_agent_has_its_sessions_removed_so_traffic_bypasses_it(world):
    service, sim, _, agents, _, clock = world
    session = service.create({**BODY, "lifetime": 600})
    agents.down = True
    clock.now += service.agent_dead_after + 1
    assert service.tick() == [session.id]
    assert frame_of(sim, 9000) == []  # no detour left (forwarding not learned in this sim)
    assert session.cookie not in sim.cookies()


def test_a_restarted_agent_gets_its_chains_back(world, services):
    service, sim, _, agents, old, clock = world
    session = service.create({**BODY, "lifetime": 600})
    new = NodeAgent(AgentConfig(DPID, "s1-na", "s1-ns", "http://c"), Catalog(services), clock)
    agents.by_dpid[DPID] = new
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    chain = new.dispatcher.by_session(session.id)
    assert chain is not None and chain.tag == session.tag


def test_the_agent_expires_chains_by_itself_when_no_teardown_comes(world):
    service, _, _, agents, agent, clock = world
    session = service.create(BODY)
    agents.down = True  # the controller cannot reach the agent: it must clean up alone
    clock.now += session.lifetime + 11
    assert agent.expire_due() == [session.id]
    assert agent.host.loaded() == {}


def test_registration_lists_the_nodes_sessions_and_the_agent_drops_orphans(world, services):
    service, _, _, agents, agent, clock = world
    kept = service.create(BODY)
    agent.attach(77, {"tag": 99, "lifetime": 60, "modules": [{"name": "null"}]})  # an orphan
    reply = service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert reply["sessions"] == [kept.id]
    clock.now += 1
    assert agent.reconcile(reply["sessions"], asked_at=clock.now) == [77]
    assert [c.session_id for c in agent.dispatcher.chains()] == [kept.id]
    agent.attach(78, {"tag": 98, "lifetime": 60, "modules": [{"name": "null"}]})
    assert agent.reconcile([kept.id], asked_at=clock.now - 0.5) == []  # newer than the list


def test_refresh_of_a_node_without_agent_is_unavailable(world):
    service, *_ = world
    session = service.create(BODY)
    del service.network.agents[DPID]
    with pytest.raises(Unavailable):
        service.refresh(session.id, {"lifetime": 9})


def test_stats_follow_a_sessions_frames_and_name_where_the_lost_ones_went(world):
    service, sim, _, _, agent, _ = world
    session = service.create(BODY)
    for _ in range(5):  # the switch detours five frames ...
        [(port, tag)] = frame_of(sim, 9000)
    for _ in range(3):  # ... the agent gets three of them
        agent.dispatcher.dispatch(tag, memoryview(bytearray(60)))
    sim.tx_dropped[AGENT_PORT] = 2  # the switch could not put two on the agent's link
    path = service.stats(session.id)["path"]
    assert (path["switch_sent"], path["agent_received"], path["lost_before_agent"]) == (5, 3, 2)
    assert path["module_dropped"] == 0
    assert path["node_losses"]["switch_tx_dropped"] == 2
    assert path["node_losses"]["agent_queue_dropped"] == 0  # no socket in this test


def test_stats_without_the_switch_still_show_the_agents_counters(world):
    service, sim, switches, _, agent, _ = world
    session = service.create(BODY)
    agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    switches.fail = Unavailable("switch gone")
    stats = service.stats(session.id)
    assert stats["stats"]["packets"] == 1 and stats["path"]["agent_received"] == 1
    assert stats["path"]["switch_sent"] is None and stats["path"]["lost_before_agent"] is None
