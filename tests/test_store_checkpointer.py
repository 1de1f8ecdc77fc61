"""The log's WAL is folded into its database file by a thread of its own, so that the
automatic checkpoint inside the writer's commit has little left to copy."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from chronolog.store import SQLiteEventStore
from chronolog.store import checkpointer as checkpointing
from chronolog.store.sqlite import DB_FILENAME
from chronolog.testing.store_contract import numbered


def events_in_database_file(data_dir: Path, scratch: Path) -> int:
    """Events a copy of the database file alone holds (without its WAL): those folded."""
    scratch.mkdir()
    (scratch / DB_FILENAME).write_bytes((data_dir / DB_FILENAME).read_bytes())
    conn = sqlite3.connect(scratch / DB_FILENAME)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # not even the table has been folded yet
        return 0
    finally:
        conn.close()


def checkpointed(store: SQLiteEventStore) -> bool:
    """Whether the store's checkpointer has run once (waited for up to 10 s)."""
    deadline = time.monotonic() + 10
    while store._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return store._checkpointer.checkpoints > 0


@pytest.mark.parametrize(
    ("events", "threshold", "interval"),
    [(120, 50, 60.0), (3, checkpointing.CHECKPOINT_EVENTS, 0.05)],
    ids=["past-the-threshold-at-once", "a-trickle-within-the-interval"],
)
def test_committed_events_are_folded_into_the_database_file(
    tmp_path: Path, monkeypatch: Any, events: int, threshold: int, interval: float
) -> None:
    """Past ``CHECKPOINT_EVENTS`` committed events the checkpointer folds the WAL at once
    (not waiting out an interval of a minute); fewer are folded after the interval. The
    events are in the database file then."""
    monkeypatch.setattr(checkpointing, "CHECKPOINT_EVENTS", threshold)
    monkeypatch.setattr(checkpointing, "CHECKPOINT_INTERVAL", interval)
    store = SQLiteEventStore(tmp_path)
    try:
        store.append("s", numbered(events))
        assert checkpointed(store)
        assert events_in_database_file(tmp_path, tmp_path / "copy") == events
    finally:
        store.close()


def test_nothing_committed_means_no_checkpoint(tmp_path: Path, monkeypatch: Any) -> None:
    """An idle log is not checkpointed (no fsync a second for nothing)."""
    monkeypatch.setattr(checkpointing, "CHECKPOINT_INTERVAL", 0.02)
    store = SQLiteEventStore(tmp_path)
    try:
        time.sleep(0.2)
        assert store._checkpointer.checkpoints == 0
        store.append("s", numbered(1))
        assert checkpointed(store)
    finally:
        store.close()


def test_a_failed_checkpoint_is_said_once_and_tried_again(tmp_path: Path) -> None:
    """A checkpoint that fails (a full disk) is logged once; the next one that works
    counts, and the log goes on meanwhile."""

    class Failing:
        def __init__(self, times: int, real: sqlite3.Connection) -> None:
            self.times, self.real = times, real

        def execute(self, sql: str) -> Any:
            if self.times:
                self.times -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return self.real.execute(sql)

        def close(self) -> None:
            self.real.close()

    path = tmp_path / DB_FILENAME
    sqlite3.connect(path).close()
    worker = checkpointing.Checkpointer(path, every_events=1, interval=60.0)
    real = worker._conn
    worker._conn = Failing(2, real)  # type: ignore[assignment]
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                before = worker.checkpoints
                worker.committed(1)
                deadline = time.monotonic() + 10
                while worker._wake.is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05)
            assert worker.checkpoints == before + 1 == 1
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1 and "disk is full" in warnings[0]["error"]
    finally:
        worker.close()
