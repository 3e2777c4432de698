"""The one strict JSON decoder of every NetServ server: the controller's REST API and
the agents' control API read their bodies with it."""

from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 32  # no NetServ body nests deeper than a few levels
MAX_DIGITS = 4300  # Python's own limit on int() of a string, said here in our words
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json(raw: bytes) -> object:
    """Return the value of the JSON document `raw`, read strictly.

    Raise ValueError, saying what is wrong, unless `raw` is UTF-8 JSON without NaN or
    Infinity, without numbers too large for a float, without a key repeated in one
    object (which would leave it unclear which value counts), without escaped lone
    surrogates (\\ud800, not a character), nested at most MAX_DEPTH deep.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start} is {raw[exc.start]:#04x})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    _check_tree(value)
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:30]} is too large")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is too large")
    return int(text)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:40]!r} appears twice in one object")
            seen.add(key)
    return out


def _check_tree(value: object) -> None:
    """Raise ValueError when `value` nests deeper than MAX_DEPTH or holds a lone surrogate."""
    level, depth = [value], 0
    while level:
        children: list[object] = []
        for item in level:
            if isinstance(item, (dict, list)) and depth == MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                children += item.keys()
                children += item.values()
            elif isinstance(item, list):
                children += item
            elif isinstance(item, str) and _SURROGATE.search(item):
                raise ValueError("a string holds an escaped lone surrogate, not a character")
        level, depth = children, depth + 1
