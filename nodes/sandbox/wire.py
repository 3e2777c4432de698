"""The channel between the agent and an isolated module's worker: one message a batch.

The channel is an AF_UNIX SOCK_SEQPACKET socket pair, so each message arrives whole
and alone. The agent asks, the worker answers, one at a time:

| agent sends                    | worker answers                                     |
| ------------------------------ | -------------------------------------------------- |
| INIT  {json: what to load}     | INIT  {json: "error", or "next_timer"}             |
| BATCH frames (none: timers)    | BATCH verdicts, rewritten and emitted frames       |
| STATS                          | STATS {json: "stats", "metrics"}                   |
| STOP                           | STOP  (the module's stop() ran; the worker exits)  |
| EXPORT                         | EXPORT {json: "state" (packed), or "error"}        |
| IMPORT {json: "state" (packed)}| IMPORT {json: "error", or "next_timer"}            |

A BATCH request is `<B I` (kind, n), n frame lengths (u32), then the frames. Its
answer is `<B I I d d I` (kind, n, emitted, CPU seconds the module took, seconds to
its next timer or -1, length of the JSON part), a verdict byte per frame, (index,
length) per emitted frame (index -1: a timer emitted it), the JSON part (errors,
log lines, whether memory ran out; empty when there is nothing), the rewritten
frames (those whose verdict is MODIFIED, each as long as it came) and the emitted
frames. Everything is plain bytes: a verdict is a small int, a frame bytes. EXPORT
and IMPORT hand a module's state from the old version's worker to the new one's in a
hot upgrade, packed as `nodes/handover.py` says.

A socket pair rather than a shared-memory ring: measured here, a round trip takes about
30 µs with an empty batch and about 95 µs with 64 frames and `null`, whether the frames
are 60 or 1500 bytes long: the wake-ups and Python's work on either side are the cost,
not the copies a ring would save. The agent reads an answer's length first (MSG_PEEK):
a buffer as large as the largest message, allocated for each answer, cost more than
the round trip itself.
"""

from __future__ import annotations

import json
import struct
from array import array
from dataclasses import dataclass, field

INIT, BATCH, STATS, STOP, EXPORT, IMPORT = 1, 2, 3, 4, 5, 6
FORWARD, DROP, MODIFIED, FAILED = 0, 1, 2, 3  # FAILED: the module raised, or said nonsense
MAX_MESSAGE = 1 << 20  # bytes; a batch is cut into messages no longer than this
_REQUEST = struct.Struct("<BI")
_ANSWER = struct.Struct("<BIIddI")
_EMITTED = struct.Struct("<iI")
_JSON = struct.Struct("<B")


class WireError(ValueError):
    """A message is malformed (the peer misbehaved)."""


def encode_json(kind: int, obj: object) -> bytes:
    """Return a message of `kind` carrying `obj` as JSON."""
    return _JSON.pack(kind) + json.dumps(obj, separators=(",", ":")).encode()


def decode_json(message: bytes | memoryview, kind: int) -> dict:
    """Return the JSON object of a message of `kind`; raise WireError otherwise."""
    if len(message) < 1 or message[0] != kind:
        raise WireError(f"expected a message of kind {kind}, got {bytes(message[:1])!r}")
    try:
        obj = json.loads(bytes(message[1:]) or b"{}")
    except ValueError as exc:
        raise WireError(f"bad JSON in a message of kind {kind}: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(f"a message of kind {kind} carries no JSON object")
    return obj


def encode_batch(frames: list[memoryview | bytes]) -> list[bytes | memoryview]:
    """Return the buffers of a BATCH request (for sendmsg: the frames are not copied)."""
    lengths = array("I", [len(f) for f in frames])
    return [_REQUEST.pack(BATCH, len(frames)) + lengths.tobytes(), *frames]


def batch_size(frames: list[memoryview | bytes]) -> int:
    """Return the length of the BATCH request that carries `frames`."""
    return _REQUEST.size + 4 * len(frames) + sum(map(len, frames))


def decode_batch(message: memoryview) -> list[memoryview]:
    """Return the frames of a BATCH request, as views into `message`."""
    if len(message) < _REQUEST.size:
        raise WireError("short BATCH request")
    _kind, n = _REQUEST.unpack_from(message)
    lengths = array("I")
    lengths.frombytes(message[_REQUEST.size : _REQUEST.size + 4 * n])
    if len(lengths) != n:
        raise WireError("BATCH request cut short in its lengths")
    frames, offset = [], _REQUEST.size + 4 * n
    for length in lengths:
        frames.append(message[offset : offset + length])
        offset += length
    if offset != len(message):
        raise WireError(f"BATCH request of {len(message)} bytes, its frames make {offset}")
    return frames


@dataclass
class Answer:
    """A worker's answer to a BATCH: a verdict per frame and what came with them."""

    verdicts: bytes
    emitted: list[tuple[int, bytes]] = field(default_factory=list)  # (frame index or -1, frame)
    cpu: float = 0.0  # CPU seconds the module took
    next_timer: float = -1.0  # seconds to the module's next timer; -1: none
    errors: list[tuple[int, str]] = field(default_factory=list)  # (frame index or -1, error)
    log: list[tuple[int, str]] = field(default_factory=list)  # (level, line)
    memory: bool = False  # the module ran out of memory (MemoryError)
    modified: list[bytes | memoryview] = field(default_factory=list)  # in verdict order


def encode_answer(answer: Answer) -> list[bytes | memoryview]:
    """Return the buffers of a BATCH answer."""
    extra: dict[str, object] = {}
    if answer.errors:
        extra["errors"] = answer.errors
    if answer.log:
        extra["log"] = answer.log
    if answer.memory:
        extra["memory"] = True
    blob = json.dumps(extra, separators=(",", ":")).encode() if extra else b""
    head = _ANSWER.pack(
        BATCH, len(answer.verdicts), len(answer.emitted), answer.cpu, answer.next_timer, len(blob)
    )
    table = b"".join(_EMITTED.pack(i, len(f)) for i, f in answer.emitted)
    return [head, answer.verdicts, table, blob, *answer.modified, *(f for _, f in answer.emitted)]


def decode_answer(message: memoryview, lengths: list[int]) -> Answer:
    """Return the Answer in `message` to a BATCH of frames of `lengths`; raise WireError
    when it does not fit them."""
    if len(message) < _ANSWER.size or message[0] != BATCH:
        raise WireError("not a BATCH answer")
    _kind, n, n_emitted, cpu, next_timer, n_json = _ANSWER.unpack_from(message)
    if n != len(lengths):
        raise WireError(f"an answer about {n} frames to a batch of {len(lengths)}")
    offset = _ANSWER.size
    verdicts = bytes(message[offset : offset + n])
    offset += n
    table = [_EMITTED.unpack_from(message, offset + i * _EMITTED.size) for i in range(n_emitted)]
    offset += n_emitted * _EMITTED.size
    extra = json.loads(bytes(message[offset : offset + n_json])) if n_json else {}
    offset += n_json
    modified = []
    for i, verdict in enumerate(verdicts):
        if verdict == MODIFIED:
            modified.append(message[offset : offset + lengths[i]])
            offset += lengths[i]
    emitted = []
    for index, length in table:
        if not -1 <= index < n:
            raise WireError(f"a frame emitted for frame {index} of {n}")
        emitted.append((index, bytes(message[offset : offset + length])))
        offset += length
    if offset != len(message) or len(verdicts) != n:
        raise WireError(f"BATCH answer of {len(message)} bytes, its parts make {offset}")
    return Answer(
        verdicts,
        emitted,
        cpu,
        next_timer,
        [(int(i), str(e)) for i, e in extra.get("errors", [])],
        [(int(level), str(line)) for level, line in extra.get("log", [])],
        bool(extra.get("memory", False)),
        modified,
    )
