"""The module host: loads service module code at run time and unloads it when unused.

Code is loaded from the bundle's file by path and kept out of `sys.modules`, so a module
that no session uses any more is really gone, and the next load reads the file anew.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nodes.bundle import BundleError, Catalog, Manifest
from nodes.module_api import ModuleContext, ServiceModule

log = logging.getLogger("netserv.host")


class ModuleLoadError(Exception):
    """A module's code could not be loaded or set up; the message says why."""


@dataclass
class _Loaded:
    manifest: Manifest
    cls: type[ServiceModule]
    users: int = 0


class ModuleHost:
    def __init__(
        self, catalog: Catalog, node: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.catalog = catalog
        self.node = node
        self.clock = clock  # the modules' clock: every building block of theirs follows it
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def _load(self, name: str) -> _Loaded:
        try:
            manifest = self.catalog.get(name)
        except BundleError as exc:
            raise ModuleLoadError(str(exc)) from None
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
        """Return a new instance of module `name` for a session; load its code if needed."""
        with self._lock:
            entry = self._loaded.get(name) or self._load(name)
            try:
                resolved = entry.manifest.resolve_params(params)
            except BundleError as exc:
                self._drop_if_unused(name, entry)
                raise ModuleLoadError(str(exc)) from None
            module = entry.manifest.name  # `name` may be a bundle's NAME@SHA256
            ctx = ModuleContext(
                session_id=session_id,
                node=self.node,
                module=module,
                clock=self.clock,
                logger=logging.getLogger(f"netserv.module.{module}.{session_id}"),
            )
            try:
                instance = entry.cls(resolved, ctx)
            except Exception as exc:
                ctx.close()
                self._drop_if_unused(name, entry)
                raise ModuleLoadError(f"module {name!r} setup failed: {exc!r}") from exc
            entry.users += 1
            self._loaded[name] = entry
            return instance

    def _drop_if_unused(self, name: str, entry: _Loaded) -> None:
        if entry.users == 0:
            self._loaded.pop(name, None)

    def release(self, name: str, instance: ServiceModule) -> None:
        """Stop an instance; unload the module's code once no session uses it."""
        try:
            instance.stop()
        except Exception:
            log.exception("module %s raised in stop()", name)
        ctx = getattr(instance, "ctx", None)
        if isinstance(ctx, ModuleContext):
            ctx.close()
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None:
                return
            entry.users -= 1
            if entry.users <= 0:
                del self._loaded[name]
                log.info("unloaded module %s", name)

    def loaded(self) -> dict[str, dict[str, object]]:
        """Return the modules whose code is loaded now, with their version and user count."""
        with self._lock:
            return {
                n: {"version": e.manifest.version, "sessions": e.users}
                for n, e in self._loaded.items()
            }
