"""NetServ's REST routes found by segments (`controller/restroutes.py`) are the ones
Ryu's router finds: same action, same url vars, and no route where it has none."""

from __future__ import annotations

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import ControllerBase, WSGIApplication, route  # noqa: E402

from controller.rest import RestApi  # noqa: E402
from controller.restroutes import RestRoutes  # noqa: E402

PATHS = [
    "/netserv/nodes",
    "/netserv/nodes/0000000000000001/down",
    "/netserv/sessions",
    "/netserv/sessions/12",
    "/netserv/sessions/12/refresh",
    "/netserv/sessions/12/upgrade",
    "/netserv/sessions/12/stats",
    "/netserv/sessions/",
    "/netserv/sessions//refresh",
    "/netserv/sessions/12/nothing",
    "/netserv/modules/counter/1.0/bundle",
    "/netserv/modules/counter",
    "/netserv/nothing",
    "/netserv",
    "/stats/switches",
]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]


def ryu_app() -> WSGIApplication:
    app = WSGIApplication()
    app.register(RestApi, {"netserv_service": None})
    return app


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_a_path_routes_as_ryus_router_routes_it(method: str, path: str) -> None:
    app = ryu_app()
    ryu = app.mapper.match(environ={"PATH_INFO": path, "REQUEST_METHOD": method})
    found = RestRoutes(app, RestApi).match(method, path)
    if ryu is None:
        assert found is None
    else:
        action = ryu.pop("action")
        assert ryu.pop("controller") is RestApi
        assert found == (action, ryu)


def test_every_route_of_netserv_is_in_the_table() -> None:
    app = ryu_app()
    routes = RestRoutes(app, RestApi)
    for r in app.mapper.matchlist:
        path = r.routepath.replace("{", "").replace("}", "")  # each {name} as its own name
        for method in r.conditions["method"]:
            assert routes.match(method, path) is not None, (method, r.routepath)


class _Other(ControllerBase):
    @route("other", "/netserv/other/{x}", methods=["GET"])
    def other(self, req, **_):  # pragma: no cover - never called
        return None


def test_another_apps_route_under_netserv_leaves_routing_to_ryu() -> None:
    app = ryu_app()
    app.register(_Other)
    routes = RestRoutes(app, RestApi)
    assert routes.match("POST", "/netserv/sessions") is None
    assert routes.match("GET", "/netserv/other/1") is None


def test_an_app_without_a_mapper_routes_nothing() -> None:
    assert RestRoutes(object(), RestApi).match("POST", "/netserv/sessions") is None
