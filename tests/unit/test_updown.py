"""`netserv topo down`'s view of the processes a state file names (topo/updown.py)."""

from __future__ import annotations

import os
import subprocess
import time

from topo.updown import started_at


def test_a_process_that_exited_has_no_start_time_even_before_it_is_reaped():
    child = subprocess.Popen(["sleep", "0.2"])
    try:
        assert started_at(child.pid) is not None
        deadline = time.monotonic() + 10
        while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert started_at(child.pid) is None  # a zombie: `down` must not wait for it
    finally:
        child.wait()
    assert started_at(os.getpid()) is not None
