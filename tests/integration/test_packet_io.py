"""The agent's packet sockets on a real veth: batches, tags, frames too big, a full queue."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentproto.messages import Attach, ModuleSpec
from nodes.agent import AgentConfig, NodeAgent
from nodes.bundle import Catalog
from nodes.packet_io import BatchPacketSocket, OneFramePacketSocket, PacketSocket
from nodes.sockdiag import packet_socket_drops

ETH_P_EXPERIMENTAL = 0x88B5
SOCKETS = [BatchPacketSocket, OneFramePacketSocket]
SERVICES = Path(__file__).resolve().parents[2] / "services"


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


def tagged(untagged: bytes, tag: int) -> bytes:
    """Return `untagged` with an 802.1Q tag after its MAC addresses, as the switch sends it."""
    return untagged[:12] + b"\x81\x00" + tag.to_bytes(2, "big") + untagged[12:]


def sender(end: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((end, 0))
    return sock


def drain(io, sizes: list[int] | None = None) -> list[tuple[int | None, bytes]]:
    """Return every (tag, frame) queued on `io`: read until a read times out.

    Appends the length of each non-empty batch to `sizes`.
    """
    got: list[tuple[int | None, bytes]] = []
    while True:
        too_big = io.too_big
        batch = io.recv_batch()
        if not batch and io.too_big == too_big:
            return got
        if batch and sizes is not None:
            sizes.append(len(batch))
        got += [(tag, bytes(f)) for tag, f in batch]


def test_the_batched_socket_is_the_one_the_agent_uses_here():
    assert PacketSocket is BatchPacketSocket  # libc has recvmmsg/sendmmsg on this machine


def test_a_burst_of_tagged_frames_arrives_in_batches_each_frame_with_its_own_tag(veth):
    a, b = veth
    io = BatchPacketSocket(a, timeout=0.3, batch=64)
    sent = [(1 + n % 3, frame(60 + n % 50, n)) for n in range(300)]
    try:
        with sender(b) as tx:
            for tag, untagged in sent:
                tx.send(tagged(untagged, tag))
        sizes: list[int] = []
        assert drain(io, sizes) == sent  # each untagged, with its tag, in order
        assert sum(sizes) == 300 and max(sizes) == 64 and len(sizes) < 300 // 2
        assert io.too_big == 0 and io.queue_dropped() == 0
    finally:
        io.close()


@pytest.mark.parametrize("kind", SOCKETS)
def test_a_frame_larger_than_the_buffer_is_counted_never_handed_on_cut(veth, kind):
    a, b = veth
    io = kind(a, timeout=0.3, snaplen=500)
    try:
        with sender(b) as tx:
            for size, n in ((100, 1), (1000, 2), (500, 3), (1514, 4), (60, 5)):
                tx.send(frame(size, n))
        sizes: list[int] = []
        got = drain(io, sizes)
        assert got == [(None, frame(100, 1)), (None, frame(500, 3)), (None, frame(60, 5))]
        assert io.too_big == 2
        if kind is BatchPacketSocket:
            assert sizes == [3]  # one receive: the two too big left out of it
    finally:
        io.close()


@pytest.mark.parametrize("kind", SOCKETS)
def test_frames_dropped_for_a_full_queue_are_counted_by_the_socket_and_sock_diag(veth, kind):
    a, b = veth
    io = kind(a, timeout=0.3, rcvbuf=32 << 10)  # a few dozen frames
    try:
        assert packet_socket_drops(a) == 0
        with sender(b) as tx:
            for n in range(300):
                tx.send(frame(1000, n))
        got = [f for _tag, f in drain(io)]
        dropped = io.queue_dropped()
        assert 0 < len(got) < 300 and len(got) + dropped == 300
        assert got == [frame(1000, n) for n in range(len(got))]  # the first ones, in order
        assert io.queue_dropped() == dropped  # the kernel's count is read once, kept
        assert packet_socket_drops(a) == dropped  # as the switch's socket is read
    finally:
        io.close()
    assert packet_socket_drops(a) is None  # no socket left on it: unknown, not 0


@pytest.mark.parametrize("kind", SOCKETS)
def test_send_batch_sends_in_order_and_stops_at_the_first_failure(veth, kind):
    a, b = veth
    io, peer = kind(a, timeout=0.3), BatchPacketSocket(b, timeout=0.3)
    try:
        with sender(b) as tx:
            for n in range(5):
                tx.send(tagged(frame(100, n), 7))
        frames = [f for _tag, f in io.recv_batch()]  # the batched one: all five at once
        while len(frames) < 5:  # the one-frame one reuses its buffer: keep copies
            frames = [bytes(f) for f in frames] + [f for _tag, f in io.recv_batch()]
        assert io.send_batch(frames + [frame(80, 5)]) == 6  # received views and other bytes
        assert [f for _t, f in drain(peer)] == [frame(100, n) for n in range(5)] + [frame(80, 5)]
        # Larger than the MTU: refused by the kernel, and nothing after it is sent.
        assert io.send_batch([frame(90, 6), frame(1600, 7), frame(90, 8)]) == 1
        assert io.send_batch([frame(1600, 9), frame(90, 10)]) == 0
        assert [f for _t, f in drain(peer)] == [frame(90, 6)]
    finally:
        io.close()
        peer.close()


def test_the_agent_loop_counts_every_frame_of_a_burst_on_the_batched_socket(veth):
    a, b = veth
    agent = NodeAgent(AgentConfig(1, a, b, "http://127.0.0.1:9"), Catalog(SERVICES))
    modules = (ModuleSpec("null"), ModuleSpec("counter"))
    chains = {tag: agent.attach(Attach(tag, tag, 60, modules)) for tag in (1, 2)}
    io, peer = BatchPacketSocket(a, timeout=0.1), BatchPacketSocket(b, timeout=0.3)
    sizes: list[int] = []
    recv_batch = io.recv_batch

    def recording() -> list:
        batch = recv_batch()
        if batch:
            sizes.append(len(batch))
        return batch

    io.recv_batch = recording
    sent = [(1 + n % 3, frame(64, n)) for n in range(600)]  # tag 3: no session
    with sender(b) as tx:
        for tag, untagged in sent:
            tx.send(tagged(untagged, tag))
    loop = threading.Thread(target=agent.packet_loop, args=(io,))
    loop.start()
    try:
        back = [f for _t, f in drain(peer)]
    finally:
        agent.stopping.set()
        loop.join(5)
        io.close()
        peer.close()
    assert back == [untagged for _tag, untagged in sent]  # all, untagged, in order
    assert sum(sizes) == 600 and max(sizes) > 1
    for chain in chains.values():
        assert (chain.packets, chain.returned, chain.send_failed) == (200, 200, 0)
        assert chain.modules[1][1].stats()["packets"] == 200
    io_stats = agent.io_stats().to_json()
    assert {
        k: io_stats[k]
        for k in (
            "received",
            "sent",
            "dropped",
            "send_failed",
            "unmatched",
            "queue_dropped",
            "too_big",
        )
    } == {
        "received": 600,
        "sent": 600,
        "dropped": 0,
        "send_failed": 0,
        "unmatched": 200,
        "queue_dropped": 0,
        "too_big": 0,
    }


@pytest.mark.parametrize("kind", SOCKETS)
def test_frames_older_than_max_age_are_dropped_on_receive_and_counted_by_tag(veth, kind):
    a, b = veth
    io = kind(a, timeout=0.3, max_age=0.2)
    # The kernel turns receive timestamps on for the first socket that asks a moment
    # later (deferred work); a frame that comes before is stamped when it is read, and
    # looks fresh. On a quiet machine this socket is the first.
    time.sleep(0.1)
    old = [(1 + n % 2, frame(64, n)) for n in range(100)]
    fresh = [(3, frame(64, 100 + n)) for n in range(50)]
    try:
        with sender(b) as tx:
            for tag, untagged in old:
                tx.send(tagged(untagged, tag))
            time.sleep(0.4)  # as an agent stopped for a moment: they wait in its queue
            for tag, untagged in fresh:
                tx.send(tagged(untagged, tag))
        stale_tags: list[int | None] = []
        got = []
        while True:
            batch = io.recv_batch()
            stale_tags += io.stale_tags
            if not batch and not io.stale_tags:
                break
            assert not io.late()  # just received: what it handed on may be sent
            got += [(tag, bytes(f)) for tag, f in batch]
        assert got == fresh  # the fresh ones, all, in order, with their tags
        assert io.stale == 100 and sorted(stale_tags) == [1] * 50 + [2] * 50
        assert io.late()  # the last frames came 0.3 s ago: sent now, they would be late
    finally:
        io.close()


def test_fresh_tagged_frames_take_the_path_without_a_loop_per_frame(veth):
    a, b = veth
    io = BatchPacketSocket(a, timeout=0.3, max_age=0.5)
    slow: list[int] = []
    unusual = io._unusual
    io._unusual = lambda *args: slow.append(1) or unusual(*args)  # type: ignore[method-assign]
    try:
        with sender(b) as tx:
            for n in range(100):
                tx.send(tagged(frame(64, n), 5))
        got = drain(io)
        assert [f for _tag, f in got] == [frame(64, n) for n in range(100)]
        assert {tag for tag, _f in got} == {5} and slow == [] and io.stale == 0
    finally:
        io.close()
