"""A seeded fuzz run of the decoder: 120,000 mutations of valid messages (bit flips,
truncations, insertions, deletions, length fields that lie, spliced objects). Every one
must decode or raise SignalingProtocolError, quickly; what decodes must round-trip."""

import random
import struct
import time

from signaling import wire
from signaling.codec import decode, encode
from signaling.errors import SignalingProtocolError
from tests.unit.signaling_samples import sample_bytes

SEED = 20051
ROUNDS = 120_000
SLOWEST_ALLOWED = 0.25  # seconds for one decode; a typical one takes ~20 µs


def _object_offsets(data: bytes) -> list[int]:
    offsets, pos = [], wire.HEADER_SIZE
    while pos + 4 <= len(data):
        offsets.append(pos)
        pos += 4 + struct.unpack_from("!H", data, pos + 2)[0]
        pos += -pos % 4
    return offsets


def _lie(rng: random.Random, data: bytearray) -> None:
    """Overwrite the header's or an object's length with another number."""
    offsets = [6] + [o + 2 for o in _object_offsets(bytes(data))]
    at = rng.choice(offsets)
    if at + 2 <= len(data):
        value = rng.choice([0, 1, 3, 4, 0xFFFF, 0x8000, rng.randrange(1 << 16)])
        data[at : at + 2] = struct.pack("!H", value)


def mutate(rng: random.Random, original: bytes, corpus: list[bytes]) -> bytes:
    """Return `original` changed in one to three random ways."""
    data = bytearray(original)
    for _ in range(rng.randint(1, 3)):
        how = rng.randrange(7)
        if how == 0 and data:  # flip some bits
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == 1:  # truncate
            del data[rng.randrange(len(data) + 1) :]
        elif how == 2:  # insert random bytes
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.choice([1, 2, 4, 8, rng.randrange(64)]))
        elif how == 3 and data:  # delete a slice
            at = rng.randrange(len(data))
            del data[at : at + rng.randint(1, 16)]
        elif how == 4:
            _lie(rng, data)
        elif how == 5:  # set a byte to an edge value
            if data:
                data[rng.randrange(len(data))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
        elif how == 6:  # splice in a piece of another message
            other = rng.choice(corpus)
            a = rng.randrange(len(other))
            piece = other[a : a + rng.randint(1, 64)]
            at = rng.randrange(len(data) + 1)
            data[at:at] = piece
    if len(data) >= 8 and rng.random() < 0.6:
        # make the header's length right, so the damage is met past the first check
        data[6:8] = struct.pack("!H", len(data) & 0xFFFF)
    return bytes(data)


def test_mutated_messages_decode_or_raise_the_protocol_error():
    rng = random.Random(SEED)
    corpus = sample_bytes()
    outcomes = {"decoded": 0, "refused": 0}
    codes: set[int] = set()
    slowest = 0.0
    started = time.perf_counter()
    for _ in range(ROUNDS):
        data = mutate(rng, rng.choice(corpus), corpus)
        t0 = time.perf_counter()
        try:
            message = decode(data)
        except SignalingProtocolError as exc:
            outcomes["refused"] += 1
            codes.add(exc.code)
        else:
            outcomes["decoded"] += 1
            assert decode(encode(message)) == message
        slowest = max(slowest, time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    print(
        f"{ROUNDS} mutations in {elapsed:.1f} s, slowest decode {slowest * 1e3:.2f} ms,"
        f" {outcomes}, codes {sorted(codes)}"
    )
    assert slowest < SLOWEST_ALLOWED
    # the run reached past the header checks and into every kind of refusal
    assert outcomes["decoded"] > 1000 and outcomes["refused"] > ROUNDS // 2
    assert {100, 101, 102, 103, 200} <= codes
