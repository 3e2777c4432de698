"""Set-up on a machine where Open vSwitch is not running, and run again after that.

Set-up serialises itself with a lock file; the OVS daemons it starts must not inherit
the lock, or every later set-up waits for them until it gives up. The test starts a
private OVS instance (its own run, database and log folders, which ovs-ctl, ovs-vsctl
and ovs-appctl all take from OVS_* variables), so the system's OVS is left alone.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "tools" / "setup.sh"


def _lock_path() -> Path:
    # As tools/setup.sh names it: the first 12 hex digits of sha256("<repo>\n").
    digest = hashlib.sha256(f"{REPO}\n".encode()).hexdigest()[:12]
    return Path(f"/tmp/netserv-setup-{digest}.lock")


def _holders(path: Path) -> list[int]:
    """Return the pids of every process with `path` open."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or a kernel thread
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    pids.append(int(proc.name))
                    break
            except OSError:
                continue
    return pids


def _daemon_pids(rundir: Path) -> dict[str, int]:
    pids = {}
    for name in ("ovsdb-server", "ovs-vswitchd"):
        pidfile = rundir / f"{name}.pid"
        if pidfile.exists():
            pids[name] = int(pidfile.read_text().strip())
    return pids


@pytest.fixture
def private_ovs(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """Yield (environment, run folder) of an OVS instance no one has started yet.

    Whatever daemons set-up starts there are stopped afterwards, by the pids in
    their pid files.
    """
    dirs = {k: tmp_path / k.lower() for k in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR")}
    dirs["OVS_SYSCONFDIR"] = tmp_path / "etc"
    for path in dirs.values():
        path.mkdir()
    env = dict(os.environ, **{k: str(v) for k, v in dirs.items()})
    try:
        yield env, dirs["OVS_RUNDIR"]
    finally:
        for pid in _daemon_pids(dirs["OVS_RUNDIR"]).values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)


def _setup(env: dict[str, str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SETUP), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc, time.monotonic() - start


def test_ovs_started_by_setup_does_not_hold_its_lock(
    private_ovs: tuple[dict[str, str], Path],
) -> None:
    env, rundir = private_ovs
    lock = _lock_path()

    first, _ = _setup(env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "starting Open vSwitch" in first.stderr
    daemons = _daemon_pids(rundir)
    assert set(daemons) == {"ovsdb-server", "ovs-vswitchd"}, "set-up did not start OVS"
    assert all(Path(f"/proc/{pid}").exists() for pid in daemons.values())

    holders = _holders(lock)
    assert holders == [], f"processes still hold {lock} after set-up ended: {holders}"

    again, seconds = _setup(env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert seconds < 20, f"a second set-up took {seconds:.1f}s"
    assert "starting Open vSwitch" not in again.stderr, "the first OVS was not seen as running"
    assert _daemon_pids(rundir) == daemons
