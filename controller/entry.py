"""Start the Ryu controller with the NetServ app: the only place Ryu's manager is imported.

Ryu 4.34 imports `eventlet.wsgi.ALREADY_HANDLED`, which current eventlet no longer has
(and the eventlet that had it does not run on Python 3.11). It is only used to answer
websocket requests, which NetServ does not serve, so a stand-in object is enough; it
must exist before Ryu is imported.
"""

from __future__ import annotations

from pathlib import Path


def _eventlet_compat() -> None:
    import warnings

    warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()


def run_controller(
    of_host: str,
    of_port: int,
    rest_host: str,
    rest_port: int,
    services: Path,
    agent_dead_after: float,
    verbose: bool = False,
    extra_apps: tuple[str, ...] = (),
) -> int:
    """Run ryu-manager with the NetServ app in this process until it is stopped."""
    _eventlet_compat()
    from ryu import cfg

    cfg.CONF.register_cli_opts(
        [
            cfg.StrOpt("netserv-services", default=str(services), help="service module folder"),
            cfg.FloatOpt(
                "netserv-agent-dead-after",
                default=agent_dead_after,
                help="seconds of agent silence before its sessions are removed",
            ),
        ]
    )
    from ryu.cmd import manager

    args = [
        "--ofp-listen-host",
        of_host,
        "--ofp-tcp-listen-port",
        str(of_port),
        "--wsapi-host",
        rest_host,
        "--wsapi-port",
        str(rest_port),
        "--netserv-services",
        str(services),
        "--netserv-agent-dead-after",
        str(agent_dead_after),
        *(["--verbose"] if verbose else []),
        "controller.app",
        *extra_apps,
    ]
    manager.main(args=args, prog="netserv controller")
    return 0
