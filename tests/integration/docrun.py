"""Run one document's examples, in order, in network and mount namespaces of their own.

    unshare --mount --net --propagation private -- \\
        python -m tests.integration.docrun DOC REPORT SCRATCH

`tests/integration/test_docs.py` starts it so. The docs use fixed names (h1, s1,
ports 8080 and 6653) and write files (`~/netserv-modules`, `tally_session.py`), so
their examples run where nothing else is: this process mounts, in its own namespaces,
a sysfs for its network namespace, a tmpfs on /run/openvswitch with an Open vSwitch
of its own (ovsdb-server and ovs-vswitchd, its children), and an overlay on the
repository whose writes go to SCRATCH/repo-upper. The examples run from the
repository's root, as the docs say, with `.venv/bin` first on PATH (so `netserv` is
the project's), TMPDIR SCRATCH/tmp and HOME SCRATCH/home, whose `.curlrc` makes curl
fail on an HTTP error (so a block's exit status says whether its requests worked).

Blocks run as `tests/docblocks.py` describes. Long-running commands are started
here, each by its own pid, then this waits until the controller's REST API answers
on 127.0.0.1:8080 (where the docs' commands send their requests) and every NetServ
node of the setting is ready; they are stopped when the setting changes or the
document ends. The first block that fails ends the run. Whatever happens, the
long-running commands, the setting, and the Open vSwitch daemons are stopped, and a
bridge or interface the examples left behind is reported.

REPORT (JSON, rewritten after every step) holds this process's namespace inodes, a
record per block and any error; the test reads it and checks no process is left in
the namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tests.docblocks import Block, missing_lines, output_lines, read
from topo.controller import stop_process

REPO = Path(__file__).resolve().parents[2]
OVS_RUN = Path("/run/openvswitch")
NETNS_RUN = Path("/run/netns")  # `ip netns` names: the setting's hosts are h1, h2, h3 there
DB_SOCK = OVS_RUN / "db.sock"
BLOCK_TIMEOUT = 120.0
READY_TIMEOUT = 30.0
# `netserv controller`'s default ports, which the docs' commands (and curl lines) use.
DOCS_REST_PORT, DOCS_OF = 8080, ("127.0.0.1", 6653)
DOCS_URL = f"http://127.0.0.1:{DOCS_REST_PORT}"
CURLRC = "fail-with-body\nsilent\nshow-error\n"
INSIDE = "NETSERV_DOCS_RUN"
KEEP_INTERFACES = {"lo", "ovs-netdev"}  # the namespace's own and the userspace datapath's


class BlockFailed(Exception):
    """A block did not do what its document says; the message says how."""


class Report:
    """The JSON report, written whole after every change so a killed run leaves one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"blocks": [], "error": None, "leftovers": []}

    def set(self, **items: Any) -> None:
        self.data.update(items)
        self.save()

    def block(self, block: Block, **items: Any) -> dict[str, Any]:
        record = {"where": block.where, "lang": block.lang, **items}
        self.data["blocks"].append(record)
        self.save()
        return record

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def sh(*argv: str, timeout: float = 30.0) -> str:
    """Run a command here; return its stdout; raise RuntimeError with its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def prepare_namespace(scratch: Path) -> None:
    """Mount what makes this namespace private: sysfs, /run/openvswitch, the repo overlay."""
    sh("mount", "-t", "sysfs", "sysfs", "/sys")  # /sys/class/net of this network namespace
    sh("mount", "-t", "tmpfs", "tmpfs", str(OVS_RUN))
    NETNS_RUN.mkdir(exist_ok=True)
    sh("mount", "-t", "tmpfs", "tmpfs", str(NETNS_RUN))
    upper, work = scratch / "repo-upper", scratch / "repo-work"
    upper.mkdir()
    work.mkdir()
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={REPO},upperdir={upper},workdir={work}", str(REPO))  # fmt: skip
    sh("ip", "link", "set", "lo", "up")


@contextmanager
def private_ovs(scratch: Path) -> Iterator[None]:
    """Run an ovsdb-server and ovs-vswitchd of this namespace until the block exits."""
    db = OVS_RUN / "conf.db"
    sh("ovsdb-tool", "create", str(db), "/usr/share/openvswitch/vswitch.ovsschema")
    daemons: list[subprocess.Popen] = []
    try:
        for argv in (
            ["ovsdb-server", str(db), f"--remote=punix:{DB_SOCK}", "--pidfile"],
            ["ovs-vswitchd", f"unix:{DB_SOCK}", "--pidfile"],
        ):
            log = scratch / f"{argv[0]}.log"
            daemons.append(subprocess.Popen([*argv, "-vconsole:off", f"--log-file={log}"], cwd="/"))
            deadline = time.monotonic() + 10
            while not _answers(argv[0]):
                if daemons[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} of the namespace did not start; see {log}")
                time.sleep(0.05)
            if argv[0] == "ovsdb-server":
                sh("ovs-vsctl", "--no-wait", "init")
        yield
    finally:
        for daemon in reversed(daemons):
            stop_process(daemon)


def _answers(daemon: str) -> bool:
    target = ["ovs-vsctl", "--timeout=1", "show"]
    if daemon == "ovs-vswitchd":
        target = ["ovs-appctl", "--timeout=1", "-t", "ovs-vswitchd", "version"]
    return subprocess.run(target, capture_output=True).returncode == 0


def block_env(scratch: Path) -> dict[str, str]:
    """Return the environment of the docs' commands: the venv first on PATH, a scratch HOME."""
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    (home / ".curlrc").write_text(CURLRC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETSERV_", "PYTEST_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"], env["TMPDIR"] = str(home), str(tmp)
    env[INSIDE] = "1"  # test_docs.py does not run inside a docs run (no recursion)
    env.pop("CURL_HOME", None)
    return env


class Setting:
    """The controller and topology a document runs beside, changed by `tests set up`."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.names: tuple[str, ...] = ("nothing",)
        self.dpids: list[str] = []
        self.stack = ExitStack()

    def change(self, names: tuple[str, ...]) -> None:
        """Take the current setting down and build `names`."""
        from topo.controller import ControllerProcess, wait_ready
        from topo.net import netserv_network, wait_connected
        from topo.topos import SingleSwitchTopo

        self.close()
        self.names, self.dpids = names, []
        if "controller" in names:
            log = self.scratch / "setting-controller.log"
            self.stack.enter_context(
                ControllerProcess(log, of_port=DOCS_OF[1], rest_port=DOCS_REST_PORT)
            )
        if "bridge" in names or "node" in names:
            agent_url = DOCS_URL if "node" in names else None
            net = self.stack.enter_context(
                netserv_network(
                    SingleSwitchTopo(k=3),
                    controller=DOCS_OF,
                    rest_url=agent_url,
                    rundir=self.scratch,
                )
            )
            self.dpids = [s.dpid for s in net.switches if s.netserv]
            for host in net.hosts:  # so that `ip netns exec h1 ...` runs a command as h1
                sh("ip", "netns", "attach", host.name, str(host.pid))
                self.stack.callback(sh, "ip", "netns", "delete", host.name)
            if "controller" in names:
                wait_connected(net)
            if agent_url:
                wait_ready(DOCS_URL, self.dpids)

    def close(self) -> None:
        """Take the setting down (nothing stays)."""
        self.stack.close()
        self.stack = ExitStack()


class DocRun:
    """Runs one document's blocks in order; `run` returns when all ran or one failed."""

    def __init__(self, blocks: list[Block], scratch: Path, report: Report) -> None:
        self.blocks = blocks
        self.scratch = scratch
        self.report = report
        self.env = block_env(scratch)
        self.setting = Setting(scratch)
        self.background: list[tuple[str, subprocess.Popen, Path]] = []
        self.last_output: str | None = None

    def run(self) -> None:
        """Run the blocks; stop at the first that fails; always take everything down."""
        try:
            for block in self.blocks:
                started = time.monotonic()
                record = self.report.block(block, status="running")
                try:
                    if block.setting is not None:
                        self.stop_background()
                        self.setting.change(block.setting)
                    record["setting"] = "+".join(self.setting.names)
                    record.update(self.one(block))
                except BlockFailed as exc:
                    record.update(status="failed", problem=str(exc))
                    return
                finally:
                    record["seconds"] = round(time.monotonic() - started, 1)
                    self.report.save()
        finally:
            try:
                self.stop_background()
            finally:
                try:
                    self.setting.close()
                finally:
                    self.report.set(leftovers=leftovers())

    def one(self, block: Block) -> dict[str, Any]:
        """Run, save, skip or check one block; return its record; raise BlockFailed."""
        if block.skipped:
            return {"status": "skipped", "why": block.note("skip").why}
        if block.kind == "shown":
            if block.note("output") is None:
                return {"status": "shown"}
            if self.last_output is None:
                raise BlockFailed("an output block with no run block before it")
            missing = missing_lines(output_lines(block), self.last_output)
            if missing:
                raise BlockFailed("lines missing from the output: " + json.dumps(missing))
            return {"status": "checked"}
        if block.saved_as:
            (REPO / block.saved_as).write_text(block.text)
            return {"status": "saved", "file": block.saved_as}
        commands = block.background_commands()
        if commands:
            return self.start_background(block, commands)
        return self.execute(block)

    def execute(self, block: Block) -> dict[str, Any]:
        """Run a shell or Python block to its end; return its record; raise BlockFailed
        when it fails, times out or does not print what it claims."""
        if block.kind == "python":
            script = self.scratch / f"block-{block.line}.py"
            script.write_text(block.text)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", block.script()]
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group: only what it started
            out, err = proc.communicate()
            raise BlockFailed(
                f"still running after {BLOCK_TIMEOUT:g} s\n--- stdout\n{out}\n--- stderr\n{err}"
            ) from None
        except BaseException:  # stopped from outside: leave nothing of the block running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        self.last_output = out
        record = {"status": "ran", "returncode": proc.returncode, "stdout": out, "stderr": err}
        self.report.data["blocks"][-1].update(record)
        if proc.returncode != 0:
            raise BlockFailed(f"exited {proc.returncode}")
        missing = [claim for claim in block.claims() if claim not in out]
        if missing:
            raise BlockFailed("claimed but not printed: " + json.dumps(missing))
        return record

    def start_background(self, block: Block, commands: list[str]) -> dict[str, Any]:
        """Start each long-running command, wait until all is ready; return the record."""
        started = []
        for command in commands:
            log = self.scratch / f"background-{block.line}-{len(self.background)}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    ["bash", "-c", "exec " + command],
                    cwd=REPO,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.background.append((command, proc, log))
            started.append(proc.pid)
        self.wait_ready()
        return {"status": "started", "pids": started}

    def wait_ready(self) -> None:
        """Wait until the docs' controller answers and the setting's nodes are ready."""
        from signaling.client import ClientError, NetServClient

        client, deadline = NetServClient(DOCS_URL, timeout=2), time.monotonic() + READY_TIMEOUT
        while True:
            self.check_background()
            try:
                ready = {n["dpid"] for n in client.nodes() if n["ready"]}
                if set(self.setting.dpids) <= ready:
                    return
            except ClientError:
                pass
            if time.monotonic() > deadline:
                raise BlockFailed(
                    f"after {READY_TIMEOUT:g} s the controller at {DOCS_URL} does not answer or "
                    f"nodes {self.setting.dpids} are not ready" + self.background_logs()
                )
            time.sleep(0.2)

    def check_background(self) -> None:
        """Raise BlockFailed, with their logs, when long-running commands have exited."""
        dead = [(c, p) for c, p, _ in self.background if p.poll() is not None]
        if dead:
            raise BlockFailed(
                "long-running commands exited: "
                + ", ".join(f"`{c}` ({p.returncode})" for c, p in dead)
                + self.background_logs()
            )

    def background_logs(self) -> str:
        return "".join(
            f"\n--- `{c}`:\n{log.read_text(errors='replace')[-3000:]}"
            for c, _, log in self.background
        )

    def stop_background(self) -> None:
        """Stop the long-running commands, last started first, each by its pid."""
        try:
            self.check_background()  # one that died before it was stopped is a failure
        finally:
            while self.background:
                _command, proc, _log = self.background.pop()
                stop_process(proc)


def leftovers() -> list[str]:
    """Return the bridges and interfaces left in this namespace once all is stopped."""
    bridges = sh("ovs-vsctl", "--timeout=5", "list-br").split()
    links = sorted(set(os.listdir("/sys/class/net")) - KEEP_INTERFACES)
    return [f"bridge {b}" for b in bridges] + [f"interface {n}" for n in links]


def inode(path: str) -> int:
    """Return the inode of `path`: for /proc/self/ns/*, which namespace this is."""
    return os.stat(path).st_ino


def main(argv: list[str]) -> int:
    doc, report_path, scratch = Path(argv[0]).resolve(), Path(argv[1]), Path(argv[2])
    # A stop from the test unwinds like an error, so everything started is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    report = Report(report_path)
    report.set(netns=inode("/proc/self/ns/net"), mntns=inode("/proc/self/ns/mnt"))
    try:
        blocks = read(REPO, doc)
        prepare_namespace(scratch)
        with private_ovs(scratch):
            DocRun(blocks, scratch, report).run()
    except BaseException:
        report.set(error=traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
