"""Reading the switch's own view: flows and port counters, as ovs-ofctl reports them."""

from __future__ import annotations

import re
import subprocess

OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]


def _ofctl(*args: str) -> str:
    out = subprocess.run([*OFCTL, *args], capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        raise RuntimeError(f"ovs-ofctl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def dump_flows(bridge: str, cookie: int | None = None) -> list[str]:
    """Return the flow lines of `bridge`, only those with exactly `cookie` when given."""
    args = ["dump-flows", bridge] + ([f"cookie={cookie:#x}/-1"] if cookie is not None else [])
    return [line.strip() for line in _ofctl(*args).splitlines() if "cookie=" in line]


def flow_packets(bridge: str, cookie: int) -> int:
    """Return the packet count summed over the flows carrying `cookie`."""
    return sum(
        int(m.group(1))
        for line in dump_flows(bridge, cookie)
        if (m := re.search(r"n_packets=(\d+)", line))
    )


def port_counters(bridge: str, port: str) -> dict[str, int]:
    """Return {rx_packets, tx_packets, rx_bytes, tx_bytes} of one port of `bridge`."""
    text = _ofctl("dump-ports", bridge, port)
    rx = re.search(r"rx pkts=(\d+), bytes=(\d+)", text)
    tx = re.search(r"tx pkts=(\d+), bytes=(\d+)", text)
    if not rx or not tx:
        raise RuntimeError(f"no counters for port {port} of {bridge} in: {text!r}")
    return {
        "rx_packets": int(rx.group(1)),
        "rx_bytes": int(rx.group(2)),
        "tx_packets": int(tx.group(1)),
        "tx_bytes": int(tx.group(2)),
    }
