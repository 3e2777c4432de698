"""The agent's packet socket on a real veth: frames too big, a full queue, counted."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from nodes.packet_io import PacketSocket
from nodes.sockdiag import packet_socket_drops

ETH_P_EXPERIMENTAL = 0x88B5


@pytest.fixture
def veth(unique_prefix: str) -> Iterator[tuple[str, str]]:
    """Yield the two ends of a fresh veth pair, up, with IPv6 off; delete it after."""
    a, b = f"{unique_prefix}pa", f"{unique_prefix}pb"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        for end in (a, b):
            subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{end}.disable_ipv6=1"], check=True)
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def frame(size: int, n: int = 0) -> bytes:
    header = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETH_P_EXPERIMENTAL.to_bytes(2, "big")
    return header + n.to_bytes(4, "big") + b"\x00" * (size - 18)


def sender(end: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((end, 0))
    return sock


def drain(io: PacketSocket) -> list[bytes]:
    """Return every frame queued on `io`: read until a read times out."""
    got: list[bytes] = []
    while True:
        too_big = io.too_big
        batch = io.recv_batch()
        if not batch and io.too_big == too_big:
            return got
        got += [bytes(f) for _tag, f in batch]


def test_a_frame_larger_than_the_buffer_is_counted_never_handed_on_cut(veth):
    a, b = veth
    io = PacketSocket(a, timeout=0.3, snaplen=500)
    try:
        with sender(b) as tx:
            for size, n in ((100, 1), (1000, 2), (500, 3)):
                tx.send(frame(size, n))
        assert drain(io) == [frame(100, 1), frame(500, 3)]
        assert io.too_big == 1
    finally:
        io.close()


def test_frames_dropped_for_a_full_queue_are_counted_by_the_socket_and_sock_diag(veth):
    a, b = veth
    io = PacketSocket(a, timeout=0.3, rcvbuf=32 << 10)  # a few dozen frames
    try:
        assert packet_socket_drops(a) == 0
        with sender(b) as tx:
            for n in range(300):
                tx.send(frame(1000, n))
        got = drain(io)
        dropped = io.queue_dropped()
        assert 0 < len(got) < 300 and len(got) + dropped == 300
        assert got == [frame(1000, n) for n in range(len(got))]  # the first ones, in order
        assert io.queue_dropped() == dropped  # the kernel's count is read once, kept
        assert packet_socket_drops(a) == dropped  # as the switch's socket is read
    finally:
        io.close()
    assert packet_socket_drops(a) is None  # no socket left on it: unknown, not 0
