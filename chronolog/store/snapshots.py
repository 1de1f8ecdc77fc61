"""A file of folded stream states, so that a start reads the log's tail, not the whole log.

Recovery folds every task and cleanup stream into its state. Without help that costs time
in proportion to the log (about 5 s per million events here), and the log only grows. This
file keeps, for each stream, its state folded up to some version, and the log position
up to which every stream's events are in those states. A start loads the states and folds
only the events after that position.

Each row carries its own version, and a row may be ahead of the file's position (rows are
saved before the position moves), never behind it: whoever folds the log after the
position skips the events a row already holds.

It is a cache of the log, never the truth, so it lives in a file of its own (its writes
never wait for the log's writer, and the log's durability setting does not apply): a file
that is missing, damaged, written for states of another shape (another ``fingerprint``), or
that does not match the log it is used with, is emptied, and the log is folded whole.
The caller encodes and decodes the states; this module only keeps bytes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog

log = structlog.get_logger("chronolog.store")

SNAPSHOTS_FILENAME = "state-snapshots.sqlite3"

#: Stream ids per ``IN`` list (SQLite's limit on host parameters is 32,766).
_IDS_PER_QUERY = 500

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS snapshot_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        fingerprint TEXT NOT NULL,
        position INTEGER NOT NULL,
        anchor_stream TEXT,
        anchor_version INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS stream_states (
        stream_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        state BLOB NOT NULL
    ) WITHOUT ROWID""",
)


class Anchor(NamedTuple):
    """The event at a snapshot's position, by stream and version: a log that holds another
    event there (a restored backup, another data directory's log) is not the one the
    snapshot was folded from."""

    stream_id: str
    stream_version: int


class StateRow(NamedTuple):
    """One stream's encoded state, folded up to ``version`` of the stream."""

    stream_id: str
    version: int
    state: bytes


class SnapshotFile:
    """The snapshot file at ``path`` for states whose encoding is named by ``fingerprint``.

    Thread-safe: reads of single streams (job actors reloading) have a connection of their
    own, so they do not wait for a save in progress.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._conn, self._reader = self._open()
        except sqlite3.OperationalError:
            raise  # cannot open, locked, read-only: not the file's fault
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            self._set_aside(exc)
            self._conn, self._reader = self._open()

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # A lost last save only means a longer fold at the next start.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT fingerprint FROM snapshot_meta WHERE id = 1").fetchone()
            if row is None or row[0] != self.fingerprint:
                if row is not None:
                    log.info("state snapshots were made for other state shapes; starting anew")
                self._reset(conn)
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except BaseException:
            conn.close()
            raise
        reader.execute("PRAGMA busy_timeout=5000")
        return conn, reader

    def _set_aside(self, error: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        log.warning(
            "the state snapshot file is unreadable; set aside, the log is folded whole",
            error=str(error),
            moved_to=str(aside),
        )
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                source.rename(Path(f"{aside}{suffix}"))

    def _reset(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            conn.execute("DELETE FROM stream_states")
            conn.execute("DELETE FROM snapshot_meta")
            conn.execute(
                "INSERT INTO snapshot_meta (id, fingerprint, position) VALUES (1, ?, 0)",
                [self.fingerprint],
            )

    def reset(self) -> None:
        """Forget every state: the next start folds the whole log."""
        with self._lock:
            self._reset(self._conn)

    def position(self) -> tuple[int, Anchor | None]:
        """The position every saved stream is folded up to (0: none), and its anchor."""
        with self._lock:
            row = self._conn.execute(
                "SELECT position, anchor_stream, anchor_version FROM snapshot_meta WHERE id = 1"
            ).fetchone()
        if row is None or not row[0]:
            return 0, None
        position, stream, version = row
        return int(position), None if stream is None else Anchor(stream, int(version))

    def rows(self) -> Iterator[StateRow]:
        """Every saved state (call it while nothing saves, such as at start)."""
        cursor = self._conn.execute("SELECT stream_id, version, state FROM stream_states")
        for stream_id, version, state in cursor:
            yield StateRow(stream_id, version, state)

    def row(self, stream_id: str) -> StateRow | None:
        """The saved state of one stream, or None."""
        with self._read_lock:
            found = self._reader.execute(
                "SELECT version, state FROM stream_states WHERE stream_id = ?", [stream_id]
            ).fetchone()
        return None if found is None else StateRow(stream_id, found[0], found[1])

    def rows_for(self, stream_ids: Iterable[str]) -> dict[str, StateRow]:
        """The saved states of ``stream_ids`` that have one."""
        ids = list(stream_ids)
        found: dict[str, StateRow] = {}
        with self._lock:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start : start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                for stream_id, version, state in self._conn.execute(
                    f"SELECT stream_id, version, state FROM stream_states "
                    f"WHERE stream_id IN ({marks})",
                    chunk,
                ):
                    found[stream_id] = StateRow(stream_id, version, state)
        return found

    def save(self, position: int, anchor: Anchor, rows: Sequence[StateRow]) -> None:
        """Replace the states of ``rows`` and move the position to ``position`` (whose event
        is ``anchor``), in one transaction. ``rows`` must hold every stream with an event
        between the previous position and this one."""
        with self._lock, _transaction(self._conn) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stream_states (stream_id, version, state) VALUES (?, ?, ?)",
                rows,
            )
            conn.execute(
                "UPDATE snapshot_meta SET position = ?, anchor_stream = ?, "
                "anchor_version = ? WHERE id = 1",
                [position, anchor.stream_id, anchor.stream_version],
            )

    def close(self) -> None:
        """Close the file's connections."""
        with self._lock, self._read_lock:
            self._reader.close()
            self._conn.close()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``conn``: committed, or rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def open_snapshots(path: Path, fingerprint: str) -> SnapshotFile | None:
    """The snapshot file at ``path``, or None (with a warning) when it cannot be opened at
    all (a directory where the file should be, no permission): a cache that is missing
    only makes starts fold the whole log."""
    try:
        return SnapshotFile(path, fingerprint)
    except (OSError, sqlite3.Error) as exc:
        log.warning(
            "state snapshots are unavailable; each start folds the whole log",
            path=str(path),
            error=str(exc),
        )
        return None


__all__ = ["SNAPSHOTS_FILENAME", "Anchor", "SnapshotFile", "StateRow", "open_snapshots"]
