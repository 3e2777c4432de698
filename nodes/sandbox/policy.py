"""The node operator's policy: which modules may run in the agent, and what they may do.

A module runs in the trusted tier (in the agent's process) only when its manifest asks
for it (`tier = "trusted"`) and the policy trusts it; every other module runs isolated.
The policy trusts modules by name, or `shipped`: the modules in the shipped `services/`
folder (a module of the same name found first in another folder is not shipped).
A capability a manifest asks for (`net`, `read:/path`) must be granted to that module
by name, or the module is refused; trusted modules need no grant (they can do
anything the agent can).

    netserv agent ... --trusted shipped --trusted mymod --grant geo=read:/usr/share/GeoIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from nodes.bundle import (
    NAME_RE,
    NET,
    READ,
    SHIPPED_MODULES,
    BundleError,
    Manifest,
    parse_capabilities,
)

SHIPPED = "shipped"  # the word for "the modules in the shipped services/ folder"
NONE = "none"  # the word for "trust no module"
DEFAULT_TRUSTED = (SHIPPED,)


class PolicyError(ValueError):
    """A policy setting is malformed; the message says which."""


@dataclass(frozen=True)
class TierPolicy:
    """Which modules are trusted (names, or SHIPPED) and the capabilities granted to each."""

    trusted: frozenset[str] = frozenset(DEFAULT_TRUSTED)
    grants: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, trusted: Iterable[str] | None, grants: Iterable[str] = ()) -> TierPolicy:
        """Return the policy of `--trusted` values (each a name or several joined by
        commas; None: the default, `shipped`; `none`: nothing) and `--grant
        NAME=CAPABILITY` values; raise PolicyError for a bad one."""
        given = DEFAULT_TRUSTED if trusted is None else trusted
        names = {name for value in given for name in value.split(",")}
        if NONE in names:
            if names != {NONE}:
                raise PolicyError(f"--trusted {NONE} cannot be given with other modules")
            names = set()
        for name in names:
            if name != SHIPPED and not NAME_RE.match(name):
                raise PolicyError(f"--trusted {name!r} is not a module name, {SHIPPED} or {NONE}")
        granted: dict[str, set[str]] = {}
        for grant in grants:
            name, sep, cap = grant.partition("=")
            if not sep or not NAME_RE.match(name):
                raise PolicyError(f"--grant {grant!r} is not MODULE=CAPABILITY")
            try:
                parse_capabilities(f"--grant {grant}", [cap])
            except BundleError as exc:
                raise PolicyError(str(exc)) from None
            granted.setdefault(name, set()).add(cap)
        frozen = {name: frozenset(caps) for name, caps in granted.items()}
        return cls(frozenset(names), MappingProxyType(frozen))

    def trusts(self, manifest: Manifest) -> bool:
        """Return True when the module runs in the agent (the trusted tier)."""
        if manifest.tier != "trusted":
            return False
        shipped = manifest.path.parent == SHIPPED_MODULES
        return manifest.name in self.trusted or (SHIPPED in self.trusted and shipped)

    def tier(self, manifest: Manifest) -> str:
        """Return "trusted" or "isolated": where the module runs on this node."""
        return "trusted" if self.trusts(manifest) else "isolated"

    def capabilities(self, manifest: Manifest) -> tuple[str, ...]:
        """Return the capabilities an isolated module gets: all it asks for; raise
        BundleError naming the first one the node does not grant it."""
        granted = self.grants.get(manifest.name, frozenset())
        for cap in manifest.capabilities:
            if cap not in granted:
                raise BundleError(
                    f"module {manifest.name!r} asks for capability {cap!r}, which this node "
                    f"does not grant it (netserv agent --grant {manifest.name}={cap})"
                )
        return manifest.capabilities

    def to_json(self) -> dict[str, object]:
        return {
            "trusted": sorted(self.trusted),
            "grants": {name: sorted(caps) for name, caps in sorted(self.grants.items())},
        }


def read_paths(capabilities: Iterable[str]) -> list[str]:
    """Return the paths that `read:` capabilities grant."""
    return [cap[len(READ) :] for cap in capabilities if cap.startswith(READ)]


def may_use_network(capabilities: Iterable[str]) -> bool:
    return NET in capabilities
