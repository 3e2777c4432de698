"""The return-routability check: the controller's pending checks and the endpoint's
answer, exchanged as bytes, with the clock passed in."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import MappingProxyType

import pytest

from controller.errors import NotEndpoint, NotRoutable, Unavailable, signaling_code
from controller.match import parse_match
from controller.policy import Policy, Requester
from controller.requests import SessionRequest
from controller.routability import TIMEOUT, ReturnRoutability, endpoint_to_check
from signaling.codec import decode, encode
from signaling.errors import ErrorCode
from signaling.messages import Ack, Challenge, ChallengeResponse, Setup
from signaling.routability import answer_challenge, challenge_for, claims, is_challenge
from signaling.values import Description, FlowFilter, ModuleRef

T0 = 1000.0
ALICE_AT = "10.0.0.1"
DESCRIPTION = Description(
    "alice@h1",
    FlowFilter(src=ALICE_AT, dst="10.0.0.2", protocol=17, dst_ports=9000),
    [ModuleRef("counter", {})],
    lifetime=60,
)
SETUP = Setup(
    session_id=0x0123456789ABCDEF,
    sequence=1,
    timestamp_ms=int(T0 * 1000),
    nonce=bytes(range(16)),
    description=DESCRIPTION,
)
KEY = ("alice@h1", SETUP.session_id, SETUP.sequence)
AT = (1, 3)  # switch 1, port 3: where alice's host is attached
RESEND = TIMEOUT / 3


def alice_answers(data: bytes, now: float) -> bytes | None:
    """Alice's client: it answers the challenges of its own session only."""
    return answer_challenge(
        data, lambda c: claims(c, SETUP.session_id, DESCRIPTION), int(now * 1000)
    )


def challenge_bytes(checks: ReturnRoutability, now: float) -> tuple[object, bytes]:
    check, new = checks.start(KEY, ALICE_AT, AT, SETUP.nonce, now)
    assert new
    return check, encode(challenge_for(SETUP, check.cookie, int(now * 1000)))


def confirm(checks: ReturnRoutability, source: str, reply: bytes, now: float, at=AT):
    answer = decode(reply)
    assert isinstance(answer, ChallengeResponse)
    return checks.answered(source, at, answer.session_id, answer.sequence, answer.nonce, now)


def test_an_answer_from_the_claimed_address_confirms_the_claim():
    checks = ReturnRoutability()
    check, data = challenge_bytes(checks, T0)
    assert is_challenge(data)
    challenge = decode(data)
    assert isinstance(challenge, Challenge) and challenge.cookie == check.cookie
    assert (challenge.session_id, challenge.sequence) == (SETUP.session_id, SETUP.sequence)
    assert challenge.requester == "alice@h1" and challenge.flow == DESCRIPTION.flow
    reply = alice_answers(data, T0 + 0.1)
    assert reply is not None
    assert confirm(checks, ALICE_AT, reply, T0 + 0.2) == check
    assert len(checks) == 0
    assert confirm(checks, ALICE_AT, reply, T0 + 0.3) is None  # once only


def test_a_retransmitted_request_joins_the_running_check():
    checks = ReturnRoutability()
    check, _ = challenge_bytes(checks, T0)
    again, new = checks.start(KEY, ALICE_AT, AT, bytes(16), T0 + 1.0)
    assert again == check and not new and len(checks) == 1


@pytest.mark.parametrize(
    "source, at, cookie, session_id, sequence, when",
    [
        ("10.0.0.3", AT, None, SETUP.session_id, 1, T0 + 0.5),  # from another address
        (ALICE_AT, (1, 4), None, SETUP.session_id, 1, T0 + 0.5),  # in by another port
        (ALICE_AT, (2, 3), None, SETUP.session_id, 1, T0 + 0.5),  # at another switch
        (ALICE_AT, AT, bytes(16), SETUP.session_id, 1, T0 + 0.5),  # a guessed cookie
        (ALICE_AT, AT, None, SETUP.session_id + 1, 1, T0 + 0.5),  # another session
        (ALICE_AT, AT, None, SETUP.session_id, 2, T0 + 0.5),  # another request of it
        (ALICE_AT, AT, None, SETUP.session_id, 1, T0 + TIMEOUT + 0.01),  # too late
        ("not an address", AT, None, SETUP.session_id, 1, T0 + 0.5),
    ],
)
def test_an_answer_that_does_not_match_confirms_nothing_and_ends_nothing(
    source, at, cookie, session_id, sequence, when
):
    checks = ReturnRoutability()
    check, _ = challenge_bytes(checks, T0)
    cookie = check.cookie if cookie is None else cookie
    assert checks.answered(source, at, session_id, sequence, cookie, when) is None
    if when <= check.deadline:
        assert checks.answered(ALICE_AT, AT, SETUP.session_id, 1, check.cookie, when) == check


def test_an_unanswered_check_is_sent_three_times_then_refused_with_304():
    checks = ReturnRoutability()
    check, _ = challenge_bytes(checks, T0)
    sends, t = [], T0
    while t < T0 + TIMEOUT + 1:
        sends += [(round(t - T0, 1), c.sent) for c in checks.resend_due(t)]
        t += 0.1
    assert sends == [(round(RESEND, 1), 2), (round(2 * RESEND, 1), 3)]
    assert checks.expired(T0 + TIMEOUT) == []
    (gone,) = checks.expired(T0 + TIMEOUT + 0.01)
    assert gone.key == KEY and len(checks) == 0
    refusal = gone.refusal()
    assert isinstance(refusal, NotRoutable) and signaling_code(refusal) is ErrorCode.NOT_ROUTABLE
    assert refusal.code == "not_routable" and isinstance(refusal, NotEndpoint)  # 403 over REST
    assert "10.0.0.1 did not answer" in str(refusal)


def test_an_off_path_claim_gets_no_answer_from_the_endpoint_and_fails():
    # mallory, elsewhere, claims alice's flow in a session of its own: the CHALLENGE goes
    # to alice's address, whose client made no such request and stays silent.
    checks = ReturnRoutability()
    mallorys = Setup(
        session_id=0x77,
        sequence=1,
        timestamp_ms=int(T0 * 1000),
        nonce=bytes(16),
        description=Description("alice@h1", DESCRIPTION.flow, [ModuleRef("null", {})], 60),
    )
    check, _ = checks.start(("alice@h1", 0x77, 1), ALICE_AT, AT, mallorys.nonce, T0)
    data = encode(challenge_for(mallorys, check.cookie, int(T0 * 1000)))
    assert alice_answers(data, T0) is None
    # what mallory can forge without the cookie confirms nothing
    assert checks.answered(ALICE_AT, AT, 0x77, 1, bytes(16), T0 + 1) is None
    assert [c.key for c in checks.expired(T0 + TIMEOUT + 1)] == [("alice@h1", 0x77, 1)]


@pytest.mark.parametrize(
    "change",
    [
        {"requester": "bob"},
        {"flow": FlowFilter(src=ALICE_AT, dst="10.0.0.3", protocol=17, dst_ports=9000)},
        {"session_id": SETUP.session_id + 1},
    ],
)
def test_an_endpoint_answers_only_challenges_of_its_own_requests(change):
    fields = {
        "session_id": SETUP.session_id,
        "sequence": 1,
        "timestamp_ms": 0,
        "nonce": bytes(16),
        "requester": "alice@h1",
        "flow": DESCRIPTION.flow,
    }
    assert alice_answers(encode(Challenge(**fields)), T0) is not None
    assert alice_answers(encode(Challenge(**(fields | change))), T0) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NS" + bytes(100),
        encode(SETUP),
        encode(Ack.answering(SETUP, 0)),
        encode(ChallengeResponse.answering(SETUP, 0)),
        encode(challenge_for(SETUP, bytes(16), 0))[:-4],  # cut short
    ],
)
def test_anything_but_a_valid_challenge_gets_no_answer(data):
    assert alice_answers(data, T0) is None


def test_the_answer_echoes_the_cookie_and_is_a_response():
    data = encode(challenge_for(SETUP, b"\xab" * 16, 5))
    reply = decode(alice_answers(data, T0))
    assert isinstance(reply, ChallengeResponse) and reply.nonce == b"\xab" * 16
    assert reply.echo.message_type & 0x80  # an answer: never answered in turn
    assert not is_challenge(encode(reply))


def test_the_table_is_bounded():
    checks = ReturnRoutability(max_pending=2)
    checks.start(("a", 1, 1), ALICE_AT, AT, bytes(16), T0)
    checks.start(("a", 2, 1), ALICE_AT, AT, bytes(16), T0)
    with pytest.raises(Unavailable, match="2 return-routability checks"):
        checks.start(("a", 3, 1), ALICE_AT, AT, bytes(16), T0)
    checks.cancel(("a", 1, 1))
    checks.start(("a", 3, 1), ALICE_AT, AT, bytes(16), T0)
    assert len(checks) == 2


def test_the_cookie_is_an_hmac_of_the_request_and_the_address_and_never_shown():
    checks = ReturnRoutability(secret=b"s" * 32)
    first, _ = checks.start(("a", 1, 1), "10.0.0.1", AT, bytes(16), T0)
    second, _ = checks.start(("a", 2, 1), "fd00:0::1", AT, bytes(16), T0)
    assert first.cookie != second.cookie and len(first.cookie) == 16
    assert second.endpoint == "fd00::1"
    assert first.cookie.hex() not in repr(first) and repr(first.cookie) not in repr(first)
    # each input counts; the same inputs under another secret give another cookie
    base = (("a", 1, 1), bytes(16), "10.0.0.1")
    cookies = {
        checks.cookie(*base),
        checks.cookie(("b", 1, 1), bytes(16), "10.0.0.1"),
        checks.cookie(("a", 9, 1), bytes(16), "10.0.0.1"),
        checks.cookie(("a", 1, 9), bytes(16), "10.0.0.1"),
        checks.cookie(("a", 1, 1), bytes([1]) * 16, "10.0.0.1"),
        checks.cookie(("a", 1, 1), bytes(16), "10.0.0.2"),
        ReturnRoutability(secret=b"t" * 32).cookie(*base),
    }
    assert len(cookies) == 7 and first.cookie == checks.cookie(*base)
    assert ReturnRoutability().cookie(*base) != ReturnRoutability().cookie(*base)


def test_the_time_out_sets_the_challenges_pace_and_must_be_positive():
    checks = ReturnRoutability(timeout=1.5)
    check, _ = checks.start(KEY, ALICE_AT, AT, bytes(16), T0)
    assert (check.deadline, check.next_send) == (T0 + 1.5, T0 + 0.5)
    with pytest.raises(ValueError, match="above 0"):
        ReturnRoutability(timeout=0)


@pytest.mark.parametrize(
    "prefixes, match, expected",
    [
        (None, {"ipv4_src": "10.0.0.2"}, None),  # trusted with any flow: not checked
        (["10.0.0.1/32"], {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2"}, "10.0.0.1"),
        (["10.0.0.0/24"], {"ipv4_src": "10.0.0.7", "ipv4_dst": "10.0.0.2"}, "10.0.0.7"),
        (["10.0.0.2/32"], {"ipv4_src": "10.0.0.9", "ipv4_dst": "10.0.0.2"}, "10.0.0.2"),
        (["10.0.0.0/24"], {"ipv4_src": "10.0.0.0/25"}, NotEndpoint),  # no single host
    ],
)
def test_the_endpoint_checked_is_a_single_host_of_the_requesters_prefixes(
    prefixes, match, expected
):
    who = Requester(
        "alice@h1",
        keys=MappingProxyType({1: bytes(32)}),
        prefixes=None if prefixes is None else tuple(ipaddress.ip_network(p) for p in prefixes),
    )
    policy = Policy(MappingProxyType({"alice@h1": who}), source=Path("p.toml"))
    request = SessionRequest(parse_match(match), (), 30, "alice@h1")
    if expected is NotEndpoint:
        with pytest.raises(NotEndpoint, match="no single host"):
            endpoint_to_check(policy, request)
    else:
        assert endpoint_to_check(policy, request) == expected
