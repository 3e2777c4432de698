"""The heartbeat's cost does not grow with the sessions: the digest of the sessions a
node holds, the controller's answer to it, and the agent's expiry queue."""

import json
import random

import pytest

from agentproto.fields import ContractError
from agentproto.held import Held, HeldSet, held_of, id_hash
from agentproto.limits import EXPIRY_GRACE
from agentproto.messages import Attach, ModuleSpec, Refresh, Registration, RegistrationReply
from controller.service import LIST_EVERY
from controller.sessions import State
from nodes import agent as agent_module
from nodes.expiry import ExpiryQueue
from tests.unit.conftest import DPID, end, make

BODY = {"match": {"udp_dst": 9000}, "module": "counter", "lifetime": 60}


# --- the digest ------------------------------------------------------------------------


def test_the_digest_is_of_the_set_not_its_order():
    ids = list(range(1, 200))
    shuffled = random.Random(7).sample(ids, len(ids))
    assert held_of(ids) == held_of(shuffled)
    assert held_of(ids) != held_of(ids[:-1]) != held_of([*ids[:-1], 1000])
    assert held_of([]) == Held(0, 0) == HeldSet().held
    assert id_hash(5) == id_hash(5) != id_hash(6)


def test_a_digest_kept_one_id_at_a_time_is_the_digest_of_the_set():
    kept, ids, rng = HeldSet(), set(), random.Random(1)
    for _ in range(2000):
        session_id = rng.randrange(1, 300)
        if session_id in ids:
            ids.remove(session_id)
            kept.remove(session_id)
        else:
            ids.add(session_id)
            kept.add(session_id)
        assert kept.held == held_of(ids)


def test_a_digest_goes_on_the_wire_as_its_count_and_16_hex_digits():
    held = held_of([3, 7])
    assert held.to_json() == {"count": 2, "digest": f"{held.digest:016x}"}
    assert Held.from_json(json.loads(json.dumps(held.to_json()))) == held


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"count": 1}, "held lacks 'digest'"),
        ({"count": -1, "digest": "0" * 16}, "held count must be 0 to"),
        ({"count": 1, "digest": "0" * 15}, "16 hex digits"),
        ({"count": 1, "digest": "G" * 16}, "16 hex digits"),
        ({"count": 1, "digest": 5}, "held digest must be a string"),
        ({"count": 1, "digest": "0" * 16, "x": 1}, "held has no field 'x'"),
        ([], "held must be a JSON object"),
    ],
)
def test_a_malformed_digest_breaks_the_contract(raw, says):
    with pytest.raises(ContractError, match=says):
        Held.from_json(raw)


# --- the registration and its answer -------------------------------------------------------


def test_a_registration_carries_the_digest_and_reads_without_one_as_before():
    sent = Registration(1, "s1-ns", "http://a:1", "b", held=held_of([4]))
    assert Registration.from_json(json.loads(json.dumps(sent.to_json()))) == sent
    bare = {"dpid": "01", "switch_port": "s1-ns", "url": "http://a:1", "boot_id": "b"}
    assert Registration.from_json(bare).held is None
    with pytest.raises(ContractError, match="held count must be a whole number"):
        Registration.from_json({**bare, "held": {"count": "1", "digest": "0" * 16}})


def test_the_answer_is_same_when_the_digests_agree_and_the_list_otherwise():
    asked = []

    def listed():
        asked.append(1)
        return (3, 7)

    same = RegistrationReply.answer(1, held_of([7, 3]), held_of([3, 7]), listed)
    assert same.sessions is None and asked == []
    assert same.to_json() == {"dpid": "0000000000000001", "same": True}
    assert RegistrationReply.from_json(same.to_json()) == same
    for theirs in (held_of([3]), held_of([3, 8]), None):
        reply = RegistrationReply.answer(1, theirs, held_of([3, 7]), listed)
        assert reply.sessions == (3, 7)
    assert len(asked) == 3


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"dpid": "01", "same": False}, "same must be true"),
        ({"dpid": "01", "same": 1}, "same must be true or false"),
        ({"dpid": "01", "same": True, "sessions": []}, "has no field 'sessions'"),
        ({"dpid": "01"}, "lacks 'sessions'"),
    ],
)
def test_a_malformed_answer_breaks_the_contract(raw, says):
    with pytest.raises(ContractError, match=says):
        RegistrationReply.from_json(raw)


# --- both sides' digests, and the heartbeat between them -------------------------------


def test_the_controllers_digest_of_a_node_follows_its_sessions(world):
    service, *_ = world
    made = [make(service, {**BODY, "match": {"udp_dst": 9000 + i}}) for i in range(5)]
    on_node = lambda: [s.id for s in service.sessions.on_node(DPID)]  # noqa: E731
    assert service.sessions.held(DPID) == held_of(on_node()) == held_of(s.id for s in made)
    end(service, made[2].id)
    assert service.sessions.held(DPID) == held_of(on_node())
    for session in made[:2] + made[3:]:
        end(service, session.id)
    assert service.sessions.held(DPID) == Held(0, 0)


def test_the_agents_digest_follows_its_chains(world):
    *_, agent, _ = world
    for session_id in (5, 6, 7):
        agent.attach(Attach(session_id, session_id + 10, 60, (ModuleSpec("null"),)))
    agent.attach(Attach(6, 16, 60, (ModuleSpec("null"),)))  # the same session, again
    assert agent.dispatcher.held == held_of([5, 6, 7])
    agent.detach(6)
    assert agent.dispatcher.held == held_of([5, 7])
    agent.detach(6)
    assert agent.dispatcher.held == held_of([5, 7])


@pytest.fixture
def beating(world, monkeypatch):
    """The world, with the agent's registration carried to the controller in process;
    yields it and the answers the agent got."""
    service, *_, agent, _ = world
    answers = []

    def controller(url, method, body, timeout, signer):
        answers.append(json.loads(json.dumps(service.register_agent(body))))
        return answers[-1]

    monkeypatch.setattr(agent_module, "call_json", controller)
    agent.url = "http://a"
    yield world, answers


def test_a_heartbeat_of_an_agent_that_holds_the_nodes_sessions_is_answered_same(beating):
    (service, *_, agent, clock), answers = beating
    made = [make(service, {**BODY, "match": {"udp_dst": 9000 + i}}) for i in range(3)]
    assert agent.register()
    assert answers[-1] == {"dpid": "0000000000000001", "same": True}
    assert [c.session_id for c in agent.dispatcher.chains()] == [s.id for s in made]


def test_an_orphan_changes_the_digest_gets_the_list_and_is_dropped(beating):
    (service, *_, agent, clock), answers = beating
    kept = make(service, BODY)
    clock.now += 1
    agent.attach(Attach(77, 99, 60, (ModuleSpec("null"),)))  # unknown to the controller
    clock.now += 1
    assert agent.register()
    assert answers[-1]["sessions"] == [kept.id]
    assert [c.session_id for c in agent.dispatcher.chains()] == [kept.id]
    assert agent.register()
    assert answers[-1]["same"] is True


def test_a_session_the_controller_holds_but_the_agent_not_yet_drops_nothing(beating):
    (service, *_, agent, clock), answers = beating
    kept = make(service, BODY)
    # A session being set up: reserved (listed) before its chain reaches the agent.
    request = make(service, {**BODY, "match": {"udp_dst": 9001}})
    agent.detach(request.id)
    assert agent.register()
    assert answers[-1]["sessions"] == [kept.id, request.id]
    assert [c.session_id for c in agent.dispatcher.chains()] == [kept.id]


def test_a_chain_attached_after_the_registration_left_is_not_judged(beating, monkeypatch):
    (service, *_, agent, clock), answers = beating
    kept = make(service, BODY)
    real = agent_module.call_json

    def late(*args, **kwargs):  # a chain the controller does not list comes meanwhile
        clock.now += 0.5
        agent.attach(Attach(77, 99, 60, (ModuleSpec("null"),)))
        return real(*args, **kwargs)

    monkeypatch.setattr(agent_module, "call_json", late)
    agent.register_once()
    assert answers[-1] == {"dpid": "0000000000000001", "same": True}
    assert {c.session_id for c in agent.dispatcher.chains()} == {kept.id, 77}


def test_an_agent_that_restarted_gets_the_list_and_its_sessions_back(beating, services):
    (service, _, _, agents, agent, clock), answers = beating
    kept = make(service, BODY)
    agent.boot_id = "another"
    for chain in agent.dispatcher.chains():  # a new process holds nothing
        agent.detach(chain.session_id)
    assert agent.register()
    assert answers[-1]["sessions"] == [kept.id]
    assert service.sessions.get(kept.id).state is State.ACTIVE
    assert [c.session_id for c in agent.dispatcher.chains()] == [kept.id]
    assert agent.register()
    assert answers[-1]["same"] is True


# --- expiry --------------------------------------------------------------------------------


def test_the_queue_gives_the_due_sessions_in_order_and_touches_only_those():
    queue, expires, looked = ExpiryQueue(), {}, []

    def expires_of(session_id):
        looked.append(session_id)
        return expires.get(session_id)

    for session_id in range(1, 1001):
        expires[session_id] = 1000.0 + session_id
        queue.add(session_id, expires[session_id])
    assert queue.pop_due(1000.5, expires_of) == [] and looked == []
    assert queue.pop_due(1003.0, expires_of) == [1, 2, 3] and looked == [1, 2, 3]
    assert len(queue) == 997


def test_a_refreshed_chain_is_put_back_at_its_new_time():
    queue, expires = ExpiryQueue(), {1: 10.0, 2: 20.0}
    for session_id, at in expires.items():
        queue.add(session_id, at)
    expires[1] = 30.0  # refreshed: later
    queue.add(1, 30.0)
    assert queue.pop_due(25.0, expires.get) == [2]
    assert queue.pop_due(29.0, expires.get) == []
    expires[1] = 31.0
    assert queue.pop_due(31.0, expires.get) == [1]
    assert len(queue) == 0


def test_a_refresh_to_an_earlier_time_expires_then_and_once():
    queue, expires = ExpiryQueue(), {1: 100.0}
    queue.add(1, 100.0)
    expires[1] = 5.0
    queue.add(1, 5.0)
    assert queue.pop_due(5.0, expires.get) == [1]
    assert queue.pop_due(200.0, expires.get) == []


def test_a_session_gone_or_attached_again_counts_once():
    queue, expires = ExpiryQueue(), {}
    for session_id in range(1, 500):
        expires[session_id] = float(session_id)
        queue.add(session_id, float(session_id))
    for session_id in range(1, 499):  # detached: the queue is rebuilt on the way
        del expires[session_id]
        queue.discard(session_id)
        expires[session_id + 1000] = 5.0
        queue.add(session_id + 1000, 5.0)
    assert len(queue._heap) <= 2 * len(queue) + 64
    due = queue.pop_due(1000.0, expires.get)
    assert sorted(due) == sorted(expires) and len(due) == len(set(due))


def test_the_agent_expires_chains_on_time(world):
    *_, agent, clock = world
    agent.attach(Attach(5, 15, 10, (ModuleSpec("null"),)))
    agent.attach(Attach(6, 16, 20, (ModuleSpec("null"),)))
    clock.now += 10 + EXPIRY_GRACE - 0.1
    assert agent.expire_due() == []
    clock.now += 0.1
    assert agent.expire_due() == [5]
    agent.refresh(Refresh(6, 100))
    clock.now += 20
    assert agent.expire_due() == []
    agent.refresh(Refresh(6, 1))  # a shorter lifetime: it ends sooner
    clock.now += 1 + EXPIRY_GRACE
    assert agent.expire_due() == [6]
    assert agent.dispatcher.chains() == []


def test_a_steady_heartbeat_and_expiry_look_at_no_list_of_sessions(beating, monkeypatch):
    (service, *_, agent, clock), answers = beating
    for i in range(20):
        make(service, {**BODY, "match": {"udp_dst": 9000 + i}})

    def whole_list(*args):
        raise AssertionError("a steady heartbeat must not go through every session")

    monkeypatch.setattr(agent.dispatcher, "chains", whole_list)
    monkeypatch.setattr(service.sessions, "on_node", whole_list)
    monkeypatch.setattr(service.sessions, "all", whole_list)
    for _ in range(3):
        clock.now += 2
        assert agent.register()
        assert agent.expire_due() == []
    assert answers[-1]["same"] is True


def test_the_sessions_in_flight_are_counted_by_node(world):
    service, *_ = world
    made = [make(service, {**BODY, "match": {"udp_dst": 9000 + i}}) for i in range(3)]
    assert service.sessions.in_flight(DPID) == 0
    service.sessions.move(made[0].id, State.ENDING)
    service.sessions.move(made[1].id, State.ENDING)
    assert service.sessions.in_flight(DPID) == 2
    service.sessions.move(made[0].id, State.ENDED)
    assert service.sessions.in_flight(DPID) == 1
    end(service, made[2].id)
    assert service.sessions.in_flight(DPID) == 1
    service.sessions.move(made[1].id, State.ENDED)
    assert service.sessions.in_flight(DPID) == 0


def test_while_sessions_are_in_flight_the_list_goes_at_most_every_list_every(beating):
    (service, *_, agent, clock), answers = beating
    kept, ending = make(service, BODY), make(service, {**BODY, "match": {"udp_dst": 1}})
    agent.attach(Attach(77, 99, 60, (ModuleSpec("null"),)))  # unknown to the controller
    service.sessions.move(ending.id, State.ENDING)  # its teardown under way
    clock.now += LIST_EVERY  # since any list sent while the world was made
    assert agent.register()
    assert answers[-1]["sessions"] == [kept.id, ending.id]
    assert 77 not in [c.session_id for c in agent.dispatcher.chains()]
    agent.attach(Attach(78, 98, 60, (ModuleSpec("null"),)))  # another orphan
    clock.now += LIST_EVERY - 1
    assert agent.register()
    assert answers[-1] == {"dpid": "0000000000000001", "same": True}  # deferred
    assert 78 in [c.session_id for c in agent.dispatcher.chains()]
    clock.now += 1
    assert agent.register()
    assert answers[-1]["sessions"] == [kept.id, ending.id]
    assert 78 not in [c.session_id for c in agent.dispatcher.chains()]


def test_with_nothing_in_flight_an_orphan_gets_the_list_at_every_heartbeat(beating):
    (service, *_, agent, clock), answers = beating
    kept = make(service, BODY)
    for orphan in (77, 78):
        agent.attach(Attach(orphan, orphan + 20, 60, (ModuleSpec("null"),)))
        clock.now += 1
        assert agent.register()
        assert answers[-1]["sessions"] == [kept.id]
