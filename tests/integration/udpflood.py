"""Send one UDP payload many times at a steady rate, from inside a host's namespace.

    python -m tests.integration.udpflood --to 10.0.0.2 --port 20051 --rate 1000 \\
        --count 3000 --payload-hex 4e53...

With `--numbered`, each datagram starts with its number (from 0, 4 bytes big-endian, as
`tools.traffic count --arrivals` reads it) before the payload. Prints {"sent": N,
"seconds": S} when done.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def flood(
    to: str,
    port: int,
    payload: bytes,
    rate: float,
    count: int,
    numbered: bool = False,
    max_burst: int = 0,
) -> tuple[int, float]:
    """Send `payload` to `to`:`port` `count` times at `rate` a second (each numbered first
    when `numbered`); return (sent, seconds). A sender that fell behind catches up at
    once, or by at most `max_burst` datagrams when given (it then ends later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        for i in range(count):
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            elif max_burst and -ahead * rate > max_burst:
                start += -ahead - max_burst / rate
            sock.sendto(i.to_bytes(4, "big") + payload if numbered else payload, (to, port))
        return count, time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--payload-hex", required=True)
    p.add_argument("--numbered", action="store_true", help="number each datagram first")
    p.add_argument("--max-burst", type=int, default=0, help="catch up by at most this many")
    a = p.parse_args()
    payload = bytes.fromhex(a.payload_hex)
    sent, seconds = flood(a.to, a.port, payload, a.rate, a.count, a.numbered, a.max_burst)
    print(json.dumps({"sent": sent, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
