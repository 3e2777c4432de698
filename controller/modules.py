"""Where the controller finds a session's modules: the module path and the repository.

A module named in a request is looked up in this order, and the first that has it wins:

1. the operator's folders on the module search path (`--module-path`, in their order):
   the operator's own modules come first, as they always have;
2. the module repository (`controller/repository.py`): what was published, the
   newest version first;
3. the shipped `services/` folder, last: publishing a version of a shipped module
   replaces it without touching the installation.

A request that names a version (`{"name": "counter", "version": "1.2.0"}`) gets the
first module of that name with exactly that version, from any of the three. One that
names none gets the first module of that name: the operator folder's, else the
repository's newest, else the shipped one. A module from the repository carries its
bundle's SHA-256, which the session records and the agent checks what it loads
against; one from a folder carries none, and the agent loads it from its own module
path, which must hold the same version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.errors import Conflict, NotFound
from controller.policy import ModuleTrust
from controller.repository import Entry, Repository, admit
from nodes.bundle import NAME_RE, SHIPPED_MODULES, BundleError, Catalog, Manifest

if TYPE_CHECKING:
    from controller.sessions import Session


@dataclass(frozen=True)
class Found:
    """A module a request may use: its manifest and, from the repository, its entry."""

    manifest: Manifest
    entry: Entry | None = None

    @property
    def sha256(self) -> str:
        """Return the bundle's SHA-256 for a module from the repository, else ""."""
        return self.entry.sha256 if self.entry is not None else ""

    def to_json(self, trust: ModuleTrust) -> dict[str, object]:
        """Return the manifest with where it comes from."""
        if self.entry is not None:
            return self.entry.to_json(trust)
        return self.manifest.to_json() | {"source": "path", "path": str(self.manifest.path)}


class ModuleSource:
    """The modules sessions may use: `catalog`'s folders and, when there is one,
    `repository`, whose bundles `trust` (called at each look-up, so a reloaded policy
    counts at once) must let in."""

    def __init__(
        self,
        catalog: Catalog,
        repository: Repository | None = None,
        trust: Callable[[], ModuleTrust] = ModuleTrust,
    ) -> None:
        roots = list(catalog.roots)
        cut = roots.index(SHIPPED_MODULES) if SHIPPED_MODULES in roots else len(roots)
        self.catalog = catalog
        self.operator = Catalog(roots[:cut])
        self.shipped = Catalog(roots[cut:])
        self.repository = repository
        self.trust = trust

    def _folder_module(self, catalog: Catalog, name: str) -> Found | None:
        """Return `catalog`'s module `name`, None when it has none; raise BundleError
        when its manifest is broken."""
        if not catalog.has(name):
            return None
        return Found(catalog.get(name))

    def _candidates(self, name: str) -> Iterator[Found]:
        """Yield every module named `name`, in the order of precedence, reading each only
        when the one before it was not taken; raise BundleError when a folder's manifest
        of that name is broken."""
        first = self._folder_module(self.operator, name)
        if first is not None:
            yield first
        if self.repository is not None:
            for version in self.repository.versions(name):
                entry = self.repository.get(name, version)
                yield Found(entry.manifest, entry)
        last = self._folder_module(self.shipped, name)
        if last is not None:
            yield last

    def candidates(self, name: str) -> list[Found]:
        """Return every module named `name`, in the order of precedence; raise BundleError
        when a folder's manifest of that name is broken."""
        return list(self._candidates(name))

    def resolve(self, name: str, version: str | None = None) -> Found:
        """Return the module a request for `name` (at `version`, if given) gets.

        Raise BundleError when there is no such module or version, or its manifest is
        broken; UntrustedBundle when it comes from the repository and the policy does
        not let its bundle in.
        """
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BundleError(f"{name!r} is not a valid module name")
        passed: list[Found] = []
        try:
            for found in self._candidates(name):
                if version is None or found.manifest.version == version:
                    break
                passed.append(found)
            else:
                if not passed:
                    raise BundleError(f"unknown module {name!r}; available: {self.names()}")
                have = ", ".join(f"{f.manifest.version} ({_where(f)})" for f in passed)
                raise BundleError(f"module {name!r} has no version {version!r}; there are {have}")
        except NotFound as exc:  # removed while it was being read
            raise BundleError(str(exc)) from None
        if found.entry is not None:
            admit(self.trust(), found.entry.sha256, found.entry.signature)
        return found

    def remove(self, name: str, version: str, users: Callable[[Entry], list[int]]) -> Entry:
        """Remove a published version; return what it was. Raise NotFound when the
        repository does not hold it (naming the folder a module of that version comes
        from, if one does), Conflict when `users` names sessions that use it."""
        repository = self.repository
        if repository is None or version not in repository.versions(name):
            try:
                found = [f for f in self.candidates(name) if f.manifest.version == version]
            except BundleError:
                found = []
            where = f": it comes from {found[0].manifest.path}" if found else ""
            raise NotFound(f"the repository holds no {name} {version}{where}")
        entry = repository.get(name, version)
        in_use = users(entry)
        if in_use:
            raise Conflict(f"{name} {version} is in use by session(s) {in_use}: end them first")
        return repository.remove(name, version)

    def names(self) -> list[str]:
        """Return the names of every module on offer, sorted."""
        published = self.repository.names() if self.repository is not None else []
        return sorted(set(self.catalog.names()) | set(published))

    def listing(self) -> dict[str, Any]:
        """Return every module on offer, each version from each source once, with
        `default` true on the one a request that names no version gets, and `broken`:
        the messages of the folders and published versions that cannot be used."""
        trust = self.trust()
        ops, bad_ops = self.operator.all()
        shipped, bad_shipped = self.shipped.all()
        published, bad_published = self.repository.entries() if self.repository else ([], [])
        rows: list[tuple[str, int, dict[str, object]]] = []
        for rank, found in enumerate(
            [Found(m) for m in ops] + [Found(e.manifest, e) for e in published]
        ):
            rows.append((found.manifest.name, rank, found.to_json(trust)))
        rows += [(m.name, 1 << 30, Found(m).to_json(trust)) for m in shipped]
        rows.sort(key=lambda row: (row[0], row[1]))
        seen: set[str] = set()
        modules = []
        for name, _, view in rows:
            modules.append(view | {"default": name not in seen})
            seen.add(name)
        return {"modules": modules, "broken": bad_ops + bad_published + bad_shipped}


def as_source(catalog: Catalog | ModuleSource) -> ModuleSource:
    """Return `catalog` as a ModuleSource (a plain Catalog: its folders, no repository)."""
    return catalog if isinstance(catalog, ModuleSource) else ModuleSource(catalog)


def users_of(sessions: Iterable[Session], entry: Entry) -> list[int]:
    """Return the ids of the `sessions` whose chain holds `entry`'s bundle."""
    return [
        s.id
        for s in sessions
        if any(m.name == entry.name and m.sha256 == entry.sha256 for m in s.modules)
    ]


def _where(found: Found) -> str:
    return "repository" if found.entry is not None else str(found.manifest.path.parent)
