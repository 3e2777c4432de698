"""Which Open vSwitch datapath this machine can use."""

from __future__ import annotations

import subprocess
from pathlib import Path

_OVS_MODULE = Path("/sys/module/openvswitch")


def detect_datapath(try_modprobe: bool = True) -> str:
    """Return Mininet's name for the usable OVS datapath.

    Returns "kernel" when the openvswitch kernel module is loaded (after a quiet
    `modprobe openvswitch` attempt when `try_modprobe` is true), else "user",
    which Mininet turns into `datapath_type=netdev`.
    """
    if _OVS_MODULE.exists():
        return "kernel"
    if try_modprobe:
        # modprobe may be missing or the kernel may lack module support; either
        # way the answer is then the userspace datapath, so failures are ignored.
        try:
            subprocess.run(
                ["modprobe", "-q", "openvswitch"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "kernel" if _OVS_MODULE.exists() else "user"
