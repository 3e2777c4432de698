"""The requester-side client library: asks a NetServ controller for services.

It speaks the controller's REST API today; the on-path signaling transport will sit
behind the same methods. Sessions are made, changed and read with a token
(`Authorization: Bearer`): the one given, else the one in `token_file`, else the
operator's in the secrets folder when this user may read it (root), else none (then
only nodes and modules can be read).
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from controller.keyfiles import token_path
from jsonhttp.client import ClientError, call_json

__all__ = ["ClientError", "DEFAULT_URL", "NetServClient"]

DEFAULT_URL = "http://127.0.0.1:8080"


class NetServClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        timeout: float = 15.0,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """Raise ClientError (status 0) when `token_file` is given and cannot be read."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else read_token(token_file)

    def _call(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return call_json(self.url + path, method, body, self.timeout, headers)

    def setup(
        self,
        match: Mapping[str, object],
        module: str | None = None,
        params: Mapping[str, object] | None = None,
        lifetime: int | None = None,
        node: str | int | None = None,
        modules: list[Mapping[str, object]] | None = None,
    ) -> dict[str, Any]:
        """Ask for a service on a flow; return the session the controller made."""
        body: dict[str, object] = {"match": dict(match)}
        if modules is not None:
            body["modules"] = modules
        if module is not None:
            body["module"] = module
            body["params"] = dict(params or {})
        if lifetime is not None:
            body["lifetime"] = lifetime
        if node is not None:
            body["node"] = node
        return self._call("POST", "/netserv/sessions", body)

    def sessions(self) -> list[dict[str, Any]]:
        """Return every session."""
        return self._call("GET", "/netserv/sessions")

    def session(self, session_id: int) -> dict[str, Any]:
        """Return one session."""
        return self._call("GET", f"/netserv/sessions/{session_id}")

    def stats(self, session_id: int) -> dict[str, Any]:
        """Return a session with its modules' counters."""
        return self._call("GET", f"/netserv/sessions/{session_id}/stats")

    def refresh(self, session_id: int, lifetime: int | None = None) -> dict[str, Any]:
        """Extend a session's lifetime; return the session."""
        body = {} if lifetime is None else {"lifetime": lifetime}
        return self._call("POST", f"/netserv/sessions/{session_id}/refresh", body)

    def upgrade(
        self, session_id: int, module: str | None = None, version: str | None = None
    ) -> dict[str, Any]:
        """Move a module of a session's chain (its only one when None) to another
        version (the newest when None), its state handed over; return the session."""
        body = {k: v for k, v in (("module", module), ("version", version)) if v is not None}
        return self._call("POST", f"/netserv/sessions/{session_id}/upgrade", body)

    def teardown(self, session_id: int) -> dict[str, Any]:
        """End a session; return its last view with the final counters."""
        return self._call("DELETE", f"/netserv/sessions/{session_id}")

    def trace(self, match: Mapping[str, object]) -> dict[str, Any]:
        """Return the way of a frame of the flow `match` (with its ipv4_src and ipv4_dst
        hosts): each switch's rules, the detours' agents and modules (docs/metrics.md)."""
        query = urllib.parse.urlencode({name: str(value) for name, value in match.items()})
        return self._call("GET", f"/netserv/trace?{query}")

    def nodes(self) -> list[dict[str, Any]]:
        """Return the switches and node agents the controller knows."""
        return self._call("GET", "/netserv/nodes")

    def modules(self) -> dict[str, Any]:
        """Return the service modules the controller offers."""
        return self._call("GET", "/netserv/modules")

    def module(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Return every version of module `name`, or the one `version`."""
        path = f"/netserv/modules/{name}" + (f"/{version}" if version is not None else "")
        return self._call("GET", path)

    def publish(self, bundle: bytes, signature: Mapping[str, object] | None = None) -> dict:
        """Publish a bundle (nodes/archive.py) with its signature, if any (the operator's
        call); return the version published."""
        body: dict[str, object] = {"bundle": base64.b64encode(bundle).decode()}
        if signature is not None:
            body["signature"] = dict(signature)
        return self._call("POST", "/netserv/modules", body)

    def remove_module(self, name: str, version: str) -> dict[str, Any]:
        """Remove a published version (the operator's call); return what it was."""
        return self._call("DELETE", f"/netserv/modules/{name}/{version}")


def read_token(path: str | os.PathLike[str] | None = None) -> str | None:
    """Return the token in the file `path`; without `path`, the operator's token when
    this user may read it, else None.

    Raise ClientError (status 0) when `path` is given and holds no token.
    """
    try:
        with open(path or token_path()) as f:
            token = f.read(4096).strip()
    except OSError as exc:
        if path is None:
            return None
        raise ClientError(0, f"cannot read the token file {path}: {exc.strerror}") from None
    if not token or any(c.isspace() for c in token):
        if path is None:
            return None
        raise ClientError(0, f"the token file {path} holds no token (one word)")
    return token
