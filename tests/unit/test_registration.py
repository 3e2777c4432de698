"""One agent per node: registrations, heartbeats and agents that come and go."""

import threading

import pytest

from controller.errors import Conflict
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.unit.conftest import AGENT_PORT, COPIES_TRUSTED, DPID, make
from tests.unit.test_service import BODY, frame_of


def register(service, agent: NodeAgent, url: str = "http://a", port: str = "s1-ns") -> dict:
    return service.register_agent(
        {"dpid": "1", "switch_port": port, "url": url, "boot_id": agent.boot_id}
    )


def another_agent(services, clock) -> NodeAgent:
    return NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )


def test_a_second_agent_for_a_live_node_is_refused_and_the_first_keeps_serving(world, services):
    service, sim, _, _, first, clock = world
    session = make(service, {**BODY, "lifetime": 600})
    flows = set(sim.cookies())
    second = another_agent(services, clock)
    with pytest.raises(Conflict) as refused:
        register(service, second, url="http://b", port="other-ns")
    message = str(refused.value)
    assert "live agent" in message and "http://a" in message and "stop it" in message
    assert f"pid {first.status().pid}" in message
    registered = service.network.agents[DPID]
    assert (registered.boot_id, registered.url) == (first.boot_id, "http://a")
    assert service.network.agent_port(DPID) == AGENT_PORT and set(sim.cookies()) == flows
    assert second.dispatcher.chains() == []
    assert [c.session_id for c in first.dispatcher.chains()] == [session.id]
    [(port, _)] = frame_of(sim, 9000)
    assert port == AGENT_PORT
    register(service, first)  # the first one's heartbeats go on being taken
    assert service.network.ready(DPID)


def test_an_agent_restarted_at_once_is_taken_without_waiting_for_the_timeout(world, services):
    service, sim, _, agents, crashed, clock = world
    session = make(service, {**BODY, "lifetime": 600})
    restarted = another_agent(services, clock)
    agents.by_dpid[DPID] = restarted  # the old control API is gone; a new one answers
    clock.now += 0.5  # well within the dead-after timeout
    reply = register(service, restarted, url="http://b")
    assert reply["sessions"] == [session.id]
    assert service.network.agents[DPID].boot_id == restarted.boot_id
    assert restarted.dispatcher.by_session(session.id).tag == session.tag
    [(port, _)] = frame_of(sim, 9000)
    assert port == AGENT_PORT
    assert crashed.boot_id != restarted.boot_id


def test_an_unreachable_old_agent_does_not_block_its_successor(world, services):
    service, _, _, agents, _, clock = world
    successor = another_agent(services, clock)
    agents.health_down = True  # the old agent's control API does not answer
    register(service, successor, url="http://b")
    assert service.network.agents[DPID].boot_id == successor.boot_id


def test_a_silent_agent_is_replaced_without_being_asked(world, services):
    service, _, _, agents, old, clock = world
    clock.now += service.agent_dead_after + 1
    service.tick()
    asked = []
    agents.health = lambda agent: asked.append(agent) or old.status()
    successor = another_agent(services, clock)
    register(service, successor, url="http://b")
    assert asked == [] and service.network.agents[DPID].boot_id == successor.boot_id


def test_a_live_agent_cannot_move_its_port(world):
    service, sim, _, _, agent, _ = world
    flows = set(sim.cookies())
    with pytest.raises(Conflict, match="switch port"):
        register(service, agent, port="elsewhere-ns")
    assert service.network.agents[DPID].switch_port == "s1-ns"
    assert service.network.agent_port(DPID) == AGENT_PORT and set(sim.cookies()) == flows


def test_a_refused_agent_stops_instead_of_retrying(services, monkeypatch):
    from jsonhttp.client import ClientError
    from nodes import agent as agent_module

    def refuse(*_args, **_kwargs):
        raise ClientError(409, "node 0000000000000001 already has a live agent")

    monkeypatch.setattr(agent_module, "call_json", refuse)
    config = AgentConfig(DPID, "s1-na", "s1-ns", "http://c", heartbeat=0.05, policy=COPIES_TRUSTED)
    agent = NodeAgent(config, Catalog(services))
    agent.url = "http://127.0.0.1:9"  # its control API listens before it registers
    give_up = threading.Timer(2.0, agent.stopping.set)  # so a loop that retries fails, not hangs
    give_up.start()
    try:
        agent.housekeeping_loop()  # returns at once instead of heart-beating on
    finally:
        give_up.cancel()
    assert agent.stopping.is_set() and "already has a live agent" in agent.refused
