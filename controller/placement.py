"""Which NetServ nodes serve a request: its node selection, applied to the ready NetServ
nodes on the flow's path. Pure: it reads the network, changes nothing."""

from __future__ import annotations

from controller.errors import (
    InvalidRequest,
    NetServError,
    NoNetServNode,
    Unavailable,
    UnknownNode,
)
from controller.network import Network
from controller.requests import format_dpid
from signaling.values import NodeSelection
from signaling.wire import NodeMode


def on_path(network: Network, ends: tuple[str, str] | None) -> list[int]:
    """Return the ready NetServ nodes on the path between `ends` (source, destination),
    in the flow's direction; with no ends, every ready NetServ node, by datapath id.

    When the path is not known (a host not located yet, no links between them, an
    address the topology does not locate) and one NetServ node alone is ready, it is
    that node; otherwise raise what the topology raised (Unavailable, InvalidRequest).
    """
    ready = network.netserv_nodes(sorted(network.agents))
    if ends is None:
        return ready
    try:
        return network.netserv_nodes(network.path_nodes(*ends))
    except NetServError:
        if len(ready) == 1:
            return ready
        raise


def choose(
    selection: NodeSelection, nodes: list[int], ends: tuple[str, str] | None
) -> tuple[int, ...]:
    """Return the nodes of `nodes` (on the path, in order) that `selection` picks.

    Raise NoNetServNode when there are none, InvalidRequest when first or last is
    asked without a path (`ends` None) and several nodes are ready: which is first?
    """
    if not nodes:
        where = f" on the path from {ends[0]} to {ends[1]}" if ends else ""
        raise NoNetServNode(
            f"no NetServ node is ready{where} (no agent registered on a connected switch)"
        )
    if selection.mode is NodeMode.ALL:
        return tuple(nodes)
    if ends is None and len(nodes) > 1:
        names = [format_dpid(d) for d in nodes]
        raise InvalidRequest(
            f"several NetServ nodes are ready {names}: name one with 'node', or give the "
            "flow's source and destination addresses so the nodes on its path are chosen"
        )
    return (nodes[0],) if selection.mode is NodeMode.FIRST else (nodes[-1],)


def select_nodes(
    network: Network, selection: NodeSelection, ends: tuple[str, str] | None
) -> tuple[int, ...]:
    """Return the nodes `selection` picks on the path between `ends`, in path order
    (named ones as named).

    Raise UnknownNode for a named node the controller does not know, Unavailable for
    one that is not ready, and what `on_path` and `choose` raise.
    """
    if selection.mode is not NodeMode.NAMED:
        return choose(selection, on_path(network, ends), ends)
    for dpid in selection.dpids:
        if dpid not in network.agents:
            raise UnknownNode(f"no NetServ node {format_dpid(dpid)}")
        if not network.ready(dpid):
            raise Unavailable(f"node {format_dpid(dpid)} is not ready (switch or agent down)")
    return selection.dpids
