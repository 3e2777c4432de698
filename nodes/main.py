"""Run a node agent process: `python -m nodes ...`, which `netserv agent ...` also runs.

By default the process is the agent's supervisor (`nodes/supervisor.py`), which runs
the agent itself as its child with `--no-supervisor` and a watchdog pipe.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from agentproto.limits import HEARTBEAT
from controller.keyfiles import ENV as SECRETS_ENV
from controller.keyfiles import SecretsError, provision_node_key, read_secret
from nodes.agent import MAX_FRAME_AGE, AgentConfig, NodeAgent
from nodes.bundle import MODULE_PATH_HELP, BundleError, Catalog, module_path
from nodes.control import make_server
from nodes.metrics import serve as serve_metrics
from nodes.packet_io import PacketSocket
from nodes.sandbox.policy import DEFAULT_TRUSTED, PolicyError, TierPolicy
from nodes.supervisor import EXIT_FATAL, HANG_AFTER, KILL_AFTER, Notifier, supervise
from signaling.client import DEFAULT_URL
from signaling.dpid import parse_dpid

log = logging.getLogger("netserv.agent")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _dpid(text: str) -> int:
    try:
        return parse_dpid(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


# The agent's own options, as (flag, namespace attribute); `child_argv` writes them again.
_PASSED_ON = (
    ("--dpid", "dpid"),
    ("--iface", "iface"),
    ("--switch-port", "switch_port"),
    ("--port-type", "port_type"),
    ("--controller", "controller"),
    ("--listen", "listen"),
    ("--metrics-listen", "metrics_listen"),
    ("--module-path", "module_path"),
    ("--secrets", "secrets"),
    ("--key-file", "key_file"),
    ("--trusted", "trusted"),
    ("--grant", "grant"),
    ("--heartbeat", "heartbeat"),
    ("--max-frame-age", "max_frame_age"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the agent's options to `p`; `run` takes the namespace they parse into."""
    p.add_argument(
        "--dpid",
        required=True,
        type=_dpid,
        help="datapath id of the node's switch in hex, as the REST API shows it "
        "(1, 0x1 and 0000000000000001 are the same; 10 is 16)",
    )
    p.add_argument("--iface", required=True, help="the agent's end of its veth pair, e.g. s1-na")
    p.add_argument(
        "--switch-port",
        required=True,
        help="the bridge's end of that veth pair, as the switch names its port, e.g. s1-ns",
    )
    p.add_argument(
        "--port-type",
        default="",
        help="how the node's bridge reads its ports (e.g. system, afxdp), reported to the "
        "controller for `netserv nodes`; the topology that made the bridge gives it",
    )
    p.add_argument(
        "--controller", default=DEFAULT_URL, help="the controller's REST URL (%(default)s)"
    )
    p.add_argument(
        "--listen",
        type=_hostport,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address of the agent's control API, which the controller calls (port 0: any)",
    )
    p.add_argument(
        "--metrics-listen",
        type=_hostport,
        metavar="HOST:PORT",
        help="serve Prometheus metrics (read-only, docs/metrics.md) on this address; "
        "HOST defaults to 127.0.0.1 (default: no metrics endpoint)",
    )
    p.add_argument("--module-path", action="append", metavar="DIRS", help=MODULE_PATH_HELP)
    p.add_argument("--services", dest="module_path", action="append", help=argparse.SUPPRESS)
    p.add_argument(
        "--secrets",
        metavar="DIR",
        help=f"the secrets folder (default ${SECRETS_ENV}, else run/secrets in the repository); "
        "the node's key is DIR/nodes/<dpid>.key, made there if the node has none",
    )
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help="the node's key, if not in the secrets folder: the controller must hold the "
        "same key in its own (docs/security.md)",
    )
    p.add_argument(
        "--trusted",
        action="append",
        metavar="MODULE",
        help="a module that may run in the agent's own process when its manifest asks to "
        "(tier = \"trusted\"); repeat, or join with commas; 'shipped': those in the shipped "
        f"services/ folder; 'none': no module (default: {', '.join(DEFAULT_TRUSTED)}). "
        "Every other module runs isolated (docs/modules.md)",
    )
    p.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="MODULE=CAPABILITY",
        help="grant an isolated module a capability its manifest asks for: net, or "
        "read:/abs/path; repeat for more",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=HEARTBEAT,
        help="seconds between registrations with the controller, which are the agent's "
        "heartbeat (%(default)s)",
    )
    p.add_argument(
        "--max-frame-age",
        type=_seconds,
        default=MAX_FRAME_AGE,
        metavar="SECONDS",
        help="a frame that waited longer than this in the agent's receive queue (a hang, "
        "an overload) is dropped and counted as stale, never sent late (%(default)s)",
    )
    p.add_argument(
        "--no-supervisor",
        action="store_true",
        help="run the agent alone, without the supervisor that restarts it and tells the "
        "controller at once when it dies or hangs",
    )
    p.add_argument(
        "--hang-after",
        type=_seconds,
        default=HANG_AFTER,
        metavar="SECONDS",
        help="the supervisor counts the agent as hung when its packet loop has not come "
        "round for this long (%(default)s)",
    )
    p.add_argument(
        "--kill-hung-after",
        type=_seconds,
        default=KILL_AFTER,
        metavar="SECONDS",
        help="the supervisor kills and restarts an agent hung this long (%(default)s)",
    )
    p.add_argument(
        "--agent-pid-file",
        metavar="FILE",
        help="the supervisor writes the pid of each agent it starts here",
    )
    # Given by the supervisor to the agent it runs.
    p.add_argument("--watchdog-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--boot-id", help=argparse.SUPPRESS)


def child_argv(args: argparse.Namespace) -> list[str]:
    """Return the command line of the agent a supervisor started with `args` runs."""
    argv = [sys.executable, "-m", "nodes"]
    if getattr(args, "verbose", False):
        argv.append("--verbose")
    for flag, name in _PASSED_ON:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "dpid":
            value = f"{value:x}"
        elif name in ("listen", "metrics_listen"):
            value = f"{value[0]}:{value[1]}"
        for item in value if isinstance(value, list) else [value]:
            argv += [flag, str(item)]
    return argv + ["--no-supervisor"]


def configure_logging(verbose: bool) -> None:
    """Log to stderr with times, at debug level when `verbose`."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)


def run(args: argparse.Namespace) -> int:
    """Run the agent the parsed options describe, under its supervisor unless
    --no-supervisor; return the process's exit code."""
    try:
        catalog = Catalog(module_path(args.module_path))
    except BundleError as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    try:
        key = node_key(args.dpid, args.secrets, args.key_file)
    except (OSError, SecretsError) as exc:
        log.error("cannot read the node's key: %s", exc)
        return EXIT_FATAL
    try:
        policy = TierPolicy.parse(args.trusted, args.grant)
    except PolicyError as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    if not args.no_supervisor:
        notify = Notifier(args.controller, args.dpid, key)
        return supervise(
            child_argv(args), notify, args.hang_after, args.kill_hung_after, args.agent_pid_file
        )
    config = AgentConfig(
        args.dpid,
        args.iface,
        args.switch_port,
        args.controller,
        args.heartbeat,
        key,
        policy,
        max_frame_age=args.max_frame_age,
        port_type=args.port_type,
    )
    agent = NodeAgent(config, catalog)
    if args.boot_id:
        agent.boot_id = args.boot_id
    watchdog = None
    if args.watchdog_fd is not None:
        os.set_inheritable(args.watchdog_fd, False)  # for no module's process after it
        watchdog = args.watchdog_fd
    return run_agent(agent, args.listen, watchdog, args.metrics_listen)


def node_key(dpid: int, secrets: str | None, key_file: str | None) -> bytes:
    """Return the node's key: from `key_file`, else from the secrets folder, where it is
    made if the node has none yet. Raise SecretsError or OSError when it cannot be read."""
    path = key_file or provision_node_key(secrets, dpid)
    return read_secret(path)


def run_agent(
    agent: NodeAgent,
    listen: tuple[str, int],
    watchdog: int | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run `agent` until SIGTERM/SIGINT, a refusal or the death of a loop; return an exit code:
    0 when stopped, 1 when a loop died, EXIT_FATAL when refused or set up wrongly.

    Frames are handled only once the controller has taken the agent: a second agent
    for a node must not touch the first one's frames before it is refused. With
    `watchdog` (a pipe's write end, from the supervisor) the agent beats on it while
    its packet loop comes round. With `metrics` (host, port) it serves its Prometheus
    metrics there.
    """
    config = agent.config
    try:
        io = PacketSocket(config.iface, timeout=agent.loop_turn, max_age=config.max_frame_age)
    except OSError as exc:
        log.error("cannot open a packet socket on %s: %s", config.iface, exc)
        return EXIT_FATAL
    try:
        server = make_server(agent, *listen)
    except OSError as exc:
        log.error("cannot listen on %s:%d for the control API: %s", *listen, exc)
        io.close()
        return EXIT_FATAL
    host, port = server.server_address[:2]
    agent.url = f"http://{host}:{port}"
    exporter = None
    if metrics is not None:
        try:
            exporter = serve_metrics(agent, *metrics)
        except OSError as exc:
            log.error("cannot listen on %s:%d for metrics: %s", *metrics, exc)
            server.server_close()
            io.close()
            return EXIT_FATAL
        log.info("metrics on http://%s:%d/metrics", *exporter.server_address[:2])
    died: list[str] = []

    def guarded(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException:
                log.exception("%s died", name)
                died.append(name)
                agent.stopping.set()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def stop(*_: object) -> None:
        # A process group's SIGTERM and the supervisor's arrive together: a second one
        # handled inside Event.set, which holds the event's lock (not reentrant), hung
        # the agent until it was killed. So the first one is the only one handled.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        agent.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    guarded("control", server.serve_forever)  # the controller may ask it before it answers
    # Beats while it registers too: a slow controller is no hang.
    guarded("watchdog", agent.watchdog_loop, watchdog)
    while not agent.register() and not agent.stopping.wait(config.heartbeat):
        pass
    packets = None
    if agent.registered.is_set():
        packets = guarded("packets", agent.packet_loop, io)
        guarded("housekeeping", agent.housekeeping_loop)
        log.info(
            "agent for %016x on %s (switch port %s), control API %s",
            config.dpid,
            config.iface,
            config.switch_port,
            agent.url,
        )
    while not agent.stopping.wait(1.0):
        pass
    server.shutdown()
    if exporter is not None:
        exporter.shutdown()
    if packets is not None:
        packets.join(timeout=2)
    for session_id in [c.session_id for c in agent.dispatcher.chains()]:
        agent.detach(session_id)
    io.close()
    if agent.refused:
        log.error("the controller refused this agent: %s", agent.refused)
        return EXIT_FATAL
    if died:
        log.error("stopped because %s died", ", ".join(died))
        return 1
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line (`python -m nodes --help`), run the agent, return its exit code."""
    p = argparse.ArgumentParser(
        prog="python -m nodes",
        description="Run a NetServ node agent on the agent's end of a bridge's veth pair.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    add_arguments(p)
    args = p.parse_args(argv)
    configure_logging(args.verbose)
    return run(args)
