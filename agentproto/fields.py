"""The contract's one error and the strict readers its messages check fields with."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from types import MappingProxyType

COUNT_MAX = (1 << 64) - 1  # counters are unsigned 64-bit, as the switch's
# Names of interfaces and boot ids: printable ASCII without space, so they log safely.
WORD = re.compile(r"[\x21-\x7e]{1,64}\Z")


class ContractError(ValueError):
    """A controller↔agent message breaks the contract; the message says which field and why.

    `from_json` raises it for what a peer sent, a message's constructor for what a
    caller built: either way no message exists that the other side would refuse.
    The controller answers it with InvalidRequest (a registration) or PartFailed (an
    agent's call or answer), the agent's control API with 400.
    """


def fields(
    raw: object, what: str, required: Collection[str], optional: Collection[str] = ()
) -> Mapping[str, object]:
    """Return `raw` when it is a JSON object with every `required` key and no key but
    those and the `optional` ones; raise ContractError naming `what` otherwise."""
    if not isinstance(raw, dict):
        raise ContractError(f"{what} must be a JSON object, not {_kind(raw)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ContractError(f"{what} lacks {missing[0]!r}")
    unknown = sorted(k for k in raw if k not in required and k not in optional)
    if unknown:
        raise ContractError(f"{what} has no field {_shown(unknown[0])}")
    return raw


def whole(value: object, name: str, lo: int, hi: int) -> int:
    """Return `value` when it is an integer from `lo` to `hi`; raise ContractError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{name} must be a whole number, got {_shown(value)}")
    if not lo <= value <= hi:
        raise ContractError(f"{name} must be {lo} to {hi}, got {value}")
    return value


def count(value: object, name: str) -> int:
    """Return `value` when it is a counter (0 to COUNT_MAX); raise ContractError."""
    return whole(value, name, 0, COUNT_MAX)


def word(value: object, name: str, pattern: re.Pattern[str] = WORD) -> str:
    """Return `value` when it is a string `pattern` matches whole; raise ContractError."""
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {_shown(value)}")
    if not pattern.match(value):
        raise ContractError(f"{name} {_shown(value)} does not match {pattern.pattern}")
    return value


def flag(value: object, name: str) -> bool:
    """Return `value` when it is true or false; raise ContractError."""
    if not isinstance(value, bool):
        raise ContractError(f"{name} must be true or false, got {_shown(value)}")
    return value


def text(value: object, name: str) -> str:
    """Return `value` when it is a string; raise ContractError."""
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {_shown(value)}")
    return value


def listed(value: object, name: str, lo: int = 0, hi: int = COUNT_MAX) -> list[object]:
    """Return `value` when it is a JSON array of `lo` to `hi` items; raise ContractError."""
    if not isinstance(value, (list, tuple)):
        raise ContractError(f"{name} must be a list, not {_kind(value)}")
    if not lo <= len(value) <= hi:
        raise ContractError(f"{name} must hold {lo} to {hi} items, not {len(value)}")
    return list(value)


def frozen_object(value: object, name: str) -> Mapping[str, object]:
    """Return a read-only copy of `value` when it is a JSON object (keys strings, values
    left as they are: their meaning is not the contract's); raise ContractError."""
    if not isinstance(value, Mapping):
        raise ContractError(f"{name} must be a JSON object, not {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ContractError(f"{name} has a key that is not a string: {_shown(key)}")
    return MappingProxyType(dict(value))


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"
