"""The session service against a simulated switch and real, in-process node agents."""

import shutil
from pathlib import Path

import pytest

from controller.errors import Conflict, NotFound, PartFailed, Unavailable
from controller.service import NetServService
from nodes.agent import AgentConfig, AttachError, NodeAgent
from nodes.bundle import Catalog
from tests.unit.flowsim import SimSwitch

SERVICES = Path(__file__).resolve().parents[2] / "services"
DPID, AGENT_PORT = 1, 4
PORTS = {1: "s1-eth1", 2: "s1-eth2", AGENT_PORT: "s1-ns"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SimSwitches:
    def __init__(self) -> None:
        self.sims: dict[int, SimSwitch] = {}
        self.fail: Exception | None = None

    def send(self, dpid, msgs):
        if self.fail:
            raise self.fail
        self.sims.setdefault(dpid, SimSwitch()).apply(msgs)


class InProcessAgents:
    """The Agents port, answered by real NodeAgent objects instead of over HTTP."""

    def __init__(self) -> None:
        self.by_dpid: dict[int, NodeAgent] = {}
        self.down = False

    def _agent(self, agent):
        if self.down:
            raise Unavailable("agent unreachable")
        return self.by_dpid[agent.dpid]

    def attach(self, agent, session):
        body = {
            "tag": session.tag,
            "lifetime": session.lifetime,
            "modules": [m.to_json() for m in session.modules],
        }
        try:
            self._agent(agent).attach(session.id, body)
        except AttachError as exc:
            raise PartFailed(str(exc)) from None

    def refresh(self, agent, session):
        self._agent(agent).refresh(session.id, session.lifetime)

    def detach(self, agent, session_id):
        return self._agent(agent).detach(session_id)

    def stats(self, agent, session_id):
        return self._agent(agent).dispatcher.by_session(session_id).stats()


@pytest.fixture
def services(tmp_path: Path) -> Path:
    root = tmp_path / "services"
    shutil.copytree(SERVICES, root)
    broken = root / "broken"
    broken.mkdir()
    (broken / "manifest.toml").write_text('name = "broken"\nentry = "module:Broken"\n')
    (broken / "module.py").write_text(
        "from nodes.module_api import ServiceModule\n"
        "class Broken(ServiceModule):\n"
        "    def __init__(self, params, ctx):\n"
        "        raise RuntimeError('cannot start')\n"
    )
    return root


@pytest.fixture
def world(services: Path):
    clock, switches, agents = Clock(), SimSwitches(), InProcessAgents()
    service = NetServService(Catalog(services), switches, agents, clock)
    switches.send(DPID, service.switch_connected(DPID))
    switches.send(DPID, service.ports_changed(DPID, PORTS, set()))
    node_agent = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c"), Catalog(services), clock
    )
    agents.by_dpid[DPID] = node_agent
    service.register_agent(
        {
            "dpid": "0000000000000001",
            "switch_port": "s1-ns",
            "url": "http://a",
            "boot_id": node_agent.boot_id,
        }
    )
    return service, switches.sims[DPID], switches, agents, node_agent, clock


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
