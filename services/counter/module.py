"""The counter service: packets and bytes of one session's flow, first and last seen."""

from collections.abc import Mapping

from nodes.module_api import ModuleContext, ServiceModule, Verdict


class Counter(ServiceModule):
    def __init__(self, params: Mapping[str, object], ctx: ModuleContext) -> None:
        super().__init__(params, ctx)
        self.packets = 0
        self.bytes = 0
        self.first_seen: float | None = None
        self.last_seen: float | None = None
        self.log_every = int(params.get("log_every") or 0)

    def process(self, frame: memoryview) -> Verdict:
        self.packets += 1
        self.bytes += len(frame)
        self.last_seen = self.ctx.clock()
        if self.first_seen is None:
            self.first_seen = self.last_seen
        if self.log_every and self.packets % self.log_every == 0:
            self.ctx.log.info("%d packets, %d bytes", self.packets, self.bytes)
        return Verdict.PASS

    def stats(self) -> dict[str, int | float | str]:
        out: dict[str, int | float | str] = {"packets": self.packets, "bytes": self.bytes}
        if self.first_seen is not None and self.last_seen is not None:
            out["active_seconds"] = round(self.last_seen - self.first_seen, 6)
        return out
