"""The module host: makes module instances at run time, in the tier the node's policy says.

A trusted module's code is loaded into the agent from the bundle's file by path and
kept out of `sys.modules`, so a module that no session uses any more is really gone,
and the next load reads the file anew. An isolated module's instance is a worker
process of its own (`nodes/sandbox/proxy.py`), which loads the file itself. Each
instance gets a guard (`nodes/sandbox/guard.py`) with the manifest's failure policy
and budgets, which the session's chain holds beside it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nodes.bundle import BundleError, Catalog, Manifest
from nodes.module_api import ModuleContext, ServiceModule
from nodes.sandbox.guard import Guard, Quarantined, quarantine_cause
from nodes.sandbox.policy import TierPolicy
from nodes.sandbox.proxy import IsolatedModule, Sandbox, WorkerError

log = logging.getLogger("netserv.host")


class ModuleLoadError(Exception):
    """A module's code could not be loaded or set up; the message says why."""


@dataclass
class _Loaded:
    manifest: Manifest
    cls: type[ServiceModule] | None  # None: isolated, its code is loaded by its workers
    users: int = 0

    @property
    def tier(self) -> str:
        return "isolated" if self.cls is None else "trusted"


class ModuleHost:
    def __init__(
        self,
        catalog: Catalog,
        node: int,
        clock: Callable[[], float] = time.monotonic,
        policy: TierPolicy | None = None,
    ) -> None:
        self.catalog = catalog
        self.node = node
        self.clock = clock  # the modules' clock: every building block of theirs follows it
        self.policy = policy if policy is not None else TierPolicy()
        self._sandbox: Sandbox | None = None  # made when the first isolated module is
        self._loaded: dict[str, _Loaded] = {}
        self._guards: dict[int, Guard] = {}  # by id() of the instance
        # Instances quarantined, by (module, tier, cause): read by the metrics endpoint.
        self.quarantines: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox()
        return self._sandbox

    def _load(self, name: str) -> _Loaded:
        try:
            manifest = self.catalog.get(name)
        except BundleError as exc:
            raise ModuleLoadError(str(exc)) from None
        if not self.policy.trusts(manifest):
            return _Loaded(manifest, None)
        path = manifest.path / f"{manifest.entry_file}.py"
        spec = importlib.util.spec_from_file_location(f"netserv_service_{name}", path)
        if spec is None or spec.loader is None:
            raise ModuleLoadError(f"cannot load {path}")
        code = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(code)
        except Exception as exc:  # the module's own code failed: say so, load nothing
            raise ModuleLoadError(f"module {name!r} failed to load: {exc!r}") from exc
        cls = getattr(code, manifest.entry_class, None)
        if not (isinstance(cls, type) and issubclass(cls, ServiceModule)):
            raise ModuleLoadError(f"{path}: {manifest.entry_class} is not a ServiceModule subclass")
        log.info("loaded module %s %s", name, manifest.version)
        return _Loaded(manifest, cls)

    def instantiate(
        self, name: str, params: Mapping[str, object], session_id: int
    ) -> ServiceModule:
        """Return a new instance of module `name` for a session, in its tier; load its
        code if needed. Raise ModuleLoadError saying why it cannot be made."""
        with self._lock:
            entry = self._loaded.get(name) or self._load(name)
            manifest = entry.manifest
            try:
                resolved = manifest.resolve_params(params)
                capabilities = self.policy.capabilities(manifest) if entry.cls is None else ()
            except BundleError as exc:
                self._drop_if_unused(name, entry)
                raise ModuleLoadError(str(exc)) from None
            guard = Guard(
                entry.tier, manifest.failure, manifest.budget, self.clock, manifest.observe_only
            )
            guard.on_quarantine = functools.partial(self._quarantined, manifest.name, entry.tier)
            entry.users += 1  # held while an isolated instance starts, outside the lock
            self._loaded[name] = entry
            if entry.cls is not None:
                instance = self._trusted(name, entry, resolved, session_id)
        if entry.cls is None:
            instance = self._isolated(name, entry, resolved, session_id, guard, capabilities)
            guard.confined = instance.confined  # type: ignore[attr-defined]
        self._guards[id(instance)] = guard
        return instance

    def _quarantined(self, module: str, tier: str, reason: str) -> None:
        self.quarantines[(module, tier, quarantine_cause(reason))] += 1

    def _isolated(
        self,
        name: str,
        entry: _Loaded,
        params: dict[str, object],
        session_id: int,
        guard: Guard,
        capabilities: tuple[str, ...],
    ) -> ServiceModule:
        # `name` is the key it is loaded under (a fetched bundle's NAME@SHA256)
        try:
            return IsolatedModule(
                entry.manifest, params, session_id, self.node, guard, self.sandbox, capabilities
            )
        except (WorkerError, OSError) as exc:
            self._unuse(name)
            raise ModuleLoadError(str(exc)) from None

    def _trusted(
        self, name: str, entry: _Loaded, resolved: dict[str, object], session_id: int
    ) -> ServiceModule:
        """Return an instance made in the agent (the host's lock is held)."""
        module = entry.manifest.name  # `name` may be a fetched bundle's NAME@SHA256
        ctx = ModuleContext(
            session_id=session_id,
            node=self.node,
            module=module,
            clock=self.clock,
            logger=logging.getLogger(f"netserv.module.{module}.{session_id}"),
        )
        try:
            return entry.cls(resolved, ctx)  # type: ignore[misc]
        except Exception as exc:
            ctx.close()
            entry.users -= 1
            self._drop_if_unused(name, entry)
            raise ModuleLoadError(f"module {name!r} setup failed: {exc!r}") from exc

    def _drop_if_unused(self, name: str, entry: _Loaded) -> None:
        if entry.users == 0:
            self._loaded.pop(name, None)

    def _unuse(self, name: str) -> None:
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self._loaded[name]
                log.info("unloaded module %s", name)

    def describe(self) -> dict[str, object]:
        """Return the node's policy and, once an isolated module ran, what confines them."""
        out: dict[str, object] = {"policy": self.policy.to_json()}
        if self._sandbox is not None:
            out["isolation"] = self._sandbox.describe()
        return out

    def guard(self, instance: ServiceModule) -> Guard:
        """Return the guard made with `instance` (a fresh default one for a stranger)."""
        return self._guards.get(id(instance)) or Guard()

    def release(self, name: str, instance: ServiceModule) -> None:
        """Stop an instance (a quarantined one too); unload the module's code once no
        session uses it."""
        if isinstance(instance, Quarantined):
            instance = instance.original
        self._guards.pop(id(instance), None)
        try:
            instance.stop()
        except Exception:
            log.exception("module %s raised in stop()", name)
        ctx = getattr(instance, "ctx", None)
        if isinstance(ctx, ModuleContext):
            ctx.close()
        self._unuse(name)

    def loaded(self) -> dict[str, dict[str, object]]:
        """Return the modules in use now, with their version, user count and tier."""
        with self._lock:
            return {
                n: {"version": e.manifest.version, "sessions": e.users, "tier": e.tier}
                for n, e in self._loaded.items()
            }
