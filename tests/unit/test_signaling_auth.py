"""HMAC-SHA256 signing and verification, and the responder's freshness checks."""

import hashlib
import hmac
from dataclasses import replace

import pytest

from signaling.auth import Key, sign, verify
from signaling.codec import decode, encode
from signaling.errors import ErrorCode, SignalingProtocolError, SignalingUsageError
from signaling.freshness import ReplayGuard
from signaling.messages import Setup
from signaling.values import Auth
from signaling.wire import Algorithm
from tests.unit.signaling_samples import DESCRIPTION, HEADER, KEY, NONCE

MESSAGE = Setup(**HEADER, nonce=NONCE, description=DESCRIPTION)
NOW = HEADER["timestamp_ms"] / 1000


def _bad_auth(data: bytes, secret: bytes = KEY.secret) -> SignalingProtocolError:
    with pytest.raises(SignalingProtocolError) as info:
        verify(data, decode(data), secret)
    assert info.value.code is ErrorCode.BAD_AUTH
    return info.value


def test_a_signed_message_verifies_and_decodes_to_the_message():
    data = sign(MESSAGE, KEY)
    message = decode(data)
    verify(data, message, KEY.secret)
    assert replace(message, auth=None) == MESSAGE
    assert message.auth.key_id == 7 and message.auth.algorithm is Algorithm.HMAC_SHA256


def test_the_mac_covers_the_whole_message_with_the_mac_zeroed():
    data = sign(MESSAGE, KEY)
    expected = hmac.new(KEY.secret, data[:-32] + bytes(32), hashlib.sha256).digest()
    assert data[-32:] == expected
    assert data[:-32] == encode(replace(MESSAGE, auth=Auth(7, bytes(32))))[:-32]


def test_every_flipped_bit_fails_verification():
    data = sign(MESSAGE, KEY)
    by_mac = 0
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            message = decode(bytes(flipped))
        except SignalingProtocolError:
            continue  # no longer a message at all: refused before any MAC check
        with pytest.raises(SignalingProtocolError) as info:
            verify(bytes(flipped), message, KEY.secret)
        assert info.value.code is ErrorCode.BAD_AUTH
        by_mac += 1
    # the MAC, key id, session id, sequence, timestamp, nonce, names, addresses, ...
    assert by_mac > len(data) * 8 // 2


def test_the_wrong_key_fails():
    _bad_auth(sign(MESSAGE, KEY), secret=bytes(32))
    _bad_auth(sign(MESSAGE, Key(7, bytes(32))))


def test_unsigned_and_unsupported_algorithms_fail():
    assert "not signed" in _bad_auth(encode(MESSAGE)).reason
    ed = encode(replace(MESSAGE, auth=Auth(7, bytes(64), Algorithm.ED25519)))
    assert "ED25519 is not supported" in _bad_auth(ed).reason


def test_verify_refuses_bytes_that_are_not_the_message():
    with pytest.raises(SignalingUsageError):
        verify(sign(MESSAGE, KEY), decode(sign(MESSAGE, Key(1, bytes(16)))), KEY.secret)


def test_keys_are_long_enough_and_never_shown():
    with pytest.raises(SignalingUsageError):
        Key(1, b"short")
    assert KEY.secret.hex() not in repr(KEY) and "32 bytes" in repr(KEY)


def test_signing_replaces_an_existing_auth_object():
    twice = sign(decode(sign(MESSAGE, Key(1, bytes(16)))), KEY)
    assert twice == sign(MESSAGE, KEY)


# -- freshness ------------------------------------------------------------------------


def _refused(guard, code, *args):
    with pytest.raises(SignalingProtocolError) as info:
        guard.check(*args)
    assert info.value.code is code


def test_a_fresh_request_passes_once_and_its_replay_is_refused():
    guard = ReplayGuard(window=30)
    guard.check("alice", NONCE, 1_000_000, 1000.0)
    _refused(guard, ErrorCode.REPLAY, "alice", NONCE, 1_000_000, 1000.5)
    guard.check("bob", NONCE, 1_000_000, 1000.5)  # nonces are per requester
    assert len(guard) == 2


def test_timestamps_outside_the_window_are_stale_either_way():
    guard = ReplayGuard(window=30)
    _refused(guard, ErrorCode.STALE_TIMESTAMP, "a", b"1" * 16, 969_999, 1000.0)
    _refused(guard, ErrorCode.STALE_TIMESTAMP, "a", b"2" * 16, 1_030_001, 1000.0)
    guard.check("a", b"3" * 16, 970_000, 1000.0)
    guard.check("a", b"4" * 16, 1_030_000, 1000.0)


def test_a_refused_request_is_not_remembered():
    guard = ReplayGuard(window=30)
    _refused(guard, ErrorCode.STALE_TIMESTAMP, "a", NONCE, 0, 1000.0)
    assert len(guard) == 0


def test_nonces_expire_with_the_window_and_their_replay_is_then_stale():
    guard = ReplayGuard(window=30)
    guard.check("a", NONCE, 1_000_000, 1000.0)
    guard.check("a", b"x" * 16, 1_031_000, 1031.0)  # expires the first one's entry
    assert len(guard) == 1
    _refused(guard, ErrorCode.STALE_TIMESTAMP, "a", NONCE, 1_000_000, 1031.0)


def test_a_full_cache_drops_the_oldest_and_refuses_everything_up_to_it():
    guard = ReplayGuard(window=30, capacity=3)
    for i, ts in enumerate([1_000_000, 1_000_500, 1_001_000, 1_002_000]):
        guard.check("a", bytes([i]) * 16, ts, 1002.0)
    assert len(guard) == 3
    # the dropped nonce (ts 1_000_000) cannot be replayed, though the cache forgot it
    _refused(guard, ErrorCode.STALE_TIMESTAMP, "a", bytes([0]) * 16, 1_000_000, 1002.0)
    _refused(guard, ErrorCode.REPLAY, "a", bytes([1]) * 16, 1_000_500, 1002.0)
    guard.check("a", b"n" * 16, 1_000_001, 1002.0)


def test_the_cache_stays_bounded_under_a_flood():
    guard = ReplayGuard(window=30, capacity=100)
    for i in range(10_000):
        guard.check("a", i.to_bytes(16, "big"), 1_000_000 + i, 1000.0 + i / 1000)
    assert len(guard) == 100 and len(guard._by_time) == 100
