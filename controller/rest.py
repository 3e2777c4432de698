"""The controller's REST API: a Ryu WSGI app, served by `controller/restserver.py`, its
routes found by `controller/restroutes.py` first. JSON in and out; errors are
`{"error": message, "code": name}` with the status below. Datapath ids are 16 hex digits; a session
{id} is canonical decimal (1, 2, ...): any other spelling (01, +1, %31, 1.0) names no
session and is a 404, as is every path with a percent-escape or not spelled as routed
(//netserv/...).

Every endpoint, with its body, answer, who may call and its errors, is in one table in
docs/rest-api.md, which `tests/unit/test_rest_table.py` checks against the routes below.

"token": `Authorization: Bearer TOKEN` with the operator's token (rest.token in the
secrets folder) or, with a policy file (`netserv controller --policy FILE`,
docs/policy.md), a requester's token: the policy then decides what it may do, and a
session belongs to the requester that made it (the operator may do anything);
sessions are read with one too, as they name other users' flows. "node key": the
registration is signed with the node's key and the answer signed back
(`controller/auth.py`, docs/security.md). Callers are checked before bodies are read.

Create body: {"match": {OXM fields}, "module": name, "params": {..}, "version": v,
"lifetime": s, "node": dpid} or, for a chain, "modules": [name | {"name", "params",
"version"}, ..] instead of "module", "params" and "version"; a "version" picks one of
the module's versions (controller/modules.py says which module a name gets).
"lifetime" defaults to 60 s. Instead of "node", "nodes" may select "first", "last" or
"every" NetServ node on the flow's path (from "ipv4_src" to "ipv4_dst"), or list
datapath ids; with neither, the first node on the path, or the only ready node when the
match names no source and destination. Served at several nodes, the request makes a
group, one session per node, all or none: the answer is the first session with
"group", every session of it; refresh and teardown of any session of a group act on
the whole group. Bodies are strict JSON objects (UTF-8, no NaN, no repeated key,
nested at most 32 deep), at most MAX_BODY bytes, sent within READ_TIMEOUT.

| error                                              | status |
| -------------------------------------------------- | ------ |
| malformed body, bad field; several nodes are ready | 400    |
| no token, one no one holds, or not signed with    | 401    |
| the node's key                                     |        |
| the policy forbids it: a flow with no endpoint in  | 403    |
| the requester's prefixes, a module it may not use, |        |
| another requester's session, a bundle it does not  |        |
| trust                                              |        |
| unknown session, node or path                      | 404    |
| a method the path does not take                    | 405    |
| the body did not arrive within READ_TIMEOUT        | 408    |
| overlaps a session; session still being installed; | 409    |
| a version published with another bundle, or in use;|        |
| an upgrade to the version the session runs         |        |
| the body is larger than MAX_BODY                   | 413    |
| the policy file to reload is not valid (old kept)  | 422    |
| the requester holds its quota of sessions or flows | 429    |
| internal error (details in the controller's log)   | 500    |
| a switch or agent refused (an upgrade whose new    | 502    |
| version cannot be loaded or take the state: the    |        |
| old version runs on)                               |        |
| a switch or agent is not there; no node is ready   | 503    |
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ryu.app.wsgi import ControllerBase, Response, route
from webob import Request

from controller.auth import BEARER_CHALLENGE, RestAuth, Unauthorized
from controller.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NetServError,
    NotFound,
    PartFailed,
    PolicyError,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
)
from controller.match import parse_match
from controller.modules import Found, ModuleSource, as_source, users_of
from controller.policy import OPERATOR, load_policy
from controller.repository import Repository
from controller.requests import parse_refresh, parse_session_request, parse_upgrade
from controller.restroutes import RestRoutes
from controller.service import NetServService
from controller.signaling import SignalingHandler
from controller.tables import SESSION_ID_MAX, session_id_of_text
from controller.trace import Tracer
from jsonhttp.strict import decode_json
from nodes.bundle import NAME_RE, BundleError
from nodes.signing import Signature, SignatureError
from signaling.dpid import parse_dpid

log = logging.getLogger("netserv.rest")
INSTANCE = "netserv_service"
AUTH = "netserv_auth"
SIGNALING = "netserv_signaling"
TRACER = "netserv_tracer"
READ_TIMEOUT = 2.0  # seconds a client may stall while sending a request before it is dropped
MAX_BODY = 1 << 20
INTERNAL_ERROR = "internal error; the controller's log has the details"
_PLAIN_PATH = re.compile(r"/[!-$&-~]*\Z")  # printable ASCII without '%'
_METHODS = ("GET", "POST", "DELETE")
REQUESTER = "netserv.requester"  # the environ key under which a call's requester is kept
UI_DIR = Path(__file__).resolve().parent / "ui"
UI_FILES = {  # the web view's files, each with its type; nothing else there is served
    "index.html": "text/html",
    "netserv.js": "text/javascript",
    "netserv.css": "text/css",
}


class MethodNotAllowed(NetServError):
    """The path exists but does not take the request's method."""

    code = "method_not_allowed"

    def __init__(self, message: str, allowed: Iterable[str]) -> None:
        super().__init__(message)
        self.allowed = tuple(allowed)


class BodyTimeout(NetServError):
    """The request's body did not arrive within READ_TIMEOUT."""

    code = "body_timeout"


class BodyTooLarge(NetServError):
    """The request's body is longer than MAX_BODY."""

    code = "body_too_large"


STATUS: dict[type[NetServError], int] = {
    InvalidRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    BodyTimeout: 408,
    Conflict: 409,
    BodyTooLarge: 413,
    PolicyError: 422,
    QuotaExceeded: 429,
    PartFailed: 502,
    Unavailable: 503,
}


def _json(status: int, body: object) -> Response:
    return Response(
        status=status,
        content_type="application/json",
        charset="utf-8",
        # Compact: json's C encoder takes no indent, and the Python one was a twentieth
        # of a setup's cost. `jq` or `netserv` show it indented.
        body=json.dumps(body).encode() + b"\n",
    )


def error_response(exc: Exception, environ: dict[str, Any]) -> Response:
    """Return the JSON answer to `exc`: its mapped status, or a 500 that gives no details.

    An exception that is not a NetServError is a bug: its traceback goes to the log,
    never to the client.
    """
    status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), None)
    if status is None or not isinstance(exc, NetServError):
        log.error(
            "internal error answering %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_PATH_INFO", environ.get("PATH_INFO")),
            exc_info=exc,
        )
        return _json(500, {"error": INTERNAL_ERROR})
    response = _json(status, {"error": str(exc), "code": exc.code})
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = getattr(exc, "challenge", BEARER_CHALLENGE)
    return response


def guard(app: Callable[..., Any]) -> Callable[..., Any]:
    """Return the WSGI application `app` (Ryu's router) wrapped so that every answer is JSON.

    Only a path routed as it was sent names a resource: one with percent-escapes (which
    the router would decode first, so that /netserv/sessions/%31 named session 1) or
    one the HTTP layer rewrote (//netserv/... to /netserv/...) is a 404 before routing; a
    path with no route is a 404, or a 405 when another method has one; an exception that
    escapes the router is a 500 without details, as in a handler.
    """

    routes: list[RestRoutes] = []  # made at the first request, when every app has registered

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not routes:
            routes.append(RestRoutes(app, RestApi))
        try:
            response = _route(app, routes[0], environ)
        except Exception as exc:
            response = error_response(exc, environ)
        return response(environ, start_response)

    return serve


def _route(app: Callable[..., Any], routes: RestRoutes, environ: dict[str, Any]) -> Response:
    raw = environ.get("RAW_PATH_INFO", environ.get("PATH_INFO", ""))
    if not _PLAIN_PATH.match(raw) or raw != environ.get("PATH_INFO", raw):
        why = ": NetServ's paths take no percent-escapes" if "%" in raw else ""
        raise NotFound(f"no resource {_shown(raw)!r}{why}")
    request = Request(environ)
    method = environ.get("REQUEST_METHOD", "")
    response = routes.call(request, method, raw)
    if response is not None:
        return response
    response = request.get_response(app)
    if response.status_int != 404 or response.content_type == "application/json":
        return response
    mapper = getattr(app, "mapper", None)
    allowed = [
        m
        for m in _METHODS
        if mapper is not None
        and m != method
        and mapper.match(environ=environ | {"REQUEST_METHOD": m})
    ]
    if allowed:
        raise MethodNotAllowed(f"{raw} takes {', '.join(allowed)}, not {method}", allowed)
    raise NotFound(f"no resource {_shown(raw)}: docs/rest-api.md lists the endpoints")


def _body(req: Any) -> dict[str, object]:
    """Return the request's body, a JSON object ({} when there is none)."""
    return _decode(_raw_body(req))


def _raw_body(req: Any) -> bytes:
    """Return the request's body as sent, at most MAX_BODY bytes."""
    length = req.content_length
    if length is not None and length > MAX_BODY:
        raise BodyTooLarge(f"the body may be {MAX_BODY} bytes at most, not {length}")
    try:
        raw = req.body_file_raw.read(MAX_BODY + 1 if length is None else length)
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {READ_TIMEOUT:g} s") from None
    except (OSError, ValueError) as exc:  # eventlet: a broken chunked encoding, a lost client
        raise InvalidRequest(f"the body could not be read: {exc}") from None
    if length is not None and len(raw) < length:
        raise InvalidRequest(f"the body ended after {len(raw)} of its {length} bytes")
    if len(raw) > MAX_BODY:
        raise BodyTooLarge(f"the body may be {MAX_BODY} bytes at most")
    return raw


def _decode(raw: bytes) -> dict[str, object]:
    """Return a body as a JSON object ({} when empty); raise InvalidRequest."""
    if not raw:
        return {}
    try:
        body = decode_json(raw)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON as NetServ takes it: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _session_id(raw: str) -> int:
    """Return the session id `raw` spells in canonical decimal; raise NotFound otherwise."""
    session_id = session_id_of_text(raw)
    if session_id is None:
        raise NotFound(f"no session {_shown(raw)!r}: ids are 1 to {SESSION_ID_MAX}, in decimal")
    return session_id


def _dpid_or_none(raw: object) -> int | None:
    """Return the datapath id `raw` names, or None when it names none."""
    try:
        return parse_dpid(raw)
    except ValueError:
        return None


def _named(views: list[dict[str, Any]], session_id: int) -> dict[str, Any]:
    """Return the view of session `session_id` among its group's `views`."""
    return next(v for v in views if v["id"] == session_id)


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def _target(environ: dict[str, Any]) -> str:
    """Return the request target as sent: the raw path and the query, if any."""
    path = environ.get("RAW_PATH_INFO", environ.get("PATH_INFO", ""))
    query = environ.get("QUERY_STRING", "")
    return path + (f"?{query}" if query else "")


def _api(
    status: int = 200, caller: bool = False
) -> Callable[[Callable[..., object]], Callable[..., Response]]:
    """Wrap a handler: its return value becomes JSON, an exception its mapped status.

    With `caller`, the call needs a token (Unauthorized otherwise, before the body is
    read) and the handler gets who made it as `caller` ("operator", or a requester).
    """

    def wrap(handler: Callable[..., object]) -> Callable[..., Response]:
        def run(self: RestApi, req: Any, **kwargs: Any) -> Response:
            try:
                if caller:
                    kwargs["caller"] = self._requester(req)
                result = handler(self, req, **kwargs)
                return result if isinstance(result, Response) else _json(status, result)
            except Exception as exc:
                if isinstance(exc, NetServError):
                    self.service.rejections.record(exc, "rest", req.environ.get(REQUESTER))
                return error_response(exc, req.environ)

        run.__name__ = handler.__name__
        return run

    return wrap


class RestApi(ControllerBase):
    def __init__(self, req: Any, link: Any, data: dict[str, Any], **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.service: NetServService = data[INSTANCE]
        self.auth: RestAuth = data[AUTH]
        self.signaling: SignalingHandler | None = data.get(SIGNALING)
        self.tracer: Tracer | None = data.get(TRACER)

    def _requester(self, req: Any) -> str:
        """Return who makes this call: the operator or, with a policy file, the requester
        whose token the Authorization header bears; raise Unauthenticated otherwise."""
        requester = self.auth.caller(req.headers)
        req.environ[REQUESTER] = requester
        return requester

    def _operator(self, req: Any) -> None:
        """Raise Unauthenticated or Forbidden unless the operator makes this call."""
        if self._requester(req) != OPERATOR:
            raise Forbidden("only the operator may do this")

    @route("netserv", "/netserv/nodes", methods=["GET"])
    @_api()
    def list_nodes(self, req: Any, **_: Any) -> object:
        return self.service.network.nodes_json(self.service.clock())

    @route("netserv", "/netserv/nodes", methods=["POST"])
    def register_node(self, req: Any, **_: Any) -> Response:
        """Take an agent's registration signed with its node's key; sign the answer."""
        try:
            raw = _raw_body(req)
            proof = self.auth.registration(req.method, _target(req.environ), req.headers, raw)
        except Exception as exc:
            return error_response(exc, req.environ)
        try:
            body = _decode(raw)
            named = _dpid_or_none(body.get("dpid"))  # a bad one is the service's 400
            if named is not None and named != proof.dpid:
                raise Unauthorized(
                    f"the registration is signed with node {proof.dpid:016x}'s key, "
                    f"not with that of node {named:016x}, which it names"
                )
            response = _json(200, self.service.register_agent(body))
        except Exception as exc:
            response = error_response(exc, req.environ)
        response.headers.update(self.auth.sign_reply(proof, response.status_int, response.body))
        return response

    @route("netserv", "/netserv/nodes/{dpid}/down", methods=["POST"])
    def agent_down(self, req: Any, dpid: str, **_: Any) -> Response:
        """Take a supervisor's notice that its agent died or hangs, signed with the
        node's key; sign the answer."""
        try:
            raw = _raw_body(req)
            proof = self.auth.registration(req.method, _target(req.environ), req.headers, raw)
        except Exception as exc:
            return error_response(exc, req.environ)
        try:
            named = _dpid_or_none(dpid)
            if named != proof.dpid:
                raise Unauthorized(
                    f"the notice is signed with node {proof.dpid:016x}'s key, not with that "
                    f"of node {dpid!r}, which it names"
                )
            response = _json(200, self.service.agent_down(named, _decode(raw)))
        except Exception as exc:
            response = error_response(exc, req.environ)
        response.headers.update(self.auth.sign_reply(proof, response.status_int, response.body))
        return response

    @route("netserv", "/netserv/modules", methods=["GET"])
    @_api()
    def list_modules(self, req: Any, **_: Any) -> object:
        return self._modules().listing()

    @route("netserv", "/netserv/modules", methods=["POST"])
    @_api()
    def publish_module(self, req: Any, **_: Any) -> object:
        self._operator(req)
        data, signature = _publish_body(_body(req))
        trust = self.service.policy.modules
        entry, new = self._repository().publish(data, signature, trust)
        return _json(201 if new else 200, entry.to_json(trust) | {"published": new})

    @route("netserv", "/netserv/modules/{name}", methods=["GET"])
    @_api()
    def show_module(self, req: Any, name: str, **_: Any) -> object:
        found = self._candidates(name)
        trust = self.service.policy.modules
        return {
            "name": name,
            "versions": [f.to_json(trust) | {"default": i == 0} for i, f in enumerate(found)],
        }

    @route("netserv", "/netserv/modules/{name}/{version}", methods=["GET"])
    @_api()
    def show_module_version(self, req: Any, name: str, version: str, **_: Any) -> object:
        found = self._candidates(name)
        for rank, one in enumerate(found):
            if one.manifest.version == version:
                return one.to_json(self.service.policy.modules) | {"default": rank == 0}
        raise NotFound(f"module {name!r} has no version {_shown(version)!r}")

    @route("netserv", "/netserv/modules/{name}/{version}", methods=["DELETE"])
    @_api()
    def remove_module(self, req: Any, name: str, version: str, **_: Any) -> object:
        self._operator(req)
        sessions = self.service.sessions
        with self.service.lock:  # no session may take it up between the check and the removal
            entry = self._modules().remove(name, version, lambda e: users_of(sessions.all(), e))
        return entry.to_json(self.service.policy.modules) | {"removed": True}

    @route("netserv", "/netserv/modules/{name}/{version}/bundle", methods=["GET"])
    def module_bundle(self, req: Any, name: str, version: str, **_: Any) -> Response:
        """Send an agent a published bundle, the call signed with its node's key and the
        answer signed back; the agent checks the bytes against the session's SHA-256."""
        try:
            raw = _raw_body(req)
            proof = self.auth.registration(req.method, _target(req.environ), req.headers, raw)
        except Exception as exc:
            return error_response(exc, req.environ)
        try:
            repository = self._repository()
            entry = repository.get(name, version)
            data = repository.bundle(entry)
            body = {"name": name, "version": version, "sha256": entry.sha256}
            response = _json(200, body | {"bundle": base64.b64encode(data).decode()})
        except Exception as exc:
            response = error_response(exc, req.environ)
        response.headers.update(self.auth.sign_reply(proof, response.status_int, response.body))
        return response

    def _modules(self) -> ModuleSource:
        return as_source(self.service.catalog)

    def _repository(self) -> Repository:
        repository = self._modules().repository
        if repository is None:
            raise NotFound("this controller keeps no module repository")
        return repository

    def _candidates(self, name: str) -> list[Found]:
        """Return every module called `name`, first the one a request gets; raise
        NotFound when there is none, InvalidRequest when its folder's manifest is broken."""
        if not NAME_RE.match(name):
            raise NotFound(f"no module {_shown(name)!r}: a name matches {NAME_RE.pattern}")
        try:
            found = self._modules().candidates(name)
        except BundleError as exc:
            raise InvalidRequest(str(exc)) from None
        if not found:
            raise NotFound(f"no module {name!r}")
        return found

    @route("netserv", "/netserv/sessions", methods=["GET"])
    @_api(caller=True)
    def list_sessions(self, req: Any, **_: Any) -> object:
        now = self.service.clock()
        return [s.to_json(now) for s in self.service.sessions.all()]

    @route("netserv", "/netserv/sessions", methods=["POST"])
    @_api(201, caller=True)
    def create_session(self, req: Any, caller: str, **_: Any) -> object:
        request = parse_session_request(_body(req), self.service.catalog, caller)
        sessions = self.service.create(request)
        now = self.service.clock()
        view = sessions[0].to_json(now)
        if len(sessions) > 1:
            view["group"] = [s.to_json(now) for s in sessions]
        return view

    @route("netserv", "/netserv/sessions/{sid}", methods=["GET"])
    @_api(caller=True)
    def show_session(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.sessions.get(_session_id(sid)).to_json(self.service.clock())

    @route("netserv", "/netserv/sessions/{sid}", methods=["DELETE"])
    @_api(caller=True)
    def delete_session(self, req: Any, sid: str, caller: str, **_: Any) -> object:
        session_id = _session_id(sid)
        return _named(self.service.teardown(session_id, requester=caller), session_id)

    @route("netserv", "/netserv/sessions/{sid}/refresh", methods=["POST"])
    @_api(caller=True)
    def refresh_session(self, req: Any, sid: str, caller: str, **_: Any) -> object:
        session_id = _session_id(sid)
        lifetime = parse_refresh(_body(req))
        sessions = self.service.refresh(session_id, lifetime, requester=caller)
        now = self.service.clock()
        return _named([s.to_json(now) for s in sessions], session_id)

    @route("netserv", "/netserv/sessions/{sid}/upgrade", methods=["POST"])
    @_api(caller=True)
    def upgrade_session(self, req: Any, sid: str, caller: str, **_: Any) -> object:
        session_id = _session_id(sid)
        module, version = parse_upgrade(_body(req))
        sessions = self.service.upgrade(session_id, module, version, requester=caller)
        now = self.service.clock()
        return _named([s.to_json(now) for s in sessions], session_id)

    @route("netserv", "/netserv/sessions/{sid}/stats", methods=["GET"])
    @_api(caller=True)
    def session_stats(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.stats(_session_id(sid))

    @route("netserv", "/netserv/signaling", methods=["GET"])
    @_api()
    def signaling_counts(self, req: Any, **_: Any) -> object:
        counts = dict(sorted(self.signaling.counts.items())) if self.signaling else {}
        refused = self.service.rejections.to_json().get("signaling", {})
        return {"counts": counts, "refused": refused}

    @route("netserv", "/netserv/policy", methods=["GET"])
    @_api()
    def show_policy(self, req: Any, **_: Any) -> object:
        self._operator(req)
        return self._policy_view()

    @route("netserv", "/netserv/policy/reload", methods=["POST"])
    @_api()
    def reload_policy(self, req: Any, **_: Any) -> object:
        self._operator(req)
        old = self.service.policy
        if old.source is None:
            raise InvalidRequest("the controller runs without a policy file (--policy FILE)")
        self.service.policy = load_policy(old.source)  # PolicyError: the old one stays
        log.info("policy reloaded from %s", old.source)
        return self._policy_view()

    def _policy_view(self) -> dict[str, object]:
        sessions = self.service.sessions.all()
        view = self.service.policy.to_json(sessions)
        return view | {"rejections": self.service.rejections.to_json()}

    @route("netserv", "/netserv/topology", methods=["GET"])
    @_api()
    def show_topology(self, req: Any, **_: Any) -> object:
        return self.service.network.topology_json(self.service.clock())

    @route("netserv", "/netserv/topology/path", methods=["GET"])
    @_api()
    def show_path(self, req: Any, **_: Any) -> object:
        src, dst = _path_query(req.GET)
        return self.service.network.path_json(src, dst)

    @route("netserv", "/netserv/trace", methods=["GET"])
    @_api(caller=True)
    def trace_flow(self, req: Any, **_: Any) -> object:
        match = parse_match(_match_query(req.GET))
        if self.tracer is None:
            raise Unavailable("this controller traces no flow")
        return self.tracer.trace(match)

    @route("netserv", "/netserv/ui", methods=["GET"])
    def web_view(self, req: Any, **_: Any) -> Response:
        return _static("index.html")

    @route("netserv", "/netserv/ui/{name}", methods=["GET"])
    def web_view_file(self, req: Any, name: str, **_: Any) -> Response:
        try:
            return _static(name)
        except NotFound as exc:
            return error_response(exc, req.environ)


def _publish_body(body: dict[str, object]) -> tuple[bytes, Signature | None]:
    """Return (bundle bytes, signature or None) of a publish body; raise InvalidRequest."""
    unknown = sorted(set(body) - {"bundle", "signature"})
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: ['bundle', 'signature']")
    encoded = body.get("bundle")
    if not isinstance(encoded, str):
        raise InvalidRequest("'bundle' is required: the bundle's bytes in base64")
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"'bundle' is not base64: {exc}") from None
    raw = body.get("signature")
    try:
        return data, None if raw is None else Signature.from_json(raw)
    except SignatureError as exc:
        raise InvalidRequest(f"'signature': {exc}") from None


def _match_query(query: Any) -> dict[str, str]:
    """Return a trace query's fields (FIELD=VALUE, each once); raise InvalidRequest."""
    names = list(query.keys())
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidRequest(f"a trace query names each match field once, not {twice}")
    return {name: query[name] for name in names}


def _static(name: str) -> Response:
    """Return the web view's file `name` (controller/ui/); raise NotFound for any other."""
    kind = UI_FILES.get(name)
    if kind is None:
        raise NotFound(f"no web view file {_shown(name)!r}")
    body = (UI_DIR / name).read_bytes()
    return Response(status=200, content_type=kind, charset="utf-8", body=body)


def _path_query(query: Any) -> tuple[str, str]:
    """Return the (src, dst) a path query names; raise InvalidRequest unless exactly those."""
    names = list(query.keys())
    if sorted(names) != ["dst", "src"]:
        raise InvalidRequest(
            f"a path query takes src and dst, each once (IPv4 addresses), not {names}"
        )
    return query["src"], query["dst"]
