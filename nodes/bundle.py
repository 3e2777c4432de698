"""Service module bundles: a folder with `manifest.toml` and the module's Python code.

The manifest names the module, its entry point and the parameters it takes, so the
controller can reject a bad request before any agent or switch is touched, and the
agent can load the code by path without it being importable as a package.

    name = "counter"
    version = "1.0.0"
    summary = "Counts the packets and bytes of a session's flow"
    entry = "module:Counter"            # file module.py, class Counter

    [params.log_every]
    type = "int"                        # int | float | str | bool
    default = 0
    min = 0                             # int, float: a range (int: signed 64-bit if not given)
    max = 1_000_000_000
    help = "log the counts every N packets (0 = never)"

A str parameter may declare `choices = [..]` and `max_length`; see ParamSpec.

What the module is, each optional (the defaults here):

    api = 1                             # the module API it is written for (MODULE_API)
    observe_only = false                # true: it only reads frames, never changes or drops one

`version` is up to four dot-separated numbers ("1.2.0"); versions of a module compare
as numbers, part by part (`version_key`), so 1.10.0 is newer than 1.9.2.

How the module runs, each optional (the defaults here):

    tier = "isolated"                   # or "trusted": in the agent, if the node trusts it
    failure = "open"                    # or "closed": what becomes of frames it fails on
    capabilities = []                   # "net", "read:/abs/path": asked, the node grants

    [budget]                            # see nodes/sandbox/budgets.py
    time_per_frame = 0.001
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from nodes.sandbox.budgets import Budget, parse_budget

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}\Z")
MODULE_API = 1  # the module API this agent offers (nodes/module_api.py); a manifest names its own
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}
# What a manifest may declare for a parameter, by type, beside type/default/help.
_LIMIT_KEYS = {"int": {"min", "max"}, "float": {"min", "max"}, "str": {"choices", "max_length"}}
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # an int parameter's range when none is declared
STR_MAX_LENGTH = 1024  # a str parameter's length when none is declared
TIERS = ("isolated", "trusted")  # where a module runs: its own process, or the agent's
FAILURES = ("open", "closed")  # a failed module's frames: go on without it, or are dropped
NET = "net"  # the capability to open UDP and TCP sockets
READ = "read:"  # the capability to read a folder or file, "read:/abs/path"


class BundleError(ValueError):
    """A bundle or a module parameter set is malformed; the message says what is wrong."""


def version_key(version: str) -> tuple[int, ...]:
    """Return the sort key of a version that matches VERSION_RE: its numbers, in order."""
    return tuple(int(part) for part in version.split("."))


def check_version(version: object, what: str = "version") -> str:
    """Return `version` when it is one VERSION_RE takes; raise BundleError saying why not."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        shown = repr(version) if len(repr(version)) <= 40 else repr(version)[:40] + "..."
        raise BundleError(f"{what} must be up to four dot-separated numbers (1.2.0), not {shown}")
    return version


def _is_number(value: object, kind: str) -> bool:
    return isinstance(value, _TYPES[kind]) and not isinstance(value, bool)


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its type and the values it takes.

    int: any integer in [min, max], which default to the signed 64-bit range.
    float: a finite number in [min, max] (an integer is taken as a float).
    str: at most `max_length` characters (STR_MAX_LENGTH by default), one of `choices` if given.
    bool: true or false, never 0 or 1.
    """

    name: str
    type: str
    default: object = None
    help: str = ""
    min: int | float | None = None
    max: int | float | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None

    def check(self, value: object) -> object:
        """Return `value` as the module gets it; raise BundleError when it is not allowed."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise self._refuse(value)
            return value
        if self.type == "str":
            return self._check_str(value)
        if not _is_number(value, self.type):
            raise self._refuse(value)
        if self.type == "float":
            try:
                value = float(value)  # type: ignore[arg-type]
            except OverflowError:
                raise self._refuse(value, "and finite") from None
            if not math.isfinite(value):
                raise self._refuse(value, "and finite")
        low, high = self.bounds
        if not low <= value <= high:  # type: ignore[operator]
            raise self._refuse(value, f"between {low} and {high}")
        return value

    @property
    def bounds(self) -> tuple[float, float]:
        """Return the (low, high) a number must lie in, defaults filled in."""
        if self.type == "int":
            low: float = INT64_MIN if self.min is None else self.min
            high: float = INT64_MAX if self.max is None else self.max
            return low, high
        return (
            -math.inf if self.min is None else self.min,
            math.inf if self.max is None else self.max,
        )

    def _check_str(self, value: object) -> str:
        if not isinstance(value, str):
            raise self._refuse(value)
        limit = STR_MAX_LENGTH if self.max_length is None else self.max_length
        if len(value) > limit:
            raise BundleError(
                f"parameter {self.name!r} takes at most {limit} characters, got {len(value)}"
            )
        if self.choices is not None and value not in self.choices:
            raise self._refuse(value, f"one of {list(self.choices)}")
        return value

    def _refuse(self, value: object, wanted: str = "") -> BundleError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:40] + f"... ({len(shown)} characters)"
        wanted = f"{self.type} {wanted}" if wanted else self.type
        return BundleError(f"parameter {self.name!r} must be {wanted}, got {shown}")

    def to_json(self) -> dict[str, object]:
        """Return the declaration as the module list shows it (declared limits only)."""
        out: dict[str, object] = {"type": self.type, "default": self.default, "help": self.help}
        for key in ("min", "max", "max_length"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


def _param_spec(path: Path, name: str, spec: object) -> ParamSpec:
    """Return the ParamSpec a manifest's `[params.NAME]` table declares; raise BundleError."""
    where = f"{path}: parameter {name!r}"
    if not isinstance(spec, dict) or spec.get("type") not in _TYPES:
        raise BundleError(f"{where} needs type one of {sorted(_TYPES)}")
    kind = spec["type"]
    allowed = {"type", "default", "help"} | _LIMIT_KEYS.get(kind, set())
    if set(spec) - allowed:
        raise BundleError(
            f"{where} has unknown key(s) {sorted(set(spec) - allowed)}; a {kind} takes "
            f"{sorted(allowed)}"
        )
    limits: dict[str, object] = {}
    for key in ("min", "max"):
        if key in spec:
            limit = spec[key]
            if not _is_number(limit, kind) or (kind == "float" and not math.isfinite(limit)):
                raise BundleError(f"{where}: {key} must be a finite {kind}, got {limit!r}")
            if kind == "int" and not INT64_MIN <= limit <= INT64_MAX:
                raise BundleError(f"{where}: {key} {limit} is outside the signed 64-bit range")
            limits[key] = limit
    if "min" in limits and "max" in limits and limits["min"] > limits["max"]:  # type: ignore[operator]
        raise BundleError(f"{where}: min {limits['min']} is above max {limits['max']}")
    if "choices" in spec:
        choices = spec["choices"]
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(c, str) for c in choices)
        ):
            raise BundleError(f"{where}: choices must be a non-empty list of strings")
        limits["choices"] = tuple(choices)
    if "max_length" in spec:
        length = spec["max_length"]
        if not _is_number(length, "int") or length < 1:
            raise BundleError(f"{where}: max_length must be a positive integer, got {length!r}")
        limits["max_length"] = length
    p = ParamSpec(name, kind, spec.get("default"), str(spec.get("help", "")), **limits)  # type: ignore[arg-type]
    if p.default is not None:
        try:
            p.check(p.default)
        except BundleError as exc:
            raise BundleError(f"{path}: default does not fit: {exc}") from None
    return p


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    summary: str
    entry_file: str
    entry_class: str
    path: Path
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    api: int = MODULE_API
    observe_only: bool = False
    tier: str = "isolated"
    failure: str = "open"
    capabilities: tuple[str, ...] = ()
    budget: Budget = field(default_factory=Budget)

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
            "params": {p.name: p.to_json() for p in self.params.values()},
            "api": self.api,
            "observe_only": self.observe_only,
            "tier": self.tier,
            "failure": self.failure,
            "capabilities": list(self.capabilities),
            "budget": self.budget.to_json(),
        }


def _choice(path: Path, data: Mapping[str, object], key: str, choices: tuple[str, ...]) -> str:
    value = data.get(key, choices[0])
    if value not in choices:
        raise BundleError(f"{path}: {key} must be one of {list(choices)}, got {value!r}")
    return str(value)


def parse_capabilities(path: Path | str, value: object) -> tuple[str, ...]:
    """Return the capabilities a manifest asks for; raise BundleError for a bad one."""
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise BundleError(f"{path}: capabilities must be a list of strings")
    for cap in value:
        if cap == NET:
            continue
        target = cap[len(READ) :] if cap.startswith(READ) else ""
        if not target.startswith("/") or os.path.normpath(target) != target:
            raise BundleError(
                f"{path}: capability {cap!r} is neither {NET!r} nor {READ!r} followed by an "
                "absolute, normalized path"
            )
    return tuple(dict.fromkeys(value))


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
    known |= {"api", "observe_only"}
    known |= {"tier", "failure", "capabilities", "budget"}
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
    params_table = data.get("params") or {}
    if not isinstance(params_table, dict):
        raise BundleError(f"{path}: params must be a table of [params.NAME] tables")
    params = {pname: _param_spec(path, pname, spec) for pname, spec in params_table.items()}
    api = data.get("api", MODULE_API)
    if isinstance(api, bool) or not isinstance(api, int) or not 1 <= api <= MODULE_API:
        raise BundleError(
            f"{path}: api {api!r} is not one this node offers (1 to {MODULE_API}); "
            "a module written for a newer NetServ needs a newer node"
        )
    observe_only = data.get("observe_only", False)
    if not isinstance(observe_only, bool):
        raise BundleError(f"{path}: observe_only must be true or false, not {observe_only!r}")
    try:
        budget = parse_budget(str(path), data.get("budget"))
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    return Manifest(
        name=name,
        version=check_version(data.get("version", "0"), f"{path}: version"),
        summary=str(data.get("summary", "")),
        entry_file=entry_file,
        entry_class=entry_class,
        path=folder,
        params=MappingProxyType(params),
        api=api,
        observe_only=observe_only,
        tier=_choice(path, data, "tier", TIERS),
        failure=_choice(path, data, "failure", FAILURES),
        capabilities=parse_capabilities(path, data.get("capabilities", [])),
        budget=budget,
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
    """The service modules in a list of folders, looked up fresh on every look-up.

    A name found in several folders is the one in the first. Reading on demand (a
    handful of small files) means a module dropped into a folder is available at
    once, with no restart of the controller or the agent. A manifest is parsed again
    only when its file changed (another inode, size or modification time): every
    setup looks its modules up, and parsing TOML was a tenth of a setup's cost.
    """

    def __init__(self, roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> None:
        if isinstance(roots, str | os.PathLike):
            roots = [roots]
        self.roots = tuple(Path(root) for root in roots)
        self._read: dict[Path, tuple[tuple[int, int, int], Manifest]] = {}

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
        try:
            st = (folder / "manifest.toml").stat()
        except OSError:
            return read_manifest(folder)  # says what is wrong
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = self._read.get(folder)
        if known is not None and known[0] == stamp:
            return known[1]
        manifest = read_manifest(folder)
        self._read[folder] = (stamp, manifest)
        return manifest

    def has(self, name: str) -> bool:
        """Return whether a root has a folder `name` that holds a manifest: `name in
        names()`, without listing every root (a setup asks this of each module)."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            return False
        return any((root / name / "manifest.toml").is_file() for root in self.roots)

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
