"""A node agent that dies or hangs: sessions suspended by their failure policy, resumed
when it is back, against a simulated switch and real, in-process node agents."""

import shutil

import pytest

from controller.errors import Unavailable
from controller.modules import as_source
from controller.pipeline import present_request
from controller.sessions import State
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.sandbox.policy import TierPolicy
from tests.unit.conftest import AGENT_PORT, COPIES_TRUSTED, DPID, PORTS, connect, end, make, refresh
from tests.unit.test_service import BODY, beat

OPEN = {**BODY, "lifetime": 600}
CLOSED = {"match": {"udp_dst": 9001}, "module": "guard", "lifetime": 600}


@pytest.fixture
def services(services):
    """The shipped modules and `guard`, a counter whose flow is dropped, not left
    unserved, while its agent is down."""
    shutil.copytree(services / "counter", services / "guard")
    manifest = (services / "guard" / "manifest.toml").read_text()
    manifest = manifest.replace('name = "counter"', 'name = "guard"\nfailure = "closed"')
    (services / "guard" / "manifest.toml").write_text(manifest)
    return services


TRUSTED = TierPolicy.parse([*COPIES_TRUSTED.trusted, "guard"])


@pytest.fixture
def world(world):
    """The world of conftest, its agent trusting `guard` too (it runs in the agent)."""
    world[4].host.policy = TRUSTED
    return world


def path_of(sim, dport: int) -> str:
    """Return where the switch sends a UDP frame to `dport`: "agent", "normal" or "dropped"."""
    result = sim.process(
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
    )
    if [port for port, _ in result.outputs] == [AGENT_PORT]:
        return "agent"
    return "normal" if result.to_controller else "dropped"  # no host learned in the sim


def down(service, agent, reason="died"):
    return service.agent_down(DPID, {"boot_id": agent.boot_id, "reason": reason})


def test_the_manifest_says_how_a_session_fails(world):
    service, *_ = world
    assert service.catalog.get("guard").failure == "closed"
    assert service.catalog.get("counter").failure == "open"
    chain = make(service, {"match": {"udp_dst": 1}, "modules": ["counter", "guard"]})
    assert service.fails_closed(chain)  # one module that fails closed is enough
    service.catalog = as_source(service.catalog)  # as the controller has it: with a repository
    assert service.fails_closed(chain)


def test_a_notice_suspends_each_session_by_its_policy_at_once(world):
    service, sim, _, agents, agent, _ = world
    served, guarded = make(service, OPEN), make(service, CLOSED)
    assert (path_of(sim, 9000), path_of(sim, 9001)) == ("agent", "agent")
    agents.down = True  # the notice needs no answer from the agent
    reply = down(service, agent, "killed by signal 9")
    assert reply == {"dpid": "0000000000000001", "current": True, "suspended": [1, 2]}
    assert (path_of(sim, 9000), path_of(sim, 9001)) == ("normal", "dropped")
    assert {s.state for s in service.sessions.all()} == {State.SUSPENDED}
    assert [f.cookie for f in sim.flows if f.cookie == guarded.cookie] == [guarded.cookie]
    assert served.cookie not in sim.cookies()
    assert not service.network.ready(DPID)
    with pytest.raises(Unavailable):  # no new session while the node has no agent
        make(service, {**OPEN, "match": {"udp_dst": 9002}})
    with pytest.raises(Unavailable, match="suspended"):
        service.stats(served.id)


def test_a_notice_about_an_agent_already_replaced_changes_nothing(world):
    service, sim, *_ = world
    session = make(service, OPEN)
    reply = service.agent_down(DPID, {"boot_id": "an-older-boot", "reason": "died"})
    assert reply["current"] is False and reply["suspended"] == []
    assert path_of(sim, 9000) == "agent" and service.sessions.get(session.id).state is State.ACTIVE


def test_a_notice_must_name_the_boot(world):
    service, *_ = world
    with pytest.raises(Exception, match="boot_id"):
        service.agent_down(DPID, {"reason": "died"})


def test_an_agent_back_from_a_hang_keeps_its_chains_and_gets_its_detours(world):
    service, sim, _, _, agent, clock = world
    session = make(service, OPEN)
    chain = agent.dispatcher.by_session(session.id)
    chain.packets = 7
    down(service, agent, "hung")
    clock.now += 5
    beat(service, agent)  # its heartbeat, with the same boot id
    assert service.sessions.get(session.id).state is State.ACTIVE
    assert path_of(sim, 9000) == "agent"
    assert agent.dispatcher.by_session(session.id) is chain and chain.packets == 7
    assert chain.lifetime == 595  # the rest of the session's lifetime
    assert service.network.ready(DPID)


def test_a_restarted_agent_is_attached_every_suspended_chain(world, services):
    service, sim, _, agents, old, clock = world
    served, guarded = make(service, OPEN), make(service, CLOSED)
    down(service, old)
    new = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=TRUSTED), Catalog(services), clock
    )
    agents.by_dpid[DPID] = new
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    assert [c.session_id for c in new.dispatcher.chains()] == [served.id, guarded.id]
    assert (path_of(sim, 9000), path_of(sim, 9001)) == ("agent", "agent")
    assert {s.state for s in service.sessions.all()} == {State.ACTIVE}


def test_a_resume_the_agent_cannot_take_yet_is_tried_again_at_the_next_tick(world):
    service, sim, _, agents, agent, _ = world
    session = make(service, OPEN)
    down(service, agent)
    agents.down = True  # it registers, then does not answer for a moment
    beat(service, agent)
    assert service.sessions.get(session.id).state is State.SUSPENDED
    assert path_of(sim, 9000) == "normal"
    agents.down = False
    service.tick()
    assert service.sessions.get(session.id).state is State.ACTIVE
    assert path_of(sim, 9000) == "agent"


def test_a_chain_the_restarted_agent_refuses_ends_its_session(world, services):
    service, sim, _, agents, old, clock = world
    session = make(service, OPEN)
    down(service, old)
    shutil.rmtree(services / "counter")  # gone from the node meanwhile
    new = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=TRUSTED), Catalog(services), clock
    )
    agents.by_dpid[DPID] = new
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    assert service.sessions.all() == [] and session.cookie not in sim.cookies()


def test_a_suspended_session_is_refreshed_torn_down_and_expired_without_its_agent(world):
    service, sim, _, agents, agent, clock = world
    kept, torn = make(service, OPEN), make(service, CLOSED)
    down(service, agent)
    agents.down = True  # any call to the agent would raise
    refreshed = refresh(service, kept.id, 30)
    assert refreshed.state is State.SUSPENDED and refreshed.expires == clock.now + 30
    final = end(service, torn.id)
    assert final["state"] == "ended" and "stats" not in final
    assert torn.cookie not in sim.cookies() and path_of(sim, 9001) == "normal"
    clock.now += 31
    assert service.tick() == [kept.id]
    assert service.sessions.all() == []


def test_a_drop_follows_the_lifetime_of_its_session(world):
    service, sim, _, _, agent, clock = world
    guarded = make(service, {**CLOSED, "lifetime": 20})
    down(service, agent)
    (drop,) = [f for f in sim.flows if f.cookie == guarded.cookie]
    assert drop.actions == () and drop.hard_timeout == 30  # lifetime + the grace
    refresh(service, guarded.id, 100)
    (drop,) = [f for f in sim.flows if f.cookie == guarded.cookie]
    assert drop.hard_timeout == 110


def test_the_agent_dying_during_a_refresh_leaves_the_session_suspended(world, monkeypatch):
    service, sim, _, agents, agent, _ = world
    guarded = make(service, CLOSED)
    real = agents.refresh

    def refresh_then_die(a, session):
        real(a, session)
        down(service, agent)  # the notice comes while the refresh is under way

    monkeypatch.setattr(agents, "refresh", refresh_then_die)
    with pytest.raises(Exception, match="suspended|ended"):
        refresh(service, guarded.id, 60)
    # The refresh's detour reached the switch after the suspension's drop: dropped again.
    assert service.sessions.get(guarded.id).state is State.SUSPENDED
    assert path_of(sim, 9001) == "dropped"


def test_a_silent_agent_is_suspended_and_a_switch_reconnecting_keeps_the_drop(world):
    service, sim, switches, agents, _, clock = world
    make(service, CLOSED)
    agents.down = True
    clock.now += service.agent_dead_after + 1
    assert service.tick() == []
    assert path_of(sim, 9001) == "dropped"
    sim.added.clear()
    connect(service, switches, DPID, PORTS)  # reconciled: the drop is what it should hold
    assert sim.added == [] and path_of(sim, 9001) == "dropped"
    assert service.reconcile(DPID, sim.answer(present_request())) == []


def test_the_notice_over_rest_is_signed_with_the_nodes_key_and_answered_signed(world):
    from controller.auth import Signer, agent_key_id, controller_key_id
    from tests.unit.conftest import NODE_KEY, node_signed
    from tests.unit.test_rest_auth import OTHER_KEY

    service, sim, _, _, agent, _ = world
    session = make(service, OPEN)
    call = _rest(service)
    path, body = "/netserv/nodes/0000000000000001/down", f'{{"boot_id": "{agent.boot_id}"}}'
    body = body.encode()
    for headers in ({}, node_signed("POST", path, body, dpid=2, key=OTHER_KEY)):
        refused = call("POST", path, body, headers)  # unsigned; another node's key
        assert refused.status_int == 401
        assert service.sessions.get(session.id).state is State.ACTIVE
    sent = node_signed("POST", path, body)
    answer = call("POST", path, body, sent)
    assert answer.status_int == 200 and answer.json["suspended"] == [session.id]
    signer = Signer(NODE_KEY, agent_key_id(DPID), controller_key_id(DPID))
    signer.check(sent, 200, answer.headers, answer.body)  # raises unless signed back
    assert path_of(sim, 9000) == "normal"


def _rest(service):
    from controller.entry import _eventlet_compat

    _eventlet_compat()
    from ryu.app.wsgi import WSGIApplication
    from webob import Request

    from controller import rest
    from controller.auth import RestAuth
    from tests.unit.conftest import NODE_KEY, TOKEN
    from tests.unit.test_rest_auth import OTHER_KEY

    app = WSGIApplication()
    auth = RestAuth(TOKEN, {DPID: NODE_KEY, 2: OTHER_KEY}.get)
    app.register(rest.RestApi, {rest.INSTANCE: service, rest.AUTH: auth})
    served = rest.guard(app)

    def call(method, path, body=b"", headers=None):
        req = Request.blank(path, method=method, headers=headers or {})
        req.environ["RAW_PATH_INFO"] = path
        req.body = body
        return req.get_response(served)

    return call


def test_a_drop_the_switch_timed_out_before_the_session_ended_is_put_back(world):
    service, sim, _, _, agent, _ = world
    guarded = make(service, CLOSED)
    down(service, agent)
    sim.flows = [f for f in sim.flows if f.cookie != guarded.cookie]  # its timer ran out
    assert path_of(sim, 9001) == "normal"
    service.flow_removed(DPID, guarded.id)
    assert path_of(sim, 9001) == "dropped"


def test_suspended_sessions_outlive_a_controller_restart_and_resume_on_their_agent(
    services, tmp_path
):
    from tests.unit.test_persist import restart

    world = _first(services, tmp_path)
    service, switches, agents, agent, _, _ = world
    guarded = make(service, CLOSED)
    down(service, agent)
    again, _ = restart(world, services)
    assert [s.state for s in again.sessions.all()] == [State.SUSPENDED]
    connect(again, switches, DPID, PORTS)
    assert path_of(switches.sims[DPID], 9001) == "dropped"  # the drop kept, or put back
    beat(again, agent)  # back from its hang, with its boot id and its chain
    assert again.sessions.get(guarded.id).state is State.ACTIVE
    assert path_of(switches.sims[DPID], 9001) == "agent"


def _first(services, tmp_path):
    """The world of test_persist: a service whose store is a file, and its agent."""
    from controller.service import NetServService
    from controller.store import SessionStore
    from tests.unit.conftest import Clock, InProcessAgents, SimSwitches

    clock, switches, agents = Clock(), SimSwitches(), InProcessAgents()
    path = tmp_path / "controller.sqlite"
    service = NetServService(
        Catalog(services), switches, agents, clock, store=SessionStore(path, clock, clock.wall)
    )
    connect(service, switches, DPID, PORTS)
    agent = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=TRUSTED), Catalog(services), clock
    )
    agents.by_dpid[DPID] = agent
    beat(service, agent)
    return service, switches, agents, agent, clock, path
