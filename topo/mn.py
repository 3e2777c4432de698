"""What `mn --custom topo/topos.py` gets for Mininet's own command line: the switch, a
NetServ node whose agent registers with the controller's REST API, and the test
`--test netserv`, which waits until the nodes are ready."""

from __future__ import annotations

import json
import os
import time
import urllib.request

from mininet.log import info
from mininet.net import Mininet

from signaling.client import DEFAULT_URL
from topo.controller import wait_ready
from topo.net import wait_connected
from topo.node import NetServSwitch

URL_ENV = "NETSERV_URL"


class MnNetServSwitch(NetServSwitch):
    """`mn --switch netserv[,rest=URL]` (and mn's default switch with our custom file): a
    NetServ node, with its agent when the topology marks it one (`netserv` in its
    params), registering at `rest` (default $NETSERV_URL, else netserv controller's
    http://127.0.0.1:8080). Module path and secrets are the environment's
    ($NETSERV_MODULE_PATH, $NETSERV_SECRETS), as `netserv controller` reads them."""

    def __init__(self, name: str, rest: str | None = None, **params: object) -> None:
        url = rest or os.environ.get(URL_ENV) or DEFAULT_URL
        super().__init__(name, agent_url=url, **params)


def ready_test(net: Mininet, timeout: float | str = 30.0) -> None:
    """`mn --test netserv[,TIMEOUT]`: wait until every switch is connected, every NetServ
    node is ready at the controller (its agent registered) and the controller knows every
    link between switches; return None. Raise TimeoutError saying what is missing."""
    timeout = float(timeout)  # mn hands its test arguments over as strings
    wait_connected(net, timeout)
    switches = [s for s in net.switches if isinstance(s, MnNetServSwitch)]
    nodes = [s for s in switches if s.netserv]
    urls = {s.agent_url for s in nodes} or {os.environ.get(URL_ENV) or DEFAULT_URL}
    url = urls.pop()
    wait_ready(url, [s.dpid for s in nodes], timeout)
    names = {s.name for s in net.switches}
    wires = sum(1 for k in net.links if k.intf1.node.name in names and k.intf2.node.name in names)
    deadline = time.monotonic() + timeout
    while len(_links(url)) < 2 * wires:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the controller at {url} did not find the {wires} links in time")
        time.sleep(0.2)
    info(f"*** NetServ nodes ready: {' '.join(s.name for s in nodes) or 'none'}\n")


def _links(url: str) -> list[dict]:
    with urllib.request.urlopen(url + "/netserv/topology", timeout=5) as resp:
        return json.load(resp)["links"]
