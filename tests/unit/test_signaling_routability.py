"""The return-routability check at the controller: a SETUP whose requester may claim only
some flows is held, its claimed endpoint challenged out of the port where it is
attached, and installed only on that endpoint's answer (the session service on a
simulated switch with a real in-process agent, the clock faked)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from controller.messages import Output
from controller.policy import Policy, Requester
from controller.routability import ReturnRoutability
from controller.sessions import State
from controller.signaling import SignalingHandler
from signaling import wire
from signaling.auth import sign
from signaling.codec import encode
from signaling.errors import ErrorCode
from signaling.messages import Ack, ChallengeResponse, ErrorReply
from signaling.values import FlowFilter
from tests.unit.conftest import DPID
from tests.unit.test_signaling_handler import (
    DESCRIPTION,
    FLOW,
    H1_PORT,
    KEY,
    SID,
    Wall,
    answer,
    ask_checked,
    challenge_in,
    frame,
    locate,
    refresh,
    reply_frame,
    served,
    setup,
    teardown,
)

H3_PORT = 2  # another host's port on the same switch


@pytest.fixture
def checked(world):
    """A handler whose policy lets alice claim h1's flows (10.0.0.1/32) only: her
    requests are checked. h1 and h3 are located; the check times out after 3 s."""
    service, sim, switches, agents, agent, clock = world
    alice = Requester(
        "alice@h1",
        keys=MappingProxyType({7: KEY.secret}),
        prefixes=(ipaddress.ip_network("10.0.0.1/32"),),
    )
    service.policy = Policy(MappingProxyType({"alice@h1": alice}), source=Path("p.toml"))
    locate(service, "10.0.0.1", H1_PORT)
    locate(service, "10.0.0.3", H3_PORT)
    wall = Wall()
    handler = SignalingHandler(service, wall, checks=ReturnRoutability(timeout=3.0))
    return handler, service, sim, switches, agent, wall


def send(handler, message, port: int = H1_PORT, src: str = "10.0.0.1") -> list:
    return handler.packet_in(DPID, port, frame(sign(message, KEY), src=src))


def nothing_installed(service, switches, agent, mods: int) -> None:
    assert len(switches.flow_mods()) == mods
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}


def test_a_checked_setup_is_held_challenged_and_installed_on_the_endpoints_answer(checked):
    handler, service, sim, switches, agent, wall = checked
    mods = len(switches.flow_mods())
    request = setup()
    sends = send(handler, request)
    port, challenge, pkt = challenge_in(sends)
    # held: reserved, nothing in the switch or the agent, not active
    (pending,) = service.sessions.all()
    assert pending.state is State.PENDING_ROUTABILITY and pending.ref == SID
    nothing_installed(service, switches, agent, mods)
    assert served(sim) == []
    # the CHALLENGE: out of h1's port, to the request's own port (it came from h1), from
    # the address the request was sent to
    assert port == H1_PORT and challenge.cookie != request.nonce
    assert (challenge.session_id, challenge.sequence) == (SID, 1)
    assert (challenge.requester, challenge.flow) == ("alice@h1", FLOW)
    assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (
        "10.0.0.2",
        "10.0.0.1",
        wire.SIGNALING_PORT,
        40000,
    )
    assert (pkt.src, pkt.dst) == ("00:00:00:00:00:02", "00:00:00:00:00:01")
    wall.now += 0.5
    reply = encode(ChallengeResponse.answering(challenge, 0))
    ((dpid, out),) = handler.packet_in(DPID, H1_PORT, reply_frame(pkt, reply))
    assert dpid == DPID and out.actions == (Output(H1_PORT),)
    ack = answer(bytes(Ether(out.data)[UDP].payload))
    assert isinstance(ack, Ack) and ack.nonce == request.nonce and ack.nodes == (DPID,)
    (session,) = service.sessions.all()
    assert session.state is State.ACTIVE and served(sim) == [(4, session.tag)]
    assert handler.counts["routability: challenged"] == handler.counts["routability: confirmed"]
    # a retransmission of the SETUP gets the same ACK, and nothing is challenged again
    again = send(handler, setup(retransmission=True, wall=wall.now))
    assert [bytes(Ether(m.data)[UDP].payload) for _, m in again] == [
        bytes(Ether(out.data)[UDP].payload)
    ]


def test_a_retransmission_joins_the_check_and_the_latest_transmission_is_answered(checked):
    handler, service, _, switches, _, wall = checked
    _, challenge, pkt = challenge_in(send(handler, setup()))
    wall.now += 1.0
    latest = setup(retransmission=True, wall=wall.now)
    assert send(handler, latest) == []  # no second check, no answer yet
    assert handler.counts["joined a running check"] == 1 and len(service.sessions.all()) == 1
    reply = encode(ChallengeResponse.answering(challenge, 0))
    ((_, out),) = handler.packet_in(DPID, H1_PORT, reply_frame(pkt, reply))
    ack = answer(bytes(Ether(out.data)[UDP].payload))
    assert isinstance(ack, Ack) and ack.nonce == latest.nonce


def test_the_challenge_is_sent_three_times_then_the_request_is_refused_with_304(checked, caplog):
    handler, service, sim, switches, agent, wall = checked
    caplog.set_level(logging.INFO, logger="netserv.rejections")
    mods = len(switches.flow_mods())
    request = setup()
    _, first, _ = challenge_in(send(handler, request))
    resent, refusals = [], []
    for _ in range(40):
        wall.now += 0.1
        for _, out in handler.tick():
            payload = bytes(Ether(out.data)[UDP].payload)
            if out.actions == (Output(H1_PORT),) and Ether(out.data)[UDP].sport == 20051:
                message = answer(payload, signed=False) if payload[3] == 5 else answer(payload)
                (resent if isinstance(message, type(first)) else refusals).append(message)
    assert [c.retransmission for c in resent] == [True, True]
    assert {c.cookie for c in resent} == {first.cookie}
    (error,) = refusals
    assert isinstance(error, ErrorReply) and error.code == ErrorCode.NOT_ROUTABLE
    assert error.nonce == request.nonce and "10.0.0.1 did not answer" in error.reason
    assert service.sessions.all() == [] and len(handler.checks) == 0
    nothing_installed(service, switches, agent, mods)
    assert service.rejections.to_json()["signaling"] == {"not_routable": 1}
    assert "refused (signaling, not_routable)" in caplog.text
    # the flow space was given back: the same claim, answered this time, goes through
    assert isinstance(answer(ask_checked(handler, setup(session_id=SID + 1))), Ack)


@pytest.mark.parametrize("wrong", ["cookie", "port", "address", "session"])
def test_an_answer_with_a_wrong_cookie_port_or_address_activates_nothing(checked, wrong):
    handler, service, sim, switches, agent, wall = checked
    mods = len(switches.flow_mods())
    _, challenge, pkt = challenge_in(send(handler, setup()))
    if wrong == "cookie":
        challenge = replace(challenge, nonce=bytes(16))
    elif wrong == "session":
        challenge = replace(challenge, session_id=SID + 1)
    reply = encode(ChallengeResponse.answering(challenge, 0))
    port = H3_PORT if wrong == "port" else H1_PORT
    src = "10.0.0.3" if wrong == "address" else None
    assert handler.packet_in(DPID, port, reply_frame(pkt, reply, src)) == []
    assert handler.counts["dropped: a challenge-response that confirms nothing"] == 1
    assert [s.state for s in service.sessions.all()] == [State.PENDING_ROUTABILITY]
    wall.now += 3.1
    ((_, out),) = [s for s in handler.tick() if Ether(s[1].data)[UDP].dport == 40000][-1:]
    assert answer(bytes(Ether(out.data)[UDP].payload)).code == ErrorCode.NOT_ROUTABLE
    assert service.sessions.all() == []
    nothing_installed(service, switches, agent, mods)


def test_an_off_path_claim_challenges_the_endpoint_not_the_requester(checked):
    # alice's key, used from h3's port and address, claims h1's flow: the CHALLENGE goes
    # to h1 at the signaling port, where no client of hers waits; h3 never sees it
    handler, service, _, switches, agent, wall = checked
    mods = len(switches.flow_mods())
    port, challenge, pkt = challenge_in(send(handler, setup(), port=H3_PORT, src="10.0.0.3"))
    assert port == H1_PORT and pkt[IP].dst == "10.0.0.1"
    assert pkt[UDP].dport == wire.SIGNALING_PORT
    # h3 forges the answer it would need, from its own port, with h1's address: nothing
    forged = encode(ChallengeResponse.answering(replace(challenge, nonce=bytes(16)), 0))
    assert handler.packet_in(DPID, H3_PORT, reply_frame(pkt, forged, "10.0.0.1")) == []
    wall.now += 3.1
    refused = [out for _, out in handler.tick() if out.actions == (Output(H3_PORT),)]
    (error,) = [answer(bytes(Ether(o.data)[UDP].payload)) for o in refused]
    assert error.code == ErrorCode.NOT_ROUTABLE and service.sessions.all() == []
    nothing_installed(service, switches, agent, mods)


def test_a_spoofed_source_address_gets_the_challenge_sent_to_the_real_host(checked):
    # from h3's port, claiming to be h1: the CHALLENGE goes out of h1's port, not h3's
    handler, service, *_ = checked
    port, _, pkt = challenge_in(send(handler, setup(), port=H3_PORT, src="10.0.0.1"))
    assert port == H1_PORT and (pkt[IP].dst, pkt[UDP].dport) == ("10.0.0.1", 40000)


def test_an_endpoint_not_located_is_unavailable_and_nothing_is_held(checked):
    handler, service, _, switches, agent, _ = checked
    service.network.topology._seen.clear()
    mods = len(switches.flow_mods())
    ((_, out),) = send(handler, setup())
    error = answer(bytes(Ether(out.data)[UDP].payload))
    assert error.code == ErrorCode.NODE_UNAVAILABLE and "not located" in error.reason
    assert service.sessions.all() == [] and len(handler.checks) == 0
    nothing_installed(service, switches, agent, mods)


def test_a_claim_with_no_single_host_cannot_be_checked_and_is_refused(checked):
    handler, service, *_ = checked
    wide = replace(DESCRIPTION, flow=FlowFilter(src="10.0.0.0/31", dst="10.0.1.0/24"))
    alice = service.policy.requester("alice@h1")
    wider = replace(alice, prefixes=(ipaddress.ip_network("10.0.0.0/24"),))
    service.policy = Policy(MappingProxyType({"alice@h1": wider}), source=Path("p.toml"))
    ((_, out),) = send(handler, setup(wide))
    error = answer(bytes(Ether(out.data)[UDP].payload))
    assert error.code == ErrorCode.NOT_ENDPOINT and "no single host" in error.reason
    assert service.sessions.all() == []


def test_a_refresh_that_rebuilds_a_lost_session_is_checked_too(checked):
    handler, service, sim, *_ = checked
    sends = send(handler, refresh(sequence=5))
    _, challenge, pkt = challenge_in(sends)
    assert challenge.sequence == 5 and service.sessions.all()[0].state is State.PENDING_ROUTABILITY
    reply = encode(ChallengeResponse.answering(challenge, 0))
    ((_, out),) = handler.packet_in(DPID, H1_PORT, reply_frame(pkt, reply))
    assert isinstance(answer(bytes(Ether(out.data)[UDP].payload)), Ack)
    assert handler.counts["rebuilt from a refresh"] == 1
    # a REFRESH of the session it holds is not checked again
    ack = answer(bytes(Ether(send(handler, refresh(sequence=6))[0][1].data)[UDP].payload))
    assert isinstance(ack, Ack) and handler.counts["routability: challenged"] == 1


def test_a_teardown_while_the_check_runs_conflicts_and_the_check_goes_on(checked):
    handler, service, *_ = checked
    challenge_in(send(handler, setup()))
    ((_, out),) = send(handler, teardown(sequence=2))
    error = answer(bytes(Ether(out.data)[UDP].payload))
    assert error.code == ErrorCode.CONFLICT and "return-routability" in error.reason
    assert [s.state for s in service.sessions.all()] == [State.PENDING_ROUTABILITY]


def test_an_unchecked_requester_is_installed_at_once(checked):
    # prefixes "any": the policy trusts it with every flow, so there is nothing to check
    handler, service, *_ = checked
    service.policy = Policy(
        MappingProxyType(
            {"alice@h1": Requester("alice@h1", keys=MappingProxyType({7: KEY.secret}))}
        ),
        source=Path("p.toml"),
    )
    ((_, out),) = send(handler, setup())
    assert isinstance(answer(bytes(Ether(out.data)[UDP].payload)), Ack)
    assert handler.counts["routability: challenged"] == 0


def test_a_challenge_or_its_answer_sent_to_the_controller_as_a_request_is_not_answered(checked):
    handler, *_ = checked
    _, challenge, _ = challenge_in(send(handler, setup()))
    assert handler.packet_in(DPID, H3_PORT, frame(encode(challenge), src="10.0.0.3")) == []
    assert handler.counts["dropped: a challenge"] == 1
