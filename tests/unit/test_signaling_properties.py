"""Property tests of the codec: any valid message round-trips, and any bytes at all
decode or raise the protocol's own error."""

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signaling import wire
from signaling.auth import sign, verify
from signaling.codec import decode, encode
from signaling.errors import SignalingProtocolError, SignalingUsageError
from tests.unit.signaling_samples import KEY, messages, sample_bytes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(message) -> bytes:
    try:
        return encode(message)
    except SignalingUsageError as exc:  # the strategies can draw more than one datagram holds
        assert "more than one datagram" in str(exc)
        assume(False)
        raise


@SETTINGS
@given(messages)
def test_every_valid_message_round_trips(message):
    data = _encoded(message)
    assert len(data) <= wire.MAX_MESSAGE_SIZE
    assert decode(data) == message
    assert encode(decode(data)) == data


@SETTINGS
@given(messages)
def test_every_signed_message_verifies(message):
    _encoded(message)
    try:
        data = sign(message, KEY)
    except SignalingUsageError:
        assume(False)
    verify(data, decode(data), KEY.secret)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=wire.MAX_MESSAGE_SIZE + 8))
def test_any_bytes_decode_or_raise_the_protocol_error(data):
    try:
        message = decode(data)
    except SignalingProtocolError:
        return
    assert decode(encode(message)) == message


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sample_bytes()), st.binary(max_size=64), st.data())
def test_valid_messages_with_bytes_overwritten_decode_or_raise(original, patch, data):
    at = data.draw(st.integers(0, len(original)))
    mutated = original[:at] + patch + original[at + len(patch) :]
    if data.draw(st.booleans()) and len(mutated) >= 8:
        mutated = mutated[:6] + len(mutated).to_bytes(2, "big")[-2:] + mutated[8:]
    try:
        message = decode(mutated)
    except SignalingProtocolError:
        return
    assert decode(encode(message)) == message
