"""The default event store: one SQLite file in WAL mode, written by one group-commit thread.

Why this shape:

* SQLite gives crash safety (WAL, ``synchronous=FULL``), an index for per-stream reads and
  readers in other processes while the scheduler writes.
* One writer thread owns the write connection. Callers encode their events on their own
  thread (so a bad event fails before it is queued), enqueue the batch and wait; the writer
  drains *every* waiting batch into a single transaction, so one fsync acknowledges many
  appends (group commit). It waits (without polling) until every append call in flight has
  queued, at most ``_COALESCE_WAIT``, and after the commit wakes the callers one after the
  other (see ``_Call``): on a small machine the wake-ups, not SQLite, are most of a cycle.
* Large requests are inserted in multi-row statements that bind what their rows share
  once (see ``_chunk_sql``); small ones share one ``executemany`` per commit. With
  ``one_statement_commits`` (the scheduler process of ``engine="process"``) a commit of up
  to 256 events is a single INSERT instead: one wait for the GIL, not one per row (see
  ``_write_at_once``).
* Positions are assigned by the writer, so they are gapless and in commit order.
  Callers are answered only after ``COMMIT`` returned, i.e. after the fsync.
* An ``flock`` on ``chronolog.lock`` in the data directory keeps a second writing process
  out with a clear error; read-only stores need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog

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
    Envelope,
    EventCodec,
    EventMetadata,
)
from chronolog.events.codec import EncodedBatch
from chronolog.store.base import (
    ANY_VERSION,
    AppendOutcome,
    AppendRequest,
    check_range,
    check_stream_id,
)
from chronolog.store.checkpointer import Checkpointer
from chronolog.store.reserve import DiskReserve

log = structlog.get_logger("chronolog.store")

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
#: While the disk reserve is released, how often the writer looks for room to hold it again.
RESERVE_CHECK_SECONDS = 30.0
#: Read connections kept open for reuse (more are opened under load, then closed).
_IDLE_READERS = 8
#: Longest the writer waits for in-flight appenders to queue before it commits without
#: them (seconds). Only a slow appender (a huge batch still encoding) meets it: the writer is
#: woken the moment the last one queues.
_COALESCE_WAIT = 0.001

# What the idle writer waits for: nothing (it is not waiting), any queued request, or every
# append call in flight to have queued (or returned).
_WANTS_NOTHING = 0
_WANTS_ANY = 1
_WANTS_ALL = 2

_NO_METADATA = EventMetadata()


def _chunk_sql(rows: int) -> str:
    """One INSERT of ``rows`` consecutive events of one stream.

    What the rows share is bound once (?1 first position, ?2 stream id, ?3 first version,
    ?4 recorded-at, ?5 metadata); each row binds only its type, schema version and payload.
    Against ``executemany`` with eight parameters a row this halves the insert cost: no
    per-row statement reset, no per-row copy of the stream id and metadata, and one GIL
    release per chunk instead of one per row.
    """
    values = ",".join(
        f"(?1+{i},?2,?3+{i},?{6 + 3 * i},?{7 + 3 * i},?4,?{8 + 3 * i},?5)" for i in range(rows)
    )
    return f"INSERT INTO events ({_COLUMNS}) VALUES {values}"


#: Chunk sizes for large requests, largest first, with their statements. Few sizes keep the
#: statements in sqlite3's statement cache; 256 rows (773 parameters) stays far below
#: SQLite's limit of 32,766 and gains nothing more by growing.
_CHUNKS: tuple[tuple[int, str], ...] = tuple((n, _chunk_sql(n)) for n in (256, 64, 16))
#: Requests smaller than this (and the tail of larger ones) go through ``executemany``.
_CHUNKED_FROM = 16
#: The statements of ``_write_at_once``, by how many rows each holds at most: a commit
#: takes the smallest that fits it (the last is the most rows a commit writes that way).
#: A statement for every count instead kept ~30 MiB of compiled statements in sqlite3's
#: cache for 256 sizes, and the 100,000-task workload's RSS rose by ~100 MiB.
_AT_ONCE_SIZES = (8, 32, 128, 256)
_AT_ONCE_ROWS = _AT_ONCE_SIZES[-1]


def _padded_rows_sql(rows: int) -> str:
    """One INSERT of up to ``rows`` events, each binding its own eight values; the rows
    left over are bound to NULL and left out (a position is never NULL)."""
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * rows)
    rows_given = "WHERE column1 IS NOT NULL"
    return f"INSERT INTO events ({_COLUMNS}) SELECT * FROM (VALUES {values}) {rows_given}"


_AT_ONCE_SQL = {size: _padded_rows_sql(size) for size in _AT_ONCE_SIZES}


# A call's place in the chain of answers (see _Call).
_WAITING = 0
_HANDED = 1
_ABANDONED = 2
#: Guards every _Call's ``state``; held only for a few bytecodes.
_BATON = threading.Lock()


class _Call:
    """One ``append``/``append_many`` call waiting for its commit.

    The writer does not wake every caller of a commit at once: 16 threads woken together
    all queue for the GIL, and on two cores each is woken twice (by its lock, then by the
    GIL), bouncing between CPUs. Instead the calls of a commit form a chain and the writer
    hands the baton to the first; each caller, once awake, hands it to the next before doing
    anything else. One thread wakes at a time, usually finding the GIL free. A caller
    interrupted while waiting (KeyboardInterrupt) marks itself abandoned so the chain skips
    it, or, if the baton reached it meanwhile, passes it on: no successor is stranded.
    """

    __slots__ = ("_done", "next", "state")

    def __init__(self) -> None:
        # A bare lock is the cheapest one-shot signal CPython has (a Future wraps a
        # Condition); held until the baton reaches this call.
        self._done = threading.Lock()
        self._done.acquire()
        self.next: _Call | None = None
        self.state = _WAITING

    def wait(self) -> None:
        """Block until this call's commit is answered, then wake the next caller."""
        try:
            self._done.acquire()
        except BaseException:
            with _BATON:
                if self.state == _WAITING:
                    self.state = _ABANDONED
                    raise
            _hand(self.next)
            raise
        _hand(self.next)


def _hand(call: _Call | None) -> None:
    """Wake ``call``, or the first caller after it that is still waiting."""
    while call is not None:
        with _BATON:
            if call.state == _WAITING:
                call.state = _HANDED
                call._done.release()
                return
        call = call.next


class _Append:
    """One stream's batch, queued for the writer, and then its answer."""

    __slots__ = (
        "call",
        "encoded",
        "error",
        "events",
        "expected",
        "metadata",
        "metadata_bytes",
        "position",
        "recorded_at",
        "stream_id",
        "version",
    )

    def __init__(
        self,
        call: _Call,
        stream_id: str,
        events: Sequence[DomainEvent],
        encoded: EncodedBatch,
        expected: int | None,
        metadata: EventMetadata,
        metadata_bytes: bytes,
    ) -> None:
        self.call = call
        self.stream_id = stream_id
        self.events = events
        self.encoded = encoded
        self.expected = expected
        self.metadata = metadata
        self.metadata_bytes = metadata_bytes
        self.error: ChronologError | None = None
        # Where the writer placed the batch: the position and stream version before it.
        self.position = -1
        self.version = -1
        self.recorded_at = _EPOCH

    def place(self, position: int, version: int, recorded_at: datetime) -> None:
        """Record where the writer put the batch: after log ``position`` and stream
        ``version``, at ``recorded_at``."""
        self.position = position
        self.version = version
        self.recorded_at = recorded_at

    def envelopes(self) -> list[Envelope]:
        """The stored envelopes, or the error that refused the batch.

        Built by the caller's thread after it has handed the baton on, so this work
        overlaps the next caller's wake-up instead of lengthening the writer's cycle.
        """
        if self.error is not None:
            raise self.error
        stream_id = self.stream_id
        metadata = self.metadata
        recorded_at = self.recorded_at
        position = self.position
        version = self.version
        encoded = self.encoded
        return [
            Envelope(
                position=position + i,
                stream_id=stream_id,
                stream_version=version + i,
                event_type=event_type,
                schema_version=schema_version,
                recorded_at=recorded_at,
                event=event,
                metadata=metadata,
            )
            for i, (event, event_type, schema_version) in enumerate(
                zip(self.events, encoded.event_types, encoded.schema_versions, strict=True), 1
            )
        ]


def _insert_chunks(
    conn: sqlite3.Connection,
    request: _Append,
    position: int,
    version: int,
    recorded_us: int,
) -> int:
    """Insert the longest prefix of ``request`` that whole chunks cover; return its length.

    ``position`` and ``version`` are the log position and stream version before the request.
    """
    encoded = request.encoded
    types, versions, data = encoded.event_types, encoded.schema_versions, encoded.data
    count = len(encoded)
    done = 0
    for size, sql in _CHUNKS:
        while count - done >= size:
            end = done + size
            params: list[object] = [None] * (5 + 3 * size)
            params[0] = position + done + 1
            params[1] = request.stream_id
            params[2] = version + done + 1
            params[3] = recorded_us
            params[4] = request.metadata_bytes
            params[5::3] = types[done:end]
            params[6::3] = versions[done:end]
            params[7::3] = data[done:end]
            conn.execute(sql, params)
            done = end
    return done


def _rows(
    request: _Append, position: int, version: int, recorded_us: int, start: int = 0
) -> Iterator[tuple[object, ...]]:
    """The rows of ``request``'s events from its ``start``-th on, in column order, placed
    after log ``position`` and stream ``version``."""
    encoded = request.encoded
    stream_id, metadata_bytes = request.stream_id, request.metadata_bytes
    for i in range(start, len(encoded.data)):
        yield (
            position + i + 1,
            stream_id,
            version + i + 1,
            encoded.event_types[i],
            encoded.schema_versions[i],
            recorded_us,
            encoded.data[i],
            metadata_bytes,
        )


def _disk_full(exc: Exception) -> bool:
    """Whether SQLite failed for want of space (``SQLITE_FULL``)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        "disk is full" in str(exc)
    )


def _answer(batch: list[_Append]) -> None:
    """Chain the calls of a committed (or refused) batch and wake the first (see _Call)."""
    first: _Call | None = None
    previous: _Call | None = None
    for request in batch:
        call = request.call
        if call is previous:
            continue  # one append_many call's requests are queued together
        if previous is None:
            first = call
        else:
            previous.next = call
        previous = call
    _hand(first)


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
        reserve_bytes: int = 0,
        one_statement_commits: bool = False,
    ) -> None:
        """``reserve_bytes``: space held back in the data directory for a full disk (see
        :mod:`chronolog.store.reserve`; 0 holds none).

        ``one_statement_commits``: write a commit of up to 256 events as one INSERT in
        SQLite's own transaction instead of BEGIN, ``executemany`` and COMMIT (see
        ``_write_at_once``). For a process where no thread that must react on time shares
        the GIL with the writer."""
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValidationError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        # Absolute now: the host may change its working directory later, and connections
        # (readers, reopened ones) are made all along.
        self.data_dir = Path(data_dir).absolute()
        self.path = self.data_dir / DB_FILENAME
        self.read_only = read_only
        self._codec = codec
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._one_statement_commits = one_statement_commits
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._metadata_cache: dict[bytes, EventMetadata] = {}
        self._committed = threading.Condition()
        self._lock_fd: int | None = None
        self._lock_pid = 0  # the process that holds the lock
        self._writer: threading.Thread | None = None
        # The hand-off between appenders and the writer, all guarded by ``_mutex``:
        # ``_pending`` holds queued requests, ``_pending_calls`` how many append calls they
        # came from, ``_inflight`` how many append calls are between entry and return.
        # ``_writer_wants`` says what the idle writer waits for (see ``_next_batch``), and
        # whoever makes that true releases ``_wake``, exactly once per wait.
        self._mutex = threading.Lock()
        self._pending: list[_Append] = []
        self._pending_calls = 0
        self._inflight = 0
        self._stopping = False
        self._writer_wants = _WANTS_NOTHING
        self._wake = threading.Lock()
        self._wake.acquire()

        if read_only:
            if not self.path.exists():
                raise StorageError(f"no event log at {self.path}")
            self._last_position = self._query_last_position()
            return

        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, a read-only file system
            raise StorageError(
                f"cannot use {self.data_dir} as the data directory: {exc.strerror or exc}"
            ) from exc
        self._lock_fd = self._acquire_process_lock()
        self._reserve = DiskReserve(self.data_dir, reserve_bytes)
        try:
            self._conn, self._last_position = self._open_log(synchronous)
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise StorageError(f"cannot open event log {self.path}: {exc}") from exc
        try:
            self._checkpointer = Checkpointer(self.path)
        except sqlite3.Error as exc:
            self._conn.close()
            self._release_process_lock()
            raise StorageError(f"cannot open event log {self.path}: {exc}") from exc
        self._versions: dict[str, int] = {}
        self._reserve.ensure()
        self._reserve_checked = time.monotonic()
        self._writer = threading.Thread(
            target=self._write_loop, name="chronolog-store-writer", daemon=True
        )
        self._writer.start()

    # --- opening ----------------------------------------------------------------------------

    def _open_log(self, synchronous: SynchronousMode) -> tuple[sqlite3.Connection, int]:
        """:meth:`_open_writer`, tried once more after releasing the reserve when the disk
        is short of room: opening writes too (the WAL, its index), and on a full disk it
        fails, often as a plain "disk I/O error"."""
        try:
            return self._open_writer(synchronous)
        except sqlite3.Error as exc:
            if not (self._reserve.short_of_room() and self._reserve.release()):
                raise
            self._reserve_released("the log opens", error=str(exc))
        return self._open_writer(synchronous)

    def _reserve_released(self, so_that: str, **details: object) -> None:
        log.warning(
            f"the disk under the event log is full: its reserve was released so that "
            f"{so_that}; free some space",
            data_dir=str(self.data_dir),
            reserve_bytes=self._reserve.size,
            **details,
        )

    def _open_writer(self, synchronous: SynchronousMode) -> tuple[sqlite3.Connection, int]:
        """The writing connection, its schema in place, and the last position."""
        conn = self._connect(write=True, synchronous=synchronous)
        try:
            conn.executescript(_SCHEMA)
            last: int = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
        except sqlite3.Error:
            conn.close()
            raise
        return conn, last

    def _acquire_process_lock(self) -> int:
        try:
            fd = os.open(
                self.data_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:  # a read-only file system, no permission to write there
            raise StorageError(
                f"cannot use {self.data_dir} as the data directory: {exc.strerror or exc} "
                "(chronolog writes its log, its lock and its projections there)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.data_dir} is already open for writing by another chronolog process "
                "(or another store in this one); open it with read_only=True to read"
            ) from None
        except OSError as exc:  # ENOLCK: a file system without locks (some network ones)
            os.close(fd)
            raise StorageError(
                f"cannot lock {self.data_dir / LOCK_FILENAME}: {exc.strerror or exc} (the "
                "data directory must be on a file system with locks, such as a local disk)"
            ) from exc
        # The pid is for people reading the file; a full disk must not keep the log shut.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_pid = os.getpid()
        return fd

    def _release_process_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                # A fork shares the lock with its parent (flock belongs to the open file,
                # not the process): unlocking there would unlock the parent's directory.
                # Closing the fork's copy leaves the lock to the parent.
                if os.getpid() == self._lock_pid:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def _connect(self, *, write: bool, synchronous: SynchronousMode = "FULL") -> sqlite3.Connection:
        if write:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            # The checkpointer's thread folds the WAL as it grows, so the checkpoint SQLite
            # still runs in the commit that crosses this size (and that lets the WAL start
            # over: one running beside the writer never catches up with it) has little
            # left to copy. Without it the WAL only grew, and commits that extend the file
            # were 10-15 % slower.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
        else:
            # as_uri() percent-encodes the path: a "?", "#" or "%" in it would otherwise
            # end the file name early (and open, even create, another file).
            uri = f"{self.path.as_uri()}?mode=ro"
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

    @property
    def one_statement_commits(self) -> bool:
        """Whether a commit of up to 256 events is written as one statement."""
        return self._one_statement_commits

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
        with self._mutex:
            self._inflight += 1
        try:
            call = _Call()
            request = self._prepare(call, stream_id, events, expected_version, metadata)
            self._submit([request])
            call.wait()
            return request.envelopes()
        finally:
            self._leave()

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Append in one commit; see :meth:`chronolog.store.EventStore.append_many`."""
        self._check_writable()
        outcomes: list[AppendOutcome | _Append] = []
        prepared: list[_Append] = []
        with self._mutex:
            self._inflight += 1
        try:
            call = _Call()
            for r in requests:
                try:
                    request = self._prepare(
                        call, r.stream_id, r.events, r.expected_version, r.metadata
                    )
                except ChronologError as exc:
                    outcomes.append(exc)
                    continue
                prepared.append(request)
                outcomes.append(request)
            if prepared:
                self._submit(prepared)
                call.wait()
            answers: list[AppendOutcome] = []
            for outcome in outcomes:
                if isinstance(outcome, _Append):
                    try:
                        answers.append(outcome.envelopes())
                    except ChronologError as exc:
                        answers.append(exc)
                else:
                    answers.append(outcome)
            return answers
        finally:
            self._leave()

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError("this event store was opened read-only")
        if self._closed:
            raise StoreClosedError("the event store is closed")

    def _prepare(
        self,
        call: _Call,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None,
        metadata: EventMetadata | None,
    ) -> _Append:
        """Validate and encode one stream's batch (raising before anything is queued)."""
        check_stream_id(stream_id)
        if expected_version is not None and expected_version < 0:
            raise ValidationError(f"expected_version must be >= 0 or None, got {expected_version}")
        if not isinstance(events, list | tuple):
            # Read twice (encoding now, envelopes after the commit): a one-shot iterable
            # would leave the second read empty after its events were written.
            events = list(events)
        encoded = self._codec.encode_batch(events)
        return _Append(
            call,
            stream_id,
            events,
            encoded,
            expected_version,
            _NO_METADATA if metadata is None else metadata,
            self._codec.encode_metadata(metadata),
        )

    def _submit(self, requests: list[_Append]) -> None:
        """Queue one append call's requests, waking the writer if it waits for them."""
        # Checked and queued under the same mutex as close(): a request is either queued
        # before the writer is told to stop (and answered) or refused, never stranded.
        with self._mutex:
            if self._closed:
                raise StoreClosedError("the event store is closed")
            self._pending.extend(requests)
            self._pending_calls += 1
            wants = self._writer_wants
            if wants == _WANTS_ANY or (
                wants == _WANTS_ALL and self._inflight <= self._pending_calls
            ):
                self._writer_wants = _WANTS_NOTHING
                self._wake.release()

    def _leave(self) -> None:
        """An append call returns: the writer may have been waiting for it to queue."""
        with self._mutex:
            self._inflight -= 1
            if (
                self._writer_wants == _WANTS_ALL
                and self._pending_calls
                and self._inflight <= self._pending_calls
            ):
                self._writer_wants = _WANTS_NOTHING
                self._wake.release()

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._commit(batch)

    def _next_batch(self) -> list[_Append] | None:
        """Wait for the next group of requests; None once closing and nothing is left.

        Group commit's whole gain is in the size of the group: an appender that has entered
        :meth:`append` but not queued yet (still encoding, or just answered and about to
        append again) is worth waiting for, since joining costs it microseconds and missing
        the commit costs it a whole fsync. So the writer takes the queue when every append
        call in flight has queued, or when ``_COALESCE_WAIT`` has passed since it started
        waiting for them. It never polls: the appender that completes the group (by
        queueing, or by returning without appending again) wakes it, once.
        """
        deadline: float | None = None
        while True:
            with self._mutex:
                pending = self._pending
                if pending and (
                    self._stopping
                    or self._inflight <= self._pending_calls
                    or (deadline is not None and time.monotonic() >= deadline)
                ):
                    self._pending = []
                    self._pending_calls = 0
                    return pending
                if self._stopping:
                    return None
                if self._inflight == 0:
                    # Nobody is appending: sleep until somebody queues.
                    self._writer_wants = _WANTS_ANY
                    timeout = -1.0
                else:
                    if deadline is None:
                        deadline = time.monotonic() + _COALESCE_WAIT
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        # Callers are in flight but none has queued by the deadline: wait
                        # for the first one to queue, then take it.
                        self._writer_wants = _WANTS_ANY
                        timeout = -1.0
                    else:
                        self._writer_wants = _WANTS_ALL
            self._wake.acquire(timeout=timeout)
            with self._mutex:
                # Whoever released the wake lock already reset this; a timeout did not.
                self._writer_wants = _WANTS_NOTHING

    def _commit(self, batch: list[_Append]) -> None:
        try:
            position, tentative = self._write(batch)
        except Exception as exc:
            if not (_disk_full(exc) and self._reserve.release()):
                self._fail(batch, exc)
                return
            self._reserve_released("the log goes on (cleanups among it)")
            for request in batch:
                request.error = None
            try:
                position, tentative = self._write(batch)
            except Exception as again:
                self._fail(batch, again)
                return
        self._versions.update(tentative)
        if len(self._versions) > _VERSION_CACHE_LIMIT:
            self._versions.clear()
        self._checkpointer.committed(position - self._last_position)
        with self._committed:
            self._last_position = position
            self._committed.notify_all()
        _answer(batch)
        self._restore_reserve()

    def _write(self, batch: list[_Append]) -> tuple[int, dict[str, int]]:
        """Insert the batch in one transaction; the last position and the new stream
        versions. Rolled back, and raised, when it fails."""
        if self._one_statement_commits:
            at_once = self._write_at_once(batch)
            if at_once is not None:
                return at_once
        conn = self._conn
        position = self._last_position
        tentative: dict[str, int] = {}
        # Rows of small requests (and the tails of large ones), for ``executemany``. (One
        # multi-row statement for them measured slower: with 16 single-event appends per
        # commit, ``executemany`` wins by ~10 %.)
        rows: list[tuple[object, ...]] = []
        try:
            recorded_at = self._clock.now()
            recorded_us = (recorded_at - _EPOCH) // timedelta(microseconds=1)
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                stream_id = request.stream_id
                current = tentative.get(stream_id)
                if current is None:
                    current = self._current_version(stream_id)
                if request.expected is not None and request.expected != current:
                    request.error = ConcurrencyError(stream_id, request.expected, current)
                    continue
                encoded = request.encoded
                count = len(encoded.data)
                done = 0
                if count >= _CHUNKED_FROM:
                    # Rows go in ascending position order: flush the small ones first.
                    if rows:
                        conn.executemany(_INSERT, rows)
                        rows = []
                    done = _insert_chunks(conn, request, position, current, recorded_us)
                rows.extend(_rows(request, position, current, recorded_us, done))
                request.place(position, current, recorded_at)
                position += count
                tentative[stream_id] = current + count
            if rows:
                conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except Exception:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._versions.clear()
            raise
        return position, tentative

    def _write_at_once(self, batch: list[_Append]) -> tuple[int, dict[str, int]] | None:
        """The batch as one INSERT in SQLite's own transaction, when it is small; None when
        it must go the transaction's way.

        The versions come from the writer's cache (it wrote them), from the caller for a
        stream it says is new (expected version 0), or else from the log. This writer is the
        only one (the lock file), so nothing changes them between that read and the INSERT;
        a foreign writer on a copied log is caught by the index on (stream, version).

        Every statement gives the GIL up while SQLite works, and getting it back can wait
        up to the switch interval behind threads that run Python: a transaction of BEGIN,
        an ``executemany`` (one release per row) and COMMIT may wait that many times, one
        statement once. In the scheduler process of ``engine="process"`` a commit of ~60
        rows took 5 ms of wall time for 1 ms of CPU that way, and the job shards wait for
        their commits. Where the host's threads share the GIL (the default engine) the
        many short releases are what lets the timer and the pool threads in on time, so
        there it stays off: the one-shot burst's p99 went from ~5 to ~9 ms with it.
        """
        if sum(len(request.encoded.data) for request in batch) > _AT_ONCE_ROWS:
            return None
        versions = self._versions
        position = self._last_position
        tentative: dict[str, int] = {}
        params: list[object] = []
        recorded_at = self._clock.now()
        recorded_us = (recorded_at - _EPOCH) // timedelta(microseconds=1)
        for request in batch:
            stream_id = request.stream_id
            current = tentative.get(stream_id)
            if current is None:
                current = versions.get(stream_id)
            if current is None:
                # A stream the writer does not know is taken at the caller's word that it is
                # new (if it has events after all, the index on (stream, version) refuses
                # the statement); otherwise its version is read.
                current = 0 if request.expected == 0 else self._current_version(stream_id)
            if request.expected is not None and request.expected != current:
                request.error = ConcurrencyError(stream_id, request.expected, current)
                continue
            for row in _rows(request, position, current, recorded_us):
                params += row
            count = len(request.encoded.data)
            request.place(position, current, recorded_at)
            position += count
            tentative[stream_id] = current + count
        if params:
            rows = len(params) // 8
            size = next(size for size in _AT_ONCE_SIZES if size >= rows)
            params += [None] * (8 * (size - rows))
            try:
                self._conn.execute(_AT_ONCE_SQL[size], params)
            except sqlite3.IntegrityError:
                # A stream said to be new has events, or another writer appended to one the
                # writer knows (a copied log, say): the statement wrote nothing, and the
                # transaction's way reads the versions again and answers each request.
                self._versions.clear()
                for request in batch:
                    request.error = None
                return None
        return position, tentative

    def _fail(self, batch: list[_Append], exc: Exception) -> None:
        error = StorageError(f"append failed: {exc}")
        for request in batch:
            if request.error is None:
                request.error = error
        _answer(batch)

    def _restore_reserve(self) -> None:
        """Write the reserve again once the disk has room (looked at twice a minute at
        most, by the writer, after a commit)."""
        if self._reserve.size <= 0:
            return
        now = time.monotonic()
        if now - self._reserve_checked < RESERVE_CHECK_SECONDS:
            return
        self._reserve_checked = now
        if not self._reserve.held and self._reserve.ensure():
            log.info("the event log's disk reserve is held again", data_dir=str(self.data_dir))

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

    def wait_for_events(
        self,
        after_position: int,
        timeout: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait for a position beyond ``after_position``, or for ``until()``; see the
        protocol."""
        if not self.read_only:
            with self._committed:
                self._committed.wait_for(
                    lambda: (
                        self._closed
                        or self._last_position > after_position
                        or (until is not None and until())
                    ),
                    timeout,
                )
                return self._last_position > after_position
        # Another process writes: nothing can wake us, so poll the file cheaply.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._query_last_position() > after_position:
                return True
            if until is not None and until():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self._poll_interval)

    def wake_waiters(self) -> None:
        """Make waiters check their ``until`` (a read-only store's waiters poll it)."""
        with self._committed:
            self._committed.notify_all()

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
        with self._mutex:
            self._closed = True
            self._stopping = True
            if self._writer_wants != _WANTS_NOTHING:
                self._writer_wants = _WANTS_NOTHING
                self._wake.release()
        if self._writer is not None:
            self._writer.join()
            self._checkpointer.close()
        with self._committed:
            self._committed.notify_all()
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
            self._idle_readers.clear()
        if self._writer is not None:
            # Readers first, the writer last: the last connection to close folds the WAL
            # into the database file and deletes it, and a read-only one cannot. So a log
            # closed cleanly is whole in events.sqlite3 (a copy of that file alone is
            # complete); the explicit checkpoint also covers readers of other processes.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        self._release_process_lock()

    def __enter__(self) -> SQLiteEventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
