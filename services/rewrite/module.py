"""The rewrite service: a flow's addresses and ports replaced in place (stateless NAT).

The switch forwards a frame that comes back from the node by its destination MAC,
so a frame sent to another host needs `dst_mac` as well as `dst`. Replies take the
reverse path only if a session on the reverse flow rewrites them back.
"""

from collections.abc import Mapping

from nodes.blocks import Frame
from nodes.blocks.addresses import ip_version, packed_ip, packed_mac
from nodes.module_api import ModuleContext, ServiceModule, Verdict

FIELDS = ("dst", "dport", "dst_mac", "src", "sport", "src_mac")


class Rewrite(ServiceModule):
    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        super().__init__(params, ctx)
        if not any(params.get(name) for name in FIELDS):
            raise ValueError(f"nothing to rewrite: give at least one of {', '.join(FIELDS)}")
        versions = {ip_version(params[n]) for n in ("dst", "src") if params.get(n)}
        if len(versions) > 1:
            raise ValueError("dst and src must be of one IP version")
        self.version = versions.pop() if versions else None
        self.dst = packed_ip(params["dst"], self.version) if params.get("dst") else None
        self.src = packed_ip(params["src"], self.version) if params.get("src") else None
        self.dst_mac = packed_mac(params["dst_mac"]) if params.get("dst_mac") else None
        self.src_mac = packed_mac(params["src_mac"]) if params.get("src_mac") else None
        self.dport, self.sport = params.get("dport") or 0, params.get("sport") or 0
        self.rewritten = ctx.counter("rewritten", "frames rewritten")
        self.skipped = ctx.counter("skipped", "frames left as they were (not IP, other version)")

    def process(self, frame: memoryview) -> Verdict:
        pkt = Frame(frame)
        ip = pkt.ip
        if ip is None or self.version is not None and ip.version != self.version:
            self.skipped.inc()
            return Verdict.FORWARD
        if self.dst is not None:
            ip.dst = self.dst
        if self.src is not None:
            ip.src = self.src
        ports = pkt.tcp or pkt.udp
        if ports is not None:
            if self.dport:
                ports.dport = self.dport
            if self.sport:
                ports.sport = self.sport
        eth = pkt.eth
        if self.dst_mac is not None:
            eth.dst = self.dst_mac  # type: ignore[union-attr]
        if self.src_mac is not None:
            eth.src = self.src_mac  # type: ignore[union-attr]
        if not pkt.modified:
            self.skipped.inc()
            return Verdict.FORWARD
        self.rewritten.inc()
        return Verdict.MODIFIED
