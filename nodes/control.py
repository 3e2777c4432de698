"""The agent's control API: JSON over HTTP, spoken by the controller.

GET    /health              the agent's identity, loaded modules, I/O counters
GET    /sessions            every attached chain's counters
GET    /sessions/<id>       one chain's counters, with the node's under "node"
PUT    /sessions/<id>       attach {tag, lifetime, modules: [{name, params}]}
PATCH  /sessions/<id>       refresh {lifetime}
DELETE /sessions/<id>       detach; returns the final counters
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nodes.agent import AttachError, NodeAgent

log = logging.getLogger("netserv.control")
_SESSION = re.compile(r"^/sessions/(\d+)$")
MAX_BODY = 1 << 20


def make_server(agent: NodeAgent, host: str, port: int) -> ThreadingHTTPServer:
    """Return an HTTP server (not yet serving) bound to host:port for `agent`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.debug(fmt, *args)

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise AttachError("request body too large", 413)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as exc:
                raise AttachError(f"body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise AttachError("body must be a JSON object")
            return body

        def _route(self, method: str) -> None:
            try:
                m = _SESSION.match(self.path)
                if self.path == "/health" and method == "GET":
                    return self._reply(200, agent.status())
                if self.path == "/sessions" and method == "GET":
                    return self._reply(200, [c.stats() for c in agent.dispatcher.chains()])
                if m is None:
                    return self._reply(404, {"error": f"no such resource {self.path}"})
                sid = int(m.group(1))
                if method == "PUT":
                    return self._reply(201, agent.attach(sid, self._body()).stats())
                if method == "PATCH":
                    chain = agent.refresh(sid, self._body().get("lifetime"))
                    return self._reply(200, chain.stats())
                if method == "GET":
                    return self._reply(200, agent.session_stats(sid))
                if method == "DELETE":
                    stats = agent.detach(sid)
                    if stats is None:
                        raise KeyError(sid)
                    return self._reply(200, stats)
                return self._reply(405, {"error": f"{method} not allowed on {self.path}"})
            except KeyError:
                return self._reply(404, {"error": f"no session {self.path.rsplit('/', 1)[-1]}"})
            except AttachError as exc:
                return self._reply(exc.status, {"error": str(exc)})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route("GET")

        def do_PUT(self) -> None:  # noqa: N802
            self._route("PUT")

        def do_PATCH(self) -> None:  # noqa: N802
            self._route("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._route("DELETE")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
