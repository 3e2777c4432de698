"""Start the Ryu controller with the NetServ app: the only place Ryu's manager is imported.

`python -m controller ...` runs it; so does `netserv controller ...`.

What Ryu needs to run on current eventlet, and the hardening of its REST server, are in
`controller/ryucompat.py`, applied here before Ryu's manager is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agentproto.limits import AGENT_DEAD_AFTER
from controller import keyfiles, ryucompat
from controller.errors import PolicyError
from controller.policy import load_policy
from controller.repository import Repository
from controller.repository import default_path as default_repository
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
    p.add_argument("--module-path", action="append", metavar="DIRS", help=MODULE_PATH_HELP)
    p.add_argument("--services", dest="module_path", action="append", help=argparse.SUPPRESS)
    p.add_argument(
        "--agent-dead-after",
        type=float,
        default=AGENT_DEAD_AFTER,
        help="seconds without a heartbeat before an agent's sessions are suspended (%(default)s)",
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
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="another Ryu app to run beside NetServ, e.g. ryu.app.ofctl_rest (repeat)",
    )


def run(args: argparse.Namespace, verbose: bool = False) -> int:
    """Run the controller the parsed options describe; return the process's exit code."""
    try:
        folders = module_path(args.module_path)
    except BundleError as exc:
        print(f"netserv controller: {exc}", file=sys.stderr)
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
    )


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
) -> int:
    """Run ryu-manager with the NetServ app in this process until it is stopped.

    `secrets` is the secrets folder (None: `controller.keyfiles.secrets_dir()`).
    `store` None keeps the sessions in the default store for `of_port`; `repo` None
    keeps the module repository beside it (`controller.repository.default_path`).
    """
    ryucompat.eventlet_compat()
    ryucompat.register_options()
    joined = os.pathsep.join(str(folder) for folder in modules)
    from ryu.cmd import manager  # patches the standard library for eventlet

    ryucompat.harden_rest()

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
        "--netserv-policy",
        str(policy or ""),
        "--netserv-repo",
        str(repo or ""),
        "--netserv-secrets",
        str(keyfiles.secrets_dir(secrets)),
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
