"""Named, typed counters a module keeps, read by the session's stats and by exporters.

The agent's Prometheus endpoint exports them as `netserv_module_counter_total` and
`netserv_module_gauge`, the name in label `metric` beside the session, position and module
(docs/metrics.md): a family of its own for each name would clash with the agent's own
`netserv_module_dropped_total` and with another module's gauge of the same name. A name
still follows Prometheus' rules for names, lower case, digits and `_`, not starting with
a digit, so that it reads the same wherever it is shown. A `counter` only goes up
(frames passed, bytes dropped); a `gauge` goes up and down (flows in a table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}\Z")
KINDS = ("counter", "gauge")


@dataclass(frozen=True)
class Sample:
    """One metric's value at the time it was read, with what an exporter needs to type it."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    value: int | float

    def to_json(self) -> dict[str, object]:
        """Return the sample as a JSON-ready dict."""
        return {"name": self.name, "type": self.kind, "help": self.help, "value": self.value}


class Counter:
    """A value that only goes up."""

    __slots__ = ("name", "help", "value")
    kind = "counter"

    def __init__(self, name: str, help: str = "") -> None:
        self.name, self.help = name, help
        self.value: int | float = 0

    def inc(self, amount: int | float = 1) -> None:
        """Add `amount` (not negative; raise ValueError for a negative one)."""
        if amount < 0:
            raise ValueError(f"counter {self.name} only goes up; got {amount}")
        self.value += amount


class Gauge:
    """A value that goes up and down."""

    __slots__ = ("name", "help", "value")
    kind = "gauge"

    def __init__(self, name: str, help: str = "") -> None:
        self.name, self.help = name, help
        self.value: int | float = 0

    def set(self, value: int | float) -> None:
        self.value = value

    def inc(self, amount: int | float = 1) -> None:
        self.value += amount

    def dec(self, amount: int | float = 1) -> None:
        self.value -= amount


class Metrics:
    """The metrics of one module instance, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Counter | Gauge] = {}

    def counter(self, name: str, help: str = "") -> Counter:
        """Return the counter `name`, made on first use; raise ValueError for a bad name or
        one already taken by a gauge."""
        return self._get(Counter, name, help)  # type: ignore[return-value]

    def gauge(self, name: str, help: str = "") -> Gauge:
        """Return the gauge `name`, made on first use; raise ValueError for a bad name or
        one already taken by a counter."""
        return self._get(Gauge, name, help)  # type: ignore[return-value]

    def _get(self, kind: type[Counter | Gauge], name: str, help: str) -> Counter | Gauge:
        metric = self._by_name.get(name)
        if metric is None:
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise ValueError(f"metric name {name!r} must match {NAME_RE.pattern}")
            metric = self._by_name[name] = kind(name, help)
        elif not isinstance(metric, kind):
            raise ValueError(f"metric {name!r} is a {metric.kind}, not a {kind.kind}")
        return metric

    def samples(self) -> list[Sample]:
        """Return every metric's current value, in the order they were made."""
        # list() copies in one step: the packet loop may add a metric while stats are read
        return [Sample(m.name, m.kind, m.help, m.value) for m in list(self._by_name.values())]

    def values(self) -> dict[str, int | float]:
        """Return {name: value} for every metric."""
        return {m.name: m.value for m in list(self._by_name.values())}

    def __len__(self) -> int:
        return len(self._by_name)
