"""Other packet sockets on an interface, read from sock_diag: their drops and buffers.

The userspace datapath of Open vSwitch reads each port through its own AF_PACKET
socket. When that socket's receive queue is full the kernel drops the frame and
counts it on the socket only: the switch's port counters do not show it. On the
agent's port these are frames the agent sent back and the switch never took.
"""

from __future__ import annotations

import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
PACKET_SHOW_INFO, PACKET_SHOW_MEMINFO = 0x1, 0x10
PACKET_DIAG_INFO, PACKET_DIAG_MEMINFO = 0, 6
SK_MEMINFO_RCVBUF, SK_MEMINFO_DROPS = 1, 8
_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr
_REQ = struct.Struct("=BBHII8x")  # struct packet_diag_req
_MSG = struct.Struct("=BBHI8x")  # struct packet_diag_msg
_NLATTR = struct.Struct("=HH")


def packet_socket_drops(ifname: str) -> int | None:
    """Return the drops of every packet socket bound to `ifname`, summed.

    Returns None when the interface, sock_diag or such a socket is missing (the
    kernel datapath and AF_XDP ports have none), so "unknown" never reads as 0.
    """
    drops = [meminfo[SK_MEMINFO_DROPS] for meminfo in _bound_to(ifname)]
    return sum(drops) if drops else None


def packet_socket_rcvbufs(ifname: str) -> list[int]:
    """Return the receive buffer size (bytes) of every packet socket bound to `ifname`."""
    return [meminfo[SK_MEMINFO_RCVBUF] for meminfo in _bound_to(ifname)]


def _bound_to(ifname: str) -> list[tuple[int, ...]]:
    """Return the memory counters (SK_MEMINFO_*) of the packet sockets bound to `ifname`."""
    try:
        ifindex = socket.if_nametoindex(ifname)
        replies = _dump()
    except OSError:
        return []
    return [meminfo for index, meminfo in replies if index == ifindex and meminfo]


def _dump() -> list[tuple[int, tuple[int, ...]]]:
    """Return (ifindex, memory counters) of every packet socket on this host."""
    request = _REQ.pack(socket.AF_PACKET, 0, 0, 0, PACKET_SHOW_INFO | PACKET_SHOW_MEMINFO)
    header = _NLMSG.pack(
        _NLMSG.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    out: list[tuple[int, tuple[int, ...]]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2.0)
        nl.sendto(header + request, (0, 0))
        while True:
            data = nl.recv(1 << 16)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR or length < _NLMSG.size:
                    raise OSError("sock_diag refused the packet socket dump")
                body = data[offset + _NLMSG.size : offset + length]
                out.append(_socket_of(body))
                offset += (length + 3) & ~3


def _socket_of(body: bytes) -> tuple[int, tuple[int, ...]]:
    """Return (ifindex, memory counters) from one packet_diag_msg and its attributes."""
    ifindex, meminfo = 0, ()
    offset = _MSG.size
    while offset + _NLATTR.size <= len(body):
        length, kind = _NLATTR.unpack_from(body, offset)
        if length < _NLATTR.size:
            break
        value = body[offset + _NLATTR.size : offset + length]
        if kind == PACKET_DIAG_INFO and len(value) >= 4:
            ifindex = struct.unpack_from("=I", value)[0]
        elif kind == PACKET_DIAG_MEMINFO and len(value) >= 4 * (SK_MEMINFO_DROPS + 1):
            meminfo = struct.unpack_from(f"={len(value) // 4}I", value)
        offset += (length + 3) & ~3
    return ifindex, meminfo
