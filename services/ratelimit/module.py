"""The rate limiter: a token bucket per flow (or one for the session); frames over it drop."""

from collections.abc import Mapping

from nodes.blocks import Frame, TokenBucket
from nodes.module_api import ModuleContext, ServiceModule, Verdict

MIN_BYTE_BURST = 1514  # a burst in bytes below a full frame would drop every full frame


class RateLimit(ServiceModule):
    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        super().__init__(params, ctx)
        self.rate, self.burst = float(params["rate"]), int(params["burst"])  # type: ignore[arg-type]
        self.by_bytes = params["unit"] == "bytes"
        if self.by_bytes and self.burst < MIN_BYTE_BURST:
            raise ValueError(f"a burst in bytes must be at least {MIN_BYTE_BURST}, a full frame")
        self.passed = ctx.counter("passed", "frames let through")
        self.dropped = ctx.counter("dropped", "frames over the rate, dropped")
        self.per_flow = params["per"] == "flow"
        if self.per_flow:
            self.flows = ctx.gauge("flows", "flows with a bucket")
            self.buckets = ctx.flows(
                idle=float(params["idle"]),  # type: ignore[arg-type]
                max_entries=int(params["max_flows"]),  # type: ignore[arg-type]
                factory=self._bucket,
            )
        else:
            self.session_bucket = self._bucket()

    def _bucket(self) -> TokenBucket:
        return self.ctx.bucket(self.rate, self.burst)

    def process(self, frame: memoryview) -> Verdict:
        if self.per_flow:
            # Frames that are not IP (no flow key) share the bucket of key None.
            bucket = self.buckets.setdefault(Frame(frame).flow_key())
            self.flows.value = len(self.buckets)
        else:
            bucket = self.session_bucket
        if bucket.take(len(frame) if self.by_bytes else 1):
            self.passed.inc()
            return Verdict.FORWARD
        self.dropped.inc()
        return Verdict.DROP
