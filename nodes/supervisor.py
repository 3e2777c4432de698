"""The node agent's supervisor: runs the agent as its child, tells the controller at once
when it dies or hangs, and starts it again.

`netserv agent` and `python -m nodes` run this process; it runs the agent itself
(`python -m nodes --no-supervisor ...`) with one end of a pipe, the watchdog. The
agent writes a byte to it every WATCHDOG_BEAT seconds while its packet loop comes
round (`nodes/agent.py`, `watchdog_loop`), so the supervisor learns

  of its death at once: the child's pidfd becomes readable (and the pipe ends), and
  of a hang after `hang_after` seconds without a beat: a packet loop stuck in a
      module, or the whole process stopped (SIGSTOP) or starved.

Either way it sends the controller a notice signed with the node's key (`POST
/netserv/nodes/{dpid}/down` with the agent's boot id), and the controller suspends
the node's sessions by their failure policy within the second, instead of waiting
for the heartbeats to stop. A dead agent is started again at once (then after a
growing pause while it keeps dying young); a hung one is given `kill_after` seconds
to come back by itself (it then heartbeats, and the controller resumes its
sessions), then killed and started again. An agent that exits 0 (stopped) or
EXIT_FATAL (refused by the controller, or set up wrongly: starting it again would
not help) is not started again, and the supervisor exits with its code; the
controller is told of every end but the last kind, a stop included.

The agent stays in the supervisor's process group, so stopping the group (as
`topo/node.py` does) stops both; a supervisor that dies leaves the agent a broken
pipe, on which it stops by itself.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.auth import Signer, agent_key_id, controller_key_id
from jsonhttp.client import ClientError, call_json
from signaling.dpid import format_dpid

log = logging.getLogger("netserv.supervisor")
WATCHDOG_BEAT = 0.1  # seconds between the agent's beats while its packet loop comes round
# Seconds without a beat before the agent counts as hung: long enough that a loaded
# machine's scheduling does not pass for a hang, short enough that the notice and the
# switch's change still come within the second.
HANG_AFTER = 0.5
KILL_AFTER = 10.0  # seconds a hung agent is given to come back before it is killed
NOTICE_TIMEOUT = 2.0
EXIT_FATAL = 2  # the agent's exit code when starting it again would not help
RESTART_PAUSES = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # before each restart while it dies young
HEALTHY_FOR = 60.0  # an agent that ran this long died old: the next restart is at once
STOP_TIMEOUT = 4.0


@dataclass
class Watchdog:
    """The agent's beats as the supervisor sees them; time is passed in."""

    started: float
    hang_after: float = HANG_AFTER
    kill_after: float = KILL_AFTER
    last_beat: float = 0.0
    hung_since: float | None = None

    def __post_init__(self) -> None:
        self.last_beat = self.started

    def beat(self, now: float) -> bool:
        """Take a beat at `now`; return True when it ends a hang (the agent is back)."""
        self.last_beat = now
        back, self.hung_since = self.hung_since is not None, None
        return back

    def check(self, now: float) -> str:
        """Return "ok", "hung" (just now: tell the controller) or "kill" at `now`."""
        if now - self.last_beat < self.hang_after:
            return "ok"
        if self.hung_since is None:
            self.hung_since = now
            return "hung"
        return "kill" if now - self.hung_since >= self.kill_after else "ok"

    def wait(self, now: float) -> float:
        """Return how long to wait for the next beat before checking again."""
        if self.hung_since is None:
            return max(0.0, self.last_beat + self.hang_after - now) + 0.01
        return max(0.0, self.hung_since + self.kill_after - now) + 0.01


def restart_pause(deaths_young: int) -> float:
    """Return the pause before starting an agent that died young `deaths_young` times in a row."""
    return RESTART_PAUSES[min(deaths_young, len(RESTART_PAUSES)) - 1] if deaths_young else 0.0


def exit_reason(status: int) -> str:
    """Return how a child with Popen's `returncode` `status` ended, in words."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with code {status}"


class Notifier:
    """Tells the controller that node `dpid`'s agent of a boot id died or hangs."""

    def __init__(self, controller: str, dpid: int, key: bytes) -> None:
        self.url = f"{controller.rstrip('/')}/netserv/nodes/{format_dpid(dpid)}/down"
        self.signer = Signer(key, agent_key_id(dpid), controller_key_id(dpid))

    def __call__(self, boot_id: str, reason: str) -> None:
        try:
            reply = call_json(
                self.url,
                "POST",
                {"boot_id": boot_id, "reason": reason},
                NOTICE_TIMEOUT,
                signer=self.signer,
            )
        except ClientError as exc:  # its heartbeats stop: the controller finds out later
            log.warning("could not tell the controller: %s", exc)
            return
        if isinstance(reply, dict) and reply.get("current"):
            log.info("the controller suspended sessions %s", reply.get("suspended"))


class Supervisor:
    """Runs the agent `argv` (to which the watchdog fd and boot id are added) as a child."""

    def __init__(
        self,
        argv: Sequence[str],
        notify: Callable[[str, str], None],
        hang_after: float = HANG_AFTER,
        kill_after: float = KILL_AFTER,
        pid_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.notify = notify
        self.hang_after = hang_after
        self.kill_after = kill_after
        self.pid_file = Path(pid_file) if pid_file else None
        self.clock = clock
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def stop(self, *_: object) -> None:
        """Stop supervising: the agent is stopped, and not started again."""
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            child.send_signal(signal.SIGCONT)  # a stopped agent must see its SIGTERM

    def run(self) -> int:
        """Run the agent until it stops for good or the supervisor is stopped; return
        the exit code of the agent's last run."""
        deaths_young = 0
        while True:
            started = self.clock()
            status = self._run_once()
            if self.stopping or status in (0, EXIT_FATAL):
                return status if status >= 0 else 1
            deaths_young = 0 if self.clock() - started >= HEALTHY_FOR else deaths_young + 1
            pause = restart_pause(deaths_young)
            log.warning("starting the agent again%s", f" in {pause:g} s" if pause else "")
            deadline = self.clock() + pause
            while not self.stopping and self.clock() < deadline:
                time.sleep(min(0.2, deadline - self.clock()))
            if self.stopping:
                return status if status >= 0 else 1
            self.restarts += 1

    def _run_once(self) -> int:
        """Run one agent to its end; return its Popen returncode."""
        boot_id = uuid.uuid4().hex
        read_end, write_end = os.pipe()
        try:
            child = subprocess.Popen(
                [*self.argv, "--watchdog-fd", str(write_end), "--boot-id", boot_id],
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(write_end)
        self.child = child
        if self.stopping:  # stopped while it was being started
            self.stop()
        log.info("agent started: pid %d, boot id %s", child.pid, boot_id)
        self._write_pid(child.pid)
        try:
            status = self._watch(child, read_end, boot_id)
        finally:
            os.close(read_end)
        reason = exit_reason(status)
        if status == EXIT_FATAL:  # refused or set up wrongly: it never served the node
            log.warning("agent %s", reason)
            return status
        if self.stopping or status == 0:
            log.info("agent stopped (%s)", reason)
        else:
            log.warning("agent %s", reason)
        # Stopped or dead, its detours lead nowhere now: the controller applies the
        # sessions' failure policies at once rather than after the heartbeats stop.
        self.notify(boot_id, reason)
        return status

    def _watch(self, child: subprocess.Popen[bytes], beats: int, boot_id: str) -> int:
        """Follow the child's beats until it ends; return its returncode."""
        watchdog = Watchdog(self.clock(), self.hang_after, self.kill_after)
        pidfd = os.pidfd_open(child.pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(beats, select.POLLIN)
        try:
            while child.poll() is None:
                timeout = watchdog.wait(self.clock())
                ready = dict(poller.poll(timeout * 1000))
                now = self.clock()
                if pidfd in ready:
                    break
                if beats in ready:
                    if not os.read(beats, 4096):  # the pipe ended: so does the child
                        poller.unregister(beats)
                    elif watchdog.beat(now):
                        log.info("agent is responsive again")
                    continue
                verdict = "ok" if self.stopping else watchdog.check(now)
                if verdict == "hung":
                    log.warning("agent hangs: no beat for %.1f s", now - watchdog.last_beat)
                    self.notify(boot_id, f"hung: no beat for {now - watchdog.last_beat:.1f} s")
                elif verdict == "kill":
                    log.warning("agent hung for %.0f s: killing it", now - watchdog.hung_since)
                    _kill(child)
            return child.wait()
        finally:
            os.close(pidfd)

    def _write_pid(self, pid: int) -> None:
        if self.pid_file is not None:
            tmp = self.pid_file.with_name(self.pid_file.name + ".tmp")
            tmp.write_text(f"{pid}\n")
            tmp.replace(self.pid_file)


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        child.kill()
    except ProcessLookupError:
        pass


def supervise(
    argv: Sequence[str],
    notify: Callable[[str, str], None],
    hang_after: float = HANG_AFTER,
    kill_after: float = KILL_AFTER,
    pid_file: str | None = None,
) -> int:
    """Run the agent `argv` under a Supervisor until SIGTERM/SIGINT or its final exit;
    return the exit code."""
    supervisor = Supervisor(argv, notify, hang_after, kill_after, pid_file)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.stop)
    return supervisor.run()
