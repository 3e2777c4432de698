"""Landlock: what an isolated module may touch in the file system, and whom it may signal.

The ruleset handles every file-system right the kernel's Landlock ABI knows, so
whatever no rule allows is denied: an isolated module may read the folders it is
given (its bundle, Python's, the shared libraries) and nothing else, and may write
nowhere. From ABI 4 on, TCP bind and connect are handled too (denied unless the
module has `net`); from ABI 6 on, signals and abstract Unix sockets are scoped to the
module's own process. Landlock applies to the process whatever its uid and
capabilities are.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable

# The numbers are the same on every architecture (they came after the tables were unified).
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
# The rights each ABI version handles (bits 0-12 since 1; REFER 2, TRUNCATE 3, IOCTL_DEV 5).
FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class LandlockError(OSError):
    """Landlock is missing or refused the ruleset; the message says why."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """Return the kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    version = _libc().syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    return max(0, int(version))


def fs_rights(abi: int) -> int:
    """Return every file-system right ABI version `abi` handles."""
    return FS_RIGHTS[max(v for v in FS_RIGHTS if v <= abi)]


def ruleset_attr(abi: int, net: bool) -> bytes:
    """Return struct landlock_ruleset_attr for `abi`, as long as that ABI reads it:
    handled file rights, handled network rights (ABI >= 4; none when `net`), and
    scopes (ABI >= 6)."""
    attr = struct.pack("=Q", fs_rights(abi))
    if abi >= 4:
        attr += struct.pack("=Q", 0 if net else NET_BIND_TCP | NET_CONNECT_TCP)
    if abi >= 6:
        attr += struct.pack("=Q", SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    return attr


def restrict(readable: Iterable[str], net: bool) -> int:
    """Confine this process (no_new_privs must be set): read-only access beneath each
    existing path of `readable`, nothing else; return the ABI version used. Raise
    LandlockError when the kernel has no Landlock or refuses."""
    libc = _libc()
    abi = abi_version()
    if abi < 1:
        raise LandlockError("this kernel offers no Landlock (or it is disabled)")
    attr = ruleset_attr(abi, net)
    fd = libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), 0)
    if fd < 0:
        raise _error("landlock_create_ruleset")
    try:
        for path in readable:
            _allow_read(libc, int(fd), path, abi)
        if libc.syscall(SYS_RESTRICT_SELF, int(fd), 0) != 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(fd)
    return abi


def _allow_read(libc: ctypes.CDLL, ruleset: int, path: str, abi: int) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing to read there; a grant of a path that is not there grants nothing
    try:
        rights = READ_FILE if not os.path.isdir(path) else READ_FILE | READ_DIR
        rights &= fs_rights(abi)
        rule = struct.pack("=Qi", rights, target)  # struct landlock_path_beneath_attr, packed
        if libc.syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, 0) != 0:
            raise _error(f"landlock_add_rule({path})")
    finally:
        os.close(target)


def _error(call: str) -> LandlockError:
    err = ctypes.get_errno()
    return LandlockError(err, f"{call}: {os.strerror(err)}")
