"""Send one UDP payload many times at a steady rate, from inside a host's namespace.

    python -m tests.integration.udpflood --to 10.0.0.2 --port 20051 --rate 1000 \\
        --count 3000 --payload-hex 4e53...

Prints {"sent": N, "seconds": S} when done.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def flood(to: str, port: int, payload: bytes, rate: float, count: int) -> tuple[int, float]:
    """Send `payload` to `to`:`port` `count` times at `rate` a second; return (sent, seconds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for i in range(count):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            sock.sendto(payload, (to, port))
        return count, time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--payload-hex", required=True)
    a = p.parse_args()
    sent, seconds = flood(a.to, a.port, bytes.fromhex(a.payload_hex), a.rate, a.count)
    print(json.dumps({"sent": sent, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
