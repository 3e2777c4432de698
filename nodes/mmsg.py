"""recvmmsg(2) and sendmmsg(2) through ctypes: many frames per system call.

Python's socket module has no call that moves several datagrams at once, so a packet
loop written with it pays a system call (and the socket module's own poll when the
socket has a time-out) for every frame. `MsgSlots` keeps the C arrays those two calls
need — one `mmsghdr`, one `iovec`, one control buffer and one frame buffer per slot —
filled once, so that a batch costs one ctypes call and a few whole-array reads.

`AVAILABLE` is False where libc lacks the calls; `nodes.packet_io` then falls back to
one frame per call.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Sequence
from itertools import chain

MSG_WAITFORONE = 0x10000  # block for the first datagram only, then take what is queued
MSG_TRUNC = 0x20


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # CDLL releases the GIL for the call: other threads run while it blocks.
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return libc


_LIBC = _libc()
AVAILABLE = _LIBC is not None

_HDR = ctypes.sizeof(MMsgHdr)
_CONTROLLEN = MsgHdr.msg_controllen.offset
_FLAGS = MsgHdr.msg_flags.offset
_LEN = MMsgHdr.msg_len.offset
_SIZE_T = {4: "I", 8: "Q"}[ctypes.sizeof(ctypes.c_size_t)]
_PTR = {4: "I", 8: "Q"}[ctypes.sizeof(ctypes.c_void_p)]


def _reader(count: int) -> struct.Struct:
    """Return a Struct that reads (controllen, flags, len) of `count` mmsghdrs at once."""
    one = f"{_CONTROLLEN}x{_SIZE_T}{_FLAGS - _CONTROLLEN - struct.calcsize(_SIZE_T)}xi"
    one += f"{_LEN - _FLAGS - 4}xI{_HDR - _LEN - 4}x"
    return struct.Struct("=" + one * count)


class MsgSlots:
    """`slots` frame buffers of `size` bytes, each with the C headers that describe it.

    `recv` fills the first n slots with one recvmmsg; `send` sends frames from the
    slots (or copies of other buffers) with one sendmmsg. Not thread-safe: one packet
    loop owns it.
    """

    def __init__(self, slots: int, size: int, control: int = 0) -> None:
        if _LIBC is None:
            raise OSError(errno.ENOSYS, "libc has no recvmmsg/sendmmsg")
        self.slots, self.size, self.control = slots, size, control
        self.buf = bytearray(slots * size)
        self.view = memoryview(self.buf)
        self.frames = [self.view[i * size : (i + 1) * size] for i in range(slots)]
        self.cmsg = bytearray(max(1, slots * control))
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        cbase = ctypes.addressof(ctypes.c_char.from_buffer(self.cmsg))
        self.base = base
        self.addresses = [base + i * size for i in range(slots)]
        self._iov = (IoVec * slots)()
        self._hdrs = (MMsgHdr * slots)()
        for i in range(slots):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            hdr = self._hdrs[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._iov[i])
            hdr.msg_iovlen = 1
            if control:
                hdr.msg_control = cbase + i * control
                hdr.msg_controllen = control
        # recvmmsg writes each header's controllen back: restore them from this copy.
        self._pristine = ctypes.create_string_buffer(bytes(self._hdrs), _HDR * slots)
        self._hdrs_addr = ctypes.addressof(self._hdrs)
        self._hdr_bytes = memoryview(self._hdrs).cast("B")
        self._read = [_reader(n) for n in range(slots + 1)]
        # Sending: own headers and iovecs, since frames may come from anywhere.
        self._out_iov = (IoVec * slots)()
        self._out_iov_bytes = memoryview(self._out_iov).cast("B")
        self._out_hdrs = (MMsgHdr * slots)()
        for i in range(slots):
            hdr = self._out_hdrs[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._out_iov[i])
            hdr.msg_iovlen = 1
        self._out_addr = ctypes.addressof(self._out_hdrs)
        self._iov_pack = [struct.Struct("=" + (_PTR + _SIZE_T) * n) for n in range(slots + 1)]
        self._pinned: list[object] = []  # buffers of other frames, until the send returns

    def recv(self, fd: int, flags: int = MSG_WAITFORONE) -> int:
        """Receive up to `slots` frames into the slots with one recvmmsg; return how many.

        Returns 0 when the socket's receive time-out passed (or a signal came) with
        no frame; raises OSError for any other failure. `meta(n)` then describes them.
        """
        ctypes.memmove(self._hdrs_addr, self._pristine, _HDR * self.slots)
        n = _LIBC.recvmmsg(fd, self._hdrs_addr, self.slots, flags, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return n

    def meta(self, n: int) -> tuple[int, ...]:
        """Return (controllen, msg_flags, length) of each of the first `n` slots, flat."""
        return self._read[n].unpack_from(self._hdr_bytes)

    def send(self, fd: int, addresses: Sequence[int], lengths: Sequence[int]) -> int:
        """Send the frames of `lengths[i]` bytes at `addresses[i]`, in order, with one
        sendmmsg per `slots` frames; return how many were sent: all, or those before
        the first that failed. Pinned buffers are released after it.
        """
        total, sent = len(lengths), 0
        try:
            for start in range(0, total, self.slots):
                count = min(self.slots, total - start)
                flat = chain.from_iterable(
                    zip(
                        addresses[start : start + count],
                        lengths[start : start + count],
                        strict=True,
                    )
                )
                self._iov_pack[count].pack_into(self._out_iov_bytes, 0, *flat)
                n = self.resend(fd, count)
                sent += n
                if n < count:
                    break
        finally:
            self._pinned.clear()
        return sent

    def resend(self, fd: int, count: int) -> int:
        """Send the first `count` frames of the last send again; return how many left."""
        return max(0, _LIBC.sendmmsg(fd, self._out_addr, count, 0))

    def pin(self, frame: memoryview | bytes) -> int:
        """Return the address of `frame`'s bytes (a copy's, for read-only ones), kept
        valid until the next `send` returns."""
        if isinstance(frame, memoryview) and not frame.readonly and frame.c_contiguous:
            ref = (ctypes.c_char * max(1, frame.nbytes)).from_buffer(frame)
        else:
            ref = ctypes.create_string_buffer(bytes(frame), max(1, len(frame)))
        self._pinned.append(ref)
        return ctypes.addressof(ref)
