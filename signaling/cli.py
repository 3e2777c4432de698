"""`netserv signal`: ask for a service on a flow on-path, as the flow's endpoint.

    netserv signal setup --requester alice --key-file alice-1.key \\
        --src 10.0.0.1 --dst 10.0.0.2 --protocol udp --dst-port 9000 --module counter
    netserv signal setup ... --keep          # refresh while it runs; TEARDOWN on exit
    netserv signal refresh --session ID ...  # the same description, a new lifetime
    netserv signal teardown --session ID --requester alice --key-file alice-1.key --to ADDR
    netserv signal probe --requester alice --key-file alice-1.key --dst 10.0.0.2
    netserv signal keygen --out alice-1.key  # 32 random bytes, the policy's `file:` key

It runs on the requesting host (in its network namespace), and sends toward the flow's
far endpoint (`--to`, by default the flow's `--dst` host), so the first NetServ switch
on the way hands the request to its controller. Also the module-chain helpers shared
with `netserv session` (`pairs`, `chain`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from signaling import wire
from signaling.client_udp import SignalingClient
from signaling.dpid import format_dpid, parse_dpid
from signaling.errors import ErrorCode, SignalingUsageError
from signaling.exchange import Exchange, ExchangeState
from signaling.keyfile import KeyFileError, make_key_file, read_key
from signaling.messages import ErrorReply
from signaling.session import Outcome, RequesterSession, SessionState
from signaling.values import Description, FlowFilter, ModuleRef, NodeSelection, PortRange

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}
DEFAULT_LIFETIME = 60


# --- values on the command line -----------------------------------------------------------
def _value(text: str) -> object:
    """Return `text` as JSON when it parses (numbers, true, lists), else as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items: list[str] | None, what: str) -> dict[str, object]:
    """Return NAME=VALUE items as a dict, each value read as JSON when it parses."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"netserv: {what} {item!r} must look like name=value")
        out[key] = _value(value)
    return out


def chain(modules: list[str], params: dict[str, object]) -> list[dict[str, object]]:
    """Return the `modules` list of a request: each module with its parameters.

    A module is NAME or NAME@VERSION. With one module, parameters are plain names; with
    a chain, each names its module (`counter.log_every=5`), since two modules may take
    parameters of the same name.
    """
    versions = [module.partition("@")[2] for module in modules]
    modules = [module.partition("@")[0] for module in modules]
    per_module: dict[str, dict[str, object]] = {name: {} for name in modules}
    for key, value in params.items():
        name, dot, param = key.rpartition(".")
        if not dot and len(modules) == 1:
            name, param = modules[0], key
        if name not in per_module:
            raise SystemExit(
                f"netserv: parameter {key!r} names no module of the chain {modules}"
                + ("; write it as MODULE.NAME=VALUE" if not dot else "")
            )
        per_module[name][param] = value
    return [
        {"name": name, "params": per_module[name]} | ({"version": version} if version else {})
        for name, version in zip(modules, versions, strict=True)
    ]


def _ports(text: str | None) -> PortRange | None:
    if text is None:
        return None
    low, _, high = text.partition("-")
    try:
        return PortRange(int(low), int(high or low))
    except ValueError:
        raise SystemExit(f"netserv: {text!r} is not a port or a range LOW-HIGH") from None


def _protocol(text: str | None) -> int | None:
    if text is None:
        return None
    if text.lower() in PROTOCOLS:
        return PROTOCOLS[text.lower()]
    if text.isdigit():
        return int(text)
    raise SystemExit(f"netserv: protocol {text!r}: give {', '.join(PROTOCOLS)} or a number")


def flow_filter(a: argparse.Namespace) -> FlowFilter:
    """Return the flow filter the options describe."""
    return FlowFilter(
        src=a.src,
        dst=a.dst,
        protocol=_protocol(a.protocol),
        src_ports=_ports(a.src_port),
        dst_ports=_ports(a.dst_port),
    )


def node_selection(text: str) -> NodeSelection:
    """Return the selection `text` names: first, last, every, or DPID[,DPID...]."""
    if text in ("first", "last", "every"):
        return getattr(NodeSelection, text)()
    try:
        return NodeSelection.named(*(parse_dpid(d) for d in text.split(",")))
    except ValueError as exc:
        raise SystemExit(f"netserv: --nodes: {exc}") from None


def description(a: argparse.Namespace) -> Description:
    """Return the session description the options describe."""
    modules = chain(a.module, pairs(a.param, "parameter"))
    if any("version" in m for m in modules):
        raise SystemExit("netserv: signaling names modules without a version (NAME, not NAME@V)")
    return Description(
        a.requester,
        flow_filter(a),
        [ModuleRef(m["name"], m["params"]) for m in modules],  # type: ignore[arg-type]
        a.lifetime,
        node_selection(a.nodes or "first"),
    )


def far_end(a: argparse.Namespace) -> str:
    """Return where requests go: `--to`, else the flow's destination host."""
    if a.to:
        return a.to
    dst = getattr(a, "dst", None)
    net = ipaddress.ip_network(dst) if dst else None
    if net is None or net.num_addresses != 1:
        raise SystemExit(
            "netserv: give --to, the flow's far endpoint (the --dst host is used when --dst "
            "names one host)"
        )
    return str(net.network_address)


def _session_id(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        value = 0
    if not 0 < value <= wire.U64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a session id (1 to 16 hex digits)")
    return value


# --- output --------------------------------------------------------------------------------
def _emit(obj: dict[str, Any], compact: bool = False) -> None:
    print(json.dumps(obj) if compact else json.dumps(obj, indent=2), flush=True)


def _session_view(session: RequesterSession) -> dict[str, Any]:
    return {
        "session": f"{session.session_id:016x}",
        "requester": session.description.requester,
        "lifetime": session.lifetime,
        "nodes": [format_dpid(d) for d in session.nodes],
    }


def _refusal(error: ErrorReply) -> str:
    code = error.code
    label = f"{int(code)} {code.name}" if isinstance(code, ErrorCode) else str(code)
    return f"netserv: refused: {label}: {error.reason}"


def _no_answer(client: SignalingClient) -> str:
    return f"netserv: no answer from {client.to[0]} port {client.to[1]}"


def _closed(session: RequesterSession, client: SignalingClient) -> int:
    """Report why `session` closed without being asked to; return the exit code."""
    if session.outcome is Outcome.REFUSED and session.error is not None:
        print(_refusal(session.error), file=sys.stderr)
    elif session.outcome is Outcome.EXPIRED:
        print("netserv: the session expired: its refreshes were not answered", file=sys.stderr)
    else:
        print(_no_answer(client), file=sys.stderr)
    return 1


# --- the actions -----------------------------------------------------------------------------
def _setup(client: SignalingClient, a: argparse.Namespace) -> int:
    if a.keep:
        return _keep(client, a)
    session = client.setup(description(a), a.session)
    if session.state is not SessionState.ESTABLISHED:
        return _closed(session, client)
    _emit(_session_view(session))
    return 0


def _keep(client: SignalingClient, a: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    session = client.setup(description(a), a.session, keep=True, stopped=stop.is_set)
    if session.state is SessionState.ESTABLISHED:
        _emit({"event": "established"} | _session_view(session), compact=True)
        refreshed: Callable[[RequesterSession], None] = lambda s: _emit(  # noqa: E731
            {"event": "refreshed"} | _session_view(s), compact=True
        )
        client.keep(session, stop.is_set, refreshed)
    if session.state is SessionState.CLOSED:
        return _closed(session, client)
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second one ends it at once
        signal.signal(sig, signal.SIG_DFL)
    client.close_session(session)
    if session.outcome is Outcome.TORN_DOWN:
        _emit({"event": "torn down", "session": f"{session.session_id:016x}"}, compact=True)
        return 0
    return _closed(session, client)


def _answered(exchange: Exchange, client: SignalingClient, view: dict[str, Any]) -> int:
    answer = exchange.answer
    if exchange.state is ExchangeState.NO_ANSWER or answer is None:
        print(_no_answer(client), file=sys.stderr)
        return 1
    if isinstance(answer, ErrorReply):
        print(_refusal(answer), file=sys.stderr)
        return 1
    if getattr(answer, "lifetime", None) is not None:
        view |= {"lifetime": answer.lifetime, "nodes": [format_dpid(d) for d in answer.nodes]}
    _emit(view)
    return 0


def _refresh(client: SignalingClient, a: argparse.Namespace) -> int:
    exchange = client.refresh(description(a), a.session)
    view = {"session": f"{a.session:016x}", "requester": a.requester}
    return _answered(exchange, client, view)


def _teardown(client: SignalingClient, a: argparse.Namespace) -> int:
    exchange = client.teardown(a.requester, a.session)
    view = {"session": f"{a.session:016x}", "requester": a.requester, "ended": "teardown"}
    return _answered(exchange, client, view)


def _probe(client: SignalingClient, a: argparse.Namespace) -> int:
    probe = client.probe(a.requester, flow_filter(a), node_selection(a.nodes or "every"))
    if probe.state is ExchangeState.REFUSED and probe.error is not None:
        print(_refusal(probe.error), file=sys.stderr)
        return 1
    if probe.response is None:
        print(_no_answer(client), file=sys.stderr)
        return 1
    nodes = [
        {
            "dpid": format_dpid(n.dpid),
            "modules": list(n.modules),
            "load": n.load / wire.MAX_LOAD,
            "sessions": n.sessions,
        }
        for n in probe.response.nodes
    ]
    _emit({"nodes": nodes, "truncated": probe.response.truncated})
    return 0


ACTIONS = {"setup": _setup, "refresh": _refresh, "teardown": _teardown, "probe": _probe}


def run(a: argparse.Namespace) -> int:
    """Run `netserv signal ACTION`; return the exit code."""
    try:
        if a.action == "keygen":
            make_key_file(a.out)
            _emit({"key_file": a.out})
            return 0
        key = read_key(a.key_file, a.key_id) if a.key_file else None
        with SignalingClient(far_end(a), key, a.port) as client:
            return ACTIONS[a.action](client, a)
    except (KeyFileError, SignalingUsageError, ValueError) as exc:
        raise SystemExit(f"netserv: {exc}") from None


# --- the command line ---------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add `netserv signal`'s actions and options to `p`; `run` takes what they parse into."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--requester", required=True, help="who asks, as the controller's policy names it"
    )
    common.add_argument(
        "--key-file",
        metavar="FILE",
        help="the requester's secret key, to sign with: the file the controller's policy"
        " names for it (netserv signal keygen makes one)",
    )
    common.add_argument(
        "--key-id", type=int, default=1, help="the key's id in the policy (%(default)s)"
    )
    common.add_argument(
        "--to",
        metavar="ADDR",
        help="where the request goes: the flow's far endpoint (default: the --dst host)",
    )
    common.add_argument(
        "--port", type=int, default=wire.SIGNALING_PORT, help="signaling UDP port (%(default)s)"
    )
    flow = argparse.ArgumentParser(add_help=False)
    flow.add_argument("--src", metavar="ADDR[/LEN]", help="the flow's source address or prefix")
    flow.add_argument("--dst", metavar="ADDR[/LEN]", help="its destination address or prefix")
    flow.add_argument("--protocol", help="udp, tcp, sctp, icmp or an IP protocol number")
    flow.add_argument("--src-port", metavar="PORT", help="source port (the protocol's)")
    flow.add_argument("--dst-port", metavar="PORT", help="destination port")
    flow.add_argument(
        "--nodes",
        metavar="WHICH",
        help="NetServ nodes on the flow's path: first, last, every, or DPID[,DPID...] "
        "(setup: first; probe: every)",
    )
    service = argparse.ArgumentParser(add_help=False)
    service.add_argument(
        "--module",
        action="append",
        required=True,
        help="service module; repeat for a chain, run in the order given",
    )
    service.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="module parameter (MODULE.NAME=VALUE in a chain); repeat",
    )
    service.add_argument(
        "--lifetime",
        type=int,
        default=DEFAULT_LIFETIME,
        help="seconds the session lives unless refreshed (%(default)s)",
    )
    session = argparse.ArgumentParser(add_help=False)
    session.add_argument(
        "--session", type=_session_id, required=True, metavar="ID", help="the session id (hex)"
    )

    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser(
        "setup", parents=[common, flow, service], help="ask for a service on a flow"
    )
    up.add_argument(
        "--session", type=_session_id, metavar="ID", help="the session id (hex; default random)"
    )
    up.add_argument(
        "--keep",
        action="store_true",
        help="keep the session alive while this runs (printing a JSON line per event); "
        "tear it down on exit, Ctrl-C or SIGTERM",
    )
    sub.add_parser(
        "refresh",
        parents=[common, flow, service, session],
        help="give a session a new lifetime: its whole description again",
    )
    sub.add_parser("teardown", parents=[common, session], help="end a session")
    sub.add_parser(
        "probe", parents=[common, flow], help="what the NetServ nodes on a flow's path offer"
    )
    keygen = sub.add_parser(
        "keygen", help="make a requester's key file: 32 random bytes, readable by you only"
    )
    keygen.add_argument("--out", required=True, metavar="FILE", help="the new key file")
