"""What an attacker and a host do to the return-routability check, from inside a host's
namespace.

    python -m tests.integration.rrpeer listen --session 5eed
        waits on UDP port 20051 for a CHALLENGE of that session (a host that made no
        request, seeing the controller check someone's claim on its address), answers
        it with a wrong cookie, and prints {"cookie", "sequence", "from"} (the real one)
    python -m tests.integration.rrpeer spoof
        reads lines {"src": ADDRESS, "to": ADDRESS, "payload": HEX} and sends each as a
        UDP datagram from port 20051 of an address not its own to port 20051 of "to"
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from controller.sigframes import ETH, Datagram, answer_frame
from signaling.codec import decode, encode
from signaling.messages import Challenge, ChallengeResponse
from signaling.wire import SIGNALING_PORT


def listen(session_id: int, timeout: float) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", SIGNALING_PORT))
        sock.settimeout(timeout)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            try:
                data, sender = sock.recvfrom(65535)
            except TimeoutError:
                print("no CHALLENGE came", file=sys.stderr)
                return 1
            challenge = decode(data)
            if isinstance(challenge, Challenge) and challenge.session_id == session_id:
                break
        wrong = ChallengeResponse(
            session_id=challenge.session_id,
            sequence=challenge.sequence,
            timestamp_ms=0,
            nonce=bytes(b ^ 0xFF for b in challenge.cookie),
        )
        sock.sendto(encode(wrong), sender)
    seen = {"cookie": challenge.cookie.hex(), "sequence": challenge.sequence, "from": sender}
    print(json.dumps(seen), flush=True)
    return 0


def spoof() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            what = json.loads(line)
            # the frame that answers a datagram from "to" to "src" is one from "src" to "to"
            back = Datagram(bytes(6), bytes(6), 4, what["to"], what["src"], SIGNALING_PORT, 0, b"")
            packet = answer_frame(back, bytes.fromhex(what["payload"]))[ETH.size :]
            sock.sendto(packet, (what["to"], 0))
            print(json.dumps({"sent": len(packet)}), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="action", required=True)
    lp = sub.add_parser("listen")
    lp.add_argument("--session", required=True, type=lambda text: int(text, 16))
    lp.add_argument("--timeout", type=float, default=20.0)
    sub.add_parser("spoof")
    a = p.parse_args()
    if a.action == "listen":
        return listen(a.session, a.timeout)
    return spoof()


if __name__ == "__main__":
    sys.exit(main())
