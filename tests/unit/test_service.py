"""The session service against a simulated switch and real, in-process node agents."""

import struct

import pytest

from agentproto.limits import EXPIRY_GRACE
from agentproto.messages import Attach, ModuleSpec
from controller import pipeline, tables
from controller.errors import Conflict, InvalidRequest, NotFound, PartFailed, Unavailable
from controller.requests import MAX_LIFETIME, parse_refresh
from controller.sessions import State
from controller.tables import HARD_TIMEOUT_CAP
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.unit.conftest import AGENT_PORT, COPIES_TRUSTED, DPID, end, make, refresh
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
    session = make(service, BODY)
    [(port, tag)] = frame_of(sim, 9000)
    assert port == AGENT_PORT and tag == session.tag
    for _ in range(3):
        assert agent.dispatcher.dispatch(tag, memoryview(bytearray(60)))
    assert service.stats(session.id)["stats"]["modules"][0]["stats"]["packets"] == 3
    final = end(service, session.id)
    assert final["stats"]["packets"] == 3 and final["ended"] == "teardown"
    assert session.cookie not in sim.cookies()
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_agent_refusal_leaves_no_session_flow_or_module(world):
    service, sim, _, _, agent, _ = world
    before = set(sim.cookies())
    with pytest.raises(PartFailed, match="cannot start"):
        make(service, {"match": {"udp_dst": 9000}, "modules": ["counter", "broken"]})
    assert service.sessions.all() == [] and sim.cookies() == before
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_switch_failure_undoes_the_agent_chain(world):
    service, sim, switches, _, agent, _ = world
    switches.fail = Unavailable("switch gone")
    with pytest.raises(Unavailable):
        make(service, BODY)
    assert service.sessions.all() == [] and agent.dispatcher.chains() == []


def test_unreachable_agent_changes_nothing(world):
    service, sim, _, agents, _, _ = world
    agents.down = True
    before = set(sim.cookies())
    with pytest.raises(Unavailable):
        make(service, BODY)
    assert service.sessions.all() == [] and sim.cookies() == before


def test_conflict_and_unknown_session(world):
    service, *_ = world
    make(service, BODY)
    with pytest.raises(Conflict):
        make(service, BODY)
    with pytest.raises(NotFound):
        end(service, 99)


def test_lifetime_expiry_and_refresh(world):
    service, sim, _, _, agent, clock = world
    session = make(service, BODY)
    clock.now += 4
    refresh(service, session.id, 10)
    clock.now += 9
    beat(service, agent)
    assert service.tick() == []
    clock.now += 2
    beat(service, agent)
    assert service.tick() == [session.id]
    assert service.sessions.all() == [] and session.cookie not in sim.cookies()
    assert agent.dispatcher.chains() == []


def test_a_silent_agent_has_its_sessions_suspended_so_traffic_bypasses_it(world):
    service, sim, _, agents, _, clock = world
    session = make(service, {**BODY, "lifetime": 600})
    agents.down = True
    clock.now += service.agent_dead_after + 1
    assert service.tick() == []  # suspended, not ended
    assert frame_of(sim, 9000) == []  # no detour left (forwarding not learned in this sim)
    assert session.cookie not in sim.cookies()
    assert service.sessions.get(session.id).state is State.SUSPENDED


def test_a_restarted_agent_gets_its_chains_back(world, services):
    service, sim, _, agents, old, clock = world
    session = make(service, {**BODY, "lifetime": 600})
    new = NodeAgent(
        AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED),
        Catalog(services),
        clock,
    )
    agents.by_dpid[DPID] = new
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://b", "boot_id": new.boot_id}
    )
    chain = new.dispatcher.by_session(session.id)
    assert chain is not None and chain.tag == session.tag


def test_the_agent_expires_chains_by_itself_when_no_teardown_comes(world):
    service, _, _, agents, agent, clock = world
    session = make(service, BODY)
    agents.down = True  # the controller cannot reach the agent: it must clean up alone
    clock.now += session.lifetime + 11
    assert agent.expire_due() == [session.id]
    assert agent.host.loaded() == {}


def test_registration_lists_the_nodes_sessions_and_the_agent_drops_orphans(world, services):
    service, _, _, agents, agent, clock = world
    kept = make(service, BODY)
    agent.attach(Attach(77, 99, 60, (ModuleSpec("null"),)))  # an orphan
    reply = service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert reply["sessions"] == [kept.id]
    clock.now += 1
    assert agent.reconcile(reply["sessions"], asked_at=clock.now) == [77]
    assert [c.session_id for c in agent.dispatcher.chains()] == [kept.id]
    agent.attach(Attach(78, 98, 60, (ModuleSpec("null"),)))
    assert agent.reconcile([kept.id], asked_at=clock.now - 0.5) == []  # newer than the list


def test_refresh_of_a_node_without_agent_is_unavailable(world):
    service, *_ = world
    session = make(service, BODY)
    del service.network.agents[DPID]
    with pytest.raises(Unavailable):
        refresh(service, session.id, 9)


# --- long lifetimes: the switch's hard timeout is a capped safety net, re-armed ------------


def served(sim: SimSwitch, session) -> bool:
    return frame_of(sim, 9000) == [(AGENT_PORT, session.tag)]


def detour(sim: SimSwitch, session):
    (flow,) = sim.with_cookie(session.cookie)
    return flow


@pytest.mark.parametrize("lifetime", [1, 600, 65_525, 65_526, 80_000, MAX_LIFETIME])
def test_every_accepted_lifetime_works_end_to_end(world, lifetime):
    service, sim, _, _, agent, clock = world
    session = make(service, {**BODY, "lifetime": lifetime})
    assert session.state is State.ACTIVE and service.sessions.get(session.id) == session
    assert served(sim, session)
    assert detour(sim, session).hard_timeout <= HARD_TIMEOUT_CAP
    refreshed = refresh(service, session.id, 80_000)
    assert refreshed.lifetime == 80_000 and refreshed.expires == clock.now + 80_000
    assert detour(sim, session).hard_timeout == HARD_TIMEOUT_CAP and served(sim, session)
    final = end(service, session.id)
    assert final["state"] == "ended" and final["ended"] == "teardown"
    assert sim.with_cookie(session.cookie) == [] and agent.dispatcher.chains() == []
    assert service.sessions.all() == []


def run_for(world, seconds: float, step: float = 10.0) -> list:
    """Let the clock run: agent heartbeats, switch timeouts, controller ticks."""
    service, sim, _, _, agent, clock = world
    removed, ended = [], []
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(clock.now + step, end)
        beat(service, agent)
        for flow in sim.expire():
            removed.append(flow)
            service.flow_removed(DPID, tables.session_of_cookie(flow.cookie))
        ended += service.tick()
        agent.expire_due()
    return removed, ended


def test_a_long_session_keeps_its_detour_and_counters_and_expires_on_time(world):
    service, sim, _, _, agent, clock = world
    sim.clock = clock
    start = clock.now
    session = make(service, {**BODY, "lifetime": 3 * HARD_TIMEOUT_CAP})
    frame_of(sim, 9000)
    counted = sim.packets_of(session.cookie)
    removed, ended = run_for(world, 3 * HARD_TIMEOUT_CAP - 20)
    assert removed == [] and ended == []  # re-armed before every cap ran out
    assert sim.packets_of(session.cookie) == counted == 1  # a re-arm keeps the counters
    assert served(sim, session) and agent.dispatcher.by_session(session.id) is not None
    # the last stretch: the timer is the rest of the lifetime plus grace, not re-armed
    flow = detour(sim, session)
    assert sim.deadline(flow) == start + 3 * HARD_TIMEOUT_CAP + EXPIRY_GRACE
    assert run_for(world, 19, step=1.0) == ([], [])
    assert run_for(world, 1, step=1.0) == ([], [session.id])  # at its expiry, by the controller
    assert clock.now == session.expires and sim.with_cookie(session.cookie) == []
    assert agent.dispatcher.chains() == []


def test_the_switch_never_keeps_a_detour_longer_than_the_agent_keeps_its_chain(world):
    service, sim, _, _, agent, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": 2 * HARD_TIMEOUT_CAP + 500})
    for _ in range(3 * HARD_TIMEOUT_CAP // 100):
        run_for(world, 100)
        flows = sim.with_cookie(session.cookie)
        chain = agent.dispatcher.by_session(session.id)
        if not flows:
            break
        assert chain is not None and sim.deadline(flows[0]) <= chain.expires
        if clock.now > session.expires:
            pytest.fail("the session outlived its lifetime")
    assert service.sessions.all() == []


def test_a_refresh_rearms_the_timer(world):
    service, sim, _, _, _, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": MAX_LIFETIME})
    clock.now += 1000
    refresh(service, session.id, 80_000)
    flow = detour(sim, session)
    assert sim.deadline(flow) == clock.now + HARD_TIMEOUT_CAP


def test_a_failed_rearm_is_retried_at_the_next_tick(world):
    service, sim, switches, _, agent, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": MAX_LIFETIME})
    run_for(world, HARD_TIMEOUT_CAP - 70)
    clock.now += 20  # the timer runs out in 50 s: due
    beat(service, agent)
    switches.fail = Unavailable("switch gone for a moment")
    service.tick()
    assert service.sessions.get(session.id).state is State.ACTIVE
    switches.fail = None
    removed, ended = run_for(world, 100)
    assert removed == [] and ended == [] and served(sim, session)


@pytest.mark.parametrize("exc", [Unavailable("gone"), RuntimeError("bug")])
def test_a_detour_the_switch_dropped_too_early_is_reinstalled(world, exc):
    service, sim, switches, _, agent, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": MAX_LIFETIME})
    frame_of(sim, 9000)
    switches.fail = exc  # every re-arm fails until the flow's timer runs out
    run_for(world, HARD_TIMEOUT_CAP - 5)
    assert sim.expire() == []
    clock.now += 10
    (flow,) = sim.expire()
    switches.fail = None
    service.flow_removed(DPID, tables.session_of_cookie(flow.cookie))
    assert served(sim, session) and service.sessions.get(session.id).state is State.ACTIVE
    assert sim.deadline(detour(sim, session)) == clock.now + HARD_TIMEOUT_CAP


def test_a_detour_the_switch_dropped_at_the_end_of_the_lifetime_ends_the_session(world):
    service, sim, _, _, agent, clock = world
    session = make(service, {**BODY, "lifetime": 30})
    clock.now += 40  # the controller missed its own expiry (its tick was late)
    beat(service, agent)
    service.flow_removed(DPID, session.id)
    assert service.sessions.all() == [] and agent.dispatcher.chains() == []
    assert sim.with_cookie(session.cookie) == []


def test_flow_removal_of_an_unknown_or_foreign_session_is_ignored(world):
    service, sim, *_ = world
    session = make(service, BODY)
    service.flow_removed(DPID, 999)
    service.flow_removed(DPID + 1, session.id)
    service.flow_removed(DPID, None)
    assert service.sessions.get(session.id).state is State.ACTIVE and served(sim, session)


# --- any failure after a reservation undoes everything --------------------------------

FAILURES = [
    PartFailed("refused"),
    Unavailable("gone"),
    ValueError("bad field"),
    KeyError("tag"),
    RuntimeError("bug"),
    struct.error("'H' format requires 0 <= number <= 65535"),
]


def _raise(exc, after=None):
    def fail(*args, **kwargs):
        if after is not None:
            after(*args, **kwargs)
        raise exc

    return fail


def nothing_left(world, cookie: int) -> None:
    service, sim, _, _, agent, _ = world
    assert service.sessions.all() == []
    assert sim.with_cookie(cookie) == []
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    "step", ["attach", "attach-after-done", "build", "send", "send-after-done"]
)
def test_any_failure_while_creating_undoes_everything(world, monkeypatch, exc, step):
    service, sim, switches, agents, agent, _ = world
    if step == "attach":
        monkeypatch.setattr(agents, "attach", _raise(exc))
    elif step == "attach-after-done":  # e.g. the answer was lost: the chain exists
        monkeypatch.setattr(agents, "attach", _raise(exc, after=agents.attach))
    elif step == "build":
        monkeypatch.setattr(pipeline, "session_install", _raise(exc))
    elif step == "send":
        monkeypatch.setattr(switches, "send", _raise(exc))
    else:  # the switch installed the detour, then the call failed
        monkeypatch.setattr(switches, "send", _raise(exc, after=switches.send))
    with pytest.raises(type(exc)):
        make(service, BODY)
    monkeypatch.undo()
    nothing_left(world, tables.session_cookie(1))
    again = make(service, BODY)  # the flow space and the tag were given back
    assert served(sim, again)


def test_a_failing_cleanup_does_not_hide_the_first_error(world, monkeypatch):
    service, sim, switches, agents, agent, _ = world
    monkeypatch.setattr(switches, "send", _raise(RuntimeError("first")))
    monkeypatch.setattr(agents, "detach", _raise(KeyError("second")))
    with pytest.raises(RuntimeError, match="first"):
        make(service, BODY)
    assert service.sessions.all() == []


@pytest.mark.parametrize("exc", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("step", ["agent", "build", "send", "send-after-done"])
def test_any_failure_while_refreshing_leaves_the_session_as_it_was(world, monkeypatch, exc, step):
    service, sim, switches, agents, agent, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": 600})
    clock.now += 100
    before = service.sessions.get(session.id)
    chain_expires = agent.dispatcher.by_session(session.id).expires
    flow_deadline = sim.deadline(detour(sim, session))
    if step == "agent":
        monkeypatch.setattr(agents, "refresh", _raise(exc))
    elif step == "build":
        monkeypatch.setattr(pipeline, "session_install", _raise(exc))
    elif step == "send":
        monkeypatch.setattr(switches, "send", _raise(exc))
    else:
        monkeypatch.setattr(switches, "send", _raise(exc, after=switches.send))
    with pytest.raises(type(exc)):
        refresh(service, session.id, 30)
    monkeypatch.undo()
    assert service.sessions.get(session.id) == before  # old lifetime and expiry, active
    assert agent.dispatcher.by_session(session.id).expires == chain_expires
    assert sim.deadline(detour(sim, session)) == flow_deadline and served(sim, session)
    assert refresh(service, session.id, 30).lifetime == 30  # and it works again


@pytest.mark.parametrize(
    "body", [{"lifetime": 0}, {"lifetime": MAX_LIFETIME + 1}, {"lifetime": "9"}, [], {"x": 1}]
)
def test_a_bad_refresh_changes_nothing(world, body):
    service, sim, _, _, agent, clock = world
    session = make(service, BODY)
    clock.now += 1
    chain_expires = agent.dispatcher.by_session(session.id).expires
    flows = list(sim.flows)
    with pytest.raises(InvalidRequest):
        service.refresh(session.id, parse_refresh(body))
    assert service.sessions.get(session.id) == session
    assert agent.dispatcher.by_session(session.id).expires == chain_expires
    assert sim.flows == flows


# --- one transition table: racing requests get a clear 409, nothing is resurrected ----------


def test_teardown_or_refresh_of_a_session_still_installing_is_a_conflict(world, monkeypatch):
    service, sim, _, agents, _, _ = world
    seen = []

    def attach_and_interfere(agent_, session):
        for call in (lambda: end(service, session.id), lambda: refresh(service, session.id)):
            with pytest.raises(Conflict, match="still being installed") as err:
                call()
            seen.append(str(err.value))

    monkeypatch.setattr(agents, "attach", attach_and_interfere)
    session = make(service, BODY)
    assert len(seen) == 2 and service.sessions.get(session.id).state is State.ACTIVE


def test_a_refresh_while_another_runs_is_a_conflict(world, monkeypatch):
    service, _, _, agents, _, _ = world
    session = make(service, BODY)
    inner = []
    real = agents.refresh

    def refresh_twice(agent_, s):
        with pytest.raises(Conflict, match="being refreshed"):
            refresh(service, session.id, 9)
        inner.append(True)
        real(agent_, s)

    monkeypatch.setattr(agents, "refresh", refresh_twice)
    assert refresh(service, session.id, 20).lifetime == 20 and inner


def test_a_teardown_during_a_refresh_wins_and_leaves_no_flow(world, monkeypatch):
    service, sim, _, agents, agent, _ = world
    session = make(service, BODY)
    real = agents.refresh

    def refresh_after_teardown(agent_, s):
        real(agent_, s)
        end(service, session.id)

    monkeypatch.setattr(agents, "refresh", refresh_after_teardown)
    with pytest.raises(Conflict, match="ended"):
        refresh(service, session.id, 20)
    nothing_left(world, session.cookie)


def test_a_teardown_during_a_rearm_leaves_no_flow(world, monkeypatch):
    service, sim, switches, _, agent, clock = world
    sim.clock = clock
    session = make(service, {**BODY, "lifetime": MAX_LIFETIME})
    run_for(world, HARD_TIMEOUT_CAP - 70)
    clock.now += 20
    real, raced = switches.send, []

    def teardown_then_send(dpid, msgs):
        if service.sessions.all() and service.sessions.get(session.id).state is State.REFRESHING:
            raced.append(end(service, session.id))  # its delete comes before the re-arm
        real(dpid, msgs)

    monkeypatch.setattr(switches, "send", teardown_then_send)
    beat(service, agent)
    service.tick()
    assert len(raced) == 1
    nothing_left(world, session.cookie)


def test_a_second_teardown_is_not_found_and_the_reply_says_ended(world):
    service, *_ = world
    session = make(service, BODY)
    assert end(service, session.id)["state"] == "ended"
    with pytest.raises(NotFound):
        end(service, session.id)


@pytest.mark.parametrize("exc", [PartFailed("x"), RuntimeError("bug"), KeyError("k")])
def test_a_teardown_whose_parts_fail_still_ends_the_session(world, monkeypatch, exc):
    service, sim, switches, agents, _, _ = world
    session = make(service, BODY)
    monkeypatch.setattr(switches, "send", _raise(exc))
    monkeypatch.setattr(agents, "detach", _raise(exc))
    assert end(service, session.id)["ended"] == "teardown"
    assert service.sessions.all() == []


def test_stats_follow_a_sessions_frames_and_name_where_the_lost_ones_went(world):
    service, sim, _, _, agent, _ = world
    session = make(service, BODY)
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
    session = make(service, BODY)
    agent.dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    switches.fail = Unavailable("switch gone")
    stats = service.stats(session.id)
    assert stats["stats"]["packets"] == 1 and stats["path"]["agent_received"] == 1
    assert stats["path"]["switch_sent"] is None and stats["path"]["lost_before_agent"] is None
