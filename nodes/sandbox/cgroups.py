"""Control groups for isolated modules: a memory, CPU and process-count limit per worker.

A host may mount cgroup v2 (one unified hierarchy), v1 (a hierarchy per controller,
or a few together), or both, with each controller in one of them: `detect` reads
/proc/self/mountinfo and takes each controller from v2 when v2 offers it, else from
the v1 hierarchy that holds it. A worker's cgroup is `netserv/<agent pid>-<n>` in each
hierarchy used, made with its limits before the worker starts; the worker joins it
itself, before it runs any module code, and it is removed when the worker is gone.
Where a controller is in no hierarchy, the worker's rlimits are the only limit.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodes.sandbox.budgets import Budget

log = logging.getLogger("netserv.sandbox")
CONTROLLERS = ("memory", "cpu", "pids")
PARENT = "netserv"
CPU_PERIOD_US = 100_000
TASKS = 1  # the worker is one process with one thread: no module may start another
OPTIONAL_FILES = {"memory.memsw.limit_in_bytes", "memory.swap.max"}  # absent without swap


class CgroupError(OSError):
    """A worker's cgroup could not be made; the message says where."""


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: its version, where it is, what controllers it has."""

    version: int
    mount: Path
    controllers: frozenset[str] = frozenset()


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """Return the cgroup hierarchies mounted, as /proc/self/mountinfo lists them; a v2
    hierarchy's controllers are not in mountinfo and are left empty."""
    found = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        if not sep:
            continue
        fields, rest = before.split(), after.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mount, fstype, options = Path(_unescape(fields[4])), rest[0], rest[2].split(",")
        if fstype == "cgroup2":
            found.append(Hierarchy(2, mount))
        elif fstype == "cgroup":
            found.append(Hierarchy(1, mount, frozenset(o for o in options if o in CONTROLLERS)))
    return found


def choose(
    hierarchies: list[Hierarchy], v2_controllers: Mapping[Path, frozenset[str]]
) -> dict[str, Hierarchy]:
    """Return, for each controller NetServ uses that some hierarchy offers, the one to
    use: v2 when its root lists the controller in cgroup.controllers (`v2_controllers`,
    by mount point), else the first v1 hierarchy that has it."""
    chosen: dict[str, Hierarchy] = {}
    for controller in CONTROLLERS:
        for h in hierarchies:
            if h.version == 2 and controller in v2_controllers.get(h.mount, frozenset()):
                chosen[controller] = Hierarchy(2, h.mount, v2_controllers[h.mount])
                break
        else:
            for h in hierarchies:
                if h.version == 1 and controller in h.controllers:
                    chosen[controller] = h
                    break
    return chosen


def limit_files(version: int, controller: str, budget: Budget) -> list[tuple[str, str]]:
    """Return the (file, value) writes that set `controller`'s limit from `budget`, in
    the order they must be written."""
    quota = max(1000, int(budget.cpu_cores * CPU_PERIOD_US))
    if version == 2:
        return {
            "memory": [("memory.max", str(budget.memory_bytes)), ("memory.swap.max", "0")],
            "cpu": [("cpu.max", f"{quota} {CPU_PERIOD_US}")],
            "pids": [("pids.max", str(TASKS))],
        }[controller]
    return {
        "memory": [
            ("memory.limit_in_bytes", str(budget.memory_bytes)),
            ("memory.memsw.limit_in_bytes", str(budget.memory_bytes)),  # no swap either
        ],
        "cpu": [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))],
        "pids": [("pids.max", str(TASKS))],
    }[controller]


@dataclass
class Layout:
    """The hierarchy chosen for each controller (missing: none offers it)."""

    by_controller: dict[str, Hierarchy] = field(default_factory=dict)

    @classmethod
    def detect(cls, mountinfo: str | None = None) -> Layout:
        """Return the layout of this host (from `mountinfo`'s text, default this process's)."""
        if mountinfo is None:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        hierarchies = parse_mountinfo(mountinfo)
        v2 = {}
        for h in hierarchies:
            if h.version == 2:
                try:
                    v2[h.mount] = frozenset((h.mount / "cgroup.controllers").read_text().split())
                except OSError:
                    v2[h.mount] = frozenset()
        return cls(choose(hierarchies, v2))

    def describe(self) -> dict[str, str]:
        """Return {controller: "v1 /path" or "v2 /path" or "none"}."""
        return {
            c: f"v{h.version} {h.mount}" if (h := self.by_controller.get(c)) else "none"
            for c in CONTROLLERS
        }


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerCgroup:
    """The cgroups of one worker, one per hierarchy used, with its limits set."""

    def __init__(self, layout: Layout, name: str, budget: Budget) -> None:
        self.layout = layout
        self.paths: list[Path] = []
        groups: dict[Path, list[str]] = {}
        for controller, h in layout.by_controller.items():
            groups.setdefault(h.mount, []).append(controller)
        try:
            for mount, controllers in groups.items():
                version = layout.by_controller[controllers[0]].version
                parent = mount / PARENT
                if version == 2:
                    self._enable(mount, parent, controllers)
                else:
                    parent.mkdir(exist_ok=True)
                path = parent / name
                path.mkdir()
                self.paths.append(path)
                for controller in controllers:
                    for filename, value in limit_files(version, controller, budget):
                        self._set(path / filename, value)
        except OSError as exc:
            self.remove()
            raise CgroupError(exc.errno or errno.EIO, f"cgroup for {name}: {exc}") from None

    @staticmethod
    def _enable(mount: Path, parent: Path, controllers: list[str]) -> None:
        wanted = " ".join(f"+{c}" for c in controllers)
        _write(mount / "cgroup.subtree_control", wanted)
        parent.mkdir(exist_ok=True)
        _write(parent / "cgroup.subtree_control", wanted)

    @staticmethod
    def _set(path: Path, value: str) -> None:
        try:
            _write(path, value)
        except FileNotFoundError:
            if path.name not in OPTIONAL_FILES:
                raise

    def procs_files(self) -> list[str]:
        """Return the files a process writes its pid to, to join every cgroup."""
        return [str(p / "cgroup.procs") for p in self.paths]

    def oom_killed(self) -> bool:
        """Return True when the kernel killed a process here for lack of memory."""
        for path in self.paths:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    text = (path / name).read_text()
                except OSError:
                    continue
                match = re.search(r"^oom_kill (\d+)", text, re.M)
                if match and int(match.group(1)) > 0:
                    return True
        return False

    def remove(self) -> None:
        """Remove the worker's cgroups (its process must be gone); log what stays."""
        for path in reversed(self.paths):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove cgroup %s: %s", path, exc)
        self.paths = []


def sweep(layout: Layout, alive: Callable[[int], bool] = _pid_alive) -> list[Path]:
    """Remove the worker cgroups left by agents that are gone (killed before they could
    clean up); return those removed. A cgroup that still holds a process stays."""
    removed = []
    for mount in {h.mount for h in layout.by_controller.values()}:
        parent = mount / PARENT
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            pid, sep, _ = path.name.partition("-")
            if not (sep and pid.isdigit()) or alive(int(pid)):
                continue
            try:
                path.rmdir()
                removed.append(path)
            except OSError:
                pass
    return removed
