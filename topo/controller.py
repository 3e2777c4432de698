"""The NetServ controller for scripted topologies, and waiting until nodes are ready.

`ControllerProcess` runs `python -m controller` (what `netserv controller` runs) on
free local ports as a context manager: it returns once the REST API answers and
stops the process, by its pid, on exit. `wait_ready` waits until the controller
reports NetServ nodes ready (switch connected, agent registered, agent port known).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from controller import keyfiles
from controller.repository import default_path as default_repository
from nodes.bundle import module_path as search_path
from signaling.client import ClientError, NetServClient

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNDIR = REPO_ROOT / "run"
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop `proc` (SIGTERM, then SIGKILL after `timeout` s); return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def module_path_arg(module_path: str | Iterable[str | os.PathLike[str]] | None) -> str:
    """Return the search path as one absolute, os.pathsep-joined string for a child process.

    None means $NETSERV_MODULE_PATH, read here: relative entries are resolved against
    this process's directory, not the child's. Raise BundleError for a missing folder.
    """
    return os.pathsep.join(str(folder) for folder in search_path(module_path))


class ControllerProcess:
    """`netserv controller` on free local ports, started and stopped as a context manager.

    `url` is its REST API (give it to `netserv_network` as `rest_url` and to
    `NetServClient`), `of_addr` its OpenFlow address (`controller=`). `module_path`
    is the module search path (see `nodes.bundle.module_path`); give the topology
    the same one. `agent_dead_after` None keeps the controller's default. `of_port`
    and `rest_port` None take free ports; give them to run on known ones (6653 and
    8080 are `netserv controller`'s defaults). `secrets` is the secrets folder (None:
    $NETSERV_SECRETS, else run/secrets; see `controller.keyfiles`): give the topology
    the same one. `token` is the operator's REST token, `client()` a client that
    sends it.
    `store` is the controller's session store (`--store`); None gives it one of its own
    beside the log file (`.sqlite`), emptied when it is first started and removed when
    the context ends: a restart of this object (`stop`, `start`) takes its sessions
    back, a new one starts with none; its module repository, beside the store
    (`controller.repository.default_path`), goes with it. `policy` is the policy file
    (`--policy`, docs/policy.md), None for none. `metrics_port` serves the controller's
    Prometheus metrics on 127.0.0.1 at that port (`--metrics-port`), None: none.
    """

    def __init__(
        self,
        logfile: str | os.PathLike[str] | None = None,
        module_path: str | Iterable[str | os.PathLike[str]] | None = None,
        agent_dead_after: float | None = None,
        apps: Sequence[str] = (),
        of_port: int | None = None,
        rest_port: int | None = None,
        secrets: str | os.PathLike[str] | None = None,
        store: str | os.PathLike[str] | None = None,
        policy: str | os.PathLike[str] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.of_port = of_port if of_port is not None else free_port()
        self.rest_port = rest_port if rest_port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.logfile = (
            Path(logfile) if logfile else DEFAULT_RUNDIR / f"controller-{self.rest_port}.log"
        )
        self.module_path = module_path_arg(module_path)
        self.agent_dead_after = agent_dead_after
        self.apps = tuple(apps)
        self.secrets = keyfiles.secrets_dir(secrets)
        self.store = str(store) if store is not None else str(self.logfile.with_suffix(".sqlite"))
        self._own_store = store is None
        self.policy = Path(policy) if policy is not None else None
        self.metrics_port = metrics_port
        self._started = False
        self.proc: subprocess.Popen | None = None

    @property
    def token(self) -> str:
        """Return the operator's REST token (the controller makes it on its first start)."""
        return keyfiles.operator_token(self.secrets, create=True)

    def client(self, timeout: float = 15.0) -> NetServClient:
        """Return a client of this controller's REST API with the operator's token."""
        return NetServClient(self.url, timeout=timeout, token=self.token)

    @property
    def of_addr(self) -> tuple[str, int]:
        """Return the controller's OpenFlow address (ip, port)."""
        return "127.0.0.1", self.of_port

    @property
    def pid(self) -> int | None:
        """Return the controller's process id while it was started, else None."""
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        """Return the controller's command line."""
        argv = [sys.executable, "-m", "controller", "--of-port", str(self.of_port)]
        argv += ["--rest-port", str(self.rest_port), "--module-path", self.module_path]
        argv += ["--secrets", str(self.secrets)]
        argv += ["--store", self.store]
        if self.policy is not None:
            argv += ["--policy", str(self.policy)]
        if self.agent_dead_after is not None:
            argv += ["--agent-dead-after", str(self.agent_dead_after)]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        for app in self.apps:
            argv += ["--app", app]
        return argv

    def start(self, timeout: float = 20.0) -> ControllerProcess:
        """Start the controller; return once its REST API answers.

        Raise RuntimeError (naming the log file) when it exits or does not answer
        within `timeout` seconds; it is stopped then.
        """
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        if self._own_store and not self._started:  # left by an earlier controller, if any
            self._remove_store()
        self._started = True
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
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
        """Stop the controller; return its exit code (None when it was never started)."""
        return stop_process(self.proc) if self.proc else None

    def __enter__(self) -> ControllerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_store:
            self._remove_store()

    def _remove_store(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(self.store + suffix).unlink(missing_ok=True)
        repository = default_repository(self.store)
        if repository is not None:
            shutil.rmtree(repository, ignore_errors=True)


def wait_ready(
    client: NetServClient | str, dpids: Iterable[str], timeout: float = 20.0
) -> list[dict]:
    """Wait until the controller reports every node in `dpids` ready; return its node list.

    `client` is a NetServClient or the controller's REST URL; `dpids` are 16 hex
    digits, as `switch.dpid` gives them. Raise TimeoutError naming the nodes that
    are still not ready after `timeout` seconds.
    """
    if isinstance(client, str):
        client = NetServClient(client)
    wanted, deadline = set(dpids), time.monotonic() + timeout
    while True:
        nodes = client.nodes()
        ready = {n["dpid"] for n in nodes if n["ready"]}
        if wanted <= ready:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"NetServ nodes {sorted(wanted - ready)} not ready after {timeout}s "
                f"(switch connected and agent registered?)"
            )
        time.sleep(0.2)
