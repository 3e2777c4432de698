"""An isolated module's worker: one process per module instance, started by the agent.

    python -I -c BOOT FD        (see `nodes/sandbox/proxy.py`; FD is its channel)

It reads INIT, confines itself (`confine.py`), loads the module's code from its
bundle and sets the instance up, then answers the agent's messages one by one
(`wire.py`) until STOP or until the agent's end of the channel closes. Its module's
timers run when a message comes, before the frames; every answer says when the next
one is due, so the agent sends an empty batch then.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import sys
import time
import traceback  # noqa: F401  (loaded before confinement: a module's error may need it)
from pathlib import Path

from nodes import handover
from nodes.blocks.timers import Scheduler
from nodes.module_api import ModuleContext, ServiceModule, Verdict
from nodes.sandbox import confine, wire

MAX_ERRORS = 8  # error texts an answer carries (the count of failed frames is exact)
MAX_LOG = 32  # log lines an answer carries; the rest are counted in one more line
ERROR_TEXT = 300  # characters of an error's text
EMITTED_MAX = wire.MAX_MESSAGE // 2  # bytes of emitted frames an answer carries
_FORWARD, _DROP, _MODIFIED = wire.FORWARD, wire.DROP, wire.MODIFIED
_CODES = {
    None: _FORWARD,
    Verdict.FORWARD: _FORWARD,
    Verdict.DROP: _DROP,
    Verdict.MODIFIED: _MODIFIED,
}


class _Collect(logging.Handler):
    """Keeps the module's log lines for the next answer (its stderr goes nowhere)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []
        self.left_out = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < MAX_LOG:
            self.lines.append((record.levelno, self.format(record)[:1000]))
        else:
            self.left_out += 1

    def take(self) -> list[tuple[int, str]]:
        lines, self.lines = self.lines, []
        if self.left_out:
            lines.append((logging.WARNING, f"{self.left_out} more log lines left out"))
            self.left_out = 0
        return lines


def _text(exc: BaseException) -> str:
    return repr(exc)[:ERROR_TEXT]


class Worker:
    """The module instance and what serves it: its context, its timers, its log."""

    def __init__(self, sock: socket.socket, init: dict) -> None:
        self.sock = sock
        self.name = str(init["module"])
        self.log = _Collect()
        root = logging.getLogger()
        root.addHandler(self.log)
        root.setLevel(logging.DEBUG)
        self.scheduler = Scheduler(time.monotonic)
        self.ctx = ModuleContext(
            session_id=int(init["session_id"]),
            node=int(init["node"]),
            module=self.name,
            clock=time.monotonic,
            logger=logging.getLogger(f"netserv.module.{self.name}.{init['session_id']}"),
        )
        self.module = self._load(init)
        self.ctx.timers.bind(self.scheduler, None)
        self.buf = bytearray(wire.MAX_MESSAGE)
        self.view = memoryview(self.buf)

    def _load(self, init: dict) -> ServiceModule:
        path = Path(init["path"])
        spec = importlib.util.spec_from_file_location(f"netserv_service_{self.name}", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path}")
        code = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(code)
        except Exception as exc:
            raise RuntimeError(f"module {self.name!r} failed to load: {_text(exc)}") from None
        cls = getattr(code, init["entry_class"], None)
        if not (isinstance(cls, type) and issubclass(cls, ServiceModule)):
            raise RuntimeError(f"{path}: {init['entry_class']} is not a ServiceModule subclass")
        try:
            return cls(init["params"], self.ctx)
        except Exception as exc:
            raise RuntimeError(f"module {self.name!r} setup failed: {_text(exc)}") from None

    def next_timer(self) -> float:
        due = self.scheduler.next_due()
        return -1.0 if due is None else max(0.0, due - time.monotonic())

    def batch(self, frames: list[memoryview]) -> wire.Answer:
        """Run due timers, then the module on every frame; return the answer."""
        answer = wire.Answer(bytes(len(frames)))
        verdicts = bytearray(len(frames))
        started = time.thread_time()
        size = 0  # bytes of emitted frames, kept under what one message can carry
        left_out = 0
        for _timer, error in self.scheduler.run_due():
            frames_out = self.ctx.outbox.take()
            if error is not None:
                answer.errors.append((-1, _text(error)))
            else:
                answer.emitted.extend((-1, f) for f in frames_out)
        process, outbox = self.module.process, self.ctx.outbox
        for i, frame in enumerate(frames):
            try:
                verdict = process(frame)
            except MemoryError as exc:
                answer.memory = True
                verdict = self._failed(answer, i, exc)
            except Exception as exc:
                verdict = self._failed(answer, i, exc)
            else:
                try:
                    verdict = _CODES[verdict]
                except (KeyError, TypeError):
                    error = ValueError(f"process() returned {verdict!r:.80}, not a Verdict")
                    verdict = self._failed(answer, i, error)
                if outbox.frames:
                    for out in outbox.take():
                        size += len(out) + 8
                        if size < EMITTED_MAX:
                            answer.emitted.append((i, out))
                        else:
                            left_out += 1
            verdicts[i] = verdict
            if verdict == _MODIFIED:
                answer.modified.append(frame)
        answer.cpu = time.thread_time() - started
        answer.verdicts = bytes(verdicts)
        answer.next_timer = self.next_timer()
        answer.log = self.log.take()
        if left_out:
            why = f"{left_out} emitted frames not sent: an answer carries {EMITTED_MAX} bytes"
            answer.log.append((logging.WARNING, why))
        return answer

    def _failed(self, answer: wire.Answer, index: int, exc: BaseException) -> int:
        self.ctx.outbox.take()  # what it emitted in a failed call is not sent
        if len(answer.errors) < MAX_ERRORS:
            answer.errors.append((index, _text(exc)))
        return wire.FAILED

    def stats(self) -> dict[str, object]:
        try:
            stats = self.module.stats()
            wire.encode_json(wire.STATS, stats)  # refuse what JSON cannot carry, here
        except Exception as exc:
            stats = {"error": _text(exc)}
        metrics = [s.to_json() for s in self.ctx.metrics.samples()]
        return {"stats": stats, "metrics": metrics, "log": self.log.take()}

    def export(self) -> dict[str, object]:
        """Return the EXPORT answer: the module's state, packed, or the error."""
        try:
            return {"state": handover.pack(self.module.export_state())}  # type: ignore[attr-defined]
        except Exception as exc:
            return {"error": f"export_state() failed: {_text(exc)}"}

    def take_over(self, request: dict) -> dict[str, object]:
        """Return the IMPORT answer once the module took the state in: its next timer,
        or the error (the agent then stops this worker)."""
        try:
            self.module.import_state(handover.unpack(request["state"]))  # type: ignore[attr-defined]
        except Exception as exc:
            return {"error": f"import_state() failed: {_text(exc)}", "log": self.log.take()}
        return {"next_timer": self.next_timer(), "log": self.log.take()}

    def serve(self) -> None:
        """Answer the agent's messages until STOP or until its end closes."""
        sock, view = self.sock, self.view
        while True:
            n = sock.recv_into(self.buf)
            if n == 0:
                return  # the agent is gone
            kind = self.buf[0]
            if kind == wire.BATCH:
                sock.sendmsg(wire.encode_answer(self.batch(wire.decode_batch(view[:n]))))
            elif kind == wire.STATS:
                sock.send(wire.encode_json(wire.STATS, self.stats()))
            elif kind == wire.EXPORT:
                sock.send(wire.encode_json(wire.EXPORT, self.export()))
            elif kind == wire.IMPORT:
                answer = self.take_over(wire.decode_json(view[:n], wire.IMPORT))
                sock.send(wire.encode_json(wire.IMPORT, answer))
            elif kind == wire.STOP:
                try:
                    self.module.stop()
                finally:
                    self.ctx.close()
                    sock.send(wire.encode_json(wire.STOP, {"log": self.log.take()}))
                return
            else:
                raise wire.WireError(f"unknown message kind {kind}")


def main(argv: list[str]) -> int:
    """Serve the channel on fd argv[1]; return the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the agent's terminal is its
    sock = socket.socket(fileno=int(argv[1]))
    try:
        init = wire.decode_json(sock.recv(wire.MAX_MESSAGE), wire.INIT)
        c = init["confinement"]
        applied = confine.apply(
            confine.Confinement(
                procs_files=list(c["procs_files"]),
                memory_bytes=int(c["memory_bytes"]),
                readable=list(c["readable"]),
                net=bool(c["net"]),
            ),
            str(Path(init["path"]).parent),
        )
        worker = Worker(sock, init)
    except Exception as exc:
        text = str(exc) if isinstance(exc, RuntimeError) else f"sandbox: {_text(exc)}"
        sock.send(wire.encode_json(wire.INIT, {"error": text}))
        return 1
    ready = {
        "next_timer": worker.next_timer(),
        "confined": applied,
        "log": worker.log.take(),
        "handover": [handover.exports(worker.module), handover.imports(worker.module)],
    }
    sock.send(wire.encode_json(wire.INIT, ready))
    worker.serve()
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv))
