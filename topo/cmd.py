"""Running the few root-namespace commands that topo/ needs, with errors that say why."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


class CommandError(RuntimeError):
    """A command that topo/ ran to build or tear down a network failed."""


def run(argv: Sequence[str], timeout: float = 30.0, check: bool = True) -> str | None:
    """Run `argv` in the root namespace and return its stdout.

    Raises CommandError with the command line and its stderr when it cannot be
    started or times out, and when it exits non-zero if `check` is true; with
    `check` false a non-zero exit returns None instead.
    """
    line = " ".join(argv)
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandError(f"`{line}` could not run: {exc}") from exc
    if proc.returncode != 0:
        if not check:
            return None
        raise CommandError(f"`{line}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def link_exists(name: str) -> bool:
    """Return True when a network interface called `name` exists in the root namespace."""
    return Path("/sys/class/net", name).exists()


def disable_ipv6(ifname: str) -> None:
    """Turn IPv6 off on a root-namespace interface so it sends no RS/DAD/MLD frames.

    Returns nothing; raises CommandError when the sysctl cannot be written.
    """
    knob = Path("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
    if not knob.parent.exists():
        return  # IPv6 is not compiled in or already off for this device
    try:
        knob.write_text("1\n")
    except OSError as exc:
        raise CommandError(f"cannot disable IPv6 on {ifname}: {exc}") from exc


def disable_tx_offload(ifname: str) -> None:
    """Turn TX checksum offload off on a root-namespace interface.

    The userspace datapath reads frames from veths with AF_PACKET and forwards
    them as they are; a checksum left for the "hardware" is then never filled
    in and the receiver drops TCP and UDP. Returns nothing; raises CommandError.
    """
    run(["ethtool", "-K", ifname, "tx", "off"])
