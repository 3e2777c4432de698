"""The switch `mn --custom topo/topos.py` uses: a NetServ node whose agent registers with
the controller's REST API, for Mininet's own command line."""

from __future__ import annotations

import os

from signaling.client import DEFAULT_URL
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
