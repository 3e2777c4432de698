"""Packet I/O on the agent's port: an AF_PACKET socket that yields batches of (tag, frame).

The switch pushes an 802.1Q tag naming the session. The kernel takes such a tag off
the frame on receive and hands it over as PACKET_AUXDATA, so the frame the modules see
is the flow's own frame, and what goes back to the switch carries no tag.

`PacketSocket` is the batched socket (`BatchPacketSocket`: recvmmsg / sendmmsg, one
system call per batch each way) where libc has those calls, else `OneFramePacketSocket`
(one frame per call, Python's socket module only). Both count the same things.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Sequence

from nodes import mmsg

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # else an ETH_P_ALL socket also reads its own transmissions
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 1 << 4
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_STATS = struct.Struct("II")  # struct tpacket_stats: packets, drops
_TIMEVAL = struct.Struct("@ll")
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")
# The largest frame a veth carries: its largest MTU, an Ethernet header and two tags.
SNAPLEN = 65535 + 14 + 2 * 4
RCVBUF = 4 << 20
BATCH = 64  # frames per system call, at most

Batch = list[tuple[int | None, memoryview]]
_SLICE = memoryview.__getitem__
_VLAN_VALID = TP_STATUS_VLAN_VALID.__and__
_VID = (0x0FFF).__and__


class _PacketSocketBase:
    """What both implementations share: the socket's options, its counters, the
    in-data VLAN fallback.

    `too_big` counts frames larger than the receive buffer (`snaplen`), which are
    dropped rather than handed on cut short; `queue_dropped()` the frames the kernel
    dropped because the socket's receive queue (`rcvbuf` bytes) was full.
    """

    def __init__(self, iface: str, rcvbuf: int) -> None:
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
        except OSError:
            self.sock.close()
            raise
        self.too_big = 0
        self._drops = 0
        self._drops_lock = threading.Lock()  # reading the kernel's count resets it

    @staticmethod
    def _untag(buf: memoryview, n: int) -> tuple[int | None, memoryview]:
        """Return (tag, frame) of the `n` bytes in `buf` whose tag stayed in the data.

        The tag is taken out in place (no VLAN offload on this path); a frame without
        one comes back whole with tag None.
        """
        if n >= 18 and bytes(buf[12:14]) in VLAN_TPIDS:
            tag = int.from_bytes(buf[14:16], "big") & 0x0FFF
            buf[12 : n - 4] = buf[16:n]
            return tag, buf[: n - 4]
        return None, buf[:n]

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


class BatchPacketSocket(_PacketSocketBase):
    """A raw socket bound to one interface, moving up to `batch` frames per system call.

    `recv_batch` blocks for at most `timeout` seconds for the first frame (the
    kernel's receive time-out, no poll) and then takes whatever else is queued.
    """

    def __init__(
        self,
        iface: str,
        timeout: float = 0.5,
        snaplen: int = SNAPLEN,
        rcvbuf: int = RCVBUF,
        batch: int = BATCH,
    ) -> None:
        super().__init__(iface, rcvbuf)
        try:
            usec = max(1, round(timeout * 1e6))  # 0 would mean no time-out at all
            tv = _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            cmsg = socket.CMSG_SPACE(_AUX.size)
            self.msgs = mmsg.MsgSlots(batch, snaplen, cmsg)
        except OSError:
            self.sock.close()
            raise
        self.fd = self.sock.fileno()  # `msgs` and `fd`: for a bare loop that needs no tags
        self._aux_len = socket.CMSG_LEN(_AUX.size)
        head = socket.CMSG_LEN(0)
        # (status, vlan_tci) of each slot's auxdata, read for all filled slots at once
        one = f"{head}xI12xH{cmsg - head - 18}x"
        self._aux = [struct.Struct("=" + one * n) for n in range(batch + 1)]
        self._addrs: dict[int, int] = {}  # id(frame handed out) -> its address
        self._held: Batch = []  # keeps those frames, hence their ids, alive

    def recv_batch(self) -> Batch:
        """Return the frames that arrived, each with its tag or None, in arrival order.

        Empty on time-out, and when every frame was too big (counted in `too_big`).
        Each memoryview is its own slot of a buffer that the next call reuses.
        """
        msgs = self.msgs
        n = msgs.recv(self.fd)
        if not n:
            self._held, self._addrs = [], {}
            return []
        meta = msgs.meta(n)
        aux = self._aux[n].unpack_from(msgs.cmsg)
        frames = list(map(_SLICE, msgs.frames, map(slice, meta[2::3])))
        if any(meta[1::3]) or not all(map(_VLAN_VALID, aux[0::2])):
            batch = self._unusual(frames, meta, aux)
        else:  # every frame whole and its tag in the auxdata: no Python loop per frame
            batch = list(zip(map(_VID, aux[1::2]), frames, strict=True))
        self._addrs = dict(zip(map(id, frames), msgs.addresses, strict=False))
        self._held = batch
        return batch

    def _unusual(self, frames: list[memoryview], meta: tuple, aux: tuple) -> Batch:
        """Return the batch of a receive where some frame was cut short (counted, left
        out) or carried its tag in the data (taken out in place)."""
        batch: Batch = []
        for i, frame in enumerate(frames):
            controllen, flags, length = meta[3 * i : 3 * i + 3]
            if flags & mmsg.MSG_TRUNC:
                self.too_big += 1
            elif controllen >= self._aux_len and aux[2 * i] & TP_STATUS_VLAN_VALID:
                batch.append((aux[2 * i + 1] & 0x0FFF, frame))
            else:
                tag, frames[i] = self._untag(self.msgs.frames[i], length)
                batch.append((tag, frames[i]))
        return batch

    def send_batch(self, frames: Sequence[memoryview | bytes]) -> int:
        """Send `frames` in order until one fails; return how many were sent.

        The frames after the first failure are not sent (sendmmsg(2) stops there):
        a full transmit queue drops them, as a switch port would. Frames handed out
        by the last `recv_batch` are sent from where they lie; others are pinned.
        """
        if not frames:
            return 0
        msgs = self.msgs
        addresses = list(map(self._addrs.get, map(id, frames)))
        if None in addresses:
            addresses = [
                a if a is not None else msgs.pin(f) for a, f in zip(addresses, frames, strict=True)
            ]
        return msgs.send(self.fd, addresses, list(map(len, frames)))


class OneFramePacketSocket(_PacketSocketBase):
    """A raw socket bound to one interface, reading at most one frame per call.

    The fallback where libc lacks recvmmsg/sendmmsg: Python's socket module only.
    """

    def __init__(
        self, iface: str, timeout: float = 0.5, snaplen: int = SNAPLEN, rcvbuf: int = RCVBUF
    ) -> None:
        super().__init__(iface, rcvbuf)
        self.sock.settimeout(timeout)
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._cmsg = socket.CMSG_SPACE(_AUX.size)

    def recv_batch(self) -> Batch:
        """Return the frame that arrived with its tag or None, as a batch of one.

        Empty on time-out, and when the frame was too big (counted in `too_big`).
        The memoryview points into a buffer reused by the next call.
        """
        try:
            n, ancdata, flags, _addr = self.sock.recvmsg_into([self._buf], self._cmsg)
        except TimeoutError:
            return []
        if flags & socket.MSG_TRUNC:
            self.too_big += 1
            return []
        for level, kind, data in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
                status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    return [(tci & 0x0FFF, self._view[:n])]
        return [self._untag(self._view, n)]

    def send_batch(self, frames: Sequence[memoryview | bytes]) -> int:
        """Send `frames` in order until one fails; return how many were sent."""
        sent = 0
        for frame in frames:
            try:
                self.sock.send(frame)
            except OSError:
                break
            sent += 1
        return sent


# The one place that picks what the agent uses.
PacketSocket = BatchPacketSocket if mmsg.AVAILABLE else OneFramePacketSocket
