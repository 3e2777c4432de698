"""Start the Ryu controller with the NetServ app: the only place Ryu's manager is imported.

`python -m controller ...` runs it; so does `netserv controller ...`.

What Ryu needs to run on current eventlet, and the hardening of its REST server, are in
`controller/ryucompat.py`, applied here before Ryu's manager is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agentproto.limits import AGENT_DEAD_AFTER
from controller import keyfiles, ryucompat
from controller.errors import PolicyError
from controller.policy import load_policy
from controller.repository import Repository
from controller.repository import default_path as default_repository
from controller.routability import TIMEOUT as ROUTABILITY_TIMEOUT
from controller.store import SessionStore, StoreError, default_path
from nodes.bundle import MODULE_PATH_HELP, BundleError, module_path

# Tests of the REST layer import Ryu's wsgi module without this entry point.
_eventlet_compat = ryucompat.eventlet_compat


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
    ryucompat.eventlet_compat()
    ryucompat.register_options()
    joined = os.pathsep.join(str(folder) for folder in modules)
    from ryu.cmd import manager  # patches the standard library for eventlet

    ryucompat.harden_rest()
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
