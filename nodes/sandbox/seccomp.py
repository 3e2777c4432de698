"""A seccomp filter for isolated modules, assembled as classic BPF by hand.

The filter is a deny list: a module needs most of what Python does, and what it
must not do is short. A denied call kills the process (SECCOMP_RET_KILL_PROCESS):
the agent sees it die of SIGSYS, quarantines the module and says so, rather than a
module quietly catching a PermissionError and trying the next trick. Denied:
creating processes (fork, vfork, clone, clone3: the worker needs no thread either),
running programs, sockets (unless the node grants `net`: then UDP and TCP over
IPv4 and IPv6 only, never raw), tracing and reading other processes, mounts and
namespaces, kernel modules, BPF, io_uring (whose operations seccomp would not see),
keyrings, clocks, reboot and the like. Only x86-64 is described; on another
architecture `build` raises, and the isolated tier is refused with that message.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# struct seccomp_data: nr (int), arch (u32), instruction_pointer (u64), args[6] (u64)
_NR, _ARCH, _ARG0, _ARG1 = 0, 4, 16, 24
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_AND = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
_X32_BIT = 0x40000000
AF_INET, AF_INET6, SOCK_RAW, SOCK_TYPE_MASK = 2, 10, 3, 0xF
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k

AUDIT_ARCH_X86_64 = 0xC000003E
SYSCALLS_X86_64 = {
    "socket": 41,
    "socketpair": 53,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
}
ARCHES = {"x86_64": (AUDIT_ARCH_X86_64, SYSCALLS_X86_64)}
DENIED = tuple(name for name in SYSCALLS_X86_64 if name != "socket")


class SeccompError(OSError):
    """The filter cannot be built or installed here; the message says why."""


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return _INSN.pack(code, jt, jf, k)


def build(net: bool, machine: str | None = None) -> bytes:
    """Return the filter program (sock_filter instructions, packed) for `machine`
    (default: this one's); with `net`, UDP/TCP sockets over IPv4 and IPv6 are allowed.
    Raise SeccompError for an architecture it does not describe."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise SeccompError(f"no seccomp filter is described for {machine}")
    arch, numbers = ARCHES[machine]
    denied = [numbers[name] for name in DENIED]
    socket_nr = numbers["socket"]
    # The denied calls each jump to the KILL at the end; socket() to its own check.
    # Offsets are counted from the instruction after the jump.
    prog = [
        _insn(_LD_W_ABS, _ARCH),
        _insn(_JEQ, arch, 1, 0),
        _insn(_RET, RET_KILL_PROCESS),  # another ABI's numbers mean other calls
        _insn(_LD_W_ABS, _NR),
        _insn(_JGE, _X32_BIT, 0, 1),  # the x32 ABI: the same calls by other numbers
        _insn(_RET, RET_KILL_PROCESS),
    ]
    socket_check = _socket_check(net)
    # After the compares: [RET ALLOW] [socket check...] [RET KILL]
    to_kill_from_end = 1 + len(socket_check)
    for i, nr in enumerate(denied):
        remaining = len(denied) - i - 1  # compares after this one
        prog.append(_insn(_JEQ, nr, remaining + 1 + to_kill_from_end, 0))
    prog.append(_insn(_JEQ, socket_nr, 1, 0))
    prog.append(_insn(_RET, RET_ALLOW))
    prog.extend(socket_check)
    prog.append(_insn(_RET, RET_KILL_PROCESS))
    return b"".join(prog)


def _socket_check(net: bool) -> list[bytes]:
    """Return the instructions that judge a socket() call; they fall through to KILL."""
    if not net:
        return []
    return [
        _insn(_LD_W_ABS, _ARG0),  # the family
        _insn(_JEQ, AF_INET, 1, 0),
        _insn(_JEQ, AF_INET6, 0, 4),  # neither: on to KILL
        _insn(_LD_W_ABS, _ARG1),  # the type, with SOCK_NONBLOCK and SOCK_CLOEXEC
        _insn(_AND, SOCK_TYPE_MASK),
        _insn(_JEQ, SOCK_RAW, 1, 0),
        _insn(_RET, RET_ALLOW),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


SYS_SECCOMP = 317
SECCOMP_SET_MODE_FILTER = 1


def install(prog: bytes) -> None:
    """Load `prog` as this process's filter (no_new_privs must be set); raise SeccompError."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // _INSN.size, ctypes.addressof(buf))
    if libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(fprog)) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"cannot install the seccomp filter: {os.strerror(err)}")
