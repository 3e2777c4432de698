"""Topologies as pure data: `build()` only adds hosts, switches and links.

Every name is derived from an optional `prefix`, so several networks (for
example parallel tests) can exist at once without clashing on bridge or
interface names. Hosts get 10.0.0.i/8 and 00:00:00:00:00:0i-style MACs in
order; switch i gets dpid i. A switch that is a NetServ node carries
`netserv=True` in its params; `topo.node.NetServSwitch` reads it. With `mtu`
given, every link's two interfaces get that MTU (jumbo frames, for example).

This file imports only Mininet and the standard library so that
`mn --custom topo/topos.py --topo single,3` can load it by path; run so, it also
gives mn its `switches`: `netserv` (also mn's default), a NetServ node with its agent,
and its `tests`: `netserv`, which waits until the nodes are ready (`topo/mn.py`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from mininet.link import Intf
from mininet.topo import Topo
from mininet.util import ipAdd, macColonHex

# Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME_LEN = 15
AGENT_PORT_SUFFIX = "-ns"
AGENT_IFACE_SUFFIX = "-na"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_]*")
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off", "")


def host_intf_name(host: str) -> str:
    """Return the name of a host's only interface (Mininet's default intf)."""
    return f"{host}-eth0"


def switch_intf_name(switch: str, port: int) -> str:
    """Return the name of the interface behind OpenFlow port `port` of `switch`."""
    return f"{switch}-eth{port}"


def dpid_str(index: int) -> str:
    """Return the datapath id of switch number `index` as 16 hex digits."""
    return f"{index:016x}"


def check_ifname(name: str) -> str:
    """Return `name` unchanged if it is a valid Linux interface name.

    Raises ValueError (saying which name and why) when it is too long.
    """
    if not name or len(name) > MAX_IFNAME_LEN:
        raise ValueError(
            f"interface or bridge name {name!r} is {len(name)} characters; Linux allows "
            f"1 to {MAX_IFNAME_LEN}: use a shorter prefix or fewer hosts/switches"
        )
    return name


class MtuIntf(Intf):
    """A Mininet interface that takes an `mtu` link parameter (Mininet's own ignores it)."""

    def config(self, mtu: int | None = None, **params: object) -> dict[str, object]:
        """Configure as Intf does, then set the MTU; return the results by parameter."""
        results = super().config(**params)
        if mtu is not None:
            err = self.cmd("ip", "link", "set", self.name, "mtu", str(mtu))
            if err.strip():
                raise ValueError(f"cannot set MTU {mtu} on {self.name}: {err.strip()}")
            results["mtu"] = mtu
        return results


class NetServTopo(Topo):
    """Base class: naming, addressing and validation shared by the NetServ topologies."""

    def _init_naming(self, prefix: str, mtu: int | str | None = None) -> None:
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must contain only letters, digits and '_'")
        self.prefix = prefix
        if mtu is not None and not 68 <= int(mtu) <= 65535:
            raise ValueError(f"mtu must be 68..65535, got {mtu}")
        self.link_mtu = None if mtu is None else int(mtu)

    def _link_opts(self) -> dict[str, object]:
        return {} if self.link_mtu is None else {"intf": MtuIntf, "mtu": self.link_mtu}

    def _add_netserv_switch(self, index: int, netserv: bool | str) -> str:
        netserv = _flag(netserv)
        name = f"{self.prefix}s{index}"
        check_ifname(name)
        if netserv:
            check_ifname(name + AGENT_PORT_SUFFIX)
            check_ifname(name + AGENT_IFACE_SUFFIX)
        return self.addSwitch(name, dpid=dpid_str(index), netserv=netserv)

    def _add_numbered_host(self, index: int) -> str:
        name = f"{self.prefix}h{index}"
        check_ifname(host_intf_name(name))
        return self.addHost(name, ip=f"{ipAdd(index)}/8", mac=macColonHex(index))

    def _add_host_link(self, host: str, switch: str, port: int) -> None:
        self.addLink(
            host,
            switch,
            port1=0,
            port2=port,
            intfName1=host_intf_name(host),
            intfName2=check_ifname(switch_intf_name(switch, port)),
            **self._link_opts(),
        )

    def _add_switch_link(self, sw1: str, port1: int, sw2: str, port2: int) -> None:
        self.addLink(
            sw1,
            sw2,
            port1=port1,
            port2=port2,
            intfName1=check_ifname(switch_intf_name(sw1, port1)),
            intfName2=check_ifname(switch_intf_name(sw2, port2)),
            **self._link_opts(),
        )


class SingleSwitchTopo(NetServTopo):
    """One switch `{prefix}s1` with hosts `{prefix}h1..hk` on ports 1..k."""

    def build(
        self, k: int = 3, netserv: bool | str = True, prefix: str = "", mtu: int | None = None
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self._init_naming(prefix, mtu)
        switch = self._add_netserv_switch(1, netserv)
        for i in range(1, k + 1):
            self._add_host_link(self._add_numbered_host(i), switch, port=i)


class LinearTopo(NetServTopo):
    """A chain of switches `{prefix}s1..sn` with k hosts on each.

    Hosts are numbered across the chain (s1 has h1..hk, s2 has hk+1..h2k, ...)
    and sit on switch ports 1..k. Switch i reaches switch i-1 on port k+1 and
    switch i+1 on the next port. `netserv` is True (every switch is a NetServ
    node), False (none) or an iterable of 1-based switch indices (from
    `mn --topo`: "true", "false", or indices joined by "+", e.g. "1+3").
    """

    def build(
        self,
        n: int = 2,
        k: int = 1,
        netserv: bool | int | str | Iterable[int] = True,
        prefix: str = "",
        mtu: int | None = None,
    ) -> None:
        if n < 1 or k < 0:
            raise ValueError(f"need n >= 1 and k >= 0, got n={n}, k={k}")
        self._init_naming(prefix, mtu)
        marked = _netserv_indices(netserv, n)
        switches = [self._add_netserv_switch(i, i in marked) for i in range(1, n + 1)]
        host_index = 1
        for switch in switches:
            for port in range(1, k + 1):
                self._add_host_link(self._add_numbered_host(host_index), switch, port)
                host_index += 1
        for i in range(1, n):
            left_port = k + 1 if i == 1 else k + 2
            self._add_switch_link(switches[i - 1], left_port, switches[i], k + 1)


class TreeTopo(NetServTopo):
    """A tree of switches `depth` levels deep, `fanout` below each, and `fanout` hosts
    below each switch of the last level, numbered as mn's `tree` numbers them: depth
    first, `{prefix}s1` the root. A switch reaches what is below it on ports 1..fanout
    and the switch above on the next port. `netserv` as for LinearTopo."""

    def build(
        self,
        depth: int = 2,
        fanout: int = 2,
        netserv: bool | int | str | Iterable[int] = True,
        prefix: str = "",
        mtu: int | None = None,
    ) -> None:
        if depth < 1 or fanout < 1:
            raise ValueError(f"need depth >= 1 and fanout >= 1, got {depth}, {fanout}")
        self._init_naming(prefix, mtu)
        marked = _netserv_indices(netserv, sum(fanout**level for level in range(depth)))
        switch_no, host_no = itertools.count(1), itertools.count(1)

        def grow(level: int) -> str:
            if level == depth:
                return self._add_numbered_host(next(host_no))
            index = next(switch_no)
            switch = self._add_netserv_switch(index, index in marked)
            for port in range(1, fanout + 1):
                below = grow(level + 1)
                if level == depth - 1:
                    self._add_host_link(below, switch, port)
                else:
                    self._add_switch_link(switch, port, below, fanout + 1)
            return switch

        grow(0)


def _netserv_indices(netserv: bool | int | str | Iterable[int], n: int) -> set[int]:
    # `mn --topo linear,2,1,2+3` hands strings and bare ints; code hands bools and lists.
    if isinstance(netserv, str):
        word = netserv.strip().lower()
        if word in _TRUE or word in _FALSE:
            netserv = word in _TRUE
        else:
            netserv = [int(i) for i in word.split("+")]
    if netserv is True:
        return set(range(1, n + 1))
    if netserv is False or netserv is None:
        return set()
    if isinstance(netserv, int):
        netserv = [netserv]
    marked = {int(i) for i in netserv}
    out_of_range = sorted(i for i in marked if not 1 <= i <= n)
    if out_of_range:
        raise ValueError(f"netserv switch indices {out_of_range} are not in 1..{n}")
    return marked


def _flag(value: bool | str) -> bool:
    # `mn --topo single,3,False` passes the string "False", which bool() calls true.
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def netserv_switches(topo: Topo) -> list[str]:
    """Return the names of the switches of `topo` marked as NetServ nodes, sorted."""
    return [s for s in topo.switches() if topo.nodeInfo(s).get("netserv")]


topos = {
    "single": SingleSwitchTopo,
    "linear": LinearTopo,
    "tree": TreeTopo,
    "netserv_single": SingleSwitchTopo,
    "netserv_linear": LinearTopo,
    "netserv_tree": TreeTopo,
}


def _mn_custom() -> tuple[dict[str, type], dict[str, object]]:
    """Return the switch classes and tests for `mn`, which runs this file by path (no
    package, no `__file__`): the repository, this file's folder's parent, goes on
    sys.path first."""
    import sys
    from pathlib import Path

    here = Path(sys._getframe(1).f_code.co_filename).resolve()
    repo = str(here.parent.parent)
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from topo.mn import MnNetServSwitch, ready_test

    # "default" too: `mn --custom topo/topos.py --topo netserv_linear,3 --controller
    # remote` then gives NetServ nodes without naming the switch.
    return {"netserv": MnNetServSwitch, "default": MnNetServSwitch}, {"netserv": ready_test}


if "__file__" not in globals():  # run by `mn --custom`, which gives the file no name
    switches, tests = _mn_custom()
