"""Processes the demo, tests and benchmarks start, and always stop, by their own pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from signaling.client import ClientError, NetServClient

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_env() -> dict[str, str]:
    """Return an environment in which `python -m tools.cli` imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Stop `proc` (SIGTERM, then SIGKILL after `timeout`); return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class ControllerProcess:
    """`netserv controller` on free local ports, as a context manager."""

    def __init__(self, logfile: Path, agent_dead_after: float = 6.0) -> None:
        self.of_port, self.rest_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.logfile = logfile
        self.agent_dead_after = agent_dead_after
        self.proc: subprocess.Popen | None = None

    @property
    def of_addr(self) -> tuple[str, int]:
        return "127.0.0.1", self.of_port

    def start(self, timeout: float = 20.0) -> ControllerProcess:
        """Start the controller; return once its REST API answers (raise RuntimeError if not)."""
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "tools.cli",
            "controller",
            "--of-port",
            str(self.of_port),
            "--rest-port",
            str(self.rest_port),
            "--agent-dead-after",
            str(self.agent_dead_after),
        ]
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=python_env(),
                start_new_session=True,
            )
        client, deadline = NetServClient(self.url, timeout=2), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the controller exited ({self.proc.returncode}); see {self.logfile}"
                )
            try:
                client.modules()
                return self
            except ClientError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the controller's REST API did not answer within {timeout}s; see {self.logfile}"
        )

    def stop(self) -> int | None:
        """Stop the controller; return its exit code."""
        return stop_process(self.proc) if self.proc else None

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
