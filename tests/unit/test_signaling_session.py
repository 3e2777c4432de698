"""The requester's session state machine: every transition, retransmission with
back-off, refresh timing, expiry and teardown, driven by a fake clock."""

import itertools

import pytest

from signaling.errors import ErrorCode, SignalingUsageError
from signaling.exchange import ExchangeState
from signaling.messages import Ack, ErrorReply, ProbeResponse, Refresh, Setup, Teardown
from signaling.probe import ProbeExchange
from signaling.session import (
    TRANSITIONS,
    Outcome,
    RequesterSession,
    SessionState,
    Timers,
    Trigger,
)
from signaling.values import FlowFilter, NodeInfo, NodeSelection
from tests.unit.signaling_samples import DESCRIPTION

T0 = 1_767_225_600.0
S = SessionState


def counter_nonces():
    count = itertools.count(1)
    return lambda n: next(count).to_bytes(n, "big")


def make(**kw) -> RequesterSession:
    kw.setdefault("nonces", counter_nonces())
    return RequesterSession(DESCRIPTION, session_id=42, **kw)


def ack(request, lifetime=60, nodes=(1,), t=T0):
    if isinstance(request, Teardown):
        return Ack.answering(request, int(t * 1000))
    return Ack.answering(request, int(t * 1000), lifetime=lifetime, nodes=nodes)


def error(request, code=ErrorCode.CONFLICT, t=T0):
    return ErrorReply.answering(request, int(t * 1000), code, "no")


def established(**kw):
    s = make(**kw)
    setup = s.open(T0)
    assert s.receive(ack(setup), T0 + 0.1, authenticated=True)
    return s, setup


def test_open_sends_a_setup_with_the_whole_description():
    s = make()
    setup = s.open(T0)
    assert isinstance(setup, Setup) and setup.description == DESCRIPTION
    assert (setup.session_id, setup.sequence, setup.timestamp_ms) == (42, 1, int(T0 * 1000))
    assert not setup.retransmission and s.state is S.SETUP_SENT
    assert s.deadline() == T0 + 1.0


def test_an_ack_establishes_the_session_with_the_granted_lifetime():
    s, setup = established()
    assert s.state is S.ESTABLISHED and s.pending is None
    assert s.lifetime == 60 and s.nodes == (1,)
    # the responder's lifetime started after the SETUP left: count from the send time
    assert s.expires == T0 + 60 and s.refresh_at == T0 + 20
    assert s.deadline() == T0 + 20


def test_an_error_to_the_setup_closes_the_session_refused():
    s = make()
    setup = s.open(T0)
    assert s.receive(error(setup), T0 + 0.1, authenticated=True)
    assert s.state is S.CLOSED and s.outcome is Outcome.REFUSED
    assert s.error.code is ErrorCode.CONFLICT and s.deadline() is None


def test_setup_is_retransmitted_with_backoff_then_given_up():
    s = make()
    first = s.open(T0)
    sent = [(T0, first)]
    now = T0
    while s.state is S.SETUP_SENT:
        now = s.deadline()
        sent += [(now, m) for m in s.poll(now)]
    times = [round(t - T0, 3) for t, _ in sent]
    assert times == [0, 1, 3, 7, 15]  # time-outs 1, 2, 4, 8, then 8 more to give up
    assert now - T0 == 23 and s.outcome is Outcome.NO_ANSWER
    messages = [m for _, m in sent]
    assert {m.sequence for m in messages} == {1}
    assert len({m.nonce for m in messages}) == 5  # every transmission has a fresh nonce
    assert [m.retransmission for m in messages] == [False] + [True] * 4
    assert [m.timestamp_ms for m in messages] == [int(t * 1000) for t, _ in sent]


def test_an_answer_to_any_transmission_counts():
    s = make()
    first = s.open(T0)
    s.poll(T0 + 1)
    assert s.receive(ack(first), T0 + 1.5, authenticated=True)
    assert s.state is S.ESTABLISHED and s.expires == T0 + 60  # from the first one's send


@pytest.mark.parametrize(
    "change",
    [
        {"session_id": 43},
        {"sequence": 2},
        {"nonce": bytes(16)},
    ],
)
def test_answers_that_echo_something_else_are_ignored(change):
    s = make()
    setup = s.open(T0)
    answer = ack(setup)
    fields = {k: getattr(answer, k) for k in ("session_id", "sequence", "timestamp_ms", "nonce")}
    forged = Ack(**{**fields, **change}, lifetime=60, nodes=(1,))
    assert not s.receive(forged, T0 + 0.1, authenticated=True)
    assert s.state is S.SETUP_SENT


def test_a_probe_response_does_not_answer_a_setup():
    s = make()
    setup = s.open(T0)
    assert not s.receive(ProbeResponse.answering(setup, 0, (NodeInfo(1),)), T0, True)
    assert s.state is S.SETUP_SENT


def test_unsigned_answers_are_trusted_only_for_errors_that_cannot_be_signed():
    s = make()
    setup = s.open(T0)
    assert not s.receive(ack(setup), T0 + 0.1, authenticated=False)
    assert not s.receive(error(setup, ErrorCode.CONFLICT), T0 + 0.1, authenticated=False)
    assert s.state is S.SETUP_SENT
    assert s.receive(error(setup, ErrorCode.BAD_AUTH), T0 + 0.1, authenticated=False)
    assert s.state is S.CLOSED and s.error.code is ErrorCode.BAD_AUTH
    unsigned = make(signed=False)
    assert unsigned.receive(ack(unsigned.open(T0)), T0, authenticated=False)


def test_refresh_is_sent_at_a_third_of_the_lifetime_and_carries_everything():
    s, _ = established()
    assert s.poll(T0 + 19.9) == []
    (refresh,) = s.poll(T0 + 20)
    assert isinstance(refresh, Refresh) and refresh.description == DESCRIPTION
    assert refresh.sequence == 2 and not refresh.retransmission
    assert s.state is S.REFRESH_SENT
    assert s.receive(ack(refresh, lifetime=30), T0 + 20.2, authenticated=True)
    assert s.state is S.ESTABLISHED
    assert s.expires == T0 + 50 and s.refresh_at == T0 + 30  # the new grant counts
    (again,) = s.poll(T0 + 30)
    assert again.sequence == 3


def test_an_ack_to_an_old_request_is_ignored_after_a_newer_one():
    s, setup = established()
    (refresh,) = s.poll(T0 + 20)
    assert not s.receive(ack(setup), T0 + 20.1, authenticated=True)
    assert s.state is S.REFRESH_SENT


def test_an_unanswered_refresh_is_retried_until_the_session_expires():
    s, _ = established(timers=Timers(rto=1, max_rto=8))
    sent = s.poll(T0 + 20)
    now = T0 + 20
    while s.state is S.REFRESH_SENT:
        now = s.deadline()
        sent += s.poll(now)
    assert s.state is S.CLOSED and s.outcome is Outcome.EXPIRED and now == T0 + 60
    # 20, 21, 23, 27, 35, 43, 51, 59: back-off up to 8 s, past max_transmissions
    assert [round(m.timestamp_ms / 1000 - T0) for m in sent] == [20, 21, 23, 27, 35, 43, 51, 59]
    assert {m.sequence for m in sent} == {2}


def test_refresh_retransmissions_never_wait_longer_than_the_refresh_interval():
    s = make(timers=Timers(rto=4, max_rto=8))
    setup = s.open(T0)
    s.receive(ack(setup, lifetime=3), T0, authenticated=True)
    (refresh,) = s.poll(T0 + 1)
    assert s.deadline() == pytest.approx(T0 + 2)  # 1 s (a third of 3 s), not 4 s


def test_a_late_poll_expires_before_it_refreshes():
    s, _ = established()
    assert s.poll(T0 + 61) == []
    assert s.state is S.CLOSED and s.outcome is Outcome.EXPIRED


def test_without_auto_refresh_the_session_just_expires():
    s, _ = established(auto_refresh=False)
    assert s.deadline() == T0 + 60
    assert s.poll(T0 + 30) == []
    assert s.poll(T0 + 60) == [] and s.outcome is Outcome.EXPIRED


def test_teardown_is_acknowledged_and_closes():
    s, _ = established()
    teardown = s.close(T0 + 5)
    assert isinstance(teardown, Teardown) and teardown.sequence == 2
    assert teardown.requester == DESCRIPTION.requester and s.state is S.TEARDOWN_SENT
    assert s.close(T0 + 5.1) is None  # already under way
    assert s.receive(ack(teardown), T0 + 5.2, authenticated=True)
    assert s.state is S.CLOSED and s.outcome is Outcome.TORN_DOWN
    assert s.close(T0 + 6) is None and s.poll(T0 + 100) == []


def test_an_unanswered_teardown_gives_up():
    s, _ = established()
    s.close(T0 + 5)
    sent = []
    while s.state is S.TEARDOWN_SENT:
        sent += s.poll(s.deadline())
    assert len(sent) == 4 and all(m.retransmission for m in sent)
    assert s.outcome is Outcome.NO_ANSWER


@pytest.mark.parametrize("when", ["setup", "refresh"])
def test_closing_while_a_request_is_out_sends_a_teardown(when):
    s = make()
    setup = s.open(T0)
    if when == "refresh":
        s.receive(ack(setup), T0, authenticated=True)
        s.poll(T0 + 20)
    teardown = s.close(T0 + 21)
    assert isinstance(teardown, Teardown) and s.state is S.TEARDOWN_SENT
    assert not s.receive(ack(setup), T0 + 21.1, authenticated=True)  # superseded


def test_closing_a_session_never_opened_sends_nothing():
    s = make()
    assert s.close(T0) is None and s.outcome is Outcome.NOT_OPENED


def test_impossible_steps_are_usage_errors():
    s, _ = established()
    with pytest.raises(SignalingUsageError, match="open is not possible in state established"):
        s.open(T0)


def test_the_table_covers_each_state_and_every_closed_step_says_why():
    states_with_exits = {state for state, _ in TRANSITIONS}
    assert states_with_exits == set(SessionState)
    for (state, trigger), step in TRANSITIONS.items():
        if step.next is S.CLOSED and state is not S.CLOSED:
            assert step.outcome is not None, (state, trigger)
        assert not (step.send and step.retransmit)
    # every request-sent state handles its answers and its time-out
    for state in (S.SETUP_SENT, S.REFRESH_SENT, S.TEARDOWN_SENT):
        for trigger in (Trigger.ACK, Trigger.ERROR, Trigger.RETRANSMIT_DUE, Trigger.CLOSE):
            assert (state, trigger) in TRANSITIONS


def test_session_ids_are_random_and_never_zero():
    zeros_then_one = iter([bytes(8), (1).to_bytes(8, "big")])
    s = RequesterSession(DESCRIPTION, nonces=lambda n: next(zeros_then_one))
    assert s.session_id == 1
    assert RequesterSession(DESCRIPTION).session_id != RequesterSession(DESCRIPTION).session_id


# -- probes -----------------------------------------------------------------------------


def test_a_probe_is_answered_by_its_response():
    p = ProbeExchange("bob", FlowFilter(dst="10.0.0.2"), nonces=counter_nonces())
    probe = p.start(T0)
    assert probe.nodes == NodeSelection.every() and p.state is ExchangeState.SENT
    response = ProbeResponse.answering(probe, 0, (NodeInfo(1, ("null",)), NodeInfo(2)))
    assert not p.receive(ack(probe), T0, authenticated=True)
    assert p.receive(response, T0 + 0.1, authenticated=True)
    assert p.state is ExchangeState.ANSWERED and [n.dpid for n in p.response.nodes] == [1, 2]
    assert p.deadline() is None


def test_a_probe_is_retransmitted_then_given_up():
    p = ProbeExchange("bob", FlowFilter(), nonces=counter_nonces())
    probes = [p.start(T0)]
    while p.state is ExchangeState.SENT:
        probes += p.poll(p.deadline())
    assert len(probes) == 5 and p.state is ExchangeState.NO_ANSWER
    assert len({m.nonce for m in probes}) == 5 and {m.sequence for m in probes} == {1}


def test_a_refused_probe_keeps_the_error():
    p = ProbeExchange("bob", FlowFilter(), nonces=counter_nonces())
    probe = p.start(T0)
    assert p.receive(error(probe, ErrorCode.NO_NETSERV_NODE), T0, authenticated=True)
    assert p.state is ExchangeState.REFUSED and p.error.code is ErrorCode.NO_NETSERV_NODE
