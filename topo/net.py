"""Making a topology real, and always taking it down again."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from mininet.link import Link
from mininet.net import Mininet
from mininet.node import Host
from mininet.topo import Topo

from controller import keyfiles
from topo.cmd import CommandError, link_exists, run
from topo.controller import module_path_arg
from topo.datapath import detect_datapath
from topo.node import DEFAULT_RUNDIR, NetServController, NetServHost, NetServSwitch
from topo.ports import DEFAULT_PORT_TYPE, check_port_type
from topo.topos import AGENT_IFACE_SUFFIX, AGENT_PORT_SUFFIX

log = logging.getLogger(__name__)


@contextmanager
def netserv_network(
    topo: Topo,
    controller: tuple[str, int] = ("127.0.0.1", 6653),
    rest_url: str | None = None,
    rundir: str | os.PathLike[str] | None = None,
    datapath: str | None = None,
    module_path: str | Iterable[str | os.PathLike[str]] | None = None,
    secrets: str | os.PathLike[str] | None = None,
    agent_args: Sequence[str] = (),
    link: type[Link] = Link,
    port_type: str = DEFAULT_PORT_TYPE,
) -> Iterator[Mininet]:
    """Build and start `topo`; yield the started Mininet; always stop it on exit.

    Switches are NetServSwitch bridges pointed at the OpenFlow controller at
    `controller` (ip, port); NetServ nodes start their agent only when
    `rest_url` (the controller's REST URL) is given, with `module_path` as their
    module search path (None: $NETSERV_MODULE_PATH; see `nodes.bundle.module_path`),
    which should be the controller's too. Each such node gets a key in the secrets
    folder `secrets` (None: $NETSERV_SECRETS, else run/secrets), made before its agent
    starts if it has none; give the controller the same folder. `agent_args` go on
    every agent's command line (`python -m nodes --help`). `link` is Mininet's link class
    (`TCLink` for links with bandwidth or delay). `port_type` is how the switches read
    their ports (`topo.ports`: "system" or "afxdp"). Every host and switch-side
    interface has TX checksum offload and IPv6 off. On exit, even when the body
    or the build raised, exactly what this network made is removed: agents,
    agent veths, links, bridges and host namespaces. Nothing is matched by a
    broad name.
    """
    refuse_name_clashes(topo)
    ip, port = controller
    switch = partial(
        NetServSwitch,
        agent_url=rest_url,
        rundir=rundir if rundir is not None else DEFAULT_RUNDIR,
        datapath=datapath or detect_datapath(),
        module_path=module_path_arg(module_path),
        secrets=keyfiles.secrets_dir(secrets),
        agent_args=agent_args,
        port_type=check_port_type(port_type),
    )
    net = Mininet(
        topo=topo,
        switch=switch,
        host=NetServHost,
        link=link,
        controller=partial(NetServController, ip=ip, port=port),
        autoSetMacs=False,  # the Topo sets deterministic MACs itself
        build=False,  # built below, inside the try, so a failed build is cleaned up too
        cleanup=False,
        waitConnected=False,
    )
    try:
        net.build()
        for host in net.hosts:
            _tune_host(host)
        net.start()
        yield net
    finally:
        _teardown(net)


def planned_names(topo: Topo) -> set[str]:
    """Return every bridge and interface name the root namespace will see for `topo`."""
    names = set()
    for sw in topo.switches():
        names.add(sw)
        if topo.nodeInfo(sw).get("netserv"):
            names |= {sw + AGENT_PORT_SUFFIX, sw + AGENT_IFACE_SUFFIX}
    for _a, _b, info in topo.links(withInfo=True):
        names |= {info.get("intfName1"), info.get("intfName2")} - {None}
    return names


def refuse_name_clashes(topo: Topo) -> None:
    """Raise CommandError naming the bridges and interfaces `topo` needs that exist already.

    Mininet deletes a bridge of the same name before creating its own: refuse instead
    of destroying another network's bridge or interfaces.
    """
    bridges = set((run(["ovs-vsctl", "--timeout=10", "list-br"]) or "").split())
    clashes = sorted(n for n in planned_names(topo) if n in bridges or link_exists(n))
    if clashes:
        raise CommandError(
            f"names this topology needs already exist: {', '.join(clashes)}; another network "
            "is using them (give the topology a prefix) or they are leftovers to remove"
        )


def wait_connected(net: Mininet, timeout: float = 10.0, interval: float = 0.2) -> None:
    """Wait until every switch of `net` is connected to a controller.

    Returns None once all are; raises TimeoutError naming the switches that are
    still not connected after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    pending = list(net.switches)
    while True:
        pending = [s for s in pending if not s.connected()]
        if not pending:
            return
        if time.monotonic() >= deadline:
            targets = ", ".join(f"{c.IP()}:{c.port}" for c in net.controllers)
            names = ", ".join(s.name for s in pending)
            raise TimeoutError(
                f"switches {names} did not connect to the controller at {targets} "
                f"within {timeout:g} s (is it running and speaking OpenFlow 1.3?)"
            )
        time.sleep(interval)


def _tune_host(host: Host) -> None:
    for intf in host.intfList():
        if intf.name == "lo":
            continue
        out, err, code = host.pexec("ethtool", "-K", intf.name, "tx", "off")
        if code != 0:
            raise CommandError(f"`ethtool -K {intf.name} tx off` in {host.name} failed: {err}")


def _teardown(net: Mininet) -> None:
    # Names are recorded before net.stop(), which forgets interfaces as it deletes them.
    ifnames = {intf.name for link in net.links for intf in (link.intf1, link.intf2) if intf}
    bridges = [s.name for s in net.switches if getattr(s, "bridge_made", False)]
    try:
        net.stop()
    except Exception:
        log.exception("mininet stop failed; removing what is left by name")
    finally:
        _sweep(net, bridges, ifnames)


def _sweep(net: Mininet, bridges: list[str], ifnames: set[str]) -> None:
    """Second pass after net.stop(): remove leftovers of this network only."""
    for switch in net.switches:
        if isinstance(switch, NetServSwitch):
            _quietly(switch.stop_agent)
            _quietly(switch.remove_agent_veth)
    # RemoteController.stop() does nothing, so without this its shell would live on
    # until the process exits; terminate() is idempotent for the other nodes.
    for node in (*net.controllers, *net.switches, *net.hosts):
        _quietly(node.terminate)
    for bridge in bridges:
        _quietly(run, ["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", bridge])
    for name in sorted(ifnames | set(bridges)):
        if link_exists(name):
            _quietly(run, ["ip", "link", "del", name])


def _quietly(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("cleanup step %s failed", getattr(fn, "__name__", fn))
