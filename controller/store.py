"""The controller's local store: sessions and node agents outlive the controller process.

One SQLite file (stdlib `sqlite3`), written on every change of a session's state
through the session table's hook, and read once when a controller starts, which takes
the sessions back (`NetServService`). What it holds:

- every session that has not ended, with all its fields; its times (created, expires,
  when the switch's timer on its detour runs out) as wall-clock time, since the
  monotonic clock the controller runs on starts again with the process;
- the next session id: ids are never given out twice, even across restarts, because a
  cookie in a switch names its session by id;
- each node's agent as it last registered (switch port, control API, boot id), so
  that a controller that restarts knows the agent port its detours point at before
  the agent's next heartbeat, and that the agent still holds its chains when its boot
  id has not changed;
- the schema's version (`PRAGMA user_version`): a store of another version is refused,
  not guessed at.

Durability: WAL journal with `synchronous=NORMAL`. A transaction is in the operating
system's hands when its commit returns, before the REST reply leaves, so a controller
killed at any moment (SIGKILL included) finds on restart every session it answered
for. Only a crash of the machine itself may lose the last transactions; `FULL` would
add an fsync to every state change, made while the controller's event loop waits.

One controller per store: the file is locked (`flock`) while it is open, and a second
controller on it is refused. ":memory:" keeps nothing beyond the process.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from controller.match import FlowMatch
from controller.network import Agent
from controller.requests import ModuleSpec, format_dpid
from controller.sessions import Session, State
from signaling.values import NodeSelection

SCHEMA_VERSION = 3
MEMORY = ":memory:"
DEFAULT_NAME = "controller-{of_port}.sqlite"  # in the repository's run/ folder
RUN_DIR = Path(__file__).resolve().parent.parent / "run"

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta VALUES ('next_id', 1)",
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,           -- datapath id, 16 hex digits (64 bits do not fit)
        tag INTEGER NOT NULL,
        match TEXT NOT NULL,          -- JSON: [[OXM name, value or [value, mask]], ...]
        modules TEXT NOT NULL,        -- JSON: [{"name", "params": [[key, value], ...],
                                      --         "version", "sha256"}, ...]
        lifetime INTEGER NOT NULL,
        created REAL NOT NULL,        -- wall-clock (Unix) times
        expires REAL NOT NULL,
        armed_until REAL NOT NULL,
        state TEXT NOT NULL,
        requester TEXT NOT NULL,
        ref TEXT NOT NULL DEFAULT '',  -- its group's name for the requester, 16 hex digits
        -- JSON: {"mode": NodeMode, "dpids": [16 hex digits, ...]}
        selection TEXT NOT NULL DEFAULT '{"mode": 1}',
        copy INTEGER                  -- 1: its frames are copied, 0: detoured, NULL: undecided
        )""",
    """CREATE TABLE agents (
        dpid TEXT PRIMARY KEY,
        switch_port TEXT NOT NULL,
        url TEXT NOT NULL,
        boot_id TEXT NOT NULL)""",
)


_TO_2 = (
    "ALTER TABLE sessions ADD COLUMN ref TEXT NOT NULL DEFAULT ''",
    """ALTER TABLE sessions ADD COLUMN selection TEXT NOT NULL DEFAULT '{"mode": 1}'""",
)
# Sessions gained the mode their frames reach their chain in; NULL for those stored
# before, which the controller decides from the manifests as it did then.
_TO_3 = ("ALTER TABLE sessions ADD COLUMN copy INTEGER",)


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names the file and why."""


def default_path(of_port: int) -> Path:
    """Return the store a controller on OpenFlow port `of_port` keeps by default."""
    return RUN_DIR / DEFAULT_NAME.format(of_port=of_port)


class SessionStore:
    """Sessions and agents in one SQLite file (or in memory for ":memory:").

    `clock` is the controller's monotonic clock, `wall` the time of day: times are
    kept as wall-clock time and handed back on the clock. Raise StoreError when the
    file cannot be opened, is not a NetServ store of this version, or another
    controller has it open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        self.clock, self.wall = clock, wall
        self._lock = threading.Lock()
        self._held: int | None = None
        self._db: sqlite3.Connection | None = None
        try:
            if self.path != MEMORY:
                self._held = _take(Path(self.path))
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"session store {self.path}: {_reason(exc)}") from None

    def _migrate(self) -> None:
        assert self._db is not None
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version in (1, 2):  # sessions gained their group and node selection, then mode
            steps = ["BEGIN", *(_TO_2 if version == 1 else ()), *_TO_3]
            steps += [f"PRAGMA user_version = {SCHEMA_VERSION}", "COMMIT"]
            self._db.executescript(";\n".join(steps))
            return
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version != 0 or tables:
            raise sqlite3.DatabaseError(
                f"schema version {version}, this controller reads {SCHEMA_VERSION}"
                if version
                else "not a NetServ session store (it has other tables)"
            )
        # One transaction: a store is made whole or not at all.
        statements = ["BEGIN", *_SCHEMA, f"PRAGMA user_version = {SCHEMA_VERSION}", "COMMIT"]
        self._db.executescript(";\n".join(statements))

    def close(self) -> None:
        """Close the file and let another controller have it."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._held is not None:
            os.close(self._held)  # closing the descriptor releases the lock
            self._held = None

    # --- sessions ------------------------------------------------------------------
    def save(self, session: Session) -> None:
        """Write `session` as it now is, and keep its id from being given out again."""
        row = (
            session.id,
            format_dpid(session.node),
            session.tag,
            json.dumps(
                [[k, list(v) if isinstance(v, tuple) else v] for k, v in session.match.fields]
            ),
            json.dumps(
                [
                    {
                        "name": m.name,
                        "params": [list(p) for p in m.params],
                        "version": m.version,
                        "sha256": m.sha256,
                    }
                    for m in session.modules
                ]
            ),
            session.lifetime,
            self._to_wall(session.created),
            self._to_wall(session.expires),
            self._to_wall(session.armed_until),
            session.state.value,
            session.requester,
            format_dpid(session.ref),  # 64 bits: more than SQLite's signed integers hold
            json.dumps(
                {
                    "mode": int(session.selection.mode),
                    "dpids": [format_dpid(d) for d in session.selection.dpids],
                }
            ),
            None if session.copy is None else int(session.copy),
        )
        self._write(
            (f"INSERT OR REPLACE INTO sessions VALUES ({', '.join('?' * len(row))})", row),
            ("UPDATE meta SET value = max(value, ?) WHERE key = 'next_id'", (session.id + 1,)),
        )

    def delete(self, session_id: int) -> None:
        """Forget session `session_id` (its id stays used)."""
        self._write(("DELETE FROM sessions WHERE id = ?", (session_id,)))

    def load(self) -> list[Session]:
        """Return every stored session, oldest first, its times on the clock.

        Raise StoreError naming the first row that cannot be read.
        """
        rows = self._read("SELECT * FROM sessions ORDER BY id")
        sessions = []
        for row in rows:
            try:
                sessions.append(self._session(row))
            except (ValueError, TypeError, KeyError) as exc:
                raise StoreError(
                    f"session store {self.path}: session {row[0]} cannot be read: {exc}"
                ) from None
        return sessions

    def _session(self, row: tuple) -> Session:
        sid, node, tag, match, modules, lifetime, created, expires, armed, state = row[:10]
        requester, ref, selection, copy = row[10:]
        chosen = json.loads(selection)
        fields = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in json.loads(match))
        specs = tuple(
            ModuleSpec(
                m["name"],
                tuple((k, v) for k, v in m["params"]),
                m.get("version", ""),  # not in a store written before versions were kept
                m.get("sha256", ""),
            )
            for m in json.loads(modules)
        )
        return Session(
            id=sid,
            node=int(node, 16),
            tag=tag,
            match=FlowMatch(fields),
            modules=specs,
            lifetime=lifetime,
            created=self._from_wall(created),
            expires=self._from_wall(expires),
            state=State(state),
            armed_until=self._from_wall(armed),
            requester=requester,
            ref=int(ref, 16) if ref else 0,
            selection=NodeSelection(chosen["mode"], [int(d, 16) for d in chosen.get("dpids", ())]),
            copy=None if copy is None else bool(copy),
        )

    @property
    def next_id(self) -> int:
        """Return the first session id never given out by a controller on this store."""
        (counted,) = self._read("SELECT value FROM meta WHERE key = 'next_id'")[0]
        (highest,) = self._read("SELECT coalesce(max(id), 0) FROM sessions")[0]
        return max(counted, highest + 1)

    # --- agents --------------------------------------------------------------------
    def save_agent(self, agent: Agent) -> None:
        """Write the node agent as it registered."""
        row = (format_dpid(agent.dpid), agent.switch_port, agent.url, agent.boot_id)
        self._write(("INSERT OR REPLACE INTO agents VALUES (?, ?, ?, ?)", row))

    def delete_agent(self, dpid: int) -> None:
        """Forget the agent of node `dpid`."""
        self._write(("DELETE FROM agents WHERE dpid = ?", (format_dpid(dpid),)))

    def load_agents(self) -> list[Agent]:
        """Return the stored agents, as if each had just been heard from."""
        now = self.clock()
        return [
            Agent(int(dpid, 16), port, url, boot_id, last_seen=now)
            for dpid, port, url, boot_id in self._read("SELECT * FROM agents ORDER BY dpid")
        ]

    # --- I/O -----------------------------------------------------------------------
    def _to_wall(self, t: float) -> float:
        return t - self.clock() + self.wall()

    def _from_wall(self, t: float) -> float:
        return t - self.wall() + self.clock()

    def _write(self, *statements: tuple[str, tuple]) -> None:
        """Run `statements` as one transaction; raise StoreError."""
        with self._lock:
            db = self._open()
            try:
                with db:
                    for sql, args in statements:
                        db.execute(sql, args)
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: {_reason(exc)}") from None

    def _read(self, sql: str) -> list[tuple]:
        with self._lock:
            try:
                return self._open().execute(sql).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"session store {self.path}: {_reason(exc)}") from None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"session store {self.path} is closed")
        return self._db


def _take(path: Path) -> int:
    """Open `path` (made if missing, readable by its owner only) and lock it; return the fd.

    Raise OSError, saying so when another controller holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError("another controller has it open (one controller per store)") from None
    return fd


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
