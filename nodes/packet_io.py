"""Packet I/O on the agent's port: an AF_PACKET socket that yields (tag, frame) pairs.

The switch pushes an 802.1Q tag naming the session. The kernel takes such a tag off
the frame on receive and hands it over as PACKET_AUXDATA, so the frame the modules see
is the flow's own frame, and what goes back to the switch carries no tag.

The interface is batch-shaped (`recv_batch` / `send_batch`) so a ring-based or
recvmmsg-based implementation can replace this one without touching the packet loop.
"""

from __future__ import annotations

import socket
import struct
import threading

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # else an ETH_P_ALL socket also reads its own transmissions
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 1 << 4
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_STATS = struct.Struct("II")  # struct tpacket_stats: packets, drops
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")
# The largest frame a veth carries: its largest MTU, an Ethernet header and two tags.
SNAPLEN = 65535 + 14 + 2 * 4
RCVBUF = 4 << 20


class PacketSocket:
    """A raw socket bound to one interface, reading at most one frame per call.

    `too_big` counts frames larger than the receive buffer (`snaplen`), which are
    dropped rather than handed on cut short; `queue_dropped()` the frames the kernel
    dropped because the socket's receive queue (`rcvbuf` bytes) was full.
    """

    def __init__(
        self, iface: str, timeout: float = 0.5, snaplen: int = SNAPLEN, rcvbuf: int = RCVBUF
    ) -> None:
        self.iface = iface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            try:  # root may exceed rmem_max: a burst of small frames overflows the default
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((iface, ETH_P_ALL))
            self.sock.settimeout(timeout)
        except OSError:
            self.sock.close()
            raise
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._cmsg = socket.CMSG_SPACE(_AUX.size)
        self.too_big = 0
        self._drops = 0
        self._drops_lock = threading.Lock()  # reading the kernel's count resets it

    def recv_batch(self) -> list[tuple[int | None, memoryview]]:
        """Return the frames that arrived, each with its tag or None.

        Empty on time-out, and when the frame was too big (counted in `too_big`).

        The memoryviews point into a buffer reused by the next call.
        """
        try:
            n, ancdata, flags, _addr = self.sock.recvmsg_into([self._buf], self._cmsg)
        except TimeoutError:
            return []
        if flags & socket.MSG_TRUNC:
            self.too_big += 1
            return []
        tag = None
        for level, kind, data in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
                status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    tag = tci & 0x0FFF
        frame = self._view[:n]
        if tag is None and n >= 18 and bytes(frame[12:14]) in VLAN_TPIDS:
            # The tag stayed in the data (no VLAN offload on this path): take it out here.
            tag = int.from_bytes(frame[14:16], "big") & 0x0FFF
            self._buf[12 : n - 4] = self._buf[16:n]
            frame = self._view[: n - 4]
        return [(tag, frame)]

    def send_batch(self, frames: list[memoryview | bytes]) -> int:
        """Send `frames` in order until one fails; return how many were sent.

        The frames after the first failure are not sent (as sendmmsg(2) would leave
        them): a full transmit queue drops them, as a switch port would.
        """
        sent = 0
        for frame in frames:
            try:
                self.sock.send(frame)
            except OSError:
                break
            sent += 1
        return sent

    def queue_dropped(self) -> int:
        """Return how many frames the kernel dropped for a full receive queue, in all."""
        with self._drops_lock:
            try:
                raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
            except OSError:  # closed: nothing can have been dropped since the last read
                return self._drops
            self._drops += _STATS.unpack(raw)[1]
            return self._drops

    def close(self) -> None:
        self.sock.close()
