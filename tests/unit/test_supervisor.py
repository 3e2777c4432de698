"""The agent's supervisor: its watchdog's decisions, and real child processes that die,
hang and stop."""

import argparse
import os
import signal
import sys
import threading
import time

import pytest

from nodes import main as agent_main
from nodes.supervisor import EXIT_FATAL, Supervisor, Watchdog, exit_reason, restart_pause


def test_the_watchdog_says_hung_once_then_kill_and_a_beat_ends_the_hang():
    dog = Watchdog(started=100.0, hang_after=0.5, kill_after=10.0)
    assert dog.check(100.4) == "ok"
    assert dog.beat(100.4) is False
    assert dog.check(100.8) == "ok"  # 0.4 s since the last beat
    assert dog.check(100.95) == "hung"
    assert dog.check(101.5) == "ok"  # told once; waiting for it to come back
    assert dog.wait(101.5) == pytest.approx(9.45 + 0.01)
    assert dog.beat(105.0) is True  # back by itself: no kill
    assert dog.check(105.2) == "ok"
    assert dog.check(105.6) == "hung" and dog.check(115.6) == "kill"


def test_restarts_are_at_once_then_slower_while_the_agent_dies_young():
    assert [restart_pause(n) for n in range(8)] == [0, 0, 1, 2, 5, 10, 30, 30]


def test_exit_reasons_name_the_signal():
    assert exit_reason(-9) == "killed by SIGKILL" and exit_reason(1) == "exited with code 1"


def test_the_agent_under_a_supervisor_gets_the_same_options():
    p = argparse.ArgumentParser()
    p.add_argument("-v", "--verbose", action="store_true")
    agent_main.add_arguments(p)
    given = [
        "-v",
        "--dpid",
        "1a",
        "--iface",
        "s1-na",
        "--switch-port",
        "s1-ns",
        "--controller",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:7000",
        "--module-path",
        "/a",
        "--module-path",
        "/b",
        "--key-file",
        "/k",
        "--max-frame-age",
        "0.25",
    ]
    args = p.parse_args(given)
    argv = agent_main.child_argv(args)
    assert argv[:3] == [sys.executable, "-m", "nodes"] and argv[-1] == "--no-supervisor"
    child = p.parse_args(argv[3:])
    assert child.no_supervisor and not args.no_supervisor
    assert {k: v for k, v in vars(child).items() if k != "no_supervisor"} == {
        k: v for k, v in vars(args).items() if k != "no_supervisor"
    }


# A stand-in agent: beats on the watchdog fd, then does what its first argument says.
CHILD = """
import os, sys, time
what, fd = sys.argv[1], int(sys.argv[sys.argv.index("--watchdog-fd") + 1])
print(sys.argv[sys.argv.index("--boot-id") + 1], flush=True)
for _ in range(5):
    os.write(fd, b"."); time.sleep(0.05)
if what == "exit0": sys.exit(0)
if what == "fatal": sys.exit(FATAL)
if what == "crash": os.kill(os.getpid(), 9)
if what == "hang": time.sleep(60)
if what == "beat":
    while True:
        os.write(fd, b"."); time.sleep(0.05)
""".replace("FATAL", str(EXIT_FATAL))


def supervisor(what, tmp_path, **kw):
    notices = []
    argv = [sys.executable, "-c", CHILD, what]
    sup = Supervisor(
        argv,
        lambda boot, why: notices.append((time.monotonic(), boot, why)),
        pid_file=str(tmp_path / "agent.pid"),
        **kw,
    )
    return sup, notices


@pytest.mark.parametrize("what, code", [("exit0", 0), ("fatal", EXIT_FATAL)])
def test_an_agent_that_stops_or_cannot_work_is_not_started_again(tmp_path, what, code):
    sup, notices = supervisor(what, tmp_path)
    assert sup.run() == code and sup.restarts == 0
    # One that stopped is told: its sessions must not wait for the heartbeats to stop.
    # One that could not work never served the node.
    assert [why for _, _, why in notices] == (["exited with code 0"] if code == 0 else [])


def test_a_dead_agent_is_reported_at_once_and_started_again(tmp_path):
    sup, notices = supervisor("crash", tmp_path)
    done = []
    thread = threading.Thread(target=lambda: done.append(sup.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(notices) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sup.stop()
        thread.join(10)
    assert len(notices) >= 2 and sup.restarts >= 1
    assert notices[0][2] == "killed by SIGKILL" and notices[0][1] != notices[1][1]
    assert int((tmp_path / "agent.pid").read_text()) == sup.child.pid


def test_a_hung_agent_is_reported_within_the_hang_time_then_killed_and_started_again(tmp_path):
    sup, notices = supervisor("hang", tmp_path, hang_after=0.3, kill_after=1.0)
    thread = threading.Thread(target=sup.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(notices) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sup.stop()
        thread.join(10)
    (_, boot, hung), (_, same, killed) = notices[:2]
    assert hung.startswith("hung") and killed == "killed by SIGKILL" and boot == same
    assert sup.restarts >= 1


def test_a_stopped_agent_is_hung_and_comes_back_by_itself_with_sigcont(tmp_path):
    sup, notices = supervisor("beat", tmp_path, hang_after=0.3, kill_after=30.0)
    thread = threading.Thread(target=sup.run)
    thread.start()
    try:
        while sup.child is None:
            time.sleep(0.01)
        time.sleep(0.5)
        stopped = time.monotonic()
        os.kill(sup.child.pid, signal.SIGSTOP)
        time.sleep(1.0)
        os.kill(sup.child.pid, signal.SIGCONT)
        time.sleep(0.5)
        assert sup.child.poll() is None and sup.restarts == 0
    finally:
        sup.stop()
        thread.join(10)
    (when, _, why), (_, _, stopped_at_last) = notices  # hung; then stopped at the end
    assert stopped_at_last == "killed by SIGTERM"  # the stand-in takes no SIGTERM
    assert why.startswith("hung") and 0.3 - 0.1 <= when - stopped < 0.6  # last beat: 0.05 s before
