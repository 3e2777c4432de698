"""The controller↔agent contract: every message, and both sides speaking it."""

import json
from dataclasses import replace

import pytest

from agentproto import limits
from agentproto.fields import ContractError
from agentproto.messages import (
    AgentStatus,
    Attach,
    ChainQuery,
    ChainStats,
    Detach,
    LoadedModule,
    ModuleSpec,
    ModuleStats,
    NodeIO,
    Refresh,
    Registration,
    RegistrationReply,
    StatusQuery,
)
from controller import sessions
from controller.errors import Conflict, InvalidRequest, PartFailed
from controller.network import Agent
from controller.tables import SESSION_ID_MAX
from jsonhttp.client import ClientError
from nodes import agent as agent_module
from nodes import control
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from tests.unit.conftest import COPIES_TRUSTED, DPID, InProcessAgents, make, refresh
from tests.unit.test_service import BODY, detour

IO = NodeIO(1, 2, 3, 4, 5, 6, 7, None)
TOO_BIG = limits.SESSION_TAGS.stop  # the first number that is no tag
COUNTER = ModuleSpec("counter", (("log_every", 0),))
STATS = ChainStats(
    7, 5, 10, 9, 1, 1, 8, 1, 2, 0, 1, "counter: ValueError('x')", (ModuleStats("null", {}),)
)
MESSAGES = [
    Registration(1, "s1-ns", "http://127.0.0.1:9", "f" * 32),
    Registration(1, "s1-ns", "http://127.0.0.1:9", "f" * 32, "afxdp"),
    RegistrationReply(1, (3, 7)),
    Attach(7, 5, 30, (COUNTER, ModuleSpec("null"))),
    Attach(7, 5, 30, (ModuleSpec("monitor"),), copy=True),
    Refresh(7, limits.MAX_LIFETIME),
    STATS,
    replace(STATS, node=IO, last_error=None),
    ChainStats(1, 4094, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, ()),
    ModuleStats("counter", {"packets": 3}, ({"name": "packets", "value": 3},)),
    IO,
    replace(IO, switch_queue_dropped=0),
    AgentStatus(1, "s1-na", "s1-ns", "b", 42, True, {"null": LoadedModule("1.0", 1)}, (7,), IO),
]


def wire(message) -> object:
    """Return the message's JSON as the peer reads it off the wire."""
    return json.loads(json.dumps(message.to_json()))


def parse(cls, raw, session: int = 7):
    return cls.from_json(raw, session) if cls in (Attach, Refresh) else cls.from_json(raw)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_wire(message):
    again = parse(type(message), wire(message), getattr(message, "session_id", 7))
    assert again == message and again.to_json() == message.to_json()


def test_the_wire_format_is_the_one_agents_and_controllers_already_speak():
    assert Attach(7, 5, 30, (COUNTER,)).to_json() == {
        "tag": 5,
        "lifetime": 30,
        "modules": [{"name": "counter", "params": {"log_every": 0}}],
    }
    assert Refresh(7, 9).to_json() == {"lifetime": 9}
    assert Registration(16, "s1-ns", "http://a", "b").to_json() == {
        "dpid": "0000000000000010",
        "switch_port": "s1-ns",
        "url": "http://a",
        "boot_id": "b",
    }
    assert RegistrationReply(16, (1,)).to_json() == {"dpid": "0000000000000010", "sessions": [1]}
    requests = [Attach(7, 5, 30, (COUNTER,)), Refresh(7, 9), Detach(7), ChainQuery(7)]
    assert [(r.METHOD, r.path) for r in requests] == [
        ("PUT", "/sessions/7"),
        ("PATCH", "/sessions/7"),
        ("DELETE", "/sessions/7"),
        ("GET", "/sessions/7"),
    ]
    assert (StatusQuery.METHOD, StatusQuery().path, Detach(7).to_json()) == ("GET", "/health", None)
    assert (Registration.METHOD, Registration.ROUTE) == ("POST", "/netserv/nodes")


def test_a_registration_names_its_node_as_every_edge_reads_a_dpid():
    body = {"switch_port": "s1-ns", "url": "http://a", "boot_id": "b"}
    for dpid in (16, "10", "0x10", "0000000000000010"):
        assert Registration.from_json({"dpid": dpid, **body}).dpid == 16
    bare = {"tag": 5, "lifetime": 5, "modules": [{"name": "null"}]}  # no params: none
    assert Attach.from_json(bare, 7).modules == (ModuleSpec("null"),)


def test_an_attach_says_copy_only_when_it_is_one_and_without_it_means_a_detour():
    bare = {"tag": 5, "lifetime": 5, "modules": [{"name": "monitor"}]}
    assert Attach.from_json(bare, 7).copy is False  # what a controller from before sends
    assert Attach.from_json({**bare, "copy": False}, 7).copy is False
    assert Attach.from_json({**bare, "copy": True}, 7).copy is True
    monitor = (ModuleSpec("monitor"),)
    assert "copy" not in Attach(7, 5, 5, monitor).to_json()  # an agent from before takes it
    assert Attach(7, 5, 5, monitor, copy=True).to_json()["copy"] is True


ATTACH = {"tag": 5, "lifetime": 30, "modules": [{"name": "counter", "params": {}}]}
REGISTRATION = {"dpid": "01", "switch_port": "s1-ns", "url": "http://a:1", "boot_id": "b"}


@pytest.mark.parametrize(
    "cls, raw, message",
    [
        (Attach, [], "an attach must be a JSON object, not a list"),
        (Attach, {**ATTACH, "tag": 0}, f"tag must be 1 to {TOO_BIG - 1}, got 0"),
        (Attach, {**ATTACH, "tag": TOO_BIG}, f"tag must be 1 to {TOO_BIG - 1}, got {TOO_BIG}"),
        (Attach, {**ATTACH, "tag": "5"}, "tag must be a whole number, got '5'"),
        (Attach, {**ATTACH, "tag": True}, "tag must be a whole number, got True"),
        (Attach, {**ATTACH, "lifetime": 0}, "lifetime must be 1 to 86400, got 0"),
        (Attach, {**ATTACH, "lifetime": 86_401}, "lifetime must be 1 to 86400, got 86401"),
        (Attach, {**ATTACH, "lifetime": 5.0}, "lifetime must be a whole number, got 5.0"),
        (Attach, {**ATTACH, "modules": []}, "modules must hold 1 to 8 items, not 0"),
        (Attach, {**ATTACH, "modules": [{"name": "null"}] * 9}, "modules must hold 1 to 8"),
        (Attach, {**ATTACH, "modules": {"name": "null"}}, "modules must be a list, not an object"),
        (Attach, {**ATTACH, "modules": ["null"]}, "a module must be a JSON object, not a string"),
        (Attach, {**ATTACH, "modules": [{"params": {}}]}, "a module lacks 'name'"),
        (Attach, {**ATTACH, "modules": [{"name": "Null"}]}, "module name 'Null' does not match"),
        (Attach, {**ATTACH, "modules": [{"name": "a", "p": 1}]}, "a module has no field 'p'"),
        (Attach, {**ATTACH, "modules": [{"name": "a", "params": None}]}, "params of a must be"),
        (Attach, {**ATTACH, "modules": [{"name": "a", "params": [1]}]}, "params of a must be"),
        (Attach, {**ATTACH, "copy": "true"}, "copy must be true or false, got 'true'"),
        (Attach, {**ATTACH, "copy": 1}, "copy must be true or false, got 1"),
        (Attach, {**ATTACH, "copy": None}, "copy must be true or false, got None"),
        (Attach, {"tag": 5, "lifetime": 30}, "an attach lacks 'modules'"),
        (Attach, {**ATTACH, "session": 7}, "an attach has no field 'session'"),
        (Refresh, {}, "a refresh lacks 'lifetime'"),
        (Refresh, {"lifetime": -1}, "lifetime must be 1 to 86400, got -1"),
        (Refresh, {"lifetime": None}, "lifetime must be a whole number, got None"),
        (Registration, {**REGISTRATION, "dpid": "xyz"}, "dpid: 'xyz' is not a datapath id"),
        (Registration, {**REGISTRATION, "dpid": 1 << 64}, "is not a datapath id"),
        (Registration, {**REGISTRATION, "switch_port": 5}, "switch_port must be a string, got 5"),
        (Registration, {**REGISTRATION, "switch_port": "a b"}, "switch_port 'a b' does not match"),
        (Registration, {**REGISTRATION, "switch_port": ""}, "switch_port '' does not match"),
        (Registration, {**REGISTRATION, "boot_id": "x" * 65}, "boot_id 'xxxxx"),
        (Registration, {**REGISTRATION, "url": "ftp://a"}, "must be http://host:port"),
        (Registration, {**REGISTRATION, "url": "http://a/x"}, "must be http://host:port"),
        (Registration, {**REGISTRATION, "url": "http://u@a:1"}, "must be http://host:port"),
        (Registration, {**REGISTRATION, "url": "http://a:99999"}, "is not a URL"),
        (Registration, {**REGISTRATION, "url": "http://"}, "must be http://host:port"),
        (Registration, {**REGISTRATION, "url": None}, "url must be a string, got None"),
        (Registration, {k: v for k, v in REGISTRATION.items() if k != "url"}, "lacks 'url'"),
        (Registration, {**REGISTRATION, "pid": 1}, "a registration has no field 'pid'"),
        (RegistrationReply, {"dpid": "01", "sessions": ["7"]}, "sessions item must be a whole"),
        (RegistrationReply, {"dpid": "01", "sessions": [0]}, "sessions item must be 1 to"),
        (RegistrationReply, {"dpid": "01", "sessions": None}, "sessions must be a list, not null"),
        (RegistrationReply, {"dpid": "01"}, "a registration's answer lacks 'sessions'"),
    ],
)
def test_each_bad_field_is_refused_saying_which_and_why(cls, raw, message):
    with pytest.raises(ContractError) as refused:
        parse(cls, raw)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Attach(0, 5, 30, (COUNTER,)), f"session id must be 1 to {SESSION_ID_MAX}"),
        (lambda: Attach(SESSION_ID_MAX + 1, 5, 30, (COUNTER,)), "session id must be 1 to"),
        (lambda: Attach(7, 5, 30, ("counter",)), "modules must be ModuleSpecs"),
        (lambda: ModuleSpec("counter", (("a", 1), ("a", 2))), "name a parameter twice"),
        (lambda: ModuleSpec("counter", ({"a": 1},)), "must be (name, value) pairs"),
        (lambda: Attach(7, 5, 30, (COUNTER,), copy=1), "copy must be true or false, got 1"),
        (lambda: replace(IO, sent=-1), "sent must be 0 to"),
        (lambda: replace(IO, received=1 << 64), "received must be 0 to"),
        (lambda: replace(STATS, last_error=3), "last_error must be a string, got 3"),
        (lambda: replace(STATS, modules=({"name": "null"},)), "modules must be ModuleStats"),
        (lambda: ModuleStats("null", [1]), "stats of null must be a JSON object, not a list"),
        (lambda: ModuleStats("null", {1: 2}), "stats of null has a key that is not a string"),
        (lambda: ModuleStats("null", {}, ([1],)), "a metric of null must be a JSON object"),
        (lambda: replace(MESSAGES[-1], pid=0), "pid must be 1 to"),
        (lambda: replace(MESSAGES[-1], registered=1), "registered must be true or false, got 1"),
        (lambda: replace(MESSAGES[-1], io={}), "io must be NodeIO"),
        (lambda: replace(MESSAGES[-1], sessions=(7, 0)), "sessions item must be 1 to"),
    ],
)
def test_no_message_can_be_built_that_the_peer_would_refuse(build, message):
    with pytest.raises(ContractError) as refused:
        build()
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**STATS.to_json(), "packets": -1}, "packets must be 0 to"),
        ({**STATS.to_json(), "extra": 1}, "a chain's counters has no field 'extra'"),
        ({**STATS.to_json(), "node": {**IO.to_json(), "sent": "2"}}, "sent must be a whole"),
        ({**STATS.to_json(), "node": {"sent": 2}}, "the node's counters lacks 'received'"),
        ({**STATS.to_json(), "modules": [{"name": "null"}]}, "a module's counters lacks 'stats'"),
        ({**STATS.to_json(), "tag": 0}, f"tag must be 1 to {TOO_BIG - 1}, got 0"),
    ],
)
def test_an_answer_that_breaks_the_contract_is_refused(raw, message):
    with pytest.raises(ContractError, match=message):
        ChainStats.from_json(raw)


def test_messages_are_frozen():
    message = Attach(7, 5, 30, [COUNTER])
    assert message.modules == (COUNTER,)  # any sequence is taken, kept as a tuple
    with pytest.raises(AttributeError):
        message.tag = 6
    with pytest.raises(TypeError):
        ModuleStats("null", {"a": 1}).stats["a"] = 2


# --- both sides speak it ---------------------------------------------------------------


class Wire(InProcessAgents):
    """The controller's client, recording what it sends before the agent answers."""

    def __init__(self, agent: NodeAgent) -> None:
        super().__init__()
        self.by_dpid[DPID] = agent
        self.sent: list[tuple[str, str, object]] = []

    def send(self, agent, method, path, body, timeout):
        self.sent.append((method, path, body))
        return super().send(agent, method, path, body, timeout)


@pytest.fixture
def node(services):
    config = AgentConfig(DPID, "s1-na", "s1-ns", "http://c", policy=COPIES_TRUSTED)
    agent = NodeAgent(config, Catalog(services))
    yield agent, Wire(agent), Agent(DPID, "s1-ns", "http://a", agent.boot_id, 0.0)
    for chain in agent.dispatcher.chains():
        agent.detach(chain.session_id)


def session(tag: int = 5, lifetime: int = 30, session_id: int = 7) -> sessions.Session:
    return sessions.Session(session_id, DPID, tag, None, (COUNTER,), lifetime, 0.0, 0.0)


def test_what_the_controller_asks_the_agent_takes_and_answers_in_kind(node):
    agent, client, peer = node
    client.attach(peer, session())
    assert client.sent == [("PUT", "/sessions/7", Attach(7, 5, 30, (COUNTER,)).to_json())]
    chain = agent.dispatcher.by_session(7)
    assert (chain.tag, chain.lifetime, [n for n, _ in chain.modules]) == (5, 30, ["counter"])
    client.refresh(peer, session(lifetime=99))
    assert client.sent[-1] == ("PATCH", "/sessions/7", {"lifetime": 99}) and chain.lifetime == 99
    stats = client.stats(peer, 7)
    assert (stats.session, stats.tag, stats.node) == (7, 5, agent.io_stats())
    assert stats.modules[0].name == "counter"
    health = client.health(peer)
    assert (health.boot_id, health.sessions, health.dpid) == (agent.boot_id, (7,), DPID)
    assert health.modules_loaded["counter"].sessions == 1
    final = client.detach(peer, 7)
    assert (final.session, final.node) == (7, None) and agent.dispatcher.chains() == []


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("tag", TOO_BIG, f"tag must be 1 to {TOO_BIG - 1}, got {TOO_BIG}"),
        ("tag", 0, f"tag must be 1 to {TOO_BIG - 1}, got 0"),
        ("lifetime", limits.MAX_LIFETIME + 1, "lifetime must be 1 to 86400, got 86401"),
    ],
)
def test_a_bad_field_is_refused_on_both_sides_by_the_same_check(node, field, value, message):
    agent, client, peer = node
    with pytest.raises(PartFailed) as controller_side:
        client.attach(peer, replace(session(), **{field: value}))
    assert message in str(controller_side.value) and client.sent == []  # nothing was sent
    body = json.dumps({**Attach(7, 5, 30, (COUNTER,)).to_json(), field: value}).encode()
    status, data, _ = control.answer(agent, "PUT", "/sessions/7", body)
    assert (status, json.loads(data)["error"]) == (400, message)
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_an_agents_answer_that_breaks_the_contract_is_the_agents_failure(node, monkeypatch):
    agent, client, peer = node
    client.attach(peer, session())
    monkeypatch.setattr(InProcessAgents, "send", lambda *args: {"session": 7})
    with pytest.raises(PartFailed, match="answered GET /health: an agent's status lacks 'dpid'"):
        client.health(peer)
    with pytest.raises(PartFailed, match="answered DELETE /sessions/7: a chain's counters lacks"):
        client.detach(peer, 7)


def test_the_agents_registration_is_what_the_controller_takes(world, monkeypatch):
    service, _, _, _, node_agent, _ = world
    sent = []

    def controller(url, method, body, timeout, signer):  # the controller, in process
        sent.append((url, method, body))
        return json.loads(json.dumps(service.register_agent(body)))

    monkeypatch.setattr(agent_module, "call_json", controller)
    node_agent.url = "http://a"
    assert node_agent.register()
    assert sent == [
        (
            "http://c/netserv/nodes",
            "POST",
            {
                "dpid": "0000000000000001",
                "switch_port": "s1-ns",
                "url": "http://a",
                "boot_id": node_agent.boot_id,
                "held": {"count": 0, "digest": "0000000000000000"},
            },
        )
    ]
    with pytest.raises(InvalidRequest, match="switch_port 'a b' does not match"):
        service.register_agent({**sent[0][2], "switch_port": "a b"})
    assert service.network.agents[DPID].switch_port == "s1-ns"


def test_an_agent_takes_no_registration_answer_that_breaks_the_contract(world, monkeypatch):
    service, _, _, _, node_agent, _ = world
    kept = make(service, BODY)
    node_agent.url = "http://a"
    for reply in ({"dpid": "01", "sessions": ["x"]}, {"dpid": "02", "sessions": []}, None):
        monkeypatch.setattr(agent_module, "call_json", lambda *a, _reply=reply, **kw: _reply)
        with pytest.raises(ClientError) as refused:
            node_agent.register_once()
        assert refused.value.status == 0 and "breaks the contract" in refused.value.message
        assert [c.session_id for c in node_agent.dispatcher.chains()] == [kept.id]  # none dropped


def test_the_controller_refuses_a_second_agent_with_the_status_agents_take_as_refusal():
    from controller.entry import _eventlet_compat

    _eventlet_compat()  # Ryu's wsgi module needs it before import
    from controller import rest

    assert rest.STATUS[Conflict] == Registration.REFUSED


def test_the_limits_are_declared_once():
    from controller import requests
    from signaling import wire

    assert sessions.SESSION_TAGS is limits.SESSION_TAGS and len(limits.SESSION_TAGS) == 8 * 4094
    assert requests.MAX_LIFETIME is wire.MAX_LIFETIME is limits.MAX_LIFETIME
    assert requests.MAX_CHAIN is wire.MAX_CHAIN is limits.MAX_CHAIN
    assert requests.ModuleSpec is ModuleSpec
    assert limits.REGISTER_TIMEOUT > limits.HEALTH_TIMEOUT
    assert limits.AGENT_DEAD_AFTER > 2 * limits.HEARTBEAT  # one lost heartbeat is not death


@pytest.mark.parametrize("lifetime, refreshed", [(1, 1), (30, 5), (600, 3000)])
def test_the_switch_drops_a_detour_no_later_than_the_agent_drops_its_chain(
    world, lifetime, refreshed
):
    service, sim, _, _, agent, clock = world
    sim.clock = clock
    made = make(service, {**BODY, "lifetime": lifetime})
    chain = agent.dispatcher.by_session(made.id)
    assert sim.deadline(detour(sim, made)) <= chain.expires
    assert chain.expires == clock.now + lifetime + limits.EXPIRY_GRACE
    clock.now += 0.7
    refresh(service, made.id, refreshed)
    assert sim.deadline(detour(sim, made)) <= chain.expires
    assert chain.expires == clock.now + refreshed + limits.EXPIRY_GRACE
