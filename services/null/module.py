"""The null service: every frame goes back to the switch as it came."""

from nodes.module_api import ServiceModule, Verdict


class Null(ServiceModule):
    def process(self, frame: memoryview) -> Verdict:
        return Verdict.PASS
