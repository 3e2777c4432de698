"""The processes of `netserv bench agent`, each run inside the benchmark's namespace.

    python -m tools.bench_agent_worker generate --iface B --size 64 --tag 5 --seconds 2 \
        [--worker-pid PID]
    python -m tools.bench_agent_worker reflect --iface A
    python -m tools.bench_agent_worker agent --iface A --tag 5 --chain 5 [--io one-frame]

`generate` sends one tagged frame over and over with sendmmsg, as fast as it can,
and prints JSON about a window after a warm-up: frames sent, frames that came back
to its interface (the veth's own rx counter: its socket reads nothing) and the CPU
time process PID got. `reflect` (the bare batched reflector: recvmmsg, then sendmmsg
of the same buffers) and `agent` (the node agent's own packet loop with a chain of
`null` on the tag) print "ready" once their socket is open, serve until SIGTERM,
then print their counters as JSON. `--cpu N` pins any of them to CPU N.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes import mmsg
from nodes.packet_io import BatchPacketSocket, OneFramePacketSocket
from tools.bench_agent_stats import tagged_frame

BATCH = 64
SOCKETS = {"batch": BatchPacketSocket, "one-frame": OneFramePacketSocket}


def rx_packets(iface: str) -> int:
    return int(Path("/sys/class/net", iface, "statistics", "rx_packets").read_text())


def descendants(pid: int) -> list[int]:
    """Return the pids of the processes below `pid` (an agent's isolated modules)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        below = [child for child, parent in parent_of.items() if parent == here]
        found += below
        todo += below
    return found


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of every thread of process `pid` and of the processes below
    it so far (0.0 when pid is 0)."""
    if not pid:
        return 0.0
    ns = 0
    for proc in [pid, *descendants(pid)]:
        try:
            tasks = list(Path("/proc", str(proc), "task").iterdir())
            ns += sum(int((t / "schedstat").read_text().split()[0]) for t in tasks)
        except OSError:
            continue  # gone meanwhile
    return ns / 1e9


def generate(
    iface: str, frame: bytes, seconds: float, warmup: float, worker_pid: int = 0
) -> dict[str, float]:
    """Send `frame` on `iface` flat out for `warmup` + `seconds`; return what the
    window of `seconds` saw: frames sent, frames received back on `iface`, and the
    CPU seconds process `worker_pid` got."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    sock.bind((iface, 0))
    msgs = mmsg.MsgSlots(BATCH, len(frame))
    for slot in msgs.frames:
        slot[: len(frame)] = frame
    fd = sock.fileno()
    sent = msgs.send(fd, msgs.addresses, [len(frame)] * BATCH)
    start = time.monotonic()
    while time.monotonic() < start + warmup:
        sent += msgs.resend(fd, BATCH)
    t0, sent0 = time.monotonic(), sent
    back0, cpu0 = rx_packets(iface), cpu_seconds(worker_pid)
    while (now := time.monotonic()) < t0 + seconds:
        sent += msgs.resend(fd, BATCH)
    back1, cpu1 = rx_packets(iface), cpu_seconds(worker_pid)
    sock.close()
    return {
        "seconds": now - t0,
        "sent": sent - sent0,
        "returned": back1 - back0,
        "worker_cpu_seconds": cpu1 - cpu0,
    }


class Reflector:
    """The bare batched reflector: every frame goes back out as it came, nothing more.

    Its socket is set up as the agent's (large receive buffer, its own frames
    ignored, a receive time-out so that it sees SIGTERM).
    """

    def __init__(self, iface: str) -> None:
        self.io = BatchPacketSocket(iface, snaplen=2048, batch=BATCH)
        self.received = self.sent = self.batches = 0
        self.stopping = threading.Event()

    def loop(self) -> None:
        msgs, fd = self.io.msgs, self.io.fd
        while not self.stopping.is_set():
            n = msgs.recv(fd)
            if n:
                self.received += n
                self.batches += 1
                self.sent += msgs.send(fd, msgs.addresses, msgs.meta(n)[2::3])

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "sent": self.sent,
            "batches": self.batches,
            "queue_dropped": self.io.queue_dropped(),
        }


def serve(loop: Callable[[], None], stopping: threading.Event, counters: Callable[[], Any]) -> None:
    """Run `loop` until SIGTERM; then print counters() as JSON."""
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print("ready", flush=True)
    loop()
    print(json.dumps(counters()), flush=True)


def serve_agent(iface: str, tag: int, chain: int, io_kind: str, tier: str = "trusted") -> None:
    """Serve `iface` with a NodeAgent whose one session (tag `tag`) runs `chain` nulls,
    in the agent (`tier` trusted) or each in a process of its own (isolated)."""
    from agentproto.limits import MAX_LIFETIME
    from agentproto.messages import Attach, ModuleSpec
    from nodes.agent import AgentConfig, NodeAgent
    from nodes.bundle import Catalog, module_path
    from nodes.sandbox.policy import TierPolicy

    # No controller: the packet loop and attach do not need one.
    policy = TierPolicy.parse(["none"] if tier == "isolated" else None)
    config = AgentConfig(1, iface, "", "http://127.0.0.1:9", policy=policy)
    agent = NodeAgent(config, Catalog(module_path()))
    agent.attach(Attach(1, tag, MAX_LIFETIME, (ModuleSpec("null"),) * chain))
    io = SOCKETS[io_kind](iface)
    batches = 0
    recv_batch = io.recv_batch

    def counting() -> list:
        nonlocal batches
        batch = recv_batch()
        batches += bool(batch)
        return batch

    io.recv_batch = counting

    def counters() -> dict[str, Any]:
        chain_packets = agent.dispatcher.by_tag(tag).packets
        io_stats = agent.io_stats().to_json()
        return {**io_stats, "chain_packets": chain_packets, "batches": batches}

    serve(lambda: agent.packet_loop(io), agent.stopping, counters)
    agent.detach(1)  # an isolated module's process ends, its cgroups go


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench_agent_worker")
    sub = p.add_subparsers(dest="role", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--seconds", type=float, default=2.0)
    g.add_argument("--warmup", type=float, default=0.5)
    g.add_argument("--worker-pid", type=int, default=0)
    sub.add_parser("reflect")
    a = sub.add_parser("agent")
    a.add_argument("--chain", type=int, default=1)
    a.add_argument("--io", choices=sorted(SOCKETS), default="batch")
    a.add_argument("--tier", choices=("trusted", "isolated"), default="trusted")
    for one in (g, a):
        one.add_argument("--tag", type=int, default=5)
    for one in sub.choices.values():
        one.add_argument("--iface", required=True)
        one.add_argument("--cpu", type=int, help="pin to this CPU")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.role == "generate":
        frame = tagged_frame(args.size, args.tag)
        result = generate(args.iface, frame, args.seconds, args.warmup, args.worker_pid)
        print(json.dumps(result), flush=True)
    elif args.role == "reflect":
        reflector = Reflector(args.iface)
        serve(reflector.loop, reflector.stopping, reflector.counters)
    else:
        serve_agent(args.iface, args.tag, args.chain, args.io, args.tier)
    return 0


if __name__ == "__main__":
    sys.exit(main())
