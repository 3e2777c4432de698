"""docs/rest-api.md's endpoint table lists exactly the routes the controller registers.

The routes are read from the code: every `ControllerBase` class in the `controller`
package and the `@route`s of its methods, so an endpoint added anywhere in the
controller without a row (or a row left for one removed) fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import ControllerBase  # noqa: E402

import controller  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "rest-api.md"
HEADER = "| method | path | body | answer | who | errors |"
WHO = {"anyone", "token", "operator", "node key"}


def _shape(path: str) -> str:
    """Return `path` without its query and with every {placeholder} written `{}`."""
    return re.sub(r"\{[^}]*\}", "{}", path.partition("?")[0])


def registered_routes() -> set[tuple[str, str]]:
    """Return (method, path shape) of every route the controller package declares."""
    classes = set()
    for info in pkgutil.iter_modules(controller.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"controller.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, ControllerBase) and cls.__module__ == module.__name__:
                classes.add(cls)
    routes = set()
    for cls in classes:
        for _, func in inspect.getmembers(cls, inspect.isfunction):
            info = getattr(func, "routing_info", None)
            if info is None:
                continue
            for method in info.get("methods") or ["GET"]:
                routes.add((method, _shape(info["path"])))
    return routes


def documented_rows() -> list[list[str]]:
    """Return the cells of every row of the endpoint table in docs/rest-api.md."""
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADER) + 2  # past the header and its rule
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_every_registered_route_has_one_row_and_every_row_a_route() -> None:
    rows = documented_rows()
    documented = [(row[0], _shape(row[1])) for row in rows]
    assert len(documented) == len(set(documented)), "an endpoint is listed twice"
    routes = registered_routes()
    assert len(routes) >= 20, f"found too few routes to be the controller's: {routes}"
    assert sorted(routes - set(documented)) == [], "registered but not in the table"
    assert sorted(set(documented) - routes) == [], "in the table but not registered"


def test_every_row_says_body_answer_who_and_errors() -> None:
    for row in documented_rows():
        assert len(row) == 6, f"a row needs six cells: {row}"
        method, path, body, answer, who, errors = row
        assert body and answer and errors, f"empty cell in {row}"
        assert who in WHO, f"{method} {path}: who is one of {sorted(WHO)}, not {who!r}"
        assert errors == "-" or re.match(r"\d{3}\b", errors), f"{method} {path}: {errors!r}"
