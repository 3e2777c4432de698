"""Start the Ryu controller with the NetServ app: the only place Ryu's manager is imported.

`python -m controller ...` runs it; so does `netserv controller ...`.

Ryu 4.34 imports `eventlet.wsgi.ALREADY_HANDLED`, which current eventlet no longer has
(and the eventlet that had it does not run on Python 3.11). It is only used to answer
websocket requests, which NetServ does not serve, so a stand-in object is enough; it
must exist before Ryu is imported.

Ryu starts its REST server with eventlet's defaults: `debug=True`, which sends the
traceback of an unhandled exception as the body of a 500, and no socket time-out, so a
client that promises a body and never sends it holds its connection for as long as it
likes. `_serve_rest` replaces Ryu's `serve_forever` (Ryu's files stay as they are): no
tracebacks, a read time-out, and our JSON guard around Ryu's router. Each connection
still gets its own greenthread, so a stalled client never delays an agent's heartbeat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path

from agentproto.limits import AGENT_DEAD_AFTER
from controller import keyfiles
from controller.errors import PolicyError
from controller.policy import load_policy
from controller.repository import Repository
from controller.repository import default_path as default_repository
from controller.routability import TIMEOUT as ROUTABILITY_TIMEOUT
from controller.store import SessionStore, StoreError, default_path
from nodes.bundle import MODULE_PATH_HELP, BundleError, module_path


def _eventlet_compat() -> None:
    import warnings

    warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the controller's options to `p`; `run` takes the namespace they parse into."""
    p.add_argument("--of-host", default="127.0.0.1", help="OpenFlow listen address (%(default)s)")
    p.add_argument(
        "--of-port",
        type=int,
        default=6653,
        help="OpenFlow listen port, for the switches (%(default)s)",
    )
    p.add_argument("--rest-host", default="127.0.0.1", help="REST API listen address (%(default)s)")
    p.add_argument(
        "--rest-port",
        type=int,
        default=8080,
        help="REST API listen port, for requesters and the node agents (%(default)s)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the Prometheus metrics endpoint (%(default)s)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (read-only, docs/metrics.md) on this port "
        "(default: no metrics endpoint)",
    )
    p.add_argument("--module-path", action="append", metavar="DIRS", help=MODULE_PATH_HELP)
    p.add_argument("--services", dest="module_path", action="append", help=argparse.SUPPRESS)
    p.add_argument(
        "--agent-dead-after",
        type=float,
        default=AGENT_DEAD_AFTER,
        help="seconds without a heartbeat before an agent's sessions are suspended (%(default)s)",
    )
    p.add_argument(
        "--routability-timeout",
        type=float,
        default=ROUTABILITY_TIMEOUT,
        metavar="SECONDS",
        help="how long an on-path request waits for its claimed endpoint to answer the"
        " return-routability check (three CHALLENGEs) before it is refused (%(default)s)",
    )
    p.add_argument(
        "--store",
        metavar="FILE",
        help="SQLite file where the controller keeps its sessions, so that a restarted "
        "controller takes them back without disturbing their flows; ':memory:' keeps "
        "none (default: run/controller-OFPORT.sqlite in the repository, one per "
        "OpenFlow port; one controller per file)",
    )
    p.add_argument(
        "--repo",
        metavar="DIR",
        help="the module repository: the folder where published bundles are kept "
        "(default: beside the session store, its name with .modules for .sqlite; with "
        "--store :memory:, a temporary folder removed when the controller stops)",
    )
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="the requester policy (TOML, docs/policy.md): who may ask for which flows and"
        " modules, with which keys and REST tokens, and how many sessions; read again on"
        " SIGHUP. Without it every REST caller is the operator and may do anything",
    )
    p.add_argument(
        "--secrets",
        metavar="DIR",
        help=f"the secrets folder: the operator's REST token (made on the first start) and "
        f"the nodes' keys (default ${keyfiles.ENV}, else run/secrets in the repository)",
    )
    p.add_argument(
        "--ctl-privkey",
        metavar="FILE",
        help="the controller's TLS private key (PEM): with --ctl-cert, switches connect "
        "over TLS (ssl:HOST:PORT) on --of-port instead of TCP (docs/multihost.md)",
    )
    p.add_argument("--ctl-cert", metavar="FILE", help="the controller's TLS certificate (PEM)")
    p.add_argument(
        "--ca-certs",
        metavar="FILE",
        help="the CA certificate(s) a switch's certificate must be signed by (PEM); "
        "without it any switch may connect over TLS",
    )
    p.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="another Ryu app to run beside NetServ, e.g. ryu.app.ofctl_rest (repeat)",
    )


def run(args: argparse.Namespace, verbose: bool = False) -> int:
    """Run the controller the parsed options describe; return the process's exit code."""
    if (args.ctl_privkey is None) != (args.ctl_cert is None) or (
        args.ca_certs is not None and args.ctl_cert is None
    ):
        print(
            "netserv controller: TLS needs --ctl-privkey and --ctl-cert together "
            "(and --ca-certs only with them)",
            file=sys.stderr,
        )
        return 1
    missing = [
        f for f in (args.ctl_privkey, args.ctl_cert, args.ca_certs) if f and not os.path.isfile(f)
    ]
    if missing:
        print(f"netserv controller: no such TLS file: {', '.join(missing)}", file=sys.stderr)
        return 1
    tls = _tls_args(args.ctl_privkey, args.ctl_cert, args.ca_certs, args.of_port)
    try:
        folders = module_path(args.module_path)
    except BundleError as exc:
        print(f"netserv controller: {exc}", file=sys.stderr)
        return 1
    if not args.routability_timeout > 0:
        print("netserv controller: --routability-timeout must be above 0", file=sys.stderr)
        return 1
    store = args.store or str(default_path(args.of_port))
    try:  # refuse a store that cannot be used before Ryu starts, in one line
        SessionStore(store).close()
    except StoreError as exc:
        print(f"netserv controller: {exc}", file=sys.stderr)
        return 1
    repo = args.repo or default_repository(store)
    try:  # the same for the module repository's folder
        Repository(repo)
    except OSError as exc:
        print(
            f"netserv controller: cannot keep the module repository in {repo}: {exc}",
            file=sys.stderr,
        )
        return 1
    policy = None
    if args.policy is not None:
        try:  # a bad file stops the controller here, with one message, before Ryu starts
            policy = load_policy(args.policy).source
        except PolicyError as exc:
            print(f"netserv controller: {exc}", file=sys.stderr)
            return 1
    secrets = keyfiles.secrets_dir(args.secrets)
    try:
        keyfiles.operator_token(secrets, create=True)
    except keyfiles.SecretsError as exc:
        print(f"netserv controller: {exc}", file=sys.stderr)
        return 1
    return run_controller(
        args.of_host,
        args.of_port,
        args.rest_host,
        args.rest_port,
        folders,
        args.agent_dead_after,
        verbose,
        tuple(args.app),
        store=store,
        policy=policy,
        secrets=secrets,
        repo=args.repo,
        routability_timeout=args.routability_timeout,
        tls=tls,
        metrics=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
    )


def _tls_args(key: str | None, cert: str | None, ca: str | None, of_port: int) -> tuple[str, ...]:
    """Return Ryu's options for an OpenFlow listener over TLS on `of_port` (none without a key).

    Ryu listens either on its TCP port or, given a key and a certificate, on its SSL
    port only: so the SSL port is set to the OpenFlow port.
    """
    if key is None or cert is None:
        return ()
    tls = ("--ctl-privkey", key, "--ctl-cert", cert, "--ofp-ssl-listen-port", str(of_port))
    return tls + (("--ca-certs", ca) if ca is not None else ())


def _serve_rest() -> None:
    """Make Ryu's REST server hide tracebacks, time out stalled reads, and answer in JSON."""
    import eventlet.wsgi
    from ryu.app import wsgi
    from ryu.lib import hub

    from controller.rest import READ_TIMEOUT, guard

    class Protocol(eventlet.wsgi.HttpProtocol):
        def get_environ(self) -> dict[str, object]:
            # http.server turns a leading "//" into "/" before eventlet sees the path, so
            # RAW_PATH_INFO would not be raw: take the path from the request line itself.
            environ = super().get_environ()
            words = self.requestline.split()
            if len(words) >= 2:
                environ["RAW_PATH_INFO"] = words[1].partition("?")[0]
            return environ

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            # http.server's own refusals (a broken request line, too many headers) came as
            # HTML, and with no status line at all when the line was too broken to say
            # its HTTP version.
            if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # not a fault of the server
                code, message = 400, "only HTTP/1.0 and HTTP/1.1 are spoken here"
            body = json.dumps({"error": message or HTTPStatus(code).phrase}).encode()
            self.request_version = "HTTP/1.0"
            self.close_connection = True
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    def serve_forever(server: wsgi.WSGIServer) -> None:
        server.logger = hub.LoggingWrapper()
        eventlet.wsgi.server(
            server.server,
            guard(server.handle),
            server.logger,
            protocol=Protocol,
            debug=False,
            socket_timeout=READ_TIMEOUT,
        )

    wsgi.WSGIServer.serve_forever = serve_forever


def _tls_per_connection() -> None:
    """Make Ryu's OpenFlow listener over TLS use its certificate on every connection.

    Ryu 4.34's `StreamServer` pops the TLS context and the file names out of its
    arguments when the first switch connects, so every later switch met a server with
    no certificate ("no shared cipher") that would not have checked the switch's
    either. Here the context is made once, before the first connection, and each
    connection is wrapped with it.
    """
    from ryu.lib import hub

    plain_init = hub.StreamServer.__init__

    def init(
        server: hub.StreamServer,
        listen_info: tuple[str, int],
        handle: Callable[..., object] | None = None,
        backlog: None = None,
        spawn: str = "default",
        **ssl_args: object,
    ) -> None:
        ctx = ssl_args.pop("ssl_ctx", None)
        if ctx is None:
            plain_init(server, listen_info, handle, backlog, spawn, **ssl_args)
            return
        ctx.load_cert_chain(ssl_args.pop("certfile"), ssl_args.pop("keyfile"))
        if "cert_reqs" in ssl_args:
            ctx.verify_mode = ssl_args.pop("cert_reqs")
        if "ca_certs" in ssl_args:
            ctx.load_verify_locations(ssl_args.pop("ca_certs"))
        plain_init(server, listen_info, handle, backlog, spawn)

        def wrap_and_handle(sock: object, addr: object) -> None:
            handle(ctx.wrap_socket(sock, server_side=True), addr)

        server.handle = wrap_and_handle

    hub.StreamServer.__init__ = init


def run_controller(
    of_host: str,
    of_port: int,
    rest_host: str,
    rest_port: int,
    modules: Sequence[Path],
    agent_dead_after: float = AGENT_DEAD_AFTER,
    verbose: bool = False,
    extra_apps: tuple[str, ...] = (),
    store: str | None = None,
    policy: Path | None = None,
    secrets: Path | None = None,
    repo: str | None = None,
    routability_timeout: float = ROUTABILITY_TIMEOUT,
    tls: Sequence[str] = (),
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run ryu-manager with the NetServ app in this process until it is stopped.

    `tls` are Ryu's options for OpenFlow over TLS (`_tls_args`), none for TCP.
    `secrets` is the secrets folder (None: `controller.keyfiles.secrets_dir()`).
    `store` None keeps the sessions in the default store for `of_port`; `repo` None
    keeps the module repository beside it (`controller.repository.default_path`).
    `metrics` (host, port) serves the Prometheus metrics there; None serves none.
    """
    _eventlet_compat()
    from ryu import cfg

    joined = os.pathsep.join(str(folder) for folder in modules)
    cfg.CONF.register_cli_opts(
        [
            cfg.StrOpt(
                "netserv-module-path", default=joined, help="service module folders, in order"
            ),
            cfg.FloatOpt(
                "netserv-agent-dead-after",
                default=agent_dead_after,
                help="seconds of agent silence before its sessions are removed",
            ),
            cfg.StrOpt("netserv-store", default=store, help="the controller's session store"),
            cfg.FloatOpt(
                "netserv-routability-timeout",
                default=routability_timeout,
                help="seconds a return-routability check waits for its answer",
            ),
            cfg.StrOpt("netserv-repo", default="", help="the module repository's folder"),
            cfg.StrOpt("netserv-metrics-host", default="127.0.0.1", help="metrics address"),
            cfg.IntOpt("netserv-metrics-port", default=0, help="metrics port; 0: none"),
            cfg.StrOpt(
                "netserv-policy", default="", help="the requester policy file (TOML); none: open"
            ),
            cfg.StrOpt(
                "netserv-secrets",
                default=str(keyfiles.secrets_dir(secrets)),
                help="the secrets folder (REST token, node keys)",
            ),
        ]
    )
    from ryu.cmd import manager  # patches the standard library for eventlet

    _serve_rest()
    _tls_per_connection()

    args = [
        "--ofp-listen-host",
        of_host,
        "--ofp-tcp-listen-port",
        str(of_port),
        "--wsapi-host",
        rest_host,
        "--wsapi-port",
        str(rest_port),
        "--netserv-module-path",
        joined,
        "--netserv-agent-dead-after",
        str(agent_dead_after),
        "--netserv-store",
        store or str(default_path(of_port)),
        "--netserv-routability-timeout",
        str(routability_timeout),
        "--netserv-policy",
        str(policy or ""),
        "--netserv-repo",
        str(repo or ""),
        "--netserv-secrets",
        str(keyfiles.secrets_dir(secrets)),
        *tls,
        *(["--netserv-metrics-host", metrics[0]] if metrics else []),
        *(["--netserv-metrics-port", str(metrics[1])] if metrics else []),
        *(["--verbose"] if verbose else []),
        "controller.app",
        *extra_apps,
    ]
    manager.main(args=args, prog="netserv controller")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line (`python -m controller --help`), run, return the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m controller", description="Run the Ryu controller with the NetServ app."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args, args.verbose)
