"""The probe responder: the node answers a flow's probes itself, as their destination would.

A requester that pings a destination through a NetServ node then measures its
distance to the node, not to the destination (the paper's distance estimation).
Answers leave as emitted frames; the switch forwards them to the prober by MAC.
Answers are rate-limited, so the node cannot be used to amplify a flood.
"""

from collections.abc import Mapping

from nodes.blocks import Frame, icmp_echo_reply, udp_reply
from nodes.module_api import ModuleContext, ServiceModule, Verdict

ECHO_REQUESTS = {False: 8, True: 128}  # ICMP, ICMPv6


class ProbeResponder(ServiceModule):
    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        super().__init__(params, ctx)
        self.icmp, self.udp_port = bool(params["icmp"]), int(params["udp_port"])  # type: ignore[arg-type]
        self.forward = bool(params["forward"])
        rate = float(params["rate"])  # type: ignore[arg-type]
        self.bucket = ctx.bucket(rate, max(1.0, 10 * rate))
        self.answered = ctx.counter("answered", "probes answered at the node")
        self.over_rate = ctx.counter("over_rate", "probes not answered: over the rate")
        self.passed = ctx.counter("passed", "frames that were no probe, passed on")

    def _is_probe(self, pkt: Frame) -> bool:
        """Return True when `pkt` is a probe this module answers (whole, not a fragment)."""
        ip, icmp, udp = pkt.ip, pkt.icmp, pkt.udp
        if ip is None or ip.fragment:
            return False
        if self.icmp and icmp is not None:
            whole = icmp.offset + icmp.length <= len(pkt)
            return whole and icmp.type == ECHO_REQUESTS[icmp.v6] and icmp.code == 0
        return bool(self.udp_port) and udp is not None and udp.dport == self.udp_port

    def process(self, frame: memoryview) -> Verdict:
        pkt = Frame(frame)
        if not self._is_probe(pkt):
            self.passed.inc()
            return Verdict.FORWARD
        if self.bucket.take():
            udp = pkt.udp
            answer = udp_reply(pkt, bytes(udp.payload)) if udp else icmp_echo_reply(pkt)
            self.ctx.emit(answer)
            self.answered.inc()
        else:
            self.over_rate.inc()
            self.ctx.log.warning("probes arrive faster than the rate; some go unanswered")
        return Verdict.FORWARD if self.forward else Verdict.DROP
