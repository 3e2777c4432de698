"""Signing and checking controller↔agent calls, and naming REST callers (controller/auth.py)."""

from __future__ import annotations

import pytest

from controller import auth
from controller.auth import (
    MAC,
    NONCE,
    TIME,
    BadReply,
    Signer,
    Unauthorized,
    Verifier,
    agent_key_id,
    controller_key_id,
)

KEY, OTHER = b"k" * 32, b"o" * 32
NOW = 1_700_000_000.0
BODY = b'{"tag": 5, "lifetime": 30, "modules": [{"name": "counter"}]}'
ME, PEER = controller_key_id(1), agent_key_id(1)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def nonces():
    count = iter(range(1, 1 << 30))
    return lambda: f"{next(count):032x}"


def signer(key: bytes = KEY, key_id: str = ME, at: float = NOW) -> Signer:
    return Signer(key, key_id, PEER, clock=Clock(at), nonce=nonces())


def verifier(clock: Clock | None = None) -> Verifier:
    """The agent's side for node 1: only the controller's calls, with node 1's key."""
    return Verifier(lambda key_id: KEY if key_id == ME else None, clock=clock or Clock())


def test_a_signed_request_passes_and_names_its_signer():
    headers = signer().sign("PUT", "/sessions/7", BODY)
    assert set(headers) == {auth.KEY, TIME, NONCE, MAC} and headers[TIME] == str(int(NOW * 1000))
    proof = verifier().verify("PUT", "/sessions/7", headers, BODY)
    assert (proof.key_id, proof.nonce, proof.dpid) == (ME, headers[NONCE], 1)
    assert "k" * 8 not in repr(proof) and "k" * 8 not in repr(signer())


def _flip(hex_text: str, bit: int) -> str:
    raw = bytearray.fromhex(hex_text)
    raw[bit // 8] ^= 1 << (bit % 8)
    return raw.hex()


@pytest.mark.parametrize("bit", [0, 7, 100, 255])
def test_a_flipped_bit_of_the_mac_is_refused(bit):
    headers = signer().sign("PUT", "/sessions/7", BODY)
    headers[MAC] = _flip(headers[MAC], bit)
    with pytest.raises(Unauthorized, match="MAC does not match"):
        verifier().verify("PUT", "/sessions/7", headers, BODY)


@pytest.mark.parametrize(
    "method, target, body",
    [
        ("PUT", "/sessions/7", BODY.replace(b"counter", b"null")),  # another body
        ("PUT", "/sessions/7", BODY + b" "),  # one byte more
        ("PUT", "/sessions/7", b""),
        ("PUT", "/sessions/8", BODY),  # another session
        ("PUT", "/sessions/7?x=1", BODY),
        ("PATCH", "/sessions/7", BODY),  # another method
    ],
)
def test_a_request_changed_after_signing_is_refused(method, target, body):
    headers = signer().sign("PUT", "/sessions/7", BODY)
    with pytest.raises(Unauthorized, match="MAC does not match"):
        verifier().verify(method, target, headers, body)


def test_a_changed_time_or_nonce_is_refused():
    for header, value in ((TIME, str(int(NOW * 1000) + 1)), (NONCE, "f" * 32)):
        headers = signer().sign("GET", "/health", b"") | {header: value}
        with pytest.raises(Unauthorized, match="MAC does not match"):
            verifier().verify("GET", "/health", headers, b"")


def test_the_wrong_key_is_refused():
    with pytest.raises(Unauthorized, match="MAC does not match"):
        verifier().verify("GET", "/health", signer(OTHER).sign("GET", "/health", b""), b"")


@pytest.mark.parametrize(
    "key_id",
    [
        agent_key_id(1),  # the agent's own: a request of its own, turned back on it
        controller_key_id(2),  # another node's
        "controller/1",  # not 16 digits
        "controller/000000000000000G",
        "operator",
        "",
    ],
)
def test_a_key_id_this_side_does_not_take_is_refused(key_id):
    headers = signer(key_id=key_id).sign("GET", "/health", b"")
    with pytest.raises(Unauthorized, match="no key is known here"):
        verifier().verify("GET", "/health", headers, b"")


@pytest.mark.parametrize("skew", [-30.001, 30.001, -3600, 3600])
def test_a_stale_or_early_time_is_refused(skew):
    headers = signer(at=NOW + skew).sign("GET", "/health", b"")
    with pytest.raises(Unauthorized, match="timestamp"):
        verifier().verify("GET", "/health", headers, b"")


@pytest.mark.parametrize("skew", [-29.9, 0, 29.9])
def test_a_time_within_the_window_passes(skew):
    headers = signer(at=NOW + skew).sign("GET", "/health", b"")
    verifier().verify("GET", "/health", headers, b"")


def test_a_replay_is_refused_even_after_the_nonce_left_the_window():
    clock = Clock()
    check = verifier(clock)
    headers = signer().sign("DELETE", "/sessions/7", b"")
    check.verify("DELETE", "/sessions/7", headers, b"")
    with pytest.raises(Unauthorized, match="seen already"):
        check.verify("DELETE", "/sessions/7", headers, b"")
    clock.now += 31  # the nonce is forgotten; its time is now out of the window
    with pytest.raises(Unauthorized, match="timestamp"):
        check.verify("DELETE", "/sessions/7", headers, b"")


def test_a_refused_request_does_not_use_up_its_nonce():
    """A forger who guesses a nonce the controller will use cannot spend it first."""
    check = verifier()
    good = signer().sign("GET", "/health", b"")
    forged = signer(OTHER).sign("GET", "/health", b"")
    assert forged[NONCE] == good[NONCE]
    with pytest.raises(Unauthorized):
        check.verify("GET", "/health", forged, b"")
    check.verify("GET", "/health", good, b"")


@pytest.mark.parametrize(
    "change",
    [
        {MAC: None},
        {auth.KEY: None},
        {TIME: "soon"},
        {TIME: "1" * 16},
        {NONCE: "00"},
        {NONCE: "g" * 32},
        {MAC: "ab"},
        {MAC: "A" * 64},
    ],
)
def test_malformed_headers_are_refused(change):
    headers = signer().sign("GET", "/health", b"")
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(Unauthorized):
        verifier().verify("GET", "/health", headers, b"")


def test_answers_are_checked_against_the_request_they_answer():
    client = signer()
    sent = client.sign("PUT", "/sessions/7", BODY)
    answer = auth.sign_response(KEY, PEER, sent[NONCE], 201, b'{"session": 7}')
    client.check(sent, 201, answer, b'{"session": 7}')
    other = client.sign("PUT", "/sessions/7", BODY)
    cases = [
        (sent, 200, answer, b'{"session": 7}', "MAC"),  # another status
        (sent, 201, answer, b'{"session": 8}', "MAC"),  # another body
        (other, 201, answer, b'{"session": 7}', "MAC"),  # an answer to another request
        (sent, 201, {}, b'{"session": 7}', "not signed"),
        (sent, 201, answer | {auth.KEY: ME}, b'{"session": 7}', "signed by"),  # reflected
        (
            sent,
            201,
            auth.sign_response(OTHER, PEER, sent[NONCE], 201, b"{}"),
            b"{}",
            "MAC",
        ),
    ]
    for req, status, headers, body, words in cases:
        with pytest.raises(BadReply, match=words):
            client.check(req, status, headers, body)


def test_the_rest_caller_is_named_by_the_token():
    token = "t" * 64
    assert auth.rest_caller({"Authorization": f"Bearer {token}"}, token) == "operator"
    assert auth.rest_caller({"Authorization": f"bearer  {token} "}, token) == "operator"
    for headers in (
        {},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer \u00e9"},
        {"Authorization": token},
    ):
        assert auth.rest_caller(headers, token) is None
    requesters = {"r" * 64: "alice"}.get  # the policy's rest_requester plugs in here
    assert auth.rest_caller({"Authorization": "Bearer " + "r" * 64}, token, requesters) == "alice"
    assert auth.rest_caller({"Authorization": f"Bearer {token}"}, token, requesters) == "operator"
    assert auth.rest_caller({"Authorization": "Bearer nobody"}, token, requesters) is None


def test_a_registration_needs_its_nodes_key():
    keys = {1: KEY, 2: OTHER}
    rest = auth.RestAuth("t" * 64, keys.get, clock=Clock())
    agent1 = Signer(KEY, agent_key_id(1), ME, clock=Clock(), nonce=nonces())
    proof = rest.registration(
        "POST", "/netserv/nodes", agent1.sign("POST", "/netserv/nodes", BODY), BODY
    )
    assert proof.dpid == 1
    reply = rest.sign_reply(proof, 200, b"{}")
    agent1.check({NONCE: proof.nonce}, 200, reply, b"{}")
    # The controller's own key id (a call it made to an agent) is not a registration.
    as_controller = signer().sign("POST", "/netserv/nodes", BODY)
    with pytest.raises(Unauthorized, match="no key"):
        rest.registration("POST", "/netserv/nodes", as_controller, BODY)
    unknown = Signer(KEY, agent_key_id(3), ME, clock=Clock()).sign("POST", "/netserv/nodes", BODY)
    with pytest.raises(Unauthorized, match="no key"):
        rest.registration("POST", "/netserv/nodes", unknown, BODY)
    with pytest.raises(Unauthorized, match="this call needs a token"):
        rest.caller({})
