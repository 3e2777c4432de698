"""How an isolated module's worker confines itself, before it runs a line of module code.

The worker starts as root, from the agent, with no fd but its channel (and /dev/null
as stdin, stdout and stderr). In this order, each step needing what the one before
still had:

1. join its cgroups (memory, CPU and process-count limits, `cgroups.py`);
2. rlimits, the floor where a controller is missing: address space (the memory
   budget plus the interpreter's own mappings), one process (itself), few files, no
   core dumps, no file writes, no locked memory (no CPU-time limit: RLIMIT_CPU counts
   a process's whole life, so it cannot bound the rate of a long-lived module; the
   cgroup's CPU share and the agent's per-batch time budget do);
3. an unprivileged uid and gid of its own, SANDBOX_UID_BASE + its pid, which no file
   and no other process has, so it can neither signal nor trace anything, nor read
   what only root or a user may; no supplementary groups, no capabilities (but see
   `keeps_dac_read`), an empty bounding set, no_new_privs, not dumpable;
4. Landlock: read-only access beneath the folders it needs and nothing else;
5. seccomp: no processes, no programs, no sockets unless granted, ... (`seccomp.py`).
"""

from __future__ import annotations

import ctypes
import os
import resource
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nodes.sandbox import landlock, seccomp

SANDBOX_UID_BASE = 0x4E530000  # "NS" and the worker's pid: uids 1314062336 and up
AS_HEADROOM = 512 << 20  # address space the interpreter maps beyond what it uses
NOFILE = 32
PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 8, 38, 4
PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
CAP_DAC_READ_SEARCH = 2
_CAP_VERSION_3 = 0x20080522
LIBRARY_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
LD_CACHE = "/etc/ld.so.cache"


class ConfineError(OSError):
    """A step of the confinement failed; the worker must not go on."""


@dataclass(frozen=True)
class Confinement:
    """What the agent tells a worker about its confinement (JSON in the INIT message)."""

    procs_files: list[str] = field(default_factory=list)  # cgroup.procs of its cgroups
    memory_bytes: int = 64 << 20
    readable: list[str] = field(default_factory=list)  # beside Python's: bundle, grants
    net: bool = False


def python_paths() -> list[str]:
    """Return the folders the interpreter reads from: its prefixes, whose site-packages
    include the venv's; the `nodes` package, for the module API and building blocks
    (only that package: the repository holds the node's secrets); shared libraries."""
    import nodes

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(str(Path(nodes.__file__).resolve().parent))
    return sorted(paths) + [d for d in LIBRARY_DIRS if os.path.isdir(d)] + [LD_CACHE]


def _mode_allows(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """Return True when a user `uid` in group `gid` (no other groups, no capability) has
    the permission `bits` (stat.S_IROTH-style: 4 read, 1 execute) on the file."""
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def dac_blocked(path: str, uid: int, gid: int, walk: bool = False) -> str | None:
    """Return the first file on the way to `path` (or beneath it, with `walk`) that
    `uid` cannot pass or read, or None when it can read it all. A path that is not
    there blocks nothing."""
    target = Path(path)
    for folder in [*reversed(target.parents)]:
        try:
            if not _mode_allows(os.stat(folder), uid, gid, 1):
                return str(folder)
        except FileNotFoundError:
            return None
    trees = os.walk(target) if walk and target.is_dir() else [(str(target), [], [])]
    for root, dirs, files in trees:
        for name in [root, *(os.path.join(root, d) for d in dirs)]:
            try:
                st = os.stat(name)
            except FileNotFoundError:
                continue
            wanted = 5 if stat.S_ISDIR(st.st_mode) else 4
            if not _mode_allows(st, uid, gid, wanted):
                return name
        for name in (os.path.join(root, f) for f in files):
            try:
                if not _mode_allows(os.stat(name), uid, gid, 4):
                    return name
            except FileNotFoundError:
                continue
    return None


def keeps_dac_read(readable: Iterable[str], bundle: str, uid: int) -> str | None:
    """Return the path that makes the worker keep CAP_DAC_READ_SEARCH, or None.

    A worker must read Python and its bundle. Where the agent's own files are
    readable by root only (a Python installed under /root, a bundle in a private
    folder), its uid alone cannot: it then keeps that one capability, which lets it
    pass file permissions for reading, and Landlock, which no capability passes, is
    what limits its reads to the folders it is given. open_by_handle_at, the one call
    that would use the capability without a path, is denied by seccomp.
    """
    for path in readable:
        blocked = dac_blocked(path, uid, uid, walk=path == bundle)
        if blocked:
            return blocked
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0) -> None:
    if libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise ConfineError(err, f"prctl({option}): {os.strerror(err)}")


def _capset(libc: ctypes.CDLL, caps: int) -> None:
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(caps, caps, 0, 0, 0, 0)  # effective, permitted, inheritable
    if libc.capset(header, data) != 0:
        err = ctypes.get_errno()
        raise ConfineError(err, f"capset: {os.strerror(err)}")


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def set_rlimits(memory_bytes: int) -> None:
    """Lower this process's rlimits to the worker's floor (see the module docstring)."""
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, 1),
        (resource.RLIMIT_NOFILE, NOFILE),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_AS, memory_bytes + AS_HEADROOM),
    ):
        resource.setrlimit(limit, (value, value))


def drop_privileges(uid: int, keep_dac_read: bool) -> None:
    """Become `uid`:`uid` with no groups and no capability (but CAP_DAC_READ_SEARCH when
    `keep_dac_read`), unable to gain any, not dumpable."""
    libc = _libc()
    keep = 1 << CAP_DAC_READ_SEARCH if keep_dac_read else 0
    for cap in range(_last_cap() + 1):
        if not keep >> cap & 1:
            _prctl(libc, PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    if keep:
        _prctl(libc, PR_SET_KEEPCAPS, 1)
    os.setresuid(uid, uid, uid)
    _capset(libc, keep)  # from root to another uid, only what KEEPCAPS kept is left
    if keep:
        _prctl(libc, PR_SET_KEEPCAPS, 0)
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, PR_SET_DUMPABLE, 0)


def apply(c: Confinement, bundle: str) -> dict[str, object]:
    """Confine this process as `c` says, its module's bundle folder being `bundle`;
    return what was applied (the agent shows it). Raise OSError when a step fails."""
    pid = os.getpid()
    for procs in c.procs_files:
        with open(procs, "w") as f:
            f.write(str(pid))
    set_rlimits(c.memory_bytes)
    readable = [*python_paths(), bundle, *c.readable]
    uid = SANDBOX_UID_BASE + pid
    blocker = keeps_dac_read(readable, bundle, uid)
    os.chdir(bundle)
    drop_privileges(uid, blocker is not None)
    abi = landlock.restrict(readable, c.net)
    seccomp.install(seccomp.build(c.net))
    return {
        "uid": uid,
        "landlock_abi": abi,
        "cgroups": len(c.procs_files),
        "dac_read_kept_for": blocker or "",
    }
