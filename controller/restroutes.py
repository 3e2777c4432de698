"""NetServ's REST routes looked up by path segments, ahead of Ryu's router.

Ryu routes a request through webob's `wsgify`, the `routes` package's regular
expressions over every app's endpoints and a URL generator made for each request: on a
session's setup that was about a tenth of the controller's CPU. NetServ's own endpoints
(`controller.rest.RestApi`, all under /netserv/) are plain templates — literal segments
and whole-segment `{names}`, one method each — so a dict by (method, segment count)
finds them. What it does not find (another app's endpoint, a path with no route, a
method the path does not take) goes to Ryu's router as before, which gives the same
answers it always gave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PREFIX = "/netserv/"

Template = tuple[str | None, ...]  # a literal segment, or None for a {name}
Found = tuple[type, str, dict[str, str], Any]  # (controller class, action, url vars, data)


class RestRoutes:
    """The routes of `controller_class` in a Ryu WSGIApplication `app`, by path segments."""

    def __init__(self, app: Any, controller_class: type) -> None:
        self.controller_class = controller_class
        self.config: dict[str, Any] = getattr(app, "config", {})
        self.data = getattr(app, "registory", {}).get(controller_class.__name__)
        self._table: dict[tuple[str, int], list[tuple[Template, tuple[str, ...], str]]] = {}
        for route in getattr(getattr(app, "mapper", None), "matchlist", []):
            controller = route.defaults.get("controller")
            path: str = route.routepath
            if controller is not controller_class:
                if path.startswith(PREFIX):  # another app under our prefix: route as Ryu does
                    self._table.clear()
                    return
                continue
            parsed = _template(path)
            methods = (route.conditions or {}).get("method") or []
            if parsed is None or route.reqs or not methods:
                self._table.clear()  # not a plain template: leave all routing to Ryu
                return
            template, names = parsed
            for method in methods:
                bucket = self._table.setdefault((method, len(template)), [])
                bucket.append((template, names, route.defaults["action"]))

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """Return (action, url vars) of the route `method` `path` takes, or None."""
        if not path.startswith(PREFIX):
            return None
        segments = path.split("/")
        for template, names, action in self._table.get((method, len(segments)), ()):
            values = []
            for want, got in zip(template, segments, strict=True):
                if want is None:
                    if not got:
                        break
                    values.append(got)
                elif want != got:
                    break
            else:
                return action, dict(zip(names, values, strict=True))
        return None

    def call(self, request: Any, method: str, path: str) -> Any | None:
        """Return the answer of the handler `method` `path` routes to, called as Ryu calls
        it, or None when it routes to none here."""
        found = self.match(method, path)
        if found is None:
            return None
        action, urlvars = found
        request.urlvars = {**urlvars, "action": action, "controller": self.controller_class}
        controller = self.controller_class(request, None, self.data, **self.config)
        handler: Callable[..., Any] = getattr(controller, action)
        return handler(request, **urlvars)


def _template(path: str) -> tuple[Template, tuple[str, ...]] | None:
    """Return a route path's segments (None for a {name}) and its names, or None when a
    segment mixes a name with other text."""
    template: list[str | None] = []
    names: list[str] = []
    for segment in path.split("/"):
        if segment.startswith("{") and segment.endswith("}") and segment.count("{") == 1:
            name = segment[1:-1]
            if not name.isidentifier():
                return None
            template.append(None)
            names.append(name)
        elif "{" in segment or "}" in segment or ":" in segment:
            return None
        else:
            template.append(segment)
    return tuple(template), tuple(names)
