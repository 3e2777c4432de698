"""How a userspace (netdev) bridge reads its veth ports, and what happens when one fails.

Measured on this machine (`BENCHMARKS.md`): plain AF_PACKET ports with the default
~200 KiB receive buffer drop bursts, at any rate, long before the switch's thread is
busy; the same ports with a 4 MiB buffer (net.core.rmem_default when the port is
added) forward more than twice as much loss-free; AF_XDP ports (`afxdp-nonpmd`, no
polling thread: the switch's main thread serves them) more still. AF_XDP needs an OVS
build that has it and an XDP program attached to each veth, which fails e.g. for an MTU
too large for native XDP; a port where it fails is put back to a system port with the
large buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SYSTEM = "system"  # AF_PACKET socket, receive buffer PORT_RCVBUF
AFXDP = "afxdp"  # OVS's "afxdp-nonpmd" interface type
AFPACKET = "afpacket"  # a system port with the machine's default buffer: as before, to compare
PORT_TYPES = (SYSTEM, AFXDP, AFPACKET)
DEFAULT_PORT_TYPE = SYSTEM
OVS_AFXDP_TYPE = "afxdp-nonpmd"
# The userspace datapath reads each system port through its own packet socket, sized
# by net.core.rmem_default when the port is added. 4 MiB holds a burst of ~30,000
# small frames; the default (~200 KiB) dropped 2-4 % of full-rate TCP on the agent's
# port and capped every path's loss-free rate near 45 kpps.
PORT_RCVBUF = 4 << 20


def check_port_type(port_type: str) -> str:
    """Return `port_type` if it is one of PORT_TYPES; raise ValueError otherwise."""
    if port_type not in PORT_TYPES:
        raise ValueError(f"unknown port type {port_type!r}; choose from {', '.join(PORT_TYPES)}")
    return port_type


def ovs_iface_types(text: str) -> set[str]:
    """Return the interface types in `ovs-vsctl get Open_vSwitch . iface_types` output."""
    return {word.strip() for word in text.strip().strip("[]").split(",") if word.strip()}


def planned_type(wanted: str, datapath: str, iface_types: Iterable[str]) -> str:
    """Return the port type to try first: AFXDP only when asked for, on the userspace
    datapath (the kernel datapath reads ports in the kernel), in an OVS build with
    OVS_AFXDP_TYPE; else SYSTEM."""
    if wanted == AFXDP and datapath == "user" and OVS_AFXDP_TYPE in set(iface_types):
        return AFXDP
    return SYSTEM


def afxdp_failed(ovs_type: str, error: str) -> bool:
    """Return True when an interface asked to be AF_XDP did not become one: OVS reports
    an `error` for it (no XDP program attached, no socket) or shows another type."""
    return (
        error.strip().strip('"') not in ("", "[]") or ovs_type.strip().strip('"') != OVS_AFXDP_TYPE
    )


def summary(types: Mapping[str, str]) -> str:
    """Return one word for a bridge's ports: the type they all have, or "mixed (a: t, ...)"
    naming each port's type when they differ ("" for no port)."""
    kinds = set(types.values())
    if len(kinds) <= 1:
        return next(iter(kinds), "")
    return "mixed (" + ", ".join(f"{name}: {kind}" for name, kind in sorted(types.items())) + ")"
