"""The sandbox's dealings with the kernel, as data: cgroup detection and limits, the seccomp
program (run on a small BPF interpreter), Landlock's ruleset, and the file-permission check."""

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.sandbox import landlock, seccomp
from nodes.sandbox.budgets import Budget
from nodes.sandbox.cgroups import (
    Hierarchy,
    Layout,
    WorkerCgroup,
    choose,
    limit_files,
    parse_mountinfo,
    sweep,
)
from nodes.sandbox.confine import dac_blocked, keeps_dac_read

# This machine's, cut short: v1 controllers, and a v2 hierarchy with none of them.
V1_AND_EMPTY_V2 = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd host of today: v2 only.
V2_ONLY = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
# An older layout: cpu and cpuacct mounted together, a mount point with a space in it.
V1_JOINED = (
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n"
)


def test_mountinfo_gives_each_hierarchy_and_its_v1_controllers():
    found = parse_mountinfo(V1_AND_EMPTY_V2)
    assert Hierarchy(1, Path("/sys/fs/cgroup/memory"), frozenset({"memory"})) in found
    assert Hierarchy(2, Path("/sys/fs/cgroup/unified")) in found
    assert len(found) == 6  # not /proc, not the tmpfs
    joined = parse_mountinfo(V1_JOINED)
    assert joined[0] == Hierarchy(1, Path("/sys/fs/cgroup/cpu,cpuacct"), frozenset({"cpu"}))
    assert joined[1].mount == Path("/mnt/my cgroups")


def test_each_controller_comes_from_v2_when_v2_has_it_else_from_v1():
    found = parse_mountinfo(V1_AND_EMPTY_V2)
    unified = Path("/sys/fs/cgroup/unified")
    here = choose(found, {unified: frozenset({"hugetlb"})})  # as on this machine
    assert {c: (h.version, str(h.mount)) for c, h in here.items()} == {
        "memory": (1, "/sys/fs/cgroup/memory"),
        "cpu": (1, "/sys/fs/cgroup/cpu"),
        "pids": (1, "/sys/fs/cgroup/pids"),
    }
    mixed = choose(found, {unified: frozenset({"memory", "pids"})})
    assert (mixed["memory"].version, mixed["pids"].version, mixed["cpu"].version) == (2, 2, 1)
    v2 = choose(parse_mountinfo(V2_ONLY), {Path("/sys/fs/cgroup"): frozenset({"cpu", "io"})})
    assert list(v2) == ["cpu"]  # memory and pids: no hierarchy has them, rlimits only


def test_detection_reads_the_v2_root_controllers(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mountinfo = f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    layout = Layout.detect(mountinfo)
    assert layout.describe() == {c: f"v2 {tmp_path}" for c in ("memory", "cpu", "pids")}
    assert Layout.detect("").describe() == {"memory": "none", "cpu": "none", "pids": "none"}


def test_the_limits_written_for_each_version():
    budget = Budget(memory_mib=64, cpu_cores=0.25)
    assert limit_files(2, "memory", budget) == [
        ("memory.max", str(64 << 20)),
        ("memory.swap.max", "0"),
    ]
    assert limit_files(2, "cpu", budget) == [("cpu.max", "25000 100000")]
    assert limit_files(1, "cpu", budget) == [
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "25000"),
    ]
    assert limit_files(1, "memory", budget)[0] == ("memory.limit_in_bytes", str(64 << 20))
    assert limit_files(1, "pids", budget) == limit_files(2, "pids", budget) == [("pids.max", "1")]


def fake_tree(root: Path, version: int, controllers: list[str]) -> Layout:
    """A cgroup hierarchy as plain folders (the kernel would make the files itself)."""
    root.mkdir(exist_ok=True)
    (root / "cgroup.subtree_control").write_text("")
    return Layout({c: Hierarchy(version, root, frozenset(controllers)) for c in controllers})


def test_a_worker_cgroup_is_made_with_its_limits_and_removed(tmp_path):
    layout = fake_tree(tmp_path / "v2", 2, ["memory", "cpu", "pids"])
    group = WorkerCgroup(layout, "123-ab", Budget(memory_mib=32, cpu_cores=1.0))
    path = tmp_path / "v2" / "netserv" / "123-ab"
    assert (path / "memory.max").read_text() == str(32 << 20)
    assert (path / "cpu.max").read_text() == "100000 100000"
    assert (path / "pids.max").read_text() == "1"
    # v2 hands controllers down only where each level's subtree_control enables them
    assert (tmp_path / "v2" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (tmp_path / "v2" / "netserv" / "cgroup.subtree_control").read_text().startswith("+")
    assert group.procs_files() == [str(path / "cgroup.procs")]
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_killed()
    for name in os.listdir(path):  # the kernel's files go with the folder
        (path / name).unlink()
    group.remove()
    assert not path.exists() and group.paths == []


def test_v1_limits_without_swap_accounting_are_still_set(tmp_path):
    layout = fake_tree(tmp_path / "memory", 1, ["memory"])
    parent = tmp_path / "memory" / "netserv" / "9-x"
    parent.mkdir(parents=True)
    parent.rmdir()
    group = WorkerCgroup(layout, "9-x", Budget())
    assert (parent / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert not group.oom_killed()


def test_a_cgroup_that_cannot_be_made_leaves_nothing_half_made(tmp_path):
    layout = fake_tree(tmp_path / "v1", 1, ["pids"])
    (tmp_path / "v1" / "netserv").mkdir()
    (tmp_path / "v1" / "netserv" / "1-a").mkdir()  # taken
    with pytest.raises(OSError, match="cgroup for 1-a"):
        WorkerCgroup(layout, "1-a", Budget())


def test_sweep_removes_the_cgroups_of_agents_that_are_gone(tmp_path):
    layout = fake_tree(tmp_path / "pids", 1, ["pids"])
    parent = tmp_path / "pids" / "netserv"
    for name in ("100-a", "200-b", "notours"):
        (parent / name).mkdir(parents=True)
    removed = sweep(layout, alive=lambda pid: pid == 200)
    assert removed == [parent / "100-a"]
    assert sorted(p.name for p in parent.iterdir()) == ["200-b", "notours"]


def run_bpf(prog: bytes, nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64, args=()) -> int:
    """Return what a classic-BPF seccomp program answers for a call (its instructions
    as seccomp.py emits them: load word, and, jeq, jge, ret)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insn = struct.Struct("=HBBI")
    code_at = [insn.unpack_from(prog, i) for i in range(0, len(prog), insn.size)]
    acc = pc = 0
    while True:
        code, jt, jf, k = code_at[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:
            acc &= k
        elif code == 0x15:
            pc += jt if acc == k else jf
        elif code == 0x35:
            pc += jt if acc >= k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


NR = seccomp.SYSCALLS_X86_64
KILL, ALLOW = seccomp.RET_KILL_PROCESS, seccomp.RET_ALLOW
SOCK_STREAM, SOCK_DGRAM, SOCK_NONBLOCK = 1, 2, 0o4000
AF_UNIX, AF_PACKET = 1, 17


@pytest.mark.parametrize("net", [False, True])
def test_every_denied_call_kills_and_ordinary_ones_pass(net):
    prog = seccomp.build(net, "x86_64")
    for name in seccomp.DENIED:
        assert run_bpf(prog, NR[name]) == KILL, name
    for nr in (0, 1, 3, 9, 60, 202, 228, 231, 318):  # read write close mmap exit futex ...
        assert run_bpf(prog, nr) == ALLOW, nr
    assert run_bpf(prog, 0, arch=0x40000003) == KILL  # i386's numbers: other calls
    assert run_bpf(prog, 0x40000000 + 41) == KILL  # the x32 ABI


def test_sockets_are_denied_unless_granted_and_then_never_raw_nor_local():
    closed, net = seccomp.build(False, "x86_64"), seccomp.build(True, "x86_64")
    udp = (seccomp.AF_INET, SOCK_DGRAM)
    assert run_bpf(closed, NR["socket"], args=udp) == KILL
    assert run_bpf(net, NR["socket"], args=udp) == ALLOW
    assert run_bpf(net, NR["socket"], args=(seccomp.AF_INET6, SOCK_STREAM | SOCK_NONBLOCK)) == ALLOW
    for family, kind in (
        (seccomp.AF_INET, seccomp.SOCK_RAW),
        (AF_UNIX, SOCK_DGRAM),
        (AF_PACKET, 3),
    ):
        assert run_bpf(net, NR["socket"], args=(family, kind)) == KILL, family
    assert run_bpf(net, NR["socketpair"], args=(AF_UNIX, SOCK_STREAM)) == KILL


def test_an_architecture_without_a_table_is_refused():
    with pytest.raises(seccomp.SeccompError, match="no seccomp filter is described for riscv64"):
        seccomp.build(False, "riscv64")


def test_the_landlock_ruleset_grows_with_the_abi():
    assert len(landlock.ruleset_attr(1, net=False)) == 8
    assert landlock.fs_rights(1) == (1 << 13) - 1 and landlock.fs_rights(4) == (1 << 15) - 1
    v4 = landlock.ruleset_attr(4, net=False)
    assert struct.unpack("=QQ", v4)[1] == landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP
    assert struct.unpack("=QQ", landlock.ruleset_attr(4, net=True))[1] == 0
    fs, _net, scoped = struct.unpack("=QQQ", landlock.ruleset_attr(7, net=False))
    assert fs == (1 << 16) - 1
    assert scoped == landlock.SCOPE_SIGNAL | landlock.SCOPE_ABSTRACT_UNIX_SOCKET


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A folder in /tmp whose way there any user may walk (pytest's tmp_path is root's)."""
    path = Path(tempfile.mkdtemp(prefix="netserv-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_the_permission_check_finds_what_an_unprivileged_uid_cannot_read(public_tmp):
    tmp_path = public_tmp
    uid = 1314062336 + 4242  # a worker's: no file belongs to it
    open_dir = tmp_path / "open"
    (open_dir / "sub").mkdir(parents=True)
    (open_dir / "sub" / "f").write_text("x")
    for p in (tmp_path, open_dir, open_dir / "sub"):
        p.chmod(0o755)
    (open_dir / "sub" / "f").chmod(0o644)
    assert dac_blocked(str(open_dir), uid, uid, walk=True) is None
    (open_dir / "sub" / "f").chmod(0o600)
    assert dac_blocked(str(open_dir), uid, uid, walk=True) == str(open_dir / "sub" / "f")
    assert dac_blocked(str(open_dir), uid, uid) is None  # without walking, the folder only
    assert dac_blocked(str(tmp_path / "absent" / "x"), uid, uid) is None  # nothing to read
    tmp_path.chmod(0o700)
    assert dac_blocked(str(open_dir / "sub"), uid, uid) == str(tmp_path)
    assert keeps_dac_read(["/usr", str(open_dir)], str(open_dir), uid) == str(tmp_path)
