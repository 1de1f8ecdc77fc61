"""The space the event log holds back for a full disk: released when an append finds the
disk full (the append is then tried again), held again once there is room."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from chronolog import AppContext, SchedulerModule, SchedulerService, Settings
from chronolog.errors import StorageError
from chronolog.events import TaskCompleted
from chronolog.store import SQLiteEventStore
from chronolog.store import reserve as reserve_module
from chronolog.store import sqlite as sqlite_module
from chronolog.store.base import AppendRequest
from chronolog.store.reserve import RESERVE_FILENAME, DiskReserve

SIZE = 64 * 1024


class TestDiskReserve:
    def test_it_is_held_released_and_held_again(self, tmp_path: Path) -> None:
        reserve = DiskReserve(tmp_path, SIZE)
        assert reserve.ensure() and reserve.held
        assert (tmp_path / RESERVE_FILENAME).stat().st_size == SIZE
        assert reserve.ensure()  # already held: nothing to do
        assert reserve.release() and not reserve.held
        assert not reserve.release()  # nothing left to free
        assert reserve.ensure() and reserve.held

    def test_it_is_not_taken_from_a_disk_short_of_room(self, tmp_path: Path) -> None:
        """Twice its size must be free: taking the last free bytes would fill the disk."""
        reserve = DiskReserve(tmp_path, SIZE, free=lambda path: 2 * SIZE - 1)
        assert not reserve.ensure()
        assert not (tmp_path / RESERVE_FILENAME).exists()
        assert not DiskReserve(tmp_path, 0).ensure()  # none asked for
        assert not (tmp_path / RESERVE_FILENAME).exists()


class DiskFills:
    """The writer's SQLite connection, whose COMMIT fails as on a full disk ``failures``
    times (SQLite then rolls back, as the store asks)."""

    def __init__(self, conn: sqlite3.Connection, failures: int) -> None:
        self._conn = conn
        self.failures = failures

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def append_one(store: SQLiteEventStore, i: int) -> None:
    event = TaskCompleted(task_id=f"t{i}", reason="one_shot")
    [outcome] = store.append_many([AppendRequest(stream_id=f"task-t{i}", events=[event])])
    if isinstance(outcome, Exception):
        raise outcome


class TestTheLogOnAFullDisk:
    def test_the_reserve_lets_the_append_in(self, tmp_path: Path) -> None:
        """The first append that finds the disk full releases the reserve and goes in;
        the next, with no reserve left, fails as before and changes nothing."""
        store = SQLiteEventStore(tmp_path, reserve_bytes=SIZE)
        try:
            reserve = tmp_path / RESERVE_FILENAME
            assert reserve.stat().st_size == SIZE
            store._conn = DiskFills(store._conn, failures=1)  # type: ignore[assignment]
            append_one(store, 1)
            assert not reserve.exists()
            assert store.last_position() == 1
            store._conn.failures = 1  # type: ignore[attr-defined]
            with pytest.raises(StorageError, match="disk is full"):
                append_one(store, 2)
            assert store.last_position() == 1
            assert [e.position for e in store.read_all()] == [1]
        finally:
            store.close()

    def test_the_reserve_is_held_again_once_there_is_room(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sqlite_module, "RESERVE_CHECK_SECONDS", 0.0)
        store = SQLiteEventStore(tmp_path, reserve_bytes=SIZE)
        try:
            store._conn = DiskFills(store._conn, failures=1)  # type: ignore[assignment]
            append_one(store, 1)  # released, then (room enough here) held again
            reserve = DiskReserve(tmp_path, SIZE)
            deadline = time.monotonic() + 5  # by the writer, after it answered
            while not reserve.held and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reserve.held
        finally:
            store.close()

    def test_without_a_reserve_a_full_disk_fails_the_append(self, tmp_path: Path) -> None:
        store = SQLiteEventStore(tmp_path)
        try:
            assert not (tmp_path / RESERVE_FILENAME).exists()
            store._conn = DiskFills(store._conn, failures=1)  # type: ignore[assignment]
            with pytest.raises(StorageError, match="disk is full"):
                append_one(store, 1)
            assert store.last_position() == 0
        finally:
            store.close()


class TestOpeningOnAFullDisk:
    """Opening the log writes too (its WAL and index): on a full disk that fails, and the
    reserve left from the last run is what lets the scheduler start."""

    @staticmethod
    def failing_once(monkeypatch: pytest.MonkeyPatch) -> None:
        original = SQLiteEventStore._open_writer
        failures = [1]

        def open_writer(self: SQLiteEventStore, synchronous: Any) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise sqlite3.OperationalError("disk I/O error")
            return original(self, synchronous)

        monkeypatch.setattr(SQLiteEventStore, "_open_writer", open_writer)

    def test_the_reserve_lets_the_log_open(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        SQLiteEventStore(tmp_path, reserve_bytes=SIZE).close()  # a run left its reserve
        assert (tmp_path / RESERVE_FILENAME).exists()
        monkeypatch.setattr(reserve_module, "free_bytes", lambda path: 0)  # the disk is full
        self.failing_once(monkeypatch)
        store = SQLiteEventStore(tmp_path, reserve_bytes=SIZE)
        try:
            assert not (tmp_path / RESERVE_FILENAME).exists()
            append_one(store, 1)
            assert store.last_position() == 1
        finally:
            store.close()

    def test_with_room_to_spare_the_error_is_the_open_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure that is not for want of space keeps the reserve and is reported."""
        SQLiteEventStore(tmp_path, reserve_bytes=SIZE).close()
        self.failing_once(monkeypatch)
        with pytest.raises(StorageError, match=r"cannot open event log.*disk I/O error"):
            SQLiteEventStore(tmp_path, reserve_bytes=SIZE)
        assert (tmp_path / RESERVE_FILENAME).exists()
        SQLiteEventStore(tmp_path, reserve_bytes=SIZE).close()  # the lock was let go


def test_a_cleanup_runs_on_a_full_disk(tmp_path: Path) -> None:
    """The case the reserve is for: the disk under the log is full, and a cleanup that
    would free it must be recorded before it removes anything. The first append finds
    the disk full, the reserve goes, and the run is recorded and done."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old = time.time() - 10 * 86400
    for i in range(5):
        path = logs / f"app{i}.log"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        cleanup_allowed_roots=(str(tmp_path),),
        disk_reserve_bytes=SIZE,
    )
    module = SchedulerModule(settings)
    svc: SchedulerService = module.register(AppContext())
    module.start_blocking()
    try:
        registration = svc.sync.register_cleanup(str(logs), pattern="*.log", retention_days=1)
        store: Any = module.require_runtime().store
        store._conn = DiskFills(store._conn, failures=1)  # the disk has just filled up
        [outcome] = svc.sync.run_cleanup(registration.unwrap()).unwrap()
        assert outcome.error is None, outcome.error
        assert outcome.report is not None and outcome.report.summary.files_removed == 5
        assert list(logs.iterdir()) == []
        assert not (tmp_path / "data" / RESERVE_FILENAME).exists()
    finally:
        module.stop_blocking()
