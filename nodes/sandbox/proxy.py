"""The agent's side of an isolated module: a ServiceModule whose code runs in a worker.

`IsolatedModule` starts the worker (`worker.py`) with nothing but its end of a
SOCK_SEQPACKET socket pair, in a cgroup made for it, and then stands in the chain
for the module: the dispatcher hands it a batch (`process_batch`), it sends the
batch and waits for the answer at most the module's budget allows (`Budget.deadline`).
A worker that does not answer in time is killed and called hung; one whose channel
closes died, and the reason says how (its signal, the kernel's OOM kill). Either way
`ModuleFailed` says so and the module's guard quarantines it. Calls are serialized:
the control thread (stats) and the packet loop (frames, timers) take turns.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from nodes import handover
from nodes.blocks.bucket import TokenBucket
from nodes.blocks.counters import Metrics, Sample
from nodes.bundle import Manifest
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox import landlock, wire
from nodes.sandbox.batched import ModuleFailed
from nodes.sandbox.cgroups import CgroupError, Layout, WorkerCgroup, sweep
from nodes.sandbox.confine import Confinement
from nodes.sandbox.guard import Guard
from nodes.sandbox.policy import may_use_network, read_paths

log = logging.getLogger("netserv.sandbox")
ROOT = str(Path(__file__).resolve().parents[2])
BOOT = (
    f"import os, sys; sys.path.insert(0, {ROOT!r}); "
    "from nodes.sandbox.worker import main; os._exit(main(sys.argv))"
)
SETUP_TIMEOUT = 10.0  # seconds for a worker to start, confine itself and set its module up
STOP_TIMEOUT = 1.0  # seconds for a module's stop() before its worker is killed
SOCKET_BUFFER = 4 << 20
LOG_RATE, LOG_BURST = 10.0, 100  # a module's log lines a second in the agent's log, at once
SO_SNDBUFFORCE = 32


class WorkerError(RuntimeError):
    """A worker could not be started or its module not set up; the message says why."""


def death_reason(returncode: int | None, oom: bool) -> str:
    """Return why a worker that closed its channel is gone, from its exit status and
    whether the kernel killed it for its cgroup's memory."""
    if oom:
        return "over its memory budget: the kernel killed it at its memory limit"
    if returncode == -signal.SIGSYS:
        return "killed by the sandbox: it made a forbidden system call (seccomp)"
    if returncode is None:
        return "closed its channel"
    if returncode < 0:
        try:
            return f"died of {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died of signal {-returncode}"
    return f"exited with status {returncode}"


def mirror(metrics: Metrics, samples: object) -> None:
    """Set `metrics` to the values of `samples`, a worker's metrics as its STATS answer
    lists them (`Sample.to_json`); a sample that is no number of a good name, or whose
    name changed kind, is left out: the worker runs the module's code, not ours."""
    if not isinstance(samples, list):
        return
    for sample in samples:
        try:
            name, kind, value = sample["name"], sample["type"], sample["value"]
            made = metrics.gauge if kind == "gauge" else metrics.counter
            metric = made(name, str(sample.get("help", "")))
        except (TypeError, KeyError, AttributeError, ValueError):
            continue
        if isinstance(value, int | float):
            metric.value = value


def chunks(frames: list[memoryview]) -> Iterator[list[memoryview]]:
    """Yield `frames` in runs whose BATCH message fits in wire.MAX_MESSAGE."""
    if wire.batch_size(frames) <= wire.MAX_MESSAGE:
        yield frames
        return
    run: list[memoryview] = []
    size = wire.batch_size([])
    for frame in frames:
        more = 4 + len(frame)
        if run and size + more > wire.MAX_MESSAGE:
            yield run
            run, size = [], wire.batch_size([])
        run.append(frame)
        size += more
    if run:
        yield run


class Sandbox:
    """The node's isolated tier: the cgroup layout found at start, names for workers."""

    def __init__(self, layout: Layout | None = None) -> None:
        if layout is None:
            try:
                layout = Layout.detect()
            except OSError as exc:
                log.warning("cannot read the cgroup mounts (%s): rlimits only", exc)
                layout = Layout()
        self.layout = layout
        for path in sweep(layout):
            log.info("removed %s, left by an agent that is gone", path)

    @staticmethod
    def worker_name() -> str:
        """Return a name for a worker's cgroups: the agent's pid (see `sweep`), then
        something no other worker of any agent has."""
        return f"{os.getpid()}-{secrets.token_hex(6)}"

    def describe(self) -> dict[str, object]:
        """Return what confines isolated modules on this node."""
        return {"cgroups": self.layout.describe(), "landlock_abi": landlock.abi_version()}


def _buffers(sock: socket.socket) -> None:
    for option, fallback in ((SO_SNDBUFFORCE, socket.SO_SNDBUF),):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, fallback, SOCKET_BUFFER)


class IsolatedModule(ServiceModule):
    """A module instance in a worker process, seen by the dispatcher as a module with
    `process_batch`. `last_stats` is what its module last said, kept for when it is gone."""

    def __init__(
        self,
        manifest: Manifest,
        params: Mapping[str, object],
        session_id: int,
        node: int,
        guard: Guard,
        sandbox: Sandbox,
        capabilities: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        name = manifest.name
        logger = logging.getLogger(f"netserv.module.{name}.{session_id}")
        super().__init__(params, ModuleContext(session_id, node, name, clock, logger))
        self.name = name
        self.guard = guard
        self.budget = manifest.budget
        self.last_stats: dict | None = None
        self.confined: dict[str, object] = {}
        # Whether its module has export_state / import_state (its worker says so).
        self.can_export = self.can_import = False
        self._log = logger
        self._lock = threading.Lock()
        self._gone = ""  # why the worker is gone, once it is
        self._tick_due: float | None = None
        self._peek = bytearray(1)
        self._log_bucket = TokenBucket(LOG_RATE, LOG_BURST, clock)
        self._log_left_out = 0
        self._cgroup: WorkerCgroup | None = None
        if sandbox.layout.by_controller:
            try:
                self._cgroup = WorkerCgroup(sandbox.layout, sandbox.worker_name(), self.budget)
            except CgroupError as exc:
                log.warning("%s: %s; its rlimits are its only limits", name, exc)
        try:
            self._start(manifest, params, capabilities)
        except BaseException:
            self._end()
            raise

    # --- the worker ---------------------------------------------------------------
    def _start(
        self, manifest: Manifest, params: Mapping[str, object], capabilities: tuple[str, ...]
    ) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = parent
        try:
            for sock in (parent, child):
                _buffers(sock)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", BOOT, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
            )
        finally:
            child.close()
        confinement = Confinement(
            procs_files=self._cgroup.procs_files() if self._cgroup else [],
            memory_bytes=self.budget.memory_bytes,
            readable=read_paths(capabilities),
            net=may_use_network(capabilities),
        )
        init = {
            "module": self.name,
            "path": str(manifest.path / f"{manifest.entry_file}.py"),
            "entry_class": manifest.entry_class,
            "params": dict(params),
            "session_id": self.ctx.session_id,
            "node": self.ctx.node,
            "confinement": confinement.__dict__,
        }
        parent.send(wire.encode_json(wire.INIT, init))
        message = self._recv(SETUP_TIMEOUT)
        if not message:
            why = "did not start in time" if message is None else self._death()
            raise WorkerError(f"module {self.name!r}: its sandboxed process {why}")
        ready = wire.decode_json(message, wire.INIT)
        if "error" in ready:
            raise WorkerError(str(ready["error"]))
        self.confined = dict(ready.get("confined", {}))
        self.can_export, self.can_import = (bool(x) for x in ready.get("handover", (0, 0)))
        self._relog(ready.get("log", []))
        self._arm(float(ready.get("next_timer", -1)))

    def _recv(self, timeout: float) -> bytes | None:
        """Return the worker's next message; b"" when its end closed, None on time-out."""
        sock = self._sock
        sock.settimeout(timeout)
        try:
            # Its length first: a buffer as large as the largest message would cost
            # more to allocate each time than the message takes to arrive.
            size = sock.recv_into(self._peek, 1, socket.MSG_PEEK | socket.MSG_TRUNC)
            return sock.recv(size) if size else b""
        except TimeoutError:
            return None
        except ConnectionError:
            return b""

    def _death(self) -> str:
        """Return why the worker, whose end closed, is gone (waiting a moment for it)."""
        try:
            code = self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = None
        return death_reason(code, self._cgroup is not None and self._cgroup.oom_killed())

    def _fail(self, reason: str) -> ModuleFailed:
        """Kill the worker, quarantine the module for `reason`; return the exception to raise."""
        self._gone = self._gone or reason
        self.kill()
        self.guard.quarantine(reason)
        return ModuleFailed(reason)

    def kill(self) -> None:
        """Kill the worker now (it is reaped when the session ends)."""
        self._gone = self._gone or "stopped"
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _end(self) -> None:
        """Kill and reap the worker, close the channel, remove the cgroups."""
        self.kill()
        proc = getattr(self, "_proc", None)
        if proc is not None:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                log.error("worker %d of %s does not go away", proc.pid, self.name)
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
        if self._cgroup is not None:
            self._cgroup.remove()

    def _relog(self, lines: list) -> None:
        """Write the module's log lines to the agent's log, at most LOG_RATE a second: its
        own logging may bypass the rate limit of ctx.log."""
        for level, line in lines:
            if not self._log_bucket.take():
                self._log_left_out += 1
                continue
            if self._log_left_out:
                self._log.warning("%d log lines of the module were left out", self._log_left_out)
                self._log_left_out = 0
            self._log.log(int(level), "%s", line)

    def _arm(self, delay: float) -> None:
        """Have the packet loop call the worker `delay` seconds from now (its next timer)."""
        if delay < 0:
            return
        due = self.ctx.clock() + delay
        if self._tick_due is not None and self._tick_due <= due:
            return
        self._tick_due = due
        self.ctx.after(delay, self._tick)

    def _tick(self) -> None:
        self._tick_due = None
        answer = self.process_batch([])
        for _index, frame in answer.emitted:
            self.ctx.outbox.put(frame)
        if answer.errors:
            raise RuntimeError(answer.errors[-1][1])

    # --- what the dispatcher calls ----------------------------------------------------
    def process_batch(self, frames: list[memoryview], rewrite: bool = True) -> wire.Answer:
        """Run the module on `frames` (rewritten in place where it says MODIFIED, unless
        `rewrite` is False: copies that observe-only modules may not change); return
        its answer. Raise ModuleFailed when its worker hangs or is gone."""
        with self._lock:
            if self._gone:
                raise ModuleFailed(self.guard.reason or self._gone)
            answers = [self._batch(run, rewrite) for run in chunks(frames)]
        if len(answers) == 1:
            return answers[0]
        merged, offset = wire.Answer(b""), 0
        for run, answer in zip(chunks(frames), answers, strict=True):
            merged.verdicts += answer.verdicts
            merged.emitted += [(i + offset if i >= 0 else i, f) for i, f in answer.emitted]
            merged.errors += [(i + offset if i >= 0 else i, e) for i, e in answer.errors]
            merged.cpu += answer.cpu
            merged.memory |= answer.memory
            offset += len(run)
        return merged

    def _batch(self, frames: list[memoryview], rewrite: bool = True) -> wire.Answer:
        deadline = self.budget.deadline(len(frames))
        try:
            self._sock.sendmsg(wire.encode_batch(frames))
        except OSError:
            raise self._fail(self._death()) from None
        message = self._recv(deadline)
        if message is None:
            raise self._fail(f"hung: no answer within {deadline:.2f} s")
        if not message:
            raise self._fail(self._death())
        try:
            answer = wire.decode_answer(memoryview(message), [len(f) for f in frames])
        except (wire.WireError, ValueError) as exc:
            raise self._fail(f"broke the channel's protocol: {exc}") from None
        rewritten = iter(answer.modified)
        for frame, verdict in zip(frames, answer.verdicts, strict=True):
            if verdict == wire.MODIFIED and rewrite:
                frame[:] = next(rewritten)
        self._relog(answer.log)
        self._arm(answer.next_timer)
        return answer

    def process(self, frame: memoryview) -> Verdict:
        """Run the module on one frame (the dispatcher uses process_batch)."""
        answer = self.process_batch([frame])
        for _index, out in answer.emitted:
            self.ctx.outbox.put(out)
        if answer.verdicts[0] == wire.FAILED:
            raise RuntimeError(answer.errors[0][1] if answer.errors else "failed")
        return Verdict(answer.verdicts[0])

    def stats(self) -> dict[str, int | float | str]:
        """Return the module's stats, asked of its worker (its last ones, once it is gone);
        its metrics are copied into this side's context, where the chain's stats read them."""
        with self._lock:
            if self._gone:
                return self.last_stats or {}
            try:
                self._sock.sendmsg([bytes([wire.STATS])])
            except OSError:
                self._fail(self._death())
                return self.last_stats or {}
            message = self._recv(self.budget.deadline(0))
            if not message:
                why = f"hung: no answer within {self.budget.deadline(0):.2f} s"
                self._fail(why if message is None else self._death())
                return self.last_stats or {}
        reply = wire.decode_json(message, wire.STATS)
        self._relog(reply.get("log", []))
        mirror(self.ctx.metrics, reply.get("metrics", []))
        stats = reply.get("stats", {})
        self.last_stats = stats if isinstance(stats, dict) else {"error": repr(stats)}
        return self.last_stats

    def read_metrics(self) -> list[Sample]:
        """Return the module's metrics as its worker has them now, asked with its stats
        (the STATS message); once the worker is gone, the last ones it gave."""
        self.stats()
        return self.ctx.metrics.samples()

    def export_state(self) -> object:
        """Return the module's state, asked of its worker. Raise HandoverError when the
        module failed to give it, ModuleFailed when the worker hung or died (quarantined)."""
        reply = self._ask(wire.encode_json(wire.EXPORT, {}), wire.EXPORT)
        if "error" in reply:
            raise handover.HandoverError(str(reply["error"]))
        return handover.unpack(reply.get("state"))

    def import_state(self, state: object) -> None:
        """Hand `state` to the module in its worker. Raise HandoverError when it cannot
        be packed or the module refused it, ModuleFailed when the worker hung or died."""
        reply = self._ask(
            wire.encode_json(wire.IMPORT, {"state": handover.pack(state)}), wire.IMPORT
        )
        if "error" in reply:
            raise handover.HandoverError(str(reply["error"]))
        self._arm(float(reply.get("next_timer", -1)))

    def _ask(self, message: bytes, kind: int) -> dict:
        """Send `message` and return the JSON of the worker's answer of `kind`, waited for
        as long as a timer tick may take; raise ModuleFailed when it hangs or is gone."""
        deadline = self.budget.deadline(0)
        with self._lock:
            if self._gone:
                raise ModuleFailed(self.guard.reason or self._gone)
            try:
                self._sock.sendmsg([message])
            except OSError:
                raise self._fail(self._death()) from None
            answer = self._recv(deadline)
            if answer is None:
                raise self._fail(f"hung: no answer within {deadline:.2f} s")
            if not answer:
                raise self._fail(self._death())
            try:
                reply = wire.decode_json(answer, kind)
            except wire.WireError as exc:
                raise self._fail(f"broke the channel's protocol: {exc}") from None
        self._relog(reply.get("log", []))
        return reply

    def stop(self) -> None:
        """Ask the module to stop (its stop() runs in its worker), then end the worker."""
        with self._lock:
            if not self._gone:
                try:
                    self._sock.sendmsg([bytes([wire.STOP])])
                    message = self._recv(STOP_TIMEOUT)
                    if message:
                        self._relog(wire.decode_json(message, wire.STOP).get("log", []))
                except OSError:
                    pass
            self._end()
