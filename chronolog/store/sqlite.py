"""The default event store: one SQLite file in WAL mode, written by one group-commit thread.

Why this shape:

* SQLite gives crash safety (WAL, ``synchronous=FULL``), an index for per-stream reads and
  readers in other processes while the scheduler writes.
* One writer thread owns the write connection. Callers encode their events on their own
  thread (so a bad event fails before it is queued), enqueue the batch and wait; the writer
  drains *every* waiting batch into a single transaction, so one fsync acknowledges many
  appends (group commit).
* Positions are assigned by the writer, so they are gapless and in commit order.
* An ``flock`` on ``chronolog.lock`` in the data directory keeps a second writing process
  out with a clear error; read-only stores need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from chronolog.clock import Clock, SystemClock
from chronolog.errors import (
    ChronologError,
    ConcurrencyError,
    ReadOnlyStoreError,
    StorageError,
    StoreClosedError,
    StoreLockedError,
    ValidationError,
)
from chronolog.events import (
    DEFAULT_CODEC,
    DomainEvent,
    EncodedEvent,
    Envelope,
    EventCodec,
    EventMetadata,
)
from chronolog.store.base import (
    ANY_VERSION,
    AppendOutcome,
    AppendRequest,
    check_expected_version,
    check_range,
    check_stream_id,
)

SynchronousMode = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

DB_FILENAME = "events.sqlite3"
LOCK_FILENAME = "chronolog.lock"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position        INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    type            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    recorded_at     BIGINT  NOT NULL,
    data            BLOB    NOT NULL,
    metadata        BLOB    NOT NULL,
    UNIQUE (stream_id, stream_version)
);
"""
_COLUMNS = "position, stream_id, stream_version, type, schema_version, recorded_at, data, metadata"
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_VERSION_CACHE_LIMIT = 200_000
#: Read connections kept open for reuse (more are opened under load, then closed).
_IDLE_READERS = 8
#: Longest the writer waits for appenders that are still encoding (seconds).
_COALESCE_WAIT = 0.0005


class _Append:
    """One caller's batch, waiting for the writer."""

    __slots__ = (
        "_done",
        "encoded",
        "error",
        "events",
        "expected",
        "metadata",
        "metadata_bytes",
        "result",
        "stream_id",
    )

    def __init__(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        encoded: list[EncodedEvent],
        expected: int | None,
        metadata: EventMetadata,
        metadata_bytes: bytes,
    ) -> None:
        self.stream_id = stream_id
        self.events = events
        self.encoded = encoded
        self.expected = expected
        self.metadata = metadata
        self.metadata_bytes = metadata_bytes
        self.result: list[Envelope] | None = None
        self.error: BaseException | None = None
        # A bare lock is the cheapest one-shot signal CPython has (a Future wraps a
        # Condition); held until the writer answers.
        self._done = threading.Lock()
        self._done.acquire()

    def resolve(self, result: list[Envelope] | None, error: BaseException | None) -> None:
        """Called once by the writer thread."""
        self.result = result
        self.error = error
        self._done.release()

    def wait(self) -> list[Envelope]:
        """Block until the writer has answered; raise its error if it refused the batch."""
        self._done.acquire()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    @property
    def answered(self) -> bool:
        return self.result is not None or self.error is not None


_STOP = object()


class SQLiteEventStore:
    """The event log in ``<data_dir>/events.sqlite3``.

    Open it once per process for writing (the default) or any number of times with
    ``read_only=True`` (from other processes too: the CLI, analysts).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        read_only: bool = False,
        synchronous: SynchronousMode = "FULL",
        clock: Clock | None = None,
        codec: EventCodec = DEFAULT_CODEC,
        poll_interval: float = 0.05,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValidationError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self.read_only = read_only
        self._codec = codec
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._metadata_cache: dict[bytes, EventMetadata] = {}
        self._committed = threading.Condition()
        self._lock_fd: int | None = None
        self._writer: threading.Thread | None = None
        self._queue: queue.SimpleQueue[_Append | list[_Append] | object] = queue.SimpleQueue()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._closing_lock = threading.Lock()

        if read_only:
            if not self.path.exists():
                raise StorageError(f"no event log at {self.path}")
            self._last_position = self._query_last_position()
            return

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_process_lock()
        try:
            self._conn = self._connect(write=True, synchronous=synchronous)
            self._conn.executescript(_SCHEMA)
            self._last_position = self._conn.execute(
                "SELECT COALESCE(MAX(position), 0) FROM events"
            ).fetchone()[0]
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise StorageError(f"cannot open event log {self.path}: {exc}") from exc
        self._versions: dict[str, int] = {}
        self._writer = threading.Thread(
            target=self._write_loop, name="chronolog-store-writer", daemon=True
        )
        self._writer.start()

    # --- opening ----------------------------------------------------------------------------

    def _acquire_process_lock(self) -> int:
        fd = os.open(self.data_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.data_dir} is already open for writing by another chronolog process "
                "(or another store in this one); open it with read_only=True to read"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _release_process_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self, *, write: bool, synchronous: SynchronousMode = "FULL") -> sqlite3.Connection:
        if write:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            # Fewer, larger checkpoints: each one is an extra fsync of the database file.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
        else:
            uri = f"file:{self.path}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
        # Replays read the whole log; a larger page cache and mmap keep them off syscalls.
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=268435456")
        return conn

    def _checkout_reader(self) -> sqlite3.Connection:
        """A read connection from the pool (opened when none is free).

        Pooled rather than per thread: job actors are short-lived threads, and a connection
        per thread would leak two file descriptors per actor ever spawned.
        """
        if self._closed:
            raise StoreClosedError("the event store is closed")
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        conn = self._connect(write=False)
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _return_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            if not self._closed and len(self._idle_readers) < _IDLE_READERS:
                self._idle_readers.append(conn)
                return
            self._readers.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    # --- appending --------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        metadata: EventMetadata | None = None,
    ) -> list[Envelope]:
        """Append atomically; see :meth:`chronolog.store.EventStore.append`."""
        self._check_writable()
        with self._inflight_lock:
            self._inflight += 1
        try:
            request = self._prepare(stream_id, events, expected_version, metadata)
            self._submit(request)
            return request.wait()
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Append in one commit; see :meth:`chronolog.store.EventStore.append_many`."""
        self._check_writable()
        outcomes: list[AppendOutcome | _Append] = []
        prepared: list[_Append] = []
        with self._inflight_lock:
            self._inflight += len(requests)
        try:
            for r in requests:
                try:
                    request = self._prepare(r.stream_id, r.events, r.expected_version, r.metadata)
                except ChronologError as exc:
                    outcomes.append(exc)
                    continue
                prepared.append(request)
                outcomes.append(request)
            if prepared:
                self._submit(prepared)
            answers: list[AppendOutcome] = []
            for outcome in outcomes:
                if isinstance(outcome, _Append):
                    try:
                        answers.append(outcome.wait())
                    except ChronologError as exc:
                        answers.append(exc)
                else:
                    answers.append(outcome)
            return answers
        finally:
            with self._inflight_lock:
                self._inflight -= len(requests)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError("this event store was opened read-only")
        if self._closed:
            raise StoreClosedError("the event store is closed")

    def _prepare(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None,
        metadata: EventMetadata | None,
    ) -> _Append:
        """Validate and encode one stream's batch (raising before anything is queued)."""
        check_stream_id(stream_id)
        if expected_version is not None and expected_version < 0:
            raise ValidationError(f"expected_version must be >= 0 or None, got {expected_version}")
        encoded = [self._codec.encode_event(event) for event in events]
        return _Append(
            stream_id,
            events,
            encoded,
            expected_version,
            metadata or EventMetadata(),
            self._codec.encode_metadata(metadata),
        )

    def _submit(self, request: _Append | list[_Append]) -> None:
        # Checked and queued under one lock with close(): a request is either ahead of the
        # stop marker (and answered) or refused, never stranded behind it.
        with self._closing_lock:
            if self._closed:
                raise StoreClosedError("the event store is closed")
            self._queue.put(request)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Append):
                batch = [item]
            elif isinstance(item, list):
                batch = list(item)
            else:
                return
            stop_after = self._drain_into(batch)
            self._commit(batch)
            if stop_after:
                return

    def _drain_into(self, batch: list[_Append]) -> bool:
        """Collect every waiting append; return True when a stop request was seen.

        Appenders that have entered :meth:`append` but not yet queued (they are encoding)
        are worth a short wait: joining this transaction costs them microseconds, missing
        it costs them a whole fsync.
        """
        deadline = time.monotonic() + _COALESCE_WAIT
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                if self._inflight <= len(batch) or time.monotonic() >= deadline:
                    return False
                # Sleep rather than block on the queue: waking on every single put would
                # make the writer fight the appenders for the GIL.
                time.sleep(_COALESCE_WAIT / 10)
                continue
            if isinstance(more, _Append):
                batch.append(more)
            elif isinstance(more, list):
                batch.extend(more)
            else:
                return True

    def _commit(self, batch: list[_Append]) -> None:
        conn = self._conn
        recorded_at = self._clock.now()
        recorded_us = (recorded_at - _EPOCH) // timedelta(microseconds=1)
        position = self._last_position
        accepted: list[tuple[_Append, list[Envelope]]] = []
        tentative: dict[str, int] = {}
        rows: list[tuple[object, ...]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                current = tentative.get(request.stream_id)
                if current is None:
                    current = self._current_version(request.stream_id)
                try:
                    check_expected_version(request.stream_id, request.expected, current)
                except ConcurrencyError as exc:
                    request.resolve(None, exc)
                    continue
                envelopes: list[Envelope] = []
                version = current
                for event, enc in zip(request.events, request.encoded, strict=True):
                    position += 1
                    version += 1
                    rows.append(
                        (
                            position,
                            request.stream_id,
                            version,
                            enc.event_type,
                            enc.schema_version,
                            recorded_us,
                            enc.data,
                            request.metadata_bytes,
                        )
                    )
                    envelopes.append(
                        Envelope(
                            position=position,
                            stream_id=request.stream_id,
                            stream_version=version,
                            event_type=enc.event_type,
                            schema_version=enc.schema_version,
                            recorded_at=recorded_at,
                            event=event,
                            metadata=request.metadata,
                        )
                    )
                tentative[request.stream_id] = version
                accepted.append((request, envelopes))
            if rows:
                conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._versions.clear()
            error = StorageError(f"append failed: {exc}")
            for request in batch:
                if not request.answered:
                    request.resolve(None, error)
            return
        self._versions.update(tentative)
        if len(self._versions) > _VERSION_CACHE_LIMIT:
            self._versions.clear()
        with self._committed:
            self._last_position = position
            self._committed.notify_all()
        for request, envelopes in accepted:
            request.resolve(envelopes, None)

    def _current_version(self, stream_id: str) -> int:
        version = self._versions.get(stream_id)
        if version is None:
            row = self._conn.execute(
                "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?",
                (stream_id,),
            ).fetchone()
            version = int(row[0])
        return version

    # --- reading ----------------------------------------------------------------------------

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[Envelope]:
        """Events of one stream in version order; see the protocol."""
        check_range(from_version, limit)
        if limit == 0 or (to_version is not None and to_version < from_version):
            return []
        sql = f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ?"
        args: list[object] = [stream_id, from_version]
        if to_version is not None:
            sql += " AND stream_version <= ?"
            args.append(to_version)
        sql += " ORDER BY stream_version"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._decode_rows(self._query(sql, args))

    def read_all(self, from_position: int = 1, limit: int | None = None) -> list[Envelope]:
        """Events of the whole log in position order; see the protocol."""
        check_range(from_position, limit)
        if limit == 0:
            return []
        sql = f"SELECT {_COLUMNS} FROM events WHERE position >= ? ORDER BY position"
        args: list[object] = [from_position]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._decode_rows(self._query(sql, args))

    def last_position(self) -> int:
        """The newest position (the writer's committed one, or the file's for readers)."""
        if self._closed:
            raise StoreClosedError("the event store is closed")
        if self.read_only:
            return self._query_last_position()
        return self._last_position

    def stream_version(self, stream_id: str) -> int:
        """The newest version in ``stream_id`` (0 for none)."""
        rows = self._query(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_id = ?", [stream_id]
        )
        return int(rows[0][0])

    def wait_for_events(self, after_position: int, timeout: float | None = None) -> bool:
        """Wait for a position beyond ``after_position``; see the protocol."""
        if not self.read_only:
            with self._committed:
                return (
                    self._committed.wait_for(
                        lambda: self._closed or self._last_position > after_position, timeout
                    )
                    and self._last_position > after_position
                )
        # Another process writes: nothing can wake us, so poll the file cheaply.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._query_last_position() > after_position:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self._poll_interval)

    def _query_last_position(self) -> int:
        rows = self._query("SELECT COALESCE(MAX(position), 0) FROM events", [])
        return int(rows[0][0])

    def _query(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            conn = self._checkout_reader()
            try:
                return conn.execute(sql, args).fetchall()
            finally:
                self._return_reader(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"reading the event log failed: {exc}") from exc

    def _decode_rows(self, rows: list[tuple[Any, ...]]) -> list[Envelope]:
        decode_event = self._codec.decode_event
        metadata_cache = self._metadata_cache
        out: list[Envelope] = []
        append = out.append
        last_us, last_at = None, _EPOCH
        for (
            position,
            stream_id,
            version,
            event_type,
            schema_version,
            recorded_us,
            data,
            metadata,
        ) in rows:
            if recorded_us != last_us:
                last_us, last_at = recorded_us, _EPOCH + timedelta(microseconds=recorded_us)
            meta = metadata_cache.get(metadata)
            if meta is None:
                meta = self._codec.decode_metadata(metadata)
                if len(metadata_cache) < 4096:
                    metadata_cache[metadata] = meta
            append(
                Envelope(
                    position=position,
                    stream_id=stream_id,
                    stream_version=version,
                    event_type=event_type,
                    schema_version=schema_version,
                    recorded_at=last_at,
                    event=decode_event(event_type, schema_version, data),
                    metadata=meta,
                )
            )
        return out

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued appends, stop the writer and release the data directory."""
        if self._closed:
            return
        with self._closing_lock:
            self._closed = True
            if self._writer is not None:
                self._queue.put(_STOP)
        if self._writer is not None:
            self._writer.join()
            self._conn.close()
        with self._committed:
            self._committed.notify_all()
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
            self._idle_readers.clear()
        self._release_process_lock()

    def __enter__(self) -> SQLiteEventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
