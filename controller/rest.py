"""The controller's REST API, on Ryu's WSGI server. JSON in and out; errors are
`{"error": message}` with the status below. Datapath ids are 16 hex digits.

| method | path                               | does                                          |
| ------ | ---------------------------------- | --------------------------------------------- |
| GET    | /netserv/nodes                     | switches and node agents, readiness           |
| POST   | /netserv/nodes                     | agent registration and heartbeat              |
| GET    | /netserv/modules                   | service modules available (manifests)         |
| GET    | /netserv/sessions                  | every session                                 |
| POST   | /netserv/sessions                  | create (body below) → 201                     |
| GET    | /netserv/sessions/{id}             | one session                                   |
| DELETE | /netserv/sessions/{id}             | teardown; returns the chain's final counters  |
| POST   | /netserv/sessions/{id}/refresh     | {lifetime}: extend the soft state             |
| GET    | /netserv/sessions/{id}/stats       | the session with its modules' counters        |

Create body: {"match": {OXM fields}, "module": name, "params": {..}, "lifetime": s,
"node": dpid} or, for a chain, "modules": [name | {"name", "params"}, ..] instead of
"module" and "params". "lifetime" defaults to 60 s; "node" may be left out when one
NetServ node is ready.

| error                          | status |
| ------------------------------ | ------ |
| malformed body, bad field      | 400    |
| unknown session or node        | 404    |
| overlaps a session; not ready  | 409    |
| a switch or agent refused      | 502    |
| a switch or agent is not there | 503    |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ryu.app.wsgi import ControllerBase, Response, route

from controller.errors import (
    Conflict,
    InvalidRequest,
    NetServError,
    NotFound,
    PartFailed,
    Unavailable,
)
from controller.service import NetServService

INSTANCE = "netserv_service"
STATUS: dict[type[NetServError], int] = {
    InvalidRequest: 400,
    NotFound: 404,
    Conflict: 409,
    PartFailed: 502,
    Unavailable: 503,
}


def _json(status: int, body: object) -> Response:
    return Response(
        status=status,
        content_type="application/json",
        charset="utf-8",
        body=json.dumps(body, indent=1).encode() + b"\n",
    )


def _body(req: Any) -> object:
    if not req.body:
        return {}
    try:
        return json.loads(req.body)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON: {exc}") from None


def _session_id(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise NotFound(f"no session {raw!r}") from None


def _api(status: int = 200) -> Callable[[Callable[..., object]], Callable[..., Response]]:
    """Wrap a handler: its return value becomes JSON, NetServError its mapped status."""

    def wrap(handler: Callable[..., object]) -> Callable[..., Response]:
        def run(self: RestApi, req: Any, **kwargs: Any) -> Response:
            try:
                return _json(status, handler(self, req, **kwargs))
            except NetServError as exc:
                return _json(STATUS[type(exc)], {"error": str(exc)})

        run.__name__ = handler.__name__
        return run

    return wrap


class RestApi(ControllerBase):
    def __init__(self, req: Any, link: Any, data: dict[str, Any], **config: Any) -> None:
        super().__init__(req, link, data, **config)
        self.service: NetServService = data[INSTANCE]

    @route("netserv", "/netserv/nodes", methods=["GET"])
    @_api()
    def list_nodes(self, req: Any, **_: Any) -> object:
        return self.service.network.nodes_json(self.service.clock())

    @route("netserv", "/netserv/nodes", methods=["POST"])
    @_api()
    def register_node(self, req: Any, **_: Any) -> object:
        return self.service.register_agent(_body(req))

    @route("netserv", "/netserv/modules", methods=["GET"])
    @_api()
    def list_modules(self, req: Any, **_: Any) -> object:
        good, bad = self.service.catalog.all()
        return {"modules": [m.to_json() for m in good], "broken": bad}

    @route("netserv", "/netserv/sessions", methods=["GET"])
    @_api()
    def list_sessions(self, req: Any, **_: Any) -> object:
        now = self.service.clock()
        return [s.to_json(now) for s in self.service.sessions.all()]

    @route("netserv", "/netserv/sessions", methods=["POST"])
    @_api(201)
    def create_session(self, req: Any, **_: Any) -> object:
        return self.service.create(_body(req)).to_json(self.service.clock())

    @route("netserv", "/netserv/sessions/{sid}", methods=["GET"])
    @_api()
    def show_session(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.sessions.get(_session_id(sid)).to_json(self.service.clock())

    @route("netserv", "/netserv/sessions/{sid}", methods=["DELETE"])
    @_api()
    def delete_session(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.teardown(_session_id(sid))

    @route("netserv", "/netserv/sessions/{sid}/refresh", methods=["POST"])
    @_api()
    def refresh_session(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.refresh(_session_id(sid), _body(req)).to_json(self.service.clock())

    @route("netserv", "/netserv/sessions/{sid}/stats", methods=["GET"])
    @_api()
    def session_stats(self, req: Any, sid: str, **_: Any) -> object:
        return self.service.stats(_session_id(sid))
