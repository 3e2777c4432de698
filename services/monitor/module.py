"""The monitor service: packets, bytes, first and last seen of each flow of a session.

Observe-only: the switch forwards the frames itself and sends the agent a copy, so
the monitor costs the flow nothing. Per frame it does one dictionary update; the key
of an IPv4 TCP or UDP frame without options is read straight from its bytes, and
only other frames (IPv6, ICMP, options, fragments) are parsed by `Frame`.
"""

import heapq
import ipaddress
import struct
from collections.abc import Mapping

from nodes.blocks import Frame
from nodes.module_api import ModuleContext, ServiceModule, Verdict

FORWARD = Verdict.FORWARD  # ignored for a copy; an enum looked up per frame costs more
IPV4_NO_OPTIONS = b"\x08\x00\x45"  # from the EtherType: IPv4, a 20-byte header
PORTED = (6, 17)  # TCP, UDP: their first four bytes are the ports
# From the EtherType on: EtherType and IPv4 version/length, the fragment offset's two
# bytes, the protocol, then addresses and ports (a 20-byte IPv4 header before them).
HEAD = struct.Struct("!3s5xBBxB2x12s")
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
SWEEP_MAX = 30.0  # idle flows are looked for at least this often


class Monitor(ServiceModule):
    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        super().__init__(params, ctx)
        self.max_flows = int(params["max_flows"])  # type: ignore[call-overload]
        self.idle = float(params["idle"])  # type: ignore[arg-type]
        self.report = int(params["report"])  # type: ignore[call-overload]
        # key → [packets, bytes, first seen, last seen]; the key as `_key` makes it
        self.flows: dict[object, list] = {}
        self.packets = self.bytes = 0
        self.untracked = 0  # frames of flows that came while max_flows were followed
        self.expired = 0  # flows forgotten after `idle` seconds
        self.clock = ctx.clock
        ctx.every(min(self.idle / 2, SWEEP_MAX), self.sweep)

    def process(self, frame: memoryview) -> Verdict:
        size = len(frame)
        self.packets += 1
        self.bytes += size
        now = self.clock()
        key = _key(frame)
        entry = self.flows.get(key)
        if entry is not None:
            entry[0] += 1
            entry[1] += size
            entry[3] = now
        elif len(self.flows) < self.max_flows:
            self.flows[key] = [1, size, now, now]
        else:
            self.untracked += 1
        return FORWARD

    def sweep(self) -> None:
        """Forget the flows not seen for `idle` seconds."""
        cut = self.clock() - self.idle
        gone = [key for key, entry in self.flows.items() if entry[3] <= cut]
        for key in gone:
            del self.flows[key]
        self.expired += len(gone)

    def stats(self) -> dict[str, object]:
        """Return the totals and the `report` flows with the most bytes, each with its
        packets, bytes and when it was first and last seen (seconds ago)."""
        now = self.clock()
        top = heapq.nlargest(self.report, self.flows.items(), key=lambda item: item[1][1])
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "flows": len(self.flows),
            "untracked": self.untracked,
            "expired": self.expired,
            "top": [
                {
                    "flow": _describe(key),
                    "packets": entry[0],
                    "bytes": entry[1],
                    "first_seen_ago": round(now - entry[2], 3),
                    "last_seen_ago": round(now - entry[3], 3),
                }
                for key, entry in top
            ],
        }


def _key(frame: memoryview) -> object:
    """Return the flow key of `frame`: (protocol, addresses and ports as bytes) for an
    IPv4 TCP or UDP frame without options that is not a later fragment, else the key
    `Frame.flow_key` gives (None for a frame that is not IP)."""
    if len(frame) >= 12 + HEAD.size:
        kind, offset_high, offset_low, proto, ends = HEAD.unpack_from(frame, 12)
        if kind == IPV4_NO_OPTIONS and proto in PORTED and not (offset_high & 0x1F or offset_low):
            return proto, ends
    return Frame(frame).flow_key()


def _describe(key: object) -> str:
    """Return a flow key as text: "udp 10.0.0.1:5000 > 10.0.0.2:9000"."""
    if key is None:
        return "not IP"
    if len(key) == 2:  # type: ignore[arg-type]
        proto, ends = key  # type: ignore[misc]
        src, dst = ends[:4], ends[4:8]
        sport, dport = int.from_bytes(ends[8:10], "big"), int.from_bytes(ends[10:], "big")
    else:
        proto, src, dst, sport, dport = key  # type: ignore[misc]
    name = PROTOCOLS.get(proto, str(proto))
    return f"{name} {_endpoint(src, sport)} > {_endpoint(dst, dport)}"


def _endpoint(address: bytes, port: int) -> str:
    if len(address) == 4:
        text = ".".join(str(b) for b in address)
        return f"{text}:{port}" if port else text
    text = str(ipaddress.IPv6Address(address))
    return f"[{text}]:{port}" if port else text
