"""A module's state on its way from one version's instance to the next (a hot upgrade).

`export_state()` on the old instance returns a JSON-able value or bytes; `import_state(state)`
on the new one takes it. Between the two the state is packed as JSON, in both tiers: an
isolated module's state crosses its worker's channel that way, and a trusted one's is
copied the same way, so the new instance never shares an object with the old and a
module behaves alike in either tier. This file is pure: the agent (`nodes/agent.py`)
and the worker (`nodes/sandbox/worker.py`) call it.
"""

from __future__ import annotations

import base64
import binascii
import json

MAX_STATE = 512 * 1024  # bytes of packed state (JSON); an isolated worker's channel carries 1 MiB


class HandoverError(ValueError):
    """A state that cannot be handed over (not JSON-able, too large, malformed)."""


def exports(module: object) -> bool:
    """Return True when `module` hands its state over (it has `export_state`)."""
    return bool(getattr(module, "can_export", hasattr(module, "export_state")))


def imports(module: object) -> bool:
    """Return True when `module` takes a state over (it has `import_state`)."""
    return bool(getattr(module, "can_import", hasattr(module, "import_state")))


def pack(state: object) -> dict[str, object]:
    """Return `state` as a JSON object: {"bytes": base64} for bytes, {"json": value} for
    the rest. Raise HandoverError when JSON cannot carry it or it is over MAX_STATE."""
    if isinstance(state, (bytes, bytearray, memoryview)):
        packed: dict[str, object] = {"bytes": base64.b64encode(bytes(state)).decode()}
    else:
        packed = {"json": state}
    try:
        size = len(json.dumps(packed, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise HandoverError(f"export_state() returned what JSON cannot carry: {exc}") from None
    if size > MAX_STATE:
        raise HandoverError(f"the exported state is {size} bytes packed; at most {MAX_STATE}")
    return packed


def unpack(packed: object) -> object:
    """Return the state `packed` (a `pack` result, as JSON read it) holds; raise HandoverError."""
    if not isinstance(packed, dict) or len(packed) != 1:
        raise HandoverError("a packed state is an object with one key, 'json' or 'bytes'")
    if "json" in packed:
        return packed["json"]
    if "bytes" in packed and isinstance(packed["bytes"], str):
        try:
            return base64.b64decode(packed["bytes"], validate=True)
        except binascii.Error as exc:
            raise HandoverError(f"a packed state's bytes are not base64: {exc}") from None
    raise HandoverError("a packed state is an object with one key, 'json' or 'bytes'")


def copy(state: object) -> object:
    """Return a copy of `state` as the new instance gets it (what `pack` and `unpack`
    make of it); raise HandoverError."""
    return unpack(json.loads(json.dumps(pack(state))))
