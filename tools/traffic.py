"""Traffic for demos and tests, run inside a host's namespace.

    python -m tools.traffic send --iface h1-eth0 --src-mac .. --dst-mac .. \
        --src-ip .. --dst-ip .. --dport 9000 --count 200
    python -m tools.traffic count --iface h2-eth0      # prints "ready", then JSON on SIGTERM

`send` builds frames with scapy, each numbered from 0 in its first 4 payload bytes;
`count` counts received UDP datagrams per (source address, destination port) with a
raw socket, so nothing is missed; with `--arrivals` it also lists, per key, each
datagram's arrival (time of day, number) in arrival order.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def send(
    iface: str,
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    dport: int,
    count: int,
    rate: float,
    size: int,
) -> int:
    """Send `count` UDP frames at about `rate` per second; return how many were sent."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.sendrecv import sendp

    pad = max(0, size - 42)
    frames = [
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src_ip, dst=dst_ip)
        / UDP(sport=40000 + (i % 1000), dport=dport)
        / (i.to_bytes(4, "big") + b"\0" * max(0, pad - 4))
        for i in range(count)
    ]
    sendp(frames, iface=iface, inter=1.0 / rate if rate > 0 else 0, verbose=False)
    return len(frames)


def count(iface: str, arrivals: dict[str, list[tuple[float, int]]] | None = None) -> dict[str, int]:
    """Count UDP datagrams arriving on `iface` until SIGTERM/SIGINT; return the counts.

    With `arrivals`, each datagram's (time of day, number) is added there by key.
    """
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((iface, ETH_P_IP))
    sock.settimeout(0.2)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    counts: dict[str, int] = {}
    print("ready", flush=True)
    while not stop:
        try:
            data, addr = sock.recvfrom(65536)
        except (TimeoutError, InterruptedError):
            continue
        ip = memoryview(data)[14:]  # a raw packet socket hands over the Ethernet header too
        if addr[2] == PACKET_OUTGOING or len(ip) < 28 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src = socket.inet_ntoa(ip[12:16])
        dport = struct.unpack_from("!H", ip, ihl + 2)[0]
        key = f"{src}:{dport}"
        counts[key] = counts.get(key, 0) + 1
        if arrivals is not None:
            number = int.from_bytes(ip[ihl + 8 : ihl + 12], "big")
            arrivals.setdefault(key, []).append((round(time.time(), 6), number))
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.traffic")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--iface", required=True)
    s.add_argument("--src-mac", required=True)
    s.add_argument("--dst-mac", required=True)
    s.add_argument("--src-ip", required=True)
    s.add_argument("--dst-ip", required=True)
    s.add_argument("--dport", type=int, required=True)
    s.add_argument("--count", type=int, default=100)
    s.add_argument(
        "--rate", type=float, default=1000.0, help="frames per second (0: as fast as possible)"
    )
    s.add_argument("--size", type=int, default=64, help="frame size in bytes, without FCS")
    c = sub.add_parser("count")
    c.add_argument("--iface", required=True)
    c.add_argument("--arrivals", action="store_true", help="list each datagram's arrival too")
    a = p.parse_args(argv)
    if a.cmd == "send":
        t0 = time.monotonic()
        n = send(
            a.iface, a.src_mac, a.dst_mac, a.src_ip, a.dst_ip, a.dport, a.count, a.rate, a.size
        )
        print(json.dumps({"sent": n, "seconds": round(time.monotonic() - t0, 3)}))
    elif a.arrivals:
        arrivals: dict[str, list[tuple[float, int]]] = {}
        counts = count(a.iface, arrivals)
        print(json.dumps({"counts": counts, "arrivals": arrivals}), flush=True)
    else:
        print(json.dumps(count(a.iface)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
