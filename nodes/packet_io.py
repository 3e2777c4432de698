"""Packet I/O on the agent's port: an AF_PACKET socket that yields batches of (tag, frame).

The switch pushes an 802.1Q header whose TCI names the session (its VLAN id and
priority bits: `agentproto/tags.py`). The kernel takes such a header off the frame on
receive and hands its TCI over as PACKET_AUXDATA, so the frame the modules see is the
flow's own frame, and what goes back to the switch carries no tag.

`PacketSocket` is the batched socket (`BatchPacketSocket`: recvmmsg / sendmmsg, one
system call per batch each way) where libc has those calls, else `OneFramePacketSocket`
(one frame per call, Python's socket module only). Both count the same things.

Each frame carries the kernel's receive time (SO_TIMESTAMPNS, the time of day). With
`max_age`, a frame that waited longer than that in the receive queue (the agent hung,
was stopped, or fell behind) is dropped on receive and counted in `stale`, never
handed on to be sent late; `stale_tags` lists the tags of the last receive's stale
frames, so the agent can charge them to their sessions. A batch's first frame is its
oldest, so a batch whose first frame is fresh costs one comparison.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence

from agentproto.tags import TAG_OF_TCI
from nodes import mmsg

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # else an ETH_P_ALL socket also reads its own transmissions
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # the receive time as a struct timespec (SCM_TIMESTAMPNS)
TP_STATUS_VLAN_VALID = 1 << 4
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
_STATS = struct.Struct("II")  # struct tpacket_stats: packets, drops
_TIMEVAL = struct.Struct("@ll")
_TIMESPEC = struct.Struct("@ll")
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")
# The largest frame a veth carries: its largest MTU, an Ethernet header and two tags.
SNAPLEN = 65535 + 14 + 2 * 4
RCVBUF = 4 << 20
BATCH = 64  # frames per system call, at most

Batch = list[tuple[int | None, memoryview]]
_SLICE = memoryview.__getitem__
_VLAN_VALID = TP_STATUS_VLAN_VALID.__and__
_TAG = TAG_OF_TCI.__getitem__  # a TCI's session tag, or None


class _PacketSocketBase:
    """What both implementations share: the socket's options, its counters, the
    in-data VLAN fallback.

    `too_big` counts frames larger than the receive buffer (`snaplen`), which are
    dropped rather than handed on cut short; `queue_dropped()` the frames the kernel
    dropped because the socket's receive queue (`rcvbuf` bytes) was full.
    """

    def __init__(self, iface: str, rcvbuf: int, max_age: float | None = None) -> None:
        self.iface = iface
        self.max_age = max_age
        # Protocol 0 takes in nothing until the bind below names the interface and the
        # protocol: opened as ETH_P_ALL, the socket would queue frames of every interface
        # of the namespace until then, and hand a stray one to the modules.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
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
        self.stale = 0  # frames dropped on receive: older than max_age
        self.stale_tags: list[int | None] = []  # ... of the last receive, by their tag
        self.received_at = 0.0  # the time of day of the last receive
        self._drops = 0
        self._drops_lock = threading.Lock()  # reading the kernel's count resets it

    @staticmethod
    def _untag(buf: memoryview, n: int) -> tuple[int | None, memoryview]:
        """Return (tag, frame) of the `n` bytes in `buf` whose tag stayed in the data.

        The tag is taken out in place (no VLAN offload on this path); a frame without
        one comes back whole with tag None.
        """
        if n >= 18 and bytes(buf[12:14]) in VLAN_TPIDS:
            tag = _TAG(int.from_bytes(buf[14:16], "big"))
            buf[12 : n - 4] = buf[16:n]
            return tag, buf[: n - 4]
        return None, buf[:n]

    def late(self) -> bool:
        """Return True when the last receive was more than `max_age` ago: its frames,
        handled since, are stale too (the agent was stopped between receive and send)."""
        return self.max_age is not None and time.time() - self.received_at > self.max_age

    def _fresh(self, entries: list[tuple[float, int | None, memoryview]]) -> Batch:
        """Return the (tag, frame) of `entries` (stamp, tag, frame) not older than
        `max_age`; count and list the others."""
        limit = self.received_at - (self.max_age if self.max_age is not None else 1e18)
        batch: Batch = []
        stale: list[int | None] = []
        for stamp, tag, frame in entries:
            if stamp < limit:
                stale.append(tag)
            else:
                batch.append((tag, frame))
        self.stale += len(stale)
        self.stale_tags = stale
        return batch

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
        max_age: float | None = None,
    ) -> None:
        super().__init__(iface, rcvbuf, max_age)
        try:
            usec = max(1, round(timeout * 1e6))  # 0 would mean no time-out at all
            tv = _TIMEVAL.pack(usec // 1_000_000, usec % 1_000_000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            # The kernel writes the receive time first, then the auxdata.
            cmsg = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUX.size)
            self.msgs = mmsg.MsgSlots(batch, snaplen, cmsg)
        except OSError:
            self.sock.close()
            raise
        self.fd = self.sock.fileno()  # `msgs` and `fd`: for a bare loop that needs no tags
        self._cmsg = cmsg
        self._cmsg_len = cmsg  # the kernel takes each control message's aligned space
        head = socket.CMSG_LEN(0)
        stamp = socket.CMSG_SPACE(_TIMESPEC.size)
        # (seconds, nanoseconds, status, vlan_tci) of each slot's receive time and
        # auxdata, read for all filled slots at once
        one = f"{head}xqq{stamp - head - 16}x{head}xI12xH{cmsg - stamp - head - 18}x"
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
        if self.stale_tags:
            self.stale_tags = []
        if not n:
            self._held, self._addrs = [], {}
            return []
        self.received_at = now = time.time()
        meta = msgs.meta(n)
        aux = self._aux[n].unpack_from(msgs.cmsg)
        frames = list(map(_SLICE, msgs.frames, map(slice, meta[2::3])))
        usual = meta[0::3].count(self._cmsg_len) == n and not any(meta[1::3])
        max_age = self.max_age
        if not usual or not all(map(_VLAN_VALID, aux[2::4])):
            batch = self._unusual(frames, meta)
        elif max_age is not None and now - aux[0] - aux[1] * 1e-9 > max_age:
            stamps = [s + ns * 1e-9 for s, ns in zip(aux[0::4], aux[1::4], strict=True)]
            batch = self._fresh(list(zip(stamps, map(_TAG, aux[3::4]), frames, strict=True)))
        else:  # every frame whole, fresh and its tag in the auxdata: no loop per frame
            batch = list(zip(map(_TAG, aux[3::4]), frames, strict=True))
        self._addrs = dict(zip(map(id, frames), msgs.addresses, strict=False))
        self._held = batch
        return batch

    def _unusual(self, frames: list[memoryview], meta: tuple) -> Batch:
        """Return the batch of a receive where some frame was cut short (counted, left
        out), carried its tag in the data (taken out in place) or came with other
        control messages than the usual two (each read by its header)."""
        entries: list[tuple[float, int | None, memoryview]] = []
        for i, frame in enumerate(frames):
            controllen, flags, length = meta[3 * i : 3 * i + 3]
            if flags & mmsg.MSG_TRUNC:
                self.too_big += 1
                continue
            start = i * self._cmsg
            stamp, tci = _control(self.msgs.cmsg, start, start + controllen)
            if tci is not None:
                entries.append((stamp, _TAG(tci), frame))
            else:
                tag, frames[i] = self._untag(self.msgs.frames[i], length)
                entries.append((stamp, tag, frames[i]))
        return self._fresh(entries)

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


def _control(buf: bytearray, start: int, end: int) -> tuple[float, int | None]:
    """Return (receive time, VLAN TCI or None) from the control messages in buf[start:end].

    A frame without a receive time counts as received now.
    """
    stamp, tci = time.time(), None
    head = socket.CMSG_LEN(0)
    at = start
    while at + head <= end:
        length, level, kind = struct.unpack_from("=Qii", buf, at)
        if length < head or at + length > end:
            break
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and length >= head + 16:
            sec, nsec = _TIMESPEC.unpack_from(buf, at + head)
            stamp = sec + nsec * 1e-9
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and length >= head + _AUX.size:
            status, _len, _snap, _mac, _net, vtci, _tpid = _AUX.unpack_from(buf, at + head)
            if status & TP_STATUS_VLAN_VALID:
                tci = vtci
        at += (length + 7) & ~7
    return stamp, tci


class OneFramePacketSocket(_PacketSocketBase):
    """A raw socket bound to one interface, reading at most one frame per call.

    The fallback where libc lacks recvmmsg/sendmmsg: Python's socket module only.
    """

    def __init__(
        self,
        iface: str,
        timeout: float = 0.5,
        snaplen: int = SNAPLEN,
        rcvbuf: int = RCVBUF,
        max_age: float | None = None,
    ) -> None:
        super().__init__(iface, rcvbuf, max_age)
        self.sock.settimeout(timeout)
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._cmsg = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUX.size)

    def recv_batch(self) -> Batch:
        """Return the frame that arrived with its tag or None, as a batch of one.

        Empty on time-out, and when the frame was too big (counted in `too_big`).
        The memoryview points into a buffer reused by the next call.
        """
        if self.stale_tags:
            self.stale_tags = []
        try:
            n, ancdata, flags, _addr = self.sock.recvmsg_into([self._buf], self._cmsg)
        except TimeoutError:
            return []
        self.received_at = stamp = time.time()
        if flags & socket.MSG_TRUNC:
            self.too_big += 1
            return []
        entry = None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(data)
                stamp = sec + nsec * 1e-9
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
                status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID:
                    entry = (_TAG(tci), self._view[:n])
        tag, frame = entry if entry is not None else self._untag(self._view, n)
        return self._fresh([(stamp, tag, frame)])

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
