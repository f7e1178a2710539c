"""The store's SQLite database: schema, connections, transactions.

A state dir gets `<state-dir>/state.db` in WAL mode: one writer at a time (a Python lock in
front of one write connection, so writers queue instead of failing with SQLITE_BUSY) and
readers on their own pooled connections, which WAL never blocks. `synchronous=NORMAL`: a
commit survives the emulator's crash (SIGKILL); a power cut may lose the last commits.
Without a state dir the database is in memory: one connection, one lock (fast enough there:
no disk). An exclusive lock on `state.db.lock` keeps a second emulator off the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

SCHEMA_VERSION = 2
POOL_SIZE = 8

SCHEMA = """
CREATE TABLE accounts (
    owner TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,   -- per-account run numbers (cursors)
    period_start REAL NOT NULL,            -- first request: usage periods count from it
    stored_runs INTEGER NOT NULL DEFAULT 0,
    stored_bytes INTEGER NOT NULL DEFAULT 0  -- output plus requests (spec) of its runs
) WITHOUT ROWID;

CREATE TABLE runs (
    pk INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    profile TEXT NOT NULL,
    spec TEXT NOT NULL,                    -- canonical JSON: the idempotency fingerprint
    exit_code INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    message TEXT,
    idem_key TEXT,
    workspace TEXT                         -- JSON: what the uploaded workspace held
);
-- A page is a walk down one of these from the cursor: O(limit) whatever the filter.
CREATE UNIQUE INDEX runs_by_owner ON runs (owner, seq);
CREATE INDEX runs_by_status ON runs (owner, status, seq);
CREATE INDEX runs_by_profile ON runs (owner, profile, seq);
CREATE INDEX runs_by_profile_status ON runs (owner, profile, status, seq);
CREATE INDEX runs_by_created ON runs (owner, created_at, seq);
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX runs_by_idem ON runs (owner, idem_key) WHERE idem_key IS NOT NULL;

-- Per-account totals: inserts count themselves (with `last_seq`, one UPDATE per create or
-- seed, not one per row); triggers do the rest, so no delete path (delete, retention,
-- caps) can forget.
CREATE TRIGGER runs_removed AFTER DELETE ON runs BEGIN
    UPDATE accounts SET stored_runs = stored_runs - 1,
                        stored_bytes = stored_bytes - OLD.output_bytes
                                       - length(CAST(OLD.spec AS BLOB))
    WHERE owner = OLD.owner;
END;
CREATE TRIGGER runs_output_grew AFTER UPDATE OF output_bytes ON runs BEGIN
    UPDATE accounts SET stored_bytes = stored_bytes + NEW.output_bytes - OLD.output_bytes
    WHERE owner = NEW.owner;
END;

CREATE TABLE output (
    run INTEGER NOT NULL REFERENCES runs (pk) ON DELETE CASCADE,
    offset INTEGER NOT NULL,
    stream TEXT NOT NULL,
    at REAL NOT NULL,                      -- when the chunk's first byte was written
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX output_by_run ON output (run, offset);

-- Usage outlives the runs (a deleted run still used its quota): one row per created run,
-- kept as long as the longest plan period.
CREATE TABLE usage_runs (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
) WITHOUT ROWID;
CREATE INDEX usage_by_created ON usage_runs (owner, created_at);

CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


class DatabaseError(Exception):
    """The state database cannot be used; the message says which file and why."""


class Database:
    def __init__(self, path: Path | None):
        self.path = path
        self._write_lock = threading.RLock()
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock_file = None
        try:
            if path is not None:
                self._lock_file = _exclusive_lock(path.with_name(path.name + ".lock"))
                _check_file(path)
            self._writer = self._connect()
            self._init_schema()
        except DatabaseError:
            self.close()
            raise
        except sqlite3.Error as e:
            self.close()
            raise DatabaseError(f"cannot use the state database {path}: {e} "
                             "(move it away to start with no runs)") from None

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    def _init_schema(self) -> None:
        con = self._writer
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            # Not a database this emulator wrote (planted, or cut short): refused here, not
            # a failed request later.
            have = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
            missing = sorted(TABLES - have)
            if missing:
                raise sqlite3.DatabaseError(f"table(s) {', '.join(missing)} missing")
            return
        if version != 0:
            raise sqlite3.DatabaseError(f"schema version {version} is not {SCHEMA_VERSION}")
        con.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(SCHEMA):
                con.execute(statement)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed when the block ends (rolled back on an exception)."""
        with self._write_lock:
            con = self._writer
            if con.in_transaction:  # nested: part of the outer transaction
                yield con
                return
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        if self.path is None:
            with self._write_lock:
                yield self._writer
            return
        try:
            con = self._pool.get_nowait()
        except queue.Empty:
            con = self._connect()
        try:
            yield con
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
            if self._pool.qsize() < POOL_SIZE:
                self._pool.put(con)
            else:
                con.close()

    @property
    def closed(self) -> bool:
        return getattr(self, "_writer", None) is None

    def close(self) -> None:
        with self._write_lock:
            while True:
                try:
                    self._pool.get_nowait().close()
                except queue.Empty:
                    break
            writer = getattr(self, "_writer", None)
            if writer is not None:
                writer.close()
                self._writer = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


TABLES = frozenset({"accounts", "runs", "output", "usage_runs", "meta"})


def _check_file(path: Path) -> None:
    """The database file, created 0600 when absent (never world-readable): a regular file
    of ours, not a symlink to elsewhere."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise DatabaseError(f"cannot use the state database {path}: {e.strerror or e} "
                            "(a symlink there is refused; move it away)") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise DatabaseError(f"the state database {path} is not a regular file of yours "
                            "writable by you only; move it away to start with no runs")


def _statements(script: str) -> list[str]:
    """The schema's statements (triggers hold `;` inside BEGIN...END)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _exclusive_lock(path: Path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise DatabaseError(f"cannot use {path}: {e.strerror or e}") from None
    f = open(fd, "rb+")  # noqa: SIM115
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise DatabaseError(f"another emulator is using the state dir {path.parent} "
                         "(stop it, or use another --state-dir)") from None
    return f
