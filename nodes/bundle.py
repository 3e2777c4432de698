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

import re
import tomllib
from collections.abc import Mapping
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


class Catalog:
    """The service modules available in one folder, read fresh on every look-up.

    Reading on demand (a handful of small files) means a module dropped into the folder
    is available at once, with no restart of the controller or the agent.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, name: str) -> Manifest:
        """Return the manifest of module `name`; raise BundleError when there is none."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BundleError(f"{name!r} is not a valid module name")
        folder = self.root / name
        if not folder.is_dir():
            raise BundleError(f"unknown module {name!r}; available: {self.names()}")
        return read_manifest(folder)

    def names(self) -> list[str]:
        """Return the names of the folders that hold a manifest, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "manifest.toml").is_file())

    def all(self) -> tuple[list[Manifest], list[str]]:
        """Return (valid manifests, error messages of the broken ones)."""
        good, bad = [], []
        for name in self.names():
            try:
                good.append(read_manifest(self.root / name))
            except BundleError as exc:
                bad.append(str(exc))
        return good, bad
