"""Which held matches overlap a new one, in time flat in how many are held.

Two matches overlap when every field both name agrees under both masks
(`controller.match.overlaps`). Matches are grouped by their shape: which fields they
name, each with its mask (10,000 sessions on "one host's UDP port" are one shape).
For a new match and one shape, the masks that matter are fixed: for each field both
name, its mask AND the shape's. Every member of the shape is kept under its values
cut by those masks (a projection), made when a match of that kind first asks and
kept up to date as members come and go; the question is then one dict look-up per
shape. Shapes and projections are few (one per way of writing a match), not one per
session.
"""

from __future__ import annotations

from controller.match import FlowMatch

Shape = tuple[tuple[str, int], ...]  # (field, mask), by field name
Cut = tuple[tuple[str, int], ...]  # (field, common mask) of the fields both name
Values = tuple[int, ...]


class _Group:
    """The matches of one shape, and their projections."""

    __slots__ = ("members", "projections")

    def __init__(self) -> None:
        self.members: dict[int, dict[str, int]] = {}  # key → field → value
        self.projections: dict[Cut, dict[Values, set[int]]] = {}

    def add(self, key: int, values: dict[str, int]) -> None:
        self.members[key] = values
        for cut, table in self.projections.items():
            table.setdefault(_project(values, cut), set()).add(key)

    def remove(self, key: int) -> None:
        values = self.members.pop(key)
        for cut, table in self.projections.items():
            projected = _project(values, cut)
            held = table[projected]
            held.discard(key)
            if not held:
                del table[projected]

    def projection(self, cut: Cut) -> dict[Values, set[int]]:
        table = self.projections.get(cut)
        if table is None:
            table = {}
            for key, values in self.members.items():
                table.setdefault(_project(values, cut), set()).add(key)
            self.projections[cut] = table
        return table


def _project(values: dict[str, int], cut: Cut) -> Values:
    return tuple(values[name] & mask for name, mask in cut)


class OverlapIndex:
    """Matches by key (a session id); answers which of them overlap a given match."""

    def __init__(self) -> None:
        self._groups: dict[Shape, _Group] = {}
        self._shapes: dict[int, Shape] = {}

    def __len__(self) -> int:
        return len(self._shapes)

    def add(self, key: int, match: FlowMatch) -> None:
        """Hold `match` under `key` (a key held already is replaced)."""
        if key in self._shapes:
            self.remove(key)
        ranges = match.ranges
        shape = tuple(sorted((name, mask) for name, (_, mask) in ranges.items()))
        self._groups.setdefault(shape, _Group()).add(key, {n: v for n, (v, _) in ranges.items()})
        self._shapes[key] = shape

    def remove(self, key: int) -> None:
        """Forget the match held under `key`; nothing when there is none."""
        shape = self._shapes.pop(key, None)
        if shape is None:
            return
        group = self._groups[shape]
        group.remove(key)
        if not group.members:
            del self._groups[shape]

    def overlapping(self, match: FlowMatch) -> int | None:
        """Return the lowest key whose match overlaps `match`, or None."""
        ranges = match.ranges
        found: int | None = None
        for shape, group in self._groups.items():
            cut = tuple((name, ranges[name][1] & mask) for name, mask in shape if name in ranges)
            keys = group.projection(cut).get(tuple(ranges[name][0] & mask for name, mask in cut))
            if keys:
                low = min(keys)
                found = low if found is None else min(found, low)
        return found
