"""What the SQLite store adds to the contract: one writing process per data directory,
readers in other processes, durability across reopening, and its options."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chronolog.errors import (
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
    EventCodec,
    EventMetadata,
    TaskCompleted,
)
from chronolog.store import SQLiteEventStore
from chronolog.store.sqlite import DB_FILENAME
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

    def test_log_lives_in_the_data_directory(self, data_dir: Path) -> None:
        """The store creates its directory and keeps the log in ``events.sqlite3`` there."""
        with SQLiteEventStore(data_dir) as store:
            store.append("s", _one())
        assert (data_dir / DB_FILENAME).is_file()


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
