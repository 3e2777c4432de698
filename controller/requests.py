"""Validation of session requests: JSON in, a frozen SessionRequest out, or InvalidRequest.

This is the one gate every transport (REST now, on-path signaling later) passes through,
so a bad request is refused before any state, agent or switch is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentproto.limits import MAX_CHAIN, MAX_LIFETIME
from agentproto.messages import ModuleSpec as ModuleSpec  # the agents' own, found here too
from controller.errors import InvalidRequest
from controller.match import FlowMatch, parse_match
from controller.modules import ModuleSource, as_source
from nodes.bundle import BundleError, Catalog, check_version
from signaling import dpid
from signaling.dpid import format_dpid as format_dpid  # where the rest of controller/ finds it

DEFAULT_LIFETIME = 60


@dataclass(frozen=True)
class SessionRequest:
    match: FlowMatch
    modules: tuple[ModuleSpec, ...]
    lifetime: int
    node: int | None = None


def parse_dpid(raw: object) -> int:
    """Return a datapath id from an int or up to 16 hex digits; raise InvalidRequest."""
    try:
        return dpid.parse_dpid(raw)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_lifetime(raw: object, default: int | None = DEFAULT_LIFETIME) -> int:
    """Return a lifetime in whole seconds (1..MAX_LIFETIME); raise InvalidRequest."""
    if raw is None and default is not None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidRequest(f"lifetime must be a whole number of seconds, got {raw!r}")
    if not 1 <= raw <= MAX_LIFETIME:
        raise InvalidRequest(f"lifetime must be between 1 and {MAX_LIFETIME} seconds, got {raw}")
    return raw


def _modules(body: Mapping[str, object], modules: Catalog | ModuleSource) -> tuple[ModuleSpec, ...]:
    if "module" in body and "modules" in body:
        raise InvalidRequest("give either 'module' (with 'params') or 'modules', not both")
    if "module" in body:
        one = {"name": body["module"], "params": body.get("params", {})}
        if "version" in body:
            one["version"] = body["version"]
        items: object = [one]
    elif "params" in body or "version" in body:
        raise InvalidRequest(
            "'params' and 'version' go with 'module'; in 'modules' each entry has its own"
        )
    else:
        items = body.get("modules")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("a session needs 'module' (a name) or 'modules' (a non-empty list)")
    if len(items) > MAX_CHAIN:
        raise InvalidRequest(f"a chain has at most {MAX_CHAIN} modules")
    source = as_source(modules)
    return tuple(_module(item, source) for item in items)


def _module(item: object, source: ModuleSource) -> ModuleSpec:
    """Return the ModuleSpec one entry of a chain asks for; raise InvalidRequest."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping) or set(item) - {"name", "params", "version"}:
        raise InvalidRequest("each module is a name or an object {name, params, version}")
    name, params, version = item.get("name"), item.get("params", {}), item.get("version")
    if not isinstance(name, str):
        raise InvalidRequest(f"a module is named by a string, got {name!r}")
    if not isinstance(params, Mapping):
        raise InvalidRequest(f"params of module {name!r} must be a JSON object")
    try:
        if version is not None:
            check_version(version, f"the version of module {name!r}")
        found = source.resolve(name, version)
        resolved = found.manifest.resolve_params(params)
    except BundleError as exc:
        raise InvalidRequest(str(exc)) from None
    manifest = found.manifest
    return ModuleSpec(
        manifest.name, tuple(sorted(resolved.items())), manifest.version, found.sha256
    )


def parse_session_request(body: object, catalog: Catalog | ModuleSource) -> SessionRequest:
    """Return the SessionRequest a JSON body asks for; raise InvalidRequest saying why not,
    or UntrustedBundle when a module's bundle is one the policy does not let in."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    known = {"match", "module", "modules", "params", "version", "lifetime", "node"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: {sorted(known)}")
    if "match" not in body:
        raise InvalidRequest("'match' is required: the flow the service applies to")
    match = parse_match(body["match"])
    modules = _modules(body, catalog)
    lifetime = parse_lifetime(body.get("lifetime"))
    node = parse_dpid(body["node"]) if body.get("node") is not None else None
    return SessionRequest(match=match, modules=modules, lifetime=lifetime, node=node)


def parse_refresh(body: object, default: int) -> int:
    """Return the lifetime a refresh body asks for (`default` when it names none)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - {"lifetime"})
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: ['lifetime']")
    return parse_lifetime(body.get("lifetime"), default=default)
