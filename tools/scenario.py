"""Traffic between Mininet hosts, shared by the demo and the integration tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from tools.procs import REPO, python_env, stop_process


def _popen(host: Any, argv: list[str]) -> subprocess.Popen:
    return host.popen(
        argv,
        cwd=str(REPO),
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Receiver:
    """Counts UDP datagrams arriving at a host, per "source:port", while it is open.

    With `arrivals`, `arrived(src, port)` lists each datagram's (time of day, number
    the sender gave it) in arrival order.
    """

    def __init__(self, host: Any, arrivals: bool = False) -> None:
        self.host = host
        self.counts: dict[str, int] = {}
        self.arrivals: dict[str, list[tuple[float, int]]] | None = {} if arrivals else None

    def __enter__(self) -> Receiver:
        argv = [
            sys.executable,
            "-m",
            "tools.traffic",
            "count",
            "--iface",
            self.host.defaultIntf().name,
        ]
        if self.arrivals is not None:
            argv.append("--arrivals")
        self.proc = _popen(self.host, argv)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            stop_process(self.proc)
            raise RuntimeError(
                f"receiver on {self.host.name} did not start: {line} {self.proc.stderr.read()}"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # let the last frames through the detour
        self.proc.terminate()
        try:  # read while it writes: a long answer fills the pipe before it can exit
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            out = self.proc.stdout.read()
        out = out.strip()
        data = json.loads(out) if out else {}
        if self.arrivals is not None:
            self.arrivals = {k: [tuple(a) for a in v] for k, v in data.get("arrivals", {}).items()}
            data = data.get("counts", {})
        self.counts = data

    def got(self, src: Any, dport: int) -> int:
        return self.counts.get(f"{src.IP()}:{dport}", 0)

    def arrived(self, src: Any, dport: int) -> list[tuple[float, int]]:
        """Return the (time of day, number) of each datagram from `src` to `dport`."""
        return (self.arrivals or {}).get(f"{src.IP()}:{dport}", [])


def send_udp(
    src: Any, dst: Any, dport: int, count: int, rate: float = 1000.0, size: int = 64
) -> int:
    """Send `count` UDP frames from host `src` to host `dst`:`dport`; return how many left."""
    argv = [
        sys.executable,
        "-m",
        "tools.traffic",
        "send",
        "--iface",
        src.defaultIntf().name,
        "--src-mac",
        src.MAC(),
        "--dst-mac",
        dst.MAC(),
        "--src-ip",
        src.IP(),
        "--dst-ip",
        dst.IP(),
        "--dport",
        str(dport),
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--size",
        str(size),
    ]
    proc = _popen(src, argv)
    out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"sending from {src.name} failed: {err.strip()}")
    return json.loads(out)["sent"]


def warm_up(*pairs: tuple[Any, Any]) -> None:
    """Ping across each pair so the switch learns every host before measured traffic."""
    for a, b in pairs:
        out = a.cmd(f"ping -c 2 -i 0.2 -W 2 {b.IP()}")
        if " 0% packet loss" not in out:
            raise RuntimeError(f"{a.name} cannot ping {b.name}: {out.strip().splitlines()[-2:]}")
