"""`netserv trace --match FIELD=VALUE ...`: a flow's way through the switches and agents.

It asks the controller (`GET /netserv/trace`, docs/metrics.md) and prints, for each switch
on the flow's path, the rules the frame matched and, where a session detours it, the
node's agent and the session's modules with their verdicts; `--json` prints the answer.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from controller import keyfiles
from signaling.cli import pairs
from signaling.client import DEFAULT_URL, NetServClient


def _rule(rule: dict[str, Any]) -> str:
    cookie = f"  cookie {rule['cookie']}" if rule.get("cookie") else ""
    served = f"  [session {rule['session']}]" if "session" in rule else ""
    actions = ", ".join(rule["actions"]) or "(none)"
    return (
        f"table {rule['table']}  priority {rule['priority']}{cookie}  "
        f"{rule['match'] or '(any)'}  -> {actions}{served}"
    )


def _pass(lines: list[str], title: str, one: dict[str, Any]) -> None:
    lines.append(f"  {title}:")
    lines += [f"    {_rule(rule)}" for rule in one["rules"]]
    lines.append(f"    datapath actions: {one['datapath_actions'] or '(none)'}")


def _detour(lines: list[str], detour: dict[str, Any]) -> None:
    where = f" at agent {detour['agent']}" if detour.get("agent") else ""
    state = f" ({detour['state']})" if detour.get("state") else ""
    lines.append(f"  detour: session {detour['session']}{state}{where}")
    if detour.get("unavailable"):
        lines.append(f"    modules not known: {detour['unavailable']}")
    for n, module in enumerate(detour.get("modules", []), 1):
        lines.append(
            f"    {n}. {module['name']}: frames {module['frames']}, dropped "
            f"{module['dropped']}, errors {module['errors']}: {module['verdict']}"
        )


def format_trace(trace: dict[str, Any]) -> str:
    """Return a trace (the controller's answer) as lines for people."""
    fields = " ".join(f"{k}={v}" for k, v in trace["match"].items())
    lines = [f"flow {trace['src']} -> {trace['dst']}: {fields}"]
    for hop in trace["hops"]:
        kind = "NetServ node" if hop["netserv"] else "switch"
        bridge = f" (bridge {hop['bridge']})" if hop.get("bridge") else ""
        lines.append(
            f"{kind} {hop['dpid']}{bridge}: in port {hop['in_port']}, out port {hop['out_port']}"
        )
        if not hop["traced"]:
            lines.append("  not traced: its bridge is not in this host's Open vSwitch")
            continue
        passes = hop["passes"]
        _pass(lines, f"from port {passes[0]['in_port']}", passes[0])
        if hop["detour"] is not None:
            _detour(lines, hop["detour"])
        for back in passes[1:]:
            _pass(lines, f"back from the agent (port {back['in_port']})", back)
    return "\n".join(lines)


def cmd_trace(a: argparse.Namespace) -> int:
    trace = NetServClient(a.url, token_file=a.token_file).trace(pairs(a.match, "match field"))
    print(json.dumps(trace, indent=2) if a.json else format_trace(trace))
    return 0


def add_parser(sub: Any) -> None:
    """Add `netserv trace` to the `netserv` command's subparsers."""
    t = sub.add_parser(
        "trace",
        help="show a flow's way: each switch's rules, the agents and modules it passes",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    t.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="FIELD=VALUE",
        help="OXM field as for `netserv session setup`, e.g. udp_dst=9000 (repeat); "
        "ipv4_src and ipv4_dst, the flow's two hosts, are needed",
    )
    t.add_argument("--json", action="store_true", help="print the controller's answer (JSON)")
    t.add_argument("--url", default=DEFAULT_URL, help="controller REST URL")
    t.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"the token to read sessions with (default: the operator's, {keyfiles.TOKEN_FILE} "
        "in the secrets folder)",
    )
    t.set_defaults(func=cmd_trace)
