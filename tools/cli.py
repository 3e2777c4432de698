"""`netserv`: one command for the controller, the node agent, the demo and sessions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controller import entry as controller_entry
from controller import keyfiles
from nodes import main as agent_main
from nodes.bundle import MODULE_PATH_HELP, BundleError, Catalog, module_path
from signaling import cli as signal_cli
from signaling.cli import chain
from signaling.cli import pairs as _pairs
from signaling.client import DEFAULT_URL, ClientError, NetServClient
from tools import module_cli, trace_cli
from tools.bench_agent_stats import PATHS as AGENT_PATHS
from tools.bench_control import PARTS as CONTROL_PARTS

REPO = Path(__file__).resolve().parent.parent


def _csv(text: str) -> list[str]:
    return text.split(",")


def _ints(text: str) -> list[int]:
    return [int(item) for item in _csv(text)]


def _bench_parts(text: str) -> str:
    unknown = set(_csv(text)) - set(CONTROL_PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"no part {', '.join(sorted(unknown))}")
    return text


def _print(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def cmd_controller(a: argparse.Namespace) -> int:
    return controller_entry.run(a, a.verbose)


def cmd_agent(a: argparse.Namespace) -> int:
    return agent_main.run(a)


def cmd_modules(a: argparse.Namespace) -> int:
    if a.module_path is None:
        _print(NetServClient(a.url).modules())
        return 0
    try:
        good, bad = Catalog(module_path(a.module_path)).all()
    except BundleError as exc:
        raise SystemExit(f"netserv: {exc}") from None
    _print({"modules": [m.to_json() | {"path": str(m.path)} for m in good], "broken": bad})
    return 1 if bad else 0


def cmd_demo(a: argparse.Namespace) -> int:
    from tools.demo import run_demo

    return run_demo(packets=a.packets, others=a.others)


def cmd_bench(a: argparse.Namespace) -> int:
    from tools.bench_mlffr import run_bench

    defaults = (
        {"repeats": 1, "seconds": 0.3, "max_trials": 5, "tolerance": 0.1}
        if a.quick
        else {"repeats": 3, "seconds": 1.0, "max_trials": 10, "tolerance": 0.03}
    )
    given = {k: getattr(a, k) for k in defaults}
    return run_bench(
        sizes=a.sizes or ([64] if a.quick else [64, 1500]),
        out=Path(a.out) if a.out else None,
        markdown=Path(a.markdown) if a.markdown else None,
        png=Path(a.png) if a.png else None,
        paths=a.paths,
        max_minutes=a.max_minutes,
        quick=a.quick,
        **{k: defaults[k] if v is None else v for k, v in given.items()},
    )


def _mlffr_arguments(b: argparse.ArgumentParser) -> None:
    from tools.mlffr import PATHS

    b.add_argument("--sizes", type=_ints, help="frame sizes, bytes without FCS (64,1500)")
    b.add_argument("--repeats", type=int, help="searches per path and size (3)")
    b.add_argument("--seconds", type=float, help="length of a trial (1.0)")
    b.add_argument("--max-trials", type=int, help="trials per path, size and repeat (10)")
    b.add_argument("--tolerance", type=float, help="a search stops this close (0.03)")
    b.add_argument(
        "--quick",
        action="store_true",
        help="64 bytes, 1 repeat of 0.3 s trials, at most 5 per search, to 10 %%",
    )
    b.add_argument("--out", default=str(REPO / "tools/out/mlffr.json"), help="JSON results")
    b.add_argument("--png", default=str(REPO / "tools/out/mlffr.png"), help="the plot")
    b.add_argument("--markdown", metavar="FILE", help="update the MLFFR section of FILE too")
    b.add_argument("--paths", type=_csv, default=list(PATHS), help="paths to measure")
    b.add_argument("--max-minutes", type=float, default=60.0, help="start no search after")
    b.set_defaults(func=cmd_bench)


def cmd_bench_agent(a: argparse.Namespace) -> int:
    from tools.bench_agent import run_agent_bench

    repeats, seconds = (2, 1.0) if a.quick else (a.repeats, a.seconds)
    return run_agent_bench(
        paths=a.paths,
        repeats=repeats,
        seconds=seconds,
        warmup=min(a.warmup, 0.3) if a.quick else a.warmup,
        size=a.size,
        pin=a.pin,
        out=Path(a.out) if a.out else None,
        markdown=Path(a.markdown) if a.markdown else None,
    )


def cmd_bench_control(a: argparse.Namespace) -> int:
    from tools.bench_control import run_control_bench

    return run_control_bench(
        quick=a.quick,
        out=Path(a.out) if a.out else None,
        markdown=Path(a.markdown) if a.markdown else None,
        parts=a.parts.split(","),
    )


def cmd_session(a: argparse.Namespace) -> int:
    client = NetServClient(a.url, token_file=a.token_file)
    if a.action == "setup":
        session = client.setup(
            match=_pairs(a.match, "match field"),
            modules=chain(a.module, _pairs(a.param, "parameter")),
            lifetime=a.lifetime,
            node=a.node,
        )
        _print(session)
    elif a.action == "list":
        _print(client.sessions())
    elif a.action == "show":
        _print(client.session(a.id))
    elif a.action == "stats":
        _print(client.stats(a.id))
    elif a.action == "refresh":
        _print(client.refresh(a.id, a.lifetime))
    elif a.action == "upgrade":
        _print(client.upgrade(a.id, a.module, a.version))
    elif a.action == "teardown":
        _print(client.teardown(a.id))
    return 0


def cmd_topo(a: argparse.Namespace) -> int:
    from topo import updown
    from topo.cmd import CommandError
    from topo.file import TopologyFileError, load

    state = Path(a.state) if a.state else updown.DEFAULT_STATE
    if a.action == "down":
        return updown.down(state)
    try:
        spec = load(a.file, a.prefix)
        if a.check:
            print(
                f"{a.file}: {len(spec.switches)} switches, {len(spec.hosts)} hosts, "
                f"{len(spec.links)} links, NetServ nodes: "
                f"{', '.join(s.name for s in spec.netserv()) or 'none'}"
            )
            return 0
        return updown.up(spec, state, a.of_port, a.rest_port, script=a.run, cli=not a.no_cli)
    except (TopologyFileError, updown.TopologyUpError, CommandError) as exc:
        print(f"netserv topo up: {exc}", file=sys.stderr)
        return 2


def _topo_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "topo",
        help="bring up a network from a topology file with its controller and agents, "
        "or take it down (docs/topologies.md)",
    )
    actions = t.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build the network of FILE and open Mininet's CLI")
    up.add_argument("file", metavar="FILE", help="the topology file (YAML)")
    how = up.add_mutually_exclusive_group()
    how.add_argument("--run", metavar="SCRIPT", help="run this Mininet CLI script, then stop")
    how.add_argument("--no-cli", action="store_true", help="hold until SIGTERM or Ctrl-C")
    how.add_argument("--check", action="store_true", help="only read FILE and say what it holds")
    up.add_argument("--prefix", help="put this in front of every name (instead of the file's)")
    up.add_argument("--of-port", type=int, default=6653, help="the controller's OpenFlow port")
    up.add_argument("--rest-port", type=int, default=8080, help="the controller's REST port")
    down = actions.add_parser("down", help="remove everything `topo up` made, even after a crash")
    for p in (up, down):
        p.add_argument(
            "--state",
            metavar="FILE",
            help="the file that records what was made (default: run/topo.json)",
        )
    t.set_defaults(func=cmd_topo)


def parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `netserv` command."""
    p = argparse.ArgumentParser(prog="netserv", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("controller", help="run the Ryu controller with the NetServ app")
    controller_entry.add_arguments(c)
    c.set_defaults(func=cmd_controller)

    g = sub.add_parser("agent", help="run a node agent on a bridge port (one per node)")
    agent_main.add_arguments(g)
    g.set_defaults(func=cmd_agent)

    d = sub.add_parser("demo", help="build h1,h2,h3 on a NetServ node and show a service at work")
    d.add_argument("--packets", type=int, default=200, help="frames on the served flow (N)")
    d.add_argument("--others", type=int, default=300, help="frames on other flows (M)")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser(
        "bench",
        help="benchmarks: mlffr (the default: Linux vs OVS vs OVS + a null detour) "
        "or agent (the node agent alone against a bare reflector) or control (setups and "
        "10,000 sessions on one node)",
        description="`netserv bench [OPTIONS]` is `netserv bench mlffr [OPTIONS]`.",
    )
    _mlffr_arguments(b)
    kinds = b.add_subparsers(dest="bench", metavar="{mlffr,agent,control}")
    _mlffr_arguments(kinds.add_parser("mlffr", help="measure MLFFR: Linux vs OVS vs OVS + null"))
    ag = kinds.add_parser("agent", help="the agent's packet loop against a bare batched reflector")
    ag.add_argument("--repeats", type=int, default=7, help="trials per path, interleaved")
    ag.add_argument("--seconds", type=float, default=3.0, help="measured window of a trial")
    ag.add_argument("--warmup", type=float, default=0.5, help="seconds sent before the window")
    ag.add_argument("--size", type=int, default=64, help="frame size as modules see it (60..1514)")
    ag.add_argument("--paths", type=_csv, default=list(AGENT_PATHS), help="paths to measure")
    ag.add_argument(
        "--pin", action="store_true", help="pin the generator to CPU 0, the path to CPU 1"
    )
    ag.add_argument("--quick", action="store_true", help="2 repeats of 1 s: a short run")
    ag.add_argument("--out", default=str(REPO / "tools/out/agent.json"), help="JSON results")
    ag.add_argument("--markdown", metavar="FILE", help="update the agent section of FILE too")
    ag.set_defaults(func=cmd_bench_agent)
    co = kinds.add_parser("control", help="setups per second, 10,000 sessions on one node")
    co.add_argument("--quick", action="store_true", help="1,000 sessions, 2 repeats")
    co.add_argument("--out", default=str(REPO / "tools/out/control.json"), help="JSON results")
    co.add_argument("--markdown", metavar="FILE", help="update the control section of FILE too")
    co.add_argument(
        "--parts",
        type=_bench_parts,
        default=",".join(CONTROL_PARTS),
        help=f"run only these parts, comma-separated, of {','.join(CONTROL_PARTS)} "
        "(any but empty fills the node; --markdown needs all)",
    )
    co.set_defaults(func=cmd_bench_control)

    s = sub.add_parser("session", help="ask a controller for services on flows")
    s.add_argument("--url", default=DEFAULT_URL, help="controller REST URL")
    s.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the token sessions are asked for with (default: the operator's, "
        f"{keyfiles.TOKEN_FILE} in the secrets folder: ${keyfiles.ENV}, else run/secrets)",
    )
    ss = s.add_subparsers(dest="action", required=True)
    up = ss.add_parser("setup", help="request a service module on a flow")
    up.add_argument(
        "--module",
        action="append",
        required=True,
        metavar="NAME[@VERSION]",
        help="service module, at a version if given (else the module path's, else the "
        "repository's newest); repeat for a chain, run in the order given",
    )
    up.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="FIELD=VALUE",
        help="OXM field, e.g. udp_dst=9000 (repeat)",
    )
    up.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="module parameter (MODULE.NAME=VALUE in a chain); repeat",
    )
    up.add_argument(
        "--lifetime", type=int, help="seconds until the session ends unless refreshed (60)"
    )
    up.add_argument("--node", help="datapath id of the node, in hex; needed when several are ready")
    ss.add_parser("list", help="list every session")
    for name, doc in (
        ("show", "show one session"),
        ("stats", "show a session with its modules' counters"),
        ("refresh", "extend a session's lifetime"),
        ("upgrade", "move a module of a session to another version, its state kept"),
        ("teardown", "end a session and show its final counters"),
    ):
        one = ss.add_parser(name, help=doc)
        one.add_argument("id", type=int, help="the session's id")
        if name == "refresh":
            one.add_argument(
                "--lifetime", type=int, help="new lifetime in seconds (default: the current one)"
            )
        if name == "upgrade":
            one.add_argument(
                "--module", help="the module to upgrade (default: the chain's only one)"
            )
            one.add_argument(
                "--version",
                help="the version to run (default: the one a new session gets)",
            )
    s.set_defaults(func=cmd_session)

    sg = sub.add_parser(
        "signal",
        help="ask for services on-path, from a flow's endpoint (signaling toward its far end)",
        description=signal_cli.__doc__.split("\n\n")[0] if signal_cli.__doc__ else None,
    )
    signal_cli.add_arguments(sg)
    sg.set_defaults(func=signal_cli.run)

    n = sub.add_parser("nodes", help="list the switches and node agents the controller knows")
    n.add_argument("--url", default=DEFAULT_URL, help="controller REST URL")
    n.set_defaults(func=lambda a: _print(NetServClient(a.url).nodes()) or 0)
    m = sub.add_parser(
        "modules",
        help="list the service modules a controller offers, or with --module-path, "
        "those found in these folders",
    )
    m.add_argument("--url", default=DEFAULT_URL, help="controller REST URL")
    m.add_argument("--module-path", action="append", metavar="DIRS", help=MODULE_PATH_HELP)
    m.set_defaults(func=cmd_modules)
    module_cli.add_parser(sub)
    trace_cli.add_parser(sub)
    _topo_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "controller":  # Ryu sets up its own logging
        agent_main.configure_logging(args.verbose)
    try:
        return args.func(args)
    except ClientError as exc:
        print(f"netserv: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
