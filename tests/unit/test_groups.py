"""Node selection and session groups: one request served at several nodes of a path,
made all or none, refreshed and ended together (a simulated switch per node, real
in-process agents)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.errors import (
    Conflict,
    InvalidRequest,
    NoNetServNode,
    NotFound,
    PartFailed,
    Unavailable,
    UnknownNode,
)
from controller.requests import SessionRequest, parse_session_request
from nodes.bundle import Catalog
from signaling.values import NodeSelection
from tests.unit.conftest import AGENT_PORT, LINE, SERVICES, Line, policy_of

MATCH = {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.3", "udp_dst": 9000}
CATALOG = Catalog(SERVICES)


@pytest.fixture(autouse=True)
def requesters(line: Line) -> None:
    line.service.policy = policy_of("alice", "bob")


def request(body: dict | None = None, **changes) -> SessionRequest:
    """Return alice's request for a counter on h1 → h3 UDP 9000, as REST would parse
    `body` (merged into the default), with `changes` made to it."""
    body = {"match": MATCH, "module": "counter", "lifetime": 30} | (body or {})
    return replace(parse_session_request(body, CATALOG, requester="alice"), **changes)


def detoured(line: Line) -> list[int]:
    """Return the nodes that detour the flow h1 → h3 UDP 9000 to their agent."""
    frame = {
        "in_port": 1,
        "eth_src": "00:00:00:00:00:01",
        "eth_dst": "00:00:00:00:00:03",
        "eth_type": 0x0800,
        "ip_proto": 17,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": "10.0.0.3",
        "udp_dst": 9000,
    }
    return [d for d in LINE if any(p == AGENT_PORT for p, _ in line.sim(d).process(frame).outputs)]


@pytest.mark.parametrize(
    "nodes, expected",
    [
        (NodeSelection.first(), [1]),
        (NodeSelection.last(), [3]),
        (NodeSelection.every(), [1, 2, 3]),
        (NodeSelection.named(2), [2]),
        (NodeSelection.named(3, 1), [3, 1]),
    ],
)
def test_the_selection_picks_the_nodes_on_the_path(line, nodes, expected):
    made = line.service.create(request(selection=nodes))
    assert [s.node for s in made] == expected
    assert sorted(detoured(line)) == sorted(expected)
    assert {s.group for s in made} == {("alice", made[0].id)}
    chains = line.chains()
    assert all(chains[s.node] == [s.id] for s in made)
    assert sum(len(ids) for ids in chains.values()) == len(expected)


def test_first_and_last_follow_the_flows_direction(line):
    back = {"ipv4_src": "10.0.0.3", "ipv4_dst": "10.0.0.1", "udp_dst": 9000}
    (first,) = line.service.create(request({"match": back}))
    (last,) = line.service.create(request({"match": back, "nodes": "last"}))
    assert (first.node, last.node) == (3, 1)
    every = line.service.create(request({"match": back | {"udp_dst": 9001}, "nodes": "every"}))
    assert [s.node for s in every] == [3, 2, 1]


def test_only_netserv_nodes_on_the_path_count(line, monkeypatch):
    monkeypatch.setattr(line.service.network, "path_nodes", lambda s, d: [7, 2, 8, 3])
    made = line.service.create(request({"nodes": "every"}))
    assert [s.node for s in made] == [2, 3]
    monkeypatch.setattr(line.service.network, "path_nodes", lambda s, d: [7, 8])
    with pytest.raises(NoNetServNode, match="on the path from 10.0.0.1 to 10.0.0.3"):
        line.service.create(request({"match": MATCH | {"udp_dst": 1}}))


def test_a_host_that_cannot_be_located_is_unavailable(line, monkeypatch):
    def unknown(src, dst):
        raise Unavailable(f"host {src} has not been seen")

    monkeypatch.setattr(line.service.network, "path_nodes", unknown)
    with pytest.raises(Unavailable, match="not been seen"):
        line.service.create(request())
    assert line.service.sessions.all() == []


def test_without_a_path_first_among_several_nodes_is_ambiguous(line):
    with pytest.raises(InvalidRequest, match="several NetServ nodes are ready"):
        line.service.create(request({"match": {"udp_dst": 9000}}))
    made = line.service.create(request({"match": {"udp_dst": 9000}, "nodes": "every"}))
    assert [s.node for s in made] == [1, 2, 3]


def test_named_nodes_must_be_ready_netserv_nodes(line):
    with pytest.raises(UnknownNode, match="no NetServ node 0000000000000009"):
        line.service.create(request({"nodes": [1, 9]}))
    line.service.network.switch_disconnected(2)
    with pytest.raises(Unavailable, match="0000000000000002 is not ready"):
        line.service.create(request({"nodes": [1, 2]}))
    assert line.service.sessions.all() == []


def nothing_anywhere(line: Line, before: dict[int, set[int]]) -> None:
    assert line.service.sessions.all() == []
    assert {d: line.sim(d).cookies() for d in LINE} == before
    assert line.chains() == {1: [], 2: [], 3: []}
    assert all(line.agent(d).host.loaded() == {} for d in LINE)


def cookies(line: Line) -> dict[int, set[int]]:
    return {d: set(line.sim(d).cookies()) for d in LINE}


def test_an_agent_refusing_at_the_last_node_undoes_the_whole_group(line, monkeypatch):
    before = cookies(line)
    attach = line.agents.attach

    def refuse_at_3(agent, session):
        if agent.dpid == 3:
            raise PartFailed("node 3 refused")
        attach(agent, session)

    monkeypatch.setattr(line.agents, "attach", refuse_at_3)
    with pytest.raises(PartFailed, match="node 3"):
        line.service.create(request({"nodes": "every"}))
    nothing_anywhere(line, before)
    assert detoured(line) == []


def test_a_switch_failing_in_the_middle_undoes_the_whole_group(line, monkeypatch):
    before = cookies(line)
    send = line.switches.send

    def fail_at_2(dpid, msgs):
        if dpid == 2 and line.service.sessions.all():
            raise Unavailable("switch 2 gone")
        send(dpid, msgs)

    monkeypatch.setattr(line.switches, "send", fail_at_2)
    with pytest.raises(Unavailable, match="switch 2"):
        line.service.create(request({"nodes": "every"}))
    monkeypatch.undo()
    nothing_anywhere(line, before)


def test_a_conflict_at_one_node_reserves_nothing_at_the_others(line):
    (taken,) = line.service.create(request({"nodes": [2]}))
    before = cookies(line)
    with pytest.raises(Conflict, match="overlaps session"):
        line.service.create(request({"nodes": "every"}))
    assert line.service.sessions.all() == [taken]
    assert cookies(line) == before
    again = line.service.create(request({"nodes": [1, 3]}))  # ids and tags were given back
    assert [s.node for s in again] == [1, 3]


def test_a_group_is_named_by_its_requesters_ref(line):
    made = line.service.create(request({"nodes": "every"}), ref=0xABC)
    assert {s.group for s in made} == {("alice", 0xABC)}
    assert line.service.group(("alice", 0xABC)) == made
    assert line.service.group(made[1].id) == made
    with pytest.raises(Conflict, match="0xabc of alice exists"):
        line.service.create(request({"match": MATCH | {"udp_dst": 1}}), ref=0xABC)
    # another requester's ref of the same number names another group
    bobs = line.service.create(request({"match": MATCH | {"udp_dst": 1}}, requester="bob"), 0xABC)
    assert line.service.group(("bob", 0xABC)) == bobs and line.service.group(made[0].id) == made


def test_refresh_and_teardown_act_on_the_whole_group(line):
    made = line.service.create(request({"nodes": "every"}), ref=7)
    line.clock.now += 20
    refreshed = line.service.refresh(("alice", 7), 100)
    assert [s.id for s in refreshed] == [s.id for s in made]
    assert all(s.lifetime == 100 and s.expires == line.clock.now + 100 for s in refreshed)
    line.clock.now += 50  # past the first lifetime: still there
    line.beat()
    assert line.service.tick() == [] and sorted(detoured(line)) == [1, 2, 3]
    views = line.service.teardown(made[2].id)  # any member names the group
    assert [v["id"] for v in views] == [s.id for s in made]
    assert all(v["ended"] == "teardown" for v in views)
    assert line.service.sessions.all() == [] and detoured(line) == []
    with pytest.raises(NotFound, match="no session 0x7 of requester alice"):
        line.service.teardown(("alice", 7))


def test_a_refresh_that_changes_more_than_the_lifetime_conflicts_and_changes_nothing(line):
    asked = request({"nodes": "every"})
    made = line.service.create(asked, ref=7)
    for changed in (
        replace(asked, match=request({"match": MATCH | {"udp_dst": 9001}}).match),
        replace(asked, modules=request({"module": "null"}).modules),
        replace(asked, selection=NodeSelection.first()),
    ):
        with pytest.raises(Conflict, match="may change only the lifetime"):
            line.service.refresh(("alice", 7), 100, expect=changed)
    assert line.service.sessions.all() == made
    (same,) = {s.lifetime for s in line.service.refresh(("alice", 7), 9, expect=asked)}
    assert same == 9


def test_sessions_of_a_group_expire_together(line):
    made = line.service.create(request({"nodes": "every", "lifetime": 5}))
    line.clock.now += 5
    assert sorted(line.service.tick()) == sorted(s.id for s in made)
    assert detoured(line) == [] and line.chains() == {1: [], 2: [], 3: []}


@pytest.mark.parametrize("fail", ["agent", "switch"])
def test_a_refresh_failing_at_one_node_leaves_every_node_as_it_was(line, monkeypatch, fail):
    for dpid in LINE:
        line.sim(dpid).clock = line.clock
    made = line.service.create(request({"nodes": "every", "lifetime": 600}), ref=7)
    line.clock.now += 100
    before = line.service.sessions.all()
    chains = {s.id: line.agent(s.node).dispatcher.by_session(s.id).expires for s in made}
    deadlines = {s.id: line.sim(s.node).deadline(detour_of(line, s)) for s in made}
    if fail == "agent":
        refresh = line.agents.refresh

        def refuse_at_3(agent, session):
            if agent.dpid == 3 and session.lifetime == 30:
                raise PartFailed("node 3 refused")
            refresh(agent, session)

        monkeypatch.setattr(line.agents, "refresh", refuse_at_3)
    else:
        send = line.switches.send

        def fail_at_3(dpid, msgs):
            if dpid == 3:
                raise Unavailable("switch 3 gone")
            send(dpid, msgs)

        monkeypatch.setattr(line.switches, "send", fail_at_3)
    with pytest.raises((PartFailed, Unavailable), match="3"):
        line.service.refresh(("alice", 7), 30)
    monkeypatch.undo()
    assert line.service.sessions.all() == before  # lifetimes, expiries, timers, states
    assert {s.id: line.agent(s.node).dispatcher.by_session(s.id).expires for s in made} == chains
    assert {s.id: line.sim(s.node).deadline(detour_of(line, s)) for s in made} == deadlines
    assert sorted(detoured(line)) == [1, 2, 3]
    assert {s.lifetime for s in line.service.refresh(("alice", 7), 30)} == {30}  # works again


def detour_of(line: Line, session):
    (flow,) = line.sim(session.node).with_cookie(session.cookie)
    return flow
