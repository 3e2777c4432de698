"""The session store: what it keeps, what it refuses, and that a kill loses nothing."""

import argparse
import signal
import sqlite3
import stat
import subprocess
import sys
from dataclasses import replace

import pytest

from controller import entry
from controller.match import parse_match
from controller.network import Agent
from controller.requests import ModuleSpec
from controller.sessions import Session, State
from controller.store import (
    _TO_2,
    MEMORY,
    SCHEMA_VERSION,
    SessionStore,
    StoreError,
    default_path,
)
from signaling.values import NodeSelection
from tests.unit.conftest import Clock
from topo.controller import REPO_ROOT, ControllerProcess

BIG_DPID = 0xFEDC_BA98_7654_3210  # past what SQLite's signed integers hold


def session(sid: int = 7, state: State = State.ACTIVE) -> Session:
    return Session(
        id=sid,
        node=BIG_DPID,
        tag=4094,
        match=parse_match(
            {"ipv4_src": "10.1.0.0/16", "eth_dst": "aa:bb:cc:dd:ee:ff", "udp_dst": 53}
        ),
        modules=(
            ModuleSpec("null", ()),
            ModuleSpec("counter", (("log_every", 7), ("names", ["a", "b"]), ("on", True))),
        ),
        lifetime=86400,
        created=990.5,
        expires=87390.5,
        state=state,
        armed_until=4590.25,
        requester="cdn-7",
        ref=0xFFFF_FFFF_FFFF_FFFE,  # a signaling session id: 64 bits
        selection=NodeSelection.named(BIG_DPID, 3),
    )


def test_every_field_of_a_session_comes_back_and_times_follow_the_wall_clock(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path / "s.sqlite", clock, clock.wall)
    for state in (State.INSTALLING, State.ACTIVE, State.REFRESHING, State.ENDING):
        store.save(session(7, state))
        (back,) = store.load()
        assert back == session(7, state)
    for copy in (True, False, None):  # how its frames reach its chain, or undecided
        store.save(replace(session(), copy=copy))
        assert store.load()[0].copy is copy
    store.close()
    later = Clock()
    later.now, later.boot = 50.0, clock.wall() + 20 - 50.0  # 20 s on, in a new process
    (back,) = SessionStore(tmp_path / "s.sqlite", later, later.wall).load()
    assert back.expires - later() == pytest.approx(session().expires - clock() - 20)
    assert back.created - later() == pytest.approx(session().created - clock() - 20)
    assert back.armed_until - later() == pytest.approx(session().armed_until - clock() - 20)


@pytest.mark.parametrize("version", [1, 2])
def test_a_store_of_an_older_version_is_read_its_sessions_in_groups_of_their_own(tmp_path, version):
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('next_id', 1);
        CREATE TABLE sessions (id INTEGER PRIMARY KEY, node TEXT NOT NULL, tag INTEGER
            NOT NULL, match TEXT NOT NULL, modules TEXT NOT NULL, lifetime INTEGER NOT NULL,
            created REAL NOT NULL, expires REAL NOT NULL, armed_until REAL NOT NULL,
            state TEXT NOT NULL, requester TEXT NOT NULL);
        CREATE TABLE agents (dpid TEXT PRIMARY KEY, switch_port TEXT NOT NULL,
            url TEXT NOT NULL, boot_id TEXT NOT NULL);
        INSERT INTO sessions VALUES (5, '0000000000000001', 1, '[["udp_dst", 9]]', '[]',
            60, 0, 60, 0, 'active', 'operator');
        PRAGMA user_version = 1;"""
    )
    if version == 2:  # with its group and node selection, without the mode
        db.executescript(";\n".join([*_TO_2, "PRAGMA user_version = 2"]))
    db.close()
    (old,) = SessionStore(path).load()
    assert (old.id, old.ref, old.group, old.selection, old.copy) == (
        5,
        0,
        ("operator", 5),
        NodeSelection.first(),
        None,  # undecided: the controller decides from the manifests, as it did then
    )


def test_ids_are_never_given_out_twice_even_after_a_delete(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")
    assert store.next_id == 1
    store.save(session(41))
    store.delete(41)
    assert store.load() == [] and store.next_id == 42
    store.close()
    assert SessionStore(tmp_path / "s.sqlite").next_id == 42


def test_agents_come_back_as_just_heard_from(tmp_path):
    clock = Clock()
    store = SessionStore(tmp_path / "s.sqlite", clock, clock.wall)
    store.save_agent(Agent(BIG_DPID, "s9-ns", "http://127.0.0.1:1", "boot", last_seen=3.0))
    store.save_agent(Agent(BIG_DPID, "s9-ns", "http://127.0.0.1:2", "boot2", last_seen=4.0))
    clock.now = 77.0
    assert store.load_agents() == [
        Agent(BIG_DPID, "s9-ns", "http://127.0.0.1:2", "boot2", last_seen=77.0)
    ]


def test_the_file_is_in_wal_mode_and_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "sub" / "s.sqlite"
    SessionStore(path).save(session())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_second_controller_on_the_same_store_is_refused_until_the_first_closes(tmp_path):
    first = SessionStore(tmp_path / "s.sqlite")
    with pytest.raises(StoreError, match="another controller has it open"):
        SessionStore(tmp_path / "s.sqlite")
    first.close()
    SessionStore(tmp_path / "s.sqlite").close()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_text("not a database, but long enough " * 40), "not a database"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE mine (x)").connection.commit(),
            "not a NetServ session store",
        ),
        (
            lambda p: sqlite3.connect(p).execute("PRAGMA user_version = 99").connection.commit(),
            f"schema version 99, this controller reads {SCHEMA_VERSION}",
        ),
        (lambda p: p.mkdir(), "Is a directory"),
    ],
    ids=["garbage", "foreign", "newer", "directory"],
)
def test_a_store_that_cannot_be_used_is_refused_saying_why(tmp_path, make, words):
    path = tmp_path / "s.sqlite"
    make(path)
    with pytest.raises(StoreError, match=words) as err:
        SessionStore(path)
    assert str(path) in str(err.value)


def test_a_row_that_cannot_be_read_is_named(tmp_path):
    path = tmp_path / "s.sqlite"
    store = SessionStore(path)
    store.save(session(3))
    store._db.execute("UPDATE sessions SET state = 'sleeping'")
    store._db.commit()
    with pytest.raises(StoreError, match="session 3 cannot be read"):
        store.load()


def test_a_session_saved_just_before_a_sigkill_is_there_afterwards(tmp_path):
    path = tmp_path / "s.sqlite"
    code = (
        "import os, signal, sys\n"
        "from controller.store import SessionStore\n"
        "from tests.unit.test_store import session\n"
        f"store = SessionStore({str(path)!r})\n"
        "for sid in range(1, 51):\n"
        "    store.save(session(sid))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = SessionStore(path)  # the killed process's lock went with it
    assert [s.id for s in store.load()] == list(range(1, 51)) and store.next_id == 51


def test_memory_keeps_nothing_beyond_the_store():
    clock = Clock()
    store = SessionStore(MEMORY, clock, clock.wall)
    store.save(session())
    assert store.load() == [session()]
    assert SessionStore(MEMORY).load() == []


def test_the_default_store_is_per_openflow_port_in_the_run_folder():
    assert default_path(6653) == REPO_ROOT / "run" / "controller-6653.sqlite"
    assert default_path(6654) != default_path(6653)


def test_the_controller_refuses_a_store_it_cannot_use_in_one_line(tmp_path, capsys):
    p = argparse.ArgumentParser()
    entry.add_arguments(p)
    (tmp_path / "s.sqlite").write_text("not a database, but long enough " * 40)
    args = p.parse_args(["--store", str(tmp_path / "s.sqlite"), "--module-path", str(tmp_path)])
    assert entry.run(args) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err == f"netserv controller: session store {tmp_path / 's.sqlite'}: file is not a database"
    )


def test_a_controller_process_has_a_store_of_its_own_that_its_restarts_share(tmp_path):
    ctl = ControllerProcess(tmp_path / "c.log", module_path=[])
    argv = ctl.argv()
    assert argv[argv.index("--store") + 1] == str(tmp_path / "c.sqlite")
    given = ControllerProcess(tmp_path / "d.log", module_path=[], store=MEMORY).argv()
    assert given[given.index("--store") + 1] == MEMORY


def test_a_controller_process_empties_its_own_store_first_and_removes_it_last(
    tmp_path, monkeypatch
):
    ctl = ControllerProcess(tmp_path / "c.log", module_path=[])
    monkeypatch.setattr(ctl, "argv", lambda: [sys.executable, "-c", "pass"])  # exits at once
    store = tmp_path / "c.sqlite"
    store.write_text("left by an earlier controller")
    with pytest.raises(RuntimeError, match="exited"):
        ctl.start()
    assert not store.exists()
    store.write_text("made by this controller")
    with pytest.raises(RuntimeError, match="exited"):
        ctl.start()  # a restart: its sessions are kept
    assert store.exists()
    ctl.__exit__(None, None, None)
    assert not store.exists()
    given = tmp_path / "given.sqlite"
    given.write_text("the caller's")
    other = ControllerProcess(tmp_path / "d.log", module_path=[], store=given)
    monkeypatch.setattr(other, "argv", lambda: [sys.executable, "-c", "pass"])
    with pytest.raises(RuntimeError, match="exited"):
        other.start()
    other.__exit__(None, None, None)
    assert given.read_text() == "the caller's"
