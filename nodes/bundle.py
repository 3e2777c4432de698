"""Service module bundles: a folder with `manifest.toml` and the module's Python code.

The manifest names the module, its entry point and the parameters it takes, so the
controller can reject a bad request before any agent or switch is touched, and the
agent can load the code by path without it being importable as a package.

    name = "counter"
    version = "1.0.0"
    summary = "Counts the packets and bytes of a session's flow"
    entry = "module:Counter"            # file module.py, class Counter

    [params.report_every]
    type = "int"
    default = 0
    help = "log the counts every N packets (0 = never)"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


class BundleError(ValueError):
    """A bundle or a module parameter set is malformed; the message says what is wrong."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: object = None
    help: str = ""

    def check(self, value: object) -> object:
        """Return `value` if it has this parameter's type; raise BundleError otherwise."""
        ok = isinstance(value, _TYPES[self.type]) and not (
            self.type != "bool" and isinstance(value, bool)
        )
        if not ok:
            raise BundleError(f"parameter {self.name!r} must be {self.type}, got {value!r}")
        return value


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    summary: str
    entry_file: str
    entry_class: str
    path: Path
    params: Mapping[str, ParamSpec] = field(default_factory=dict)

    def resolve_params(self, given: Mapping[str, object] | None) -> dict[str, object]:
        """Return the full parameter dict (defaults filled in); raise BundleError on bad input."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise BundleError(
                f"module {self.name!r} has no parameter(s) {unknown}; "
                f"it takes {sorted(self.params)}"
            )
        out = {name: spec.default for name, spec in self.params.items()}
        for name, value in given.items():
            out[name] = self.params[name].check(value)
        return out

    def to_json(self) -> dict[str, object]:
        """Return the manifest as a JSON-ready dict (for the module list)."""
        return {
            "name": self.name,
            "version": self.version,
            "summary": self.summary,
            "params": {
                p.name: {"type": p.type, "default": p.default, "help": p.help}
                for p in self.params.values()
            },
        }


def read_manifest(folder: Path) -> Manifest:
    """Return the Manifest of the bundle in `folder`; raise BundleError saying what is wrong."""
    path = folder / "manifest.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{folder}: no manifest.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{path}: {exc}") from None
    known = {"name", "version", "summary", "entry", "params"}
    if set(data) - known:
        raise BundleError(f"{path}: unknown key(s) {sorted(set(data) - known)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BundleError(f"{path}: name must match {NAME_RE.pattern}")
    if name != folder.name:
        raise BundleError(f"{path}: name {name!r} differs from its folder {folder.name!r}")
    entry = data.get("entry", "")
    if not isinstance(entry, str) or not re.match(r"^[a-z_][a-z0-9_]*:[A-Za-z_]\w*$", entry):
        raise BundleError(f"{path}: entry must look like 'module:ClassName'")
    entry_file, entry_class = entry.split(":")
    if not (folder / f"{entry_file}.py").is_file():
        raise BundleError(f"{path}: entry file {entry_file}.py is missing")
    params: dict[str, ParamSpec] = {}
    for pname, spec in (data.get("params") or {}).items():
        if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
            raise BundleError(f"{path}: parameter {pname!r} needs type one of {sorted(_TYPES)}")
        if set(spec) - {"type", "default", "help"}:
            raise BundleError(f"{path}: parameter {pname!r} has unknown keys")
        p = ParamSpec(pname, spec["type"], spec.get("default"), spec.get("help", ""))
        if p.default is not None:
            p.check(p.default)
        params[pname] = p
    return Manifest(
        name=name,
        version=str(data.get("version", "0")),
        summary=str(data.get("summary", "")),
        entry_file=entry_file,
        entry_class=entry_class,
        path=folder,
        params=MappingProxyType(params),
    )


SHIPPED_MODULES = Path(__file__).resolve().parent.parent / "services"
MODULE_PATH_ENV = "NETSERV_MODULE_PATH"
MODULE_PATH_HELP = (
    "folders to find service modules in, searched in order before the shipped services/ "
    f"(repeat, or join with '{os.pathsep}'); replaces ${MODULE_PATH_ENV}"
)


def module_path(given: str | Iterable[str | os.PathLike[str]] | None = None) -> tuple[Path, ...]:
    """Return the folders searched for service modules, in order, the first match winning.

    `given` (folders, each of which may be several joined by os.pathsep, as in
    $PATH) or, when it is None, $NETSERV_MODULE_PATH; then the shipped `services/`
    folder, unless it was already listed. Entries are made absolute against the
    current directory, so the list can be handed to processes that run elsewhere.
    Raise BundleError naming an entry that is not a folder.
    """
    if given is None:
        given = os.environ.get(MODULE_PATH_ENV, "")
    if isinstance(given, str | os.PathLike):
        given = [given]
    folders: list[Path] = []
    for entry in [e for item in given for e in os.fspath(item).split(os.pathsep) if e]:
        folder = Path(entry).absolute()
        if not folder.is_dir():
            raise BundleError(f"module path entry {folder} is not a folder")
        if folder not in folders:
            folders.append(folder)
    if SHIPPED_MODULES not in folders:
        folders.append(SHIPPED_MODULES)
    return tuple(folders)


class Catalog:
    """The service modules in a list of folders, read fresh on every look-up.

    A name found in several folders is the one in the first. Reading on demand (a
    handful of small files) means a module dropped into a folder is available at
    once, with no restart of the controller or the agent.
    """

    def __init__(self, roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        if isinstance(roots, str | os.PathLike):
            roots = [roots]
        self.roots = tuple(Path(root) for root in roots)

    def _folder(self, name: str) -> Path | None:
        """Return the bundle folder of `name` in the first root that has one, if any."""
        found = [root / name for root in self.roots if (root / name).is_dir()]
        with_manifest = [f for f in found if (f / "manifest.toml").is_file()]
        return (with_manifest or found or [None])[0]

    def get(self, name: str) -> Manifest:
        """Return the manifest of module `name`; raise BundleError when there is none."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BundleError(f"{name!r} is not a valid module name")
        folder = self._folder(name)
        if folder is None:
            searched = os.pathsep.join(str(root) for root in self.roots)
            raise BundleError(
                f"unknown module {name!r}; available: {self.names()} (searched {searched})"
            )
        return read_manifest(folder)

    def names(self) -> list[str]:
        """Return the names of the folders that hold a manifest, in any root, sorted."""
        return sorted(
            {
                p.name
                for root in self.roots
                if root.is_dir()
                for p in root.iterdir()
                if (p / "manifest.toml").is_file()
            }
        )

    def all(self) -> tuple[list[Manifest], list[str]]:
        """Return (valid manifests, error messages of the broken ones), one per name."""
        good, bad = [], []
        for name in self.names():
            try:
                good.append(self.get(name))
            except BundleError as exc:
                bad.append(str(exc))
        return good, bad
