"""What the SQLite store adds to the contract: one writing process per data directory,
readers in other processes, durability across reopening, and its options."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog.clock import SystemClock
from chronolog.errors import (
    ConcurrencyError,
    ReadOnlyStoreError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    ValidationError,
)
from chronolog.events import (
    Cause,
    DomainEvent,
    EncodedEvent,
    Envelope,
    EventCodec,
    EventMetadata,
    TaskCompleted,
)
from chronolog.store import InMemoryEventStore, SQLiteEventStore
from chronolog.store.base import AppendRequest
from chronolog.store.sqlite import DB_FILENAME, _Call, _hand
from chronolog.testing.store_contract import numbered

WORKER = Path(__file__).with_name("_store_worker.py")


class Peer:
    """Another Python process running one role of ``_store_worker.py``, talked to by lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def readline(self) -> str:
        """The peer's next output line (empty when it exited)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> tuple[str, str]:
        """Close the peer's stdin and wait for it; return the rest of stdout and stderr."""
        out, err = self.proc.communicate(timeout=30)
        return out, err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def writer(data_dir: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(data_dir)
    yield store
    store.close()


def _one(i: int = 0) -> list[TaskCompleted]:
    return [TaskCompleted(task_id=f"t{i}", reason="one_shot")]


class TestProcessLock:
    def test_second_writer_in_same_process_is_refused(
        self, writer: SQLiteEventStore, data_dir: Path
    ) -> None:
        """A second writing store on the same directory fails with a message that says what
        to do instead, and the first keeps working."""
        with pytest.raises(StoreLockedError) as raised:
            SQLiteEventStore(data_dir)
        assert str(data_dir) in raised.value.message
        assert "read_only=True" in raised.value.message
        assert raised.value.code == "store_locked"
        writer.append("s", _one())
        assert writer.last_position() == 1

    def test_second_writer_in_another_process_is_refused(
        self, writer: SQLiteEventStore, data_dir: Path
    ) -> None:
        """Another process cannot open the directory for writing while this one has it."""
        peer = Peer("try-writer", str(data_dir))
        out, err = peer.finish()
        assert out.startswith("locked store_locked "), err
        assert "already open for writing" in out

    def test_close_releases_the_lock(self, data_dir: Path) -> None:
        """After ``close``, this process and others can open the directory for writing."""
        SQLiteEventStore(data_dir).close()
        out, err = Peer("try-writer", str(data_dir)).finish()
        assert out.strip() == "opened", err
        SQLiteEventStore(data_dir).close()

    def test_failed_open_keeps_no_lock(self, data_dir: Path) -> None:
        """A refused second writer leaves the first one's lock intact, and nothing of its own."""
        first = SQLiteEventStore(data_dir)
        with pytest.raises(StoreLockedError):
            SQLiteEventStore(data_dir)
        with pytest.raises(StoreLockedError):
            SQLiteEventStore(data_dir)
        first.close()
        SQLiteEventStore(data_dir).close()


class TestReadOnly:
    def test_read_only_store_cannot_append(self, writer: SQLiteEventStore, data_dir: Path) -> None:
        """Appending through a read-only store raises ``ReadOnlyStoreError`` and writes nothing."""
        writer.append("s", _one())
        reader = SQLiteEventStore(data_dir, read_only=True)
        try:
            with pytest.raises(ReadOnlyStoreError):
                reader.append("s", _one(1))
            assert reader.last_position() == 1
            assert writer.last_position() == 1
        finally:
            reader.close()

    def test_read_only_needs_an_existing_log(self, data_dir: Path) -> None:
        """Opening a missing log read-only is a storage error and creates nothing."""
        with pytest.raises(StorageError, match="no event log"):
            SQLiteEventStore(data_dir, read_only=True)
        assert not data_dir.exists()

    def test_read_only_store_opens_beside_a_writer(
        self, writer: SQLiteEventStore, data_dir: Path
    ) -> None:
        """Read-only stores take no lock: several open while the writer keeps appending."""
        readers = [SQLiteEventStore(data_dir, read_only=True) for _ in range(2)]
        try:
            writer.append("s", numbered(3))
            assert [r.last_position() for r in readers] == [3, 3]
            assert readers[0].read_all() == writer.read_all()
        finally:
            for reader in readers:
                reader.close()

    def test_reader_in_another_process_keeps_reading_during_writes(
        self, writer: SQLiteEventStore, data_dir: Path
    ) -> None:
        """A read-only store in another process sees each batch as it is committed while this
        process holds the write lock and goes on appending."""
        writer.append("s", _one())
        peer = Peer("lockstep-reader", str(data_dir))
        try:
            assert peer.readline() == "ready"
            for round_no in range(1, 6):
                writer.append(f"s{round_no}", numbered(round_no * 7, f"t{round_no}"))
                target = writer.last_position()
                peer.send(str(target))
                assert peer.readline() == f"saw {target} {target} True"
        finally:
            _, err = peer.finish()
        assert peer.proc.returncode == 0, err

    def test_read_only_wait_sees_another_process_append(self, data_dir: Path) -> None:
        """``wait_for_events`` in a read-only store wakes for another process's appends."""
        peer = Peer("appender", str(data_dir), "3")
        try:
            assert peer.readline() == "ready"
            reader = SQLiteEventStore(data_dir, read_only=True, poll_interval=0.005)
            try:
                assert reader.wait_for_events(0, timeout=0.05) is False
                peer.send("go")
                assert reader.wait_for_events(0, timeout=20) is True
                assert peer.readline() == "done"
                assert reader.wait_for_events(2, timeout=20) is True
                assert [e.event.task_id for e in reader.read_all()] == [  # type: ignore[attr-defined]
                    "peer-0",
                    "peer-1",
                    "peer-2",
                ]
                assert reader.wait_for_events(3, timeout=0.02) is False
            finally:
                reader.close()
        finally:
            peer.finish()

    def test_closed_read_only_store_refuses_calls(
        self, writer: SQLiteEventStore, data_dir: Path
    ) -> None:
        """A closed read-only store raises ``StoreClosedError`` for reads."""
        writer.append("s", _one())
        reader = SQLiteEventStore(data_dir, read_only=True)
        reader.close()
        with pytest.raises(StoreClosedError):
            reader.read_all()
        with pytest.raises(StoreClosedError):
            reader.last_position()


class TestReopening:
    def test_reopening_keeps_every_event(self, data_dir: Path) -> None:
        """Everything appended before ``close`` reads back identically after reopening, and
        appends continue at the next position and version."""
        meta = EventMetadata(correlation_id="c", caused_by=Cause(kind="cli", id="me"))
        with SQLiteEventStore(data_dir) as store:
            for i, size in enumerate((1, 7, 50, 3, 200)):
                store.append(f"s{i % 2}", numbered(size, f"t{i}"), metadata=meta)
            before = store.read_all()
            versions = {s: store.stream_version(s) for s in ("s0", "s1")}
        with SQLiteEventStore(data_dir) as store:
            assert store.read_all() == before
            assert store.last_position() == len(before) == 261
            assert {s: store.stream_version(s) for s in ("s0", "s1")} == versions
            added = store.append("s1", _one(), expected_version=versions["s1"])
            assert (added[0].position, added[0].stream_version) == (262, versions["s1"] + 1)
        with SQLiteEventStore(data_dir, read_only=True) as reader:
            assert reader.read_all()[:-1] == before

    def test_a_cleanly_closed_log_is_whole_in_its_file(
        self, data_dir: Path, tmp_path: Path
    ) -> None:
        """After ``close`` (with readers of its own and of another store open until then)
        the WAL is folded into ``events.sqlite3`` and gone: a copy of that one file holds
        every event. Before, the read-only readers closed last and left the events in
        the WAL, so a backup of the log file alone missed them."""
        with SQLiteEventStore(data_dir, read_only=False) as store:
            store.append("s", numbered(300, "t"))
            expected = store.read_all()
            with SQLiteEventStore(data_dir, read_only=True) as reader:
                assert reader.read_all() == expected
        assert sorted(p.name for p in data_dir.iterdir() if "sqlite" in p.name) == [DB_FILENAME]
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / DB_FILENAME).write_bytes((data_dir / DB_FILENAME).read_bytes())
        with SQLiteEventStore(copy, read_only=True) as restored:
            assert restored.read_all() == expected

    def test_expecting_new_a_stream_the_log_already_has_is_a_conflict(self, data_dir: Path) -> None:
        """After reopening, the writer knows no stream's version yet: an append that
        expects an empty stream the log already has gets a conflict, its neighbours in the
        same commit are written, and nothing else is."""
        with SQLiteEventStore(data_dir) as store:
            store.append("old", numbered(2, "first"))
        with SQLiteEventStore(data_dir) as store:
            answers = store.append_many(
                [
                    AppendRequest(stream_id="new", events=numbered(1, "n"), expected_version=0),
                    AppendRequest(stream_id="old", events=numbered(3, "x"), expected_version=0),
                    AppendRequest(stream_id="new2", events=numbered(20, "m"), expected_version=0),
                ]
            )
            conflict = answers[1]
            assert isinstance(conflict, ConcurrencyError)
            assert conflict.details["actual"] == 2
            assert [e.position for e in answers[0]] == [3]  # type: ignore[union-attr]
            assert [e.position for e in answers[2]] == list(range(4, 24))  # type: ignore[union-attr]
            assert [e.event for e in store.read_stream("old")] == numbered(2, "first")
            assert store.last_position() == 23
            added = store.append("old", _one(), expected_version=2)
            assert (added[0].position, added[0].stream_version) == (24, 3)

    def test_one_commit_finds_the_versions_of_hundreds_of_streams_it_has_not_seen(
        self, data_dir: Path
    ) -> None:
        """After reopening, one commit touching 300 streams the writer has no versions for,
        old ones among them at various versions, appends each where it belongs and refuses
        each wrong expectation."""
        with SQLiteEventStore(data_dir) as store:
            store.append_many(
                [AppendRequest(stream_id=f"old{i}", events=numbered(1 + i % 4)) for i in range(150)]
            )
            start = store.last_position()
        with SQLiteEventStore(data_dir) as store:
            requests = [
                AppendRequest(
                    stream_id=f"old{i}",
                    events=numbered(1, f"o{i}"),
                    # Every third one expects the stream empty: a conflict.
                    expected_version=0 if i % 3 == 0 else 1 + i % 4,
                )
                for i in range(150)
            ] + [
                AppendRequest(stream_id=f"new{i}", events=numbered(1, f"n{i}"), expected_version=0)
                for i in range(150)
            ]
            answers = store.append_many(requests)
            position = start
            for i, answer in enumerate(answers[:150]):
                if i % 3 == 0:
                    assert isinstance(answer, ConcurrencyError)
                    assert answer.details["actual"] == 1 + i % 4
                    continue
                assert isinstance(answer, list)
                position += 1
                assert (answer[0].position, answer[0].stream_version) == (position, 2 + i % 4)
            for answer in answers[150:]:
                assert isinstance(answer, list)
                position += 1
                assert (answer[0].position, answer[0].stream_version) == (position, 1)
            assert store.last_position() == position
            assert [e.stream_version for e in store.read_stream("old4")] == [1, 2]

    def test_a_data_directory_it_cannot_write_is_a_storage_error(
        self, data_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A data directory on a read-only file system (a volume mounted read-only) gets
        a StorageError saying so, not an OSError from deep inside."""
        data_dir.mkdir(parents=True, exist_ok=True)
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if flags & os.O_CREAT and Path(path).parent == data_dir:
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        with pytest.raises(StorageError, match=r"data directory: Read-only file system"):
            SQLiteEventStore(data_dir)

    def test_a_file_system_without_locks_is_a_storage_error(
        self, data_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Some network file systems refuse locks (ENOLCK): a StorageError that says the
        data directory needs a file system with locks, and no file descriptor left open."""
        data_dir.mkdir(parents=True, exist_ok=True)
        closed: list[int] = []
        real_close = os.close

        def no_locks(fd: int, operation: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

        def tracked_close(fd: int) -> None:
            closed.append(fd)
            real_close(fd)

        monkeypatch.setattr(fcntl, "flock", no_locks)
        monkeypatch.setattr(os, "close", tracked_close)
        with pytest.raises(StorageError, match=r"No locks available.*file system with locks"):
            SQLiteEventStore(data_dir)
        assert len(closed) == 1

    def test_a_lock_file_it_cannot_write_the_pid_into_still_locks(
        self, data_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The pid in the lock file is for people: on a full disk, writing it fails and the
        store opens all the same, holding the lock."""
        data_dir.mkdir(parents=True, exist_ok=True)

        def full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patched:
            patched.setattr(os, "write", full)
            store = SQLiteEventStore(data_dir)
        try:
            with pytest.raises(StoreLockedError):
                SQLiteEventStore(data_dir)
            store.append("s", numbered(1))
            assert store.last_position() == 1
        finally:
            store.close()

    def test_a_data_directory_named_like_a_uri_is_read_where_it_is(self, tmp_path: Path) -> None:
        """Reads open the log through an SQLite URI: a "#", "%" or space in the data
        directory's name must not end its file name early (which opened, even created,
        another file beside it)."""
        data_dir = tmp_path / "logs #1 100%41 é"
        with SQLiteEventStore(data_dir) as store:
            written = store.append("s", numbered(3))
            assert store.read_all() == written
            assert store.read_stream("s") == written
            with SQLiteEventStore(data_dir, read_only=True) as reader:
                assert reader.read_all() == written
        assert [p.name for p in tmp_path.iterdir()] == [data_dir.name]

    def test_log_lives_in_the_data_directory(self, data_dir: Path) -> None:
        """The store creates its directory and keeps the log in ``events.sqlite3`` there."""
        with SQLiteEventStore(data_dir) as store:
            store.append("s", _one())
        assert (data_dir / DB_FILENAME).is_file()

    def test_a_file_where_the_directory_should_be_is_a_storage_error(self, tmp_path: Path) -> None:
        """Not an OSError from deep inside: the one error type, naming the path."""
        in_the_way = tmp_path / "data"
        in_the_way.write_text("not a directory")
        for path in (in_the_way, in_the_way / "below"):
            with pytest.raises(StorageError, match=r"cannot use .* as the data directory"):
                SQLiteEventStore(path)


class TestOptions:
    @pytest.mark.parametrize("mode", ["OFF", "NORMAL", "FULL", "EXTRA"])
    def test_valid_synchronous_modes_open_and_append(self, data_dir: Path, mode: str) -> None:
        """Each SQLite synchronous mode is accepted and the store works with it."""
        with SQLiteEventStore(data_dir, synchronous=mode) as store:  # type: ignore[arg-type]
            store.append("s", numbered(2))
        with SQLiteEventStore(data_dir, read_only=True) as reader:
            assert reader.last_position() == 2

    @pytest.mark.parametrize("mode", ["full", "ON", "", "FULL; DROP TABLE events", None, 2])
    def test_invalid_synchronous_mode_is_rejected_before_touching_disk(
        self, data_dir: Path, mode: object
    ) -> None:
        """Anything but OFF/NORMAL/FULL/EXTRA is a validation error, and nothing is created."""
        with pytest.raises(ValidationError, match="synchronous"):
            SQLiteEventStore(data_dir, synchronous=mode)  # type: ignore[arg-type]
        assert not data_dir.exists()


class TestOneStatementCommits:
    """``one_statement_commits=True``: a commit of up to 256 events is one INSERT."""

    @staticmethod
    def _statements(store: SQLiteEventStore) -> list[str]:
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        return seen

    def test_a_commit_is_one_insert_after_reading_only_the_versions_it_lacks(
        self, data_dir: Path
    ) -> None:
        """Streams the writer wrote, and one said to be new, need no read; any other has
        its version read first. No BEGIN or COMMIT of chronolog's own either way."""
        with SQLiteEventStore(data_dir, one_statement_commits=True) as store:
            store.append("a", numbered(2, "a"))
            store.append("b", numbered(1, "b"))
            seen = self._statements(store)
            store.append_many(
                [
                    AppendRequest(stream_id="a", events=numbered(3, "a2"), expected_version=2),
                    AppendRequest(stream_id="b", events=numbered(1, "b2"), expected_version=1),
                ]
            )
            assert [s.split(" (")[0] for s in seen] == ["INSERT INTO events"]
            seen.clear()
            store.append("new", numbered(1, "n"), expected_version=0)
            assert [s.split(" (")[0] for s in seen] == ["INSERT INTO events"]
        with SQLiteEventStore(data_dir, one_statement_commits=True) as store:
            seen = self._statements(store)  # reopened: it knows no versions now
            store.append_many(
                [
                    AppendRequest(stream_id="a", events=numbered(1, "a3"), expected_version=5),
                    AppendRequest(stream_id="b", events=numbered(1, "b3")),
                ]
            )
            assert [s.split(" (")[0].split(" FROM")[0] for s in seen] == [
                "SELECT COALESCE(MAX(stream_version), 0)",
                "SELECT COALESCE(MAX(stream_version), 0)",
                "INSERT INTO events",
            ]
            assert [e.stream_version for e in store.read_stream("a")] == [1, 2, 3, 4, 5, 6]
            assert [e.stream_version for e in store.read_stream("b")] == [1, 2, 3]
            assert [e.position for e in store.read_all()] == list(range(1, 11))

    def test_a_stream_said_to_be_new_that_has_events_gives_a_conflict(self, data_dir: Path) -> None:
        """After a reopen the writer knows no versions: a request that says its stream is
        new (expected version 0) is taken at its word, and the index refuses the
        statement when the stream has events; the request is answered with a
        ConcurrencyError and nothing is written."""
        with SQLiteEventStore(data_dir) as store:
            store.append("a", numbered(2, "a"))
        with SQLiteEventStore(data_dir, one_statement_commits=True) as store:
            with pytest.raises(ConcurrencyError):
                store.append("a", numbered(1, "a2"), expected_version=0)
            assert [e.event for e in store.read_all()] == numbered(2, "a")
            store.append("a", numbered(1, "a2"), expected_version=2)
            assert [e.stream_version for e in store.read_stream("a")] == [1, 2, 3]

    def test_a_commit_over_the_limit_takes_a_transaction(self, data_dir: Path) -> None:
        with SQLiteEventStore(data_dir, one_statement_commits=True) as store:
            store.append("a", numbered(1))
            seen = self._statements(store)
            store.append("a", numbered(257))
            assert seen[0] == "BEGIN IMMEDIATE"
            assert store.read_stream("a")[-1].stream_version == 258

    def test_a_row_written_behind_its_back_gives_a_conflict_and_changes_nothing(
        self, data_dir: Path
    ) -> None:
        """Another connection appended to a stream the writer knows (a copied log, say):
        the one statement fails as a whole, the transaction's way reads the version again
        and answers the request with a ConcurrencyError; the other request of the commit
        is written."""
        with SQLiteEventStore(data_dir, one_statement_commits=True) as store:
            store.append("a", numbered(1, "a"))
            store.append("b", numbered(1, "b"))
            with contextlib.closing(sqlite3.connect(data_dir / DB_FILENAME)) as other, other:
                other.execute(
                    "INSERT INTO events SELECT 1000, stream_id, 2, type, schema_version,"
                    " recorded_at, data, metadata FROM events WHERE stream_id = 'a'"
                )
            answers = store.append_many(
                [
                    AppendRequest(stream_id="a", events=numbered(1, "a2"), expected_version=1),
                    AppendRequest(stream_id="b", events=numbered(1, "b2"), expected_version=1),
                ]
            )
            assert isinstance(answers[0], ConcurrencyError)
            assert isinstance(answers[1], list)
            assert answers[1][0].stream_version == 2
            assert [e.stream_version for e in store.read_stream("a")] == [1, 2]
            assert [e.event for e in store.read_stream("b")] == numbered(1, "b") + numbered(1, "b2")


class _GatedCodec(EventCodec):
    """A codec whose encoding blocks until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def encode_event(self, event: DomainEvent) -> EncodedEvent:
        self.entered.set()
        assert self.gate.wait(10)
        return super().encode_event(event)


class TestClosing:
    def test_close_finishes_queued_appends(self, data_dir: Path) -> None:
        """Appends acknowledged before ``close`` are in the log after it."""
        store = SQLiteEventStore(data_dir)
        results = [store.append(f"s{i}", numbered(3, f"t{i}")) for i in range(5)]
        store.close()
        with SQLiteEventStore(data_dir, read_only=True) as reader:
            assert reader.read_all() == [e for r in results for e in r]

    def test_append_racing_close_does_not_hang(self, data_dir: Path) -> None:
        """An append still encoding when ``close`` runs ends with ``StoreClosedError``
        (or is written) instead of waiting forever."""
        codec = _GatedCodec()
        store = SQLiteEventStore(data_dir, codec=codec)
        outcome: list[object] = []

        def append() -> None:
            try:
                outcome.append(store.append("s", _one()))
            except StoreClosedError as exc:
                outcome.append(exc)

        appender = threading.Thread(target=append, daemon=True)
        appender.start()
        assert codec.entered.wait(10)
        store.close()
        codec.gate.set()
        appender.join(2)
        assert not appender.is_alive(), "append() never returned after close()"
        assert len(outcome) == 1


# --- how rows are written -------------------------------------------------------------------

#: Request sizes around the writer's chunk boundaries (16, 64 and 256 rows).
_SIZES = [0, 1, 2, 15, 16, 17, 63, 64, 65, 255, 256, 257, 300, 1000, 1041]


def _placed(envelopes: list[Envelope]) -> list[tuple[object, ...]]:
    """What two stores must agree on (everything but the recording time)."""
    return [
        (e.position, e.stream_id, e.stream_version, e.event_type, e.event, e.metadata)
        for e in envelopes
    ]


class TestRowLayout:
    def test_every_size_reads_back_as_returned(self, writer: SQLiteEventStore) -> None:
        """Requests of every size around the chunk boundaries, small and large mixed in one
        commit, read back exactly as returned: gapless positions, consecutive versions."""
        meta = EventMetadata(correlation_id="c", caused_by=Cause(kind="module", id="m"))
        answers = writer.append_many(
            [
                AppendRequest(
                    stream_id=f"s{size}",
                    events=numbered(size, f"t{size}"),
                    metadata=meta if size % 2 else None,
                )
                for size in _SIZES
            ]
        )
        returned = [e for answer in answers for e in answer]  # type: ignore[union-attr]
        assert writer.read_all() == returned
        assert [e.position for e in returned] == list(range(1, sum(_SIZES) + 1))
        for size in _SIZES:
            stream = writer.read_stream(f"s{size}")
            assert [e.stream_version for e in stream] == list(range(1, size + 1))
            assert [e.event for e in stream] == numbered(size, f"t{size}")
        added = writer.append("s300", numbered(17), expected_version=300)
        assert (added[0].position, added[0].stream_version) == (sum(_SIZES) + 1, 301)

    def test_many_small_requests_share_statements_in_order(self, writer: SQLiteEventStore) -> None:
        """Hundreds of one-to-three-event requests around a large one (small rows share
        one ``executemany``, flushed before the large one's chunks) land in call order,
        each where it was told."""
        sizes = [1 + i % 3 for i in range(203)]
        sizes[100] = 40
        answers = writer.append_many(
            [
                AppendRequest(stream_id=f"s{i}", events=numbered(size, f"r{i}"))
                for i, size in enumerate(sizes)
            ]
        )
        returned = [e for answer in answers for e in answer]  # type: ignore[union-attr]
        assert writer.read_all() == returned
        assert [e.position for e in returned] == list(range(1, sum(sizes) + 1))
        assert [e.stream_id for e in returned] == [
            f"s{i}" for i, size in enumerate(sizes) for _ in range(size)
        ]
        for i, size in enumerate(sizes):
            assert [e.event for e in writer.read_stream(f"s{i}")] == numbered(size, f"r{i}")

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        calls=st.lists(
            st.lists(
                st.tuples(
                    st.sampled_from(["a", "b", "c"]),
                    st.sampled_from(_SIZES[:-2]),
                    st.sampled_from(["right", "any", "stale"]),
                ),
                min_size=1,
                max_size=5,
            ),
            min_size=1,
            max_size=4,
        )
    )
    @pytest.mark.parametrize("one_statement_commits", [False, True])
    def test_agrees_with_the_in_memory_store(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        one_statement_commits: bool,
        calls: list[list[tuple[str, int, str]]],
    ) -> None:
        """Any sequence of ``append_many`` calls (any sizes, same-stream requests in one call,
        right, absent and stale expected versions) gets the same answers and leaves the same
        log as the in-memory store, the reference, whichever way commits are written."""
        oracle = InMemoryEventStore()
        store = SQLiteEventStore(
            tmp_path_factory.mktemp("oracle"), one_statement_commits=one_statement_commits
        )
        try:
            versions: dict[str, int] = {}
            for n, call in enumerate(calls):
                requests = []
                for k, (stream, size, expectation) in enumerate(call):
                    current = versions.get(stream, 0)
                    expected = {"right": current, "any": None, "stale": current + 1}[expectation]
                    requests.append(
                        AppendRequest(
                            stream_id=stream,
                            events=numbered(size, f"{n}.{k}"),
                            expected_version=expected,
                        )
                    )
                    if expectation != "stale":
                        versions[stream] = current + size
                got = store.append_many(requests)
                want = oracle.append_many(requests)
                for g, w in zip(got, want, strict=True):
                    if isinstance(w, list):
                        assert isinstance(g, list)
                        assert _placed(g) == _placed(w)
                    else:
                        assert type(g) is type(w)
            assert _placed(store.read_all()) == _placed(oracle.read_all())
        finally:
            store.close()
            oracle.close()

    def test_rows_with_spelled_out_metadata_still_read(self, data_dir: Path) -> None:
        """A row whose metadata was stored with every default spelled out (as chronolog did
        before storing ``{}``) reads back with default metadata, and the log continues."""
        with SQLiteEventStore(data_dir) as store:
            store.append("s", _one())
        with sqlite3.connect(data_dir / DB_FILENAME) as conn:
            conn.execute(
                "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
                " recorded_at, data, metadata) VALUES (2, 's', 2, 'TaskCompleted', 1, 0, ?, ?)",
                (msgspec.json.encode(_one(1)[0]), msgspec.json.encode(EventMetadata())),
            )
        conn.close()
        with SQLiteEventStore(data_dir) as store:
            stored = store.read_stream("s")
            assert [e.metadata for e in stored] == [EventMetadata(), EventMetadata()]
            assert stored[1].event == _one(1)[0]
            added = store.append("s", _one(2), expected_version=2)
            assert (added[0].position, added[0].stream_version) == (3, 3)


# --- the hand-off between appenders and the writer --------------------------------------------


class _SlowCodec(EventCodec):
    """Encoding an event of task ``slow`` blocks until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def encode_event(self, event: DomainEvent) -> EncodedEvent:
        if getattr(event, "task_id", None) == "slow":
            self.entered.set()
            assert self.gate.wait(10)
        return super().encode_event(event)


class _Interrupted:
    """Stands in for a call's lock: waiting on it raises, as Ctrl-C would."""

    def __init__(self, before: Callable[[], None] = lambda: None) -> None:
        self.before = before
        self.released = False

    def acquire(self) -> bool:
        self.before()
        raise KeyboardInterrupt

    def release(self) -> None:
        self.released = True


def _chain(n: int) -> list[_Call]:
    calls = [_Call() for _ in range(n)]
    for call, successor in itertools.pairwise(calls):
        call.next = successor
    return calls


def _woken(call: _Call) -> bool:
    return call._done.acquire(blocking=False)


class TestWriterHandOff:
    def test_a_slow_appender_does_not_hold_back_the_others(self, data_dir: Path) -> None:
        """While one caller is still encoding, another caller's append is committed without
        waiting for it (the writer waits a millisecond at most for a group to fill)."""
        codec = _SlowCodec()
        store = SQLiteEventStore(data_dir, codec=codec)
        slow_result: list[list[Envelope]] = []
        slow = threading.Thread(
            target=lambda: slow_result.append(
                store.append("slow", [TaskCompleted(task_id="slow", reason="one_shot")])
            )
        )
        slow.start()
        try:
            assert codec.entered.wait(10)
            started = time.monotonic()
            for i in range(5):
                store.append("fast", _one(i))
            assert time.monotonic() - started < 5
            assert store.last_position() == 5
        finally:
            codec.gate.set()
            slow.join(10)
            store.close()
        assert [e.position for e in slow_result[0]] == [6]

    def test_the_baton_skips_a_caller_that_gave_up(self) -> None:
        """A caller interrupted while waiting marks itself abandoned; the chain wakes the
        next caller instead, so nobody behind it waits forever."""
        first, quitter, last = _chain(3)
        quitter._done = _Interrupted()  # type: ignore[assignment]
        with pytest.raises(KeyboardInterrupt):
            quitter.wait()
        _hand(first)
        first.wait()
        assert _woken(last)

    def test_a_caller_interrupted_after_the_baton_came_passes_it_on(self) -> None:
        """If the baton reached a caller just as it was interrupted, it hands it on before
        raising."""
        first, unlucky, last = _chain(3)

        def baton_arrives() -> None:
            first.wait()  # the first caller wakes and hands the baton to ``unlucky``

        lock = _Interrupted(baton_arrives)
        unlucky._done = lock  # type: ignore[assignment]
        _hand(first)
        with pytest.raises(KeyboardInterrupt):
            unlucky.wait()
        assert lock.released
        assert _woken(last)

    def test_many_threads_and_calls_all_get_answers(self, writer: SQLiteEventStore) -> None:
        """Single appends, multi-stream calls and stale appends from 12 threads at once: every
        call returns, accepted events are in the log once, refused ones not at all."""
        errors: list[BaseException] = []
        accepted: list[int] = []
        lock = threading.Lock()

        def work(k: int) -> None:
            try:
                for i in range(30):
                    if i % 3 == 0:
                        answers = writer.append_many(
                            [
                                AppendRequest(stream_id=f"m{k}-{j}", events=numbered(2, f"{k}"))
                                for j in range(3)
                            ]
                        )
                        count = sum(len(a) for a in answers if isinstance(a, list))
                    elif i % 3 == 1:
                        count = len(writer.append(f"s{k}", _one(i)))
                    else:
                        try:
                            writer.append(f"s{k}", _one(i), expected_version=10_000)
                        except ConcurrencyError:
                            count = 0
                    with lock:
                        accepted.append(count)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert not any(thread.is_alive() for thread in threads)
        assert [e.position for e in writer.read_all()] == list(range(1, sum(accepted) + 1))
        assert sum(accepted) == 12 * (10 * 6 + 10)


class _FailingClock(SystemClock):
    """A clock that fails the next ``fail`` readings (a stand-in for any writer failure)."""

    def __init__(self) -> None:
        self.fail = 0

    def now(self) -> datetime:
        if self.fail:
            self.fail -= 1
            raise OSError("clock unavailable")
        return super().now()


class TestWriterFailure:
    def test_a_failed_commit_refuses_its_group_and_the_writer_goes_on(self, data_dir: Path) -> None:
        """When a commit fails, every request in it gets ``StorageError``, nothing of it is
        written, and the next append continues at the next position and version."""
        clock = _FailingClock()
        with SQLiteEventStore(data_dir, clock=clock) as store:
            store.append("s", _one())
            clock.fail = 1
            answers = store.append_many(
                [
                    AppendRequest(stream_id="s", events=numbered(20), expected_version=1),
                    AppendRequest(stream_id="s", events=_one(), expected_version=0),
                ]
            )
            assert [type(a) for a in answers] == [StorageError, StorageError]
            assert store.last_position() == 1
            added = store.append("s", numbered(20), expected_version=1)
            assert [e.position for e in added] == list(range(2, 22))
            assert store.read_all() == [*store.read_stream("s", to_version=1), *added]


def test_events_given_as_a_one_shot_iterable_are_read_once(writer: SQLiteEventStore) -> None:
    """Events passed as a generator are encoded and returned like a list's (the store reads
    them twice: to encode, and to build the envelopes after the commit)."""
    events = numbered(3)
    returned = writer.append("s", (e for e in events))  # type: ignore[arg-type]
    assert [e.event for e in returned] == events
    assert writer.read_all() == returned
