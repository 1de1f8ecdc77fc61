"""The projector: keeps the DuckDB read models caught up with the event log.

Each batch is one DuckDB transaction that replaces the touched rows with their folded
states, appends the raw events and moves the checkpoint (``projection_meta.position``).
The checkpoint therefore always names exactly the events the tables reflect: a crash at
any point (even ``kill -9`` mid-batch) loses the uncommitted batch and nothing else, and
the next run starts right after the last committed one.

With a backlog (start-up, rebuild) two threads share the work: one reads and folds the
next batch while the other commits the previous one. Folding is Python; committing is
mostly DuckDB, which releases the GIL, so the two overlap.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import structlog

from chronolog.errors import (
    StorageError,
    StoreClosedError,
    ValidationError,
    projections_failing,
)
from chronolog.events import Envelope
from chronolog.gil import let_others_run
from chronolog.projections import writer
from chronolog.projections.board import TaskBoard, Values
from chronolog.projections.cache import StateCache
from chronolog.projections.db import (
    IN_MEMORY,
    connect,
    damaged_file,
    duckdb_errors,
    says_damaged,
    says_invalidated,
    set_aside,
)
from chronolog.projections.queries import TaskQuery, task_row
from chronolog.projections.rows import Page, TaskRow
from chronolog.projections.schema import (
    PROJECTION_VERSION,
    create_statements,
    drop_index_statements,
    drop_statements,
    index_statements,
)
from chronolog.store.base import EventStore

log = structlog.get_logger("chronolog.projections")

R = TypeVar("R")

#: WAL size at which DuckDB checkpoints, inside the commit that crosses it: that commit
#: stalls 100-250 ms, and so does every event arriving meanwhile (the live lag's tail).
#: DuckDB's default is kept: at 5,000 events/s, 4 MB (stalls four times as often, a bit
#: shorter: much of a checkpoint's cost is fixed) gave the same p99, and a checkpoint run
#: from another thread still blocked the projector's commits.
CHECKPOINT_THRESHOLD = "16MiB"

#: Shortest time between the starts of two live catch-ups, in seconds, unless
#: :data:`PACE_EVENTS` events are waiting first (see :meth:`Projector.run_until_stopped`).
COMMIT_PACE = 0.1
#: Events waiting that start a live catch-up before :data:`COMMIT_PACE` is up: at a high
#: rate the projector commits as often as it did with a 25 ms pace (~128 events at
#: 5,000 a second), at a trickle it waits out the pace and commits more events at once.
PACE_EVENTS = 128

#: Events the live projector folds between two hand-overs of the GIL (see
#: :mod:`chronolog.gil`). A live batch under load is hundreds of events, 2-4 ms of Python
#: in one stretch; with 10,000 ``schedule_event`` calls kept in flight, folding it in
#: slices of 128 took the host loop's p99 stall from 5.1-5.3 to 4.6-5.0 ms (alternating
#: runs, same calls/s). Start-up catch-ups and rebuilds fold without pauses.
FOLD_SLICE = 128
#: At most this many slices per batch: each hand-over may cost the projector a wait for
#: the GIL, and the large batches after a DuckDB checkpoint stall make the live lag's
#: tail (slices of 128 alone moved its p99 at 5,000 events/s from a median of 175 to
#: 187 ms over five and seven runs).
FOLD_SLICES_MAX = 4

#: Tries to close the database while a reader's cursor is in use (a query of a database
#: DuckDB refuses work on fails at once), and the wait between two.
CLOSE_TRIES = 100
CLOSE_RETRY_SECONDS = 0.01

#: Events per transaction in a rebuild. Larger batches were measured on 1,000,000 events:
#: 150,000 gave 0.2-0.4 s faster rebuilds but a 57 % larger file (DuckDB writes whole row
#: groups of a big insert straight to the file, compressed less well) and more memory.
REBUILD_BATCH_SIZE = 100_000


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic GC for a rebuild.

    A rebuild allocates millions of short-lived, acyclic objects (envelopes, rows) and the
    collector would rescan the survivors again and again: about a third of a rebuild's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Committer(threading.Thread):
    """Commits prepared batches in order on its own thread.

    ``put`` blocks while one batch already waits, which bounds memory to three batches
    (being folded, waiting, being committed); it raises the first error a commit hit.
    ``finish`` waits for the rest. After an error, further batches are dropped.
    """

    def __init__(self, commit: Callable[[writer.PreparedBatch], None]) -> None:
        super().__init__(name="chronolog-projection-commit", daemon=True)
        self._commit = commit
        self._batches: queue.Queue[writer.PreparedBatch | None] = queue.Queue(1)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        while (batch := self._batches.get()) is not None:
            if self.error is None:
                try:
                    self._commit(batch)
                except BaseException as exc:  # handed over, re-raised on the caller's thread
                    self.error = exc

    def put(self, batch: writer.PreparedBatch) -> None:
        if self.error is not None:
            raise self.error
        self._batches.put(batch)

    def finish(self) -> None:
        self._batches.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class Projector:
    """Applies the event log to the DuckDB projections, in batches, exactly once.

    One projector owns a database file for writing (DuckDB allows one writing process).
    Query it from other threads through :meth:`reader` cursors; they see committed batches
    only. Opening a file written by another projection version, or one that is ahead of the
    log (a different log), empties it; the next :meth:`catch_up` rebuilds it.

    ``batch_size`` events per transaction when following the log, ``rebuild_batch_size``
    for :meth:`rebuild`; ``cache_rows`` task and execution rows are kept in memory between
    batches. ``on_applied(position)`` is called after each commit, on the committing thread
    (keep it cheap: metrics, notifying subscribers). ``checkpoint_threshold`` is DuckDB's
    WAL size that triggers a checkpoint (see :data:`CHECKPOINT_THRESHOLD`);
    ``memory_limit`` DuckDB's memory limit (``"512MB"``; None: DuckDB's default).

    Example::

        projector = Projector(store, data_dir / "projections.duckdb")
        projector.catch_up()
        cursor = projector.reader()
        page = queries.list_tasks(cursor, status="failed")
    """

    def __init__(
        self,
        store: EventStore,
        db_path: str | Path | None,
        *,
        batch_size: int = 10_000,
        rebuild_batch_size: int = REBUILD_BATCH_SIZE,
        cache_rows: int = 50_000,
        on_applied: Callable[[int], None] | None = None,
        checkpoint_threshold: str = CHECKPOINT_THRESHOLD,
        memory_limit: str | None = None,
    ) -> None:
        if batch_size < 1 or rebuild_batch_size < 1 or cache_rows < 1:
            raise ValidationError("batch sizes and cache_rows must be at least 1")
        self._store = store
        self._on_applied = on_applied
        #: Events per transaction when following the log (may be changed between calls).
        self.batch_size = batch_size
        self._rebuild_batch_size = rebuild_batch_size
        self._cache = StateCache(max_tasks=cache_rows, max_executions=cache_rows)
        self._board = TaskBoard()
        self._checkpoint_threshold = checkpoint_threshold
        #: DuckDB's memory limit for this database (None: DuckDB's default).
        self._memory_limit = memory_limit
        self._cursor_lock = threading.Lock()
        # Serialises batches, rebuilds and close; waiters for a position use the condition.
        self._lock = threading.RLock()
        self._applied = threading.Condition()
        # Copied on change, so publishing reads it without a lock.
        self._position_listeners: tuple[Callable[[int], object], ...] = ()
        self._board_listeners: tuple[Callable[[int], object], ...] = ()
        #: What readers of the task board wait on (see :class:`BoardPositions`).
        self.board_positions = BoardPositions(self)
        self._listeners_lock = threading.Lock()
        self._closed = False
        self._position = 0
        self._failure: str | None = None
        self._failures = 0  # failures noted so far
        self._retry_wanted = False  # a reader asked for a position while it was failing
        # The highest position a reader waits for: a pacing projector starts at once.
        self._requested = 0
        self._request_lock = threading.Lock()
        self._batches_prepared = 0
        #: The database file (None: in memory), beside which large batches are staged;
        #: absolute, since the host may change its working directory before a reopen.
        self._file = (
            None if db_path is None or str(db_path) == IN_MEMORY else Path(db_path).absolute()
        )
        self._db_path = db_path if self._file is None else self._file
        # Why the database must be opened again before the next batch ("invalidated" or
        # "damaged"; see :meth:`reopen_after`), and how many times it was.
        self._broken: str | None = None
        self._generation = 0
        self._position = self._attach(self._db_path)

    # --- opening ----------------------------------------------------------------------------

    def _remove_stale_staging(self) -> None:
        """Remove what a process that stopped mid-commit left of its staged rows (only
        the process that has this database open stages rows for it)."""
        if self._file is None:
            return
        for leftover in self._file.parent.glob(f"{writer.staging_prefix(self._file)}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _attach(self, db_path: str | Path | None) -> int:
        """Open the database and read its checkpoint. A damaged file is set aside (renamed,
        not deleted) and a new one started: the projections are derived from the log, and
        catching up rebuilds them. Any other failure is raised."""
        try:
            return self._connect(db_path)
        except StorageError as exc:
            damaged = damaged_file(db_path, exc)
            if damaged is None:
                raise
            error = str(exc)
        aside = set_aside(damaged)
        log.warning(
            "the projection database is damaged: set aside, rebuilding it from the log",
            path=str(damaged),
            kept_as=str(aside),
            error=error,
        )
        return self._connect(db_path)

    def _connect(self, db_path: str | Path | None) -> int:
        self._remove_stale_staging()
        conn = connect(db_path)
        opened = [conn]
        try:
            with duckdb_errors("configuring the projection database"):
                conn.execute(
                    "SET checkpoint_threshold = $value", {"value": self._checkpoint_threshold}
                )
                if self._memory_limit is not None:
                    conn.execute("SET memory_limit = $value", {"value": self._memory_limit})
                # DuckDB's allocator gives memory back to the system only from background
                # threads (or after a task that peaked past 128 MiB): without them what a
                # checkpoint freed stays resident. A 200,000-row table's checkpoint left
                # 156 MiB resident with 7 MiB in use; with them, 33 MiB.
                conn.execute("SET allocator_background_threads = true")
            # Loads for the next batch run on their own cursor while the writer commits.
            self._load_cursor = conn.cursor()
            opened.append(self._load_cursor)
            with duckdb_errors("configuring the projection cursor"):
                self._load_cursor.execute("SET TimeZone = 'UTC'")
            self._cursor_source = conn.cursor()
            opened.append(self._cursor_source)
            self._conn = conn
            return self._open()
        except BaseException:
            for each in reversed(opened):
                with contextlib.suppress(duckdb.Error):
                    each.close()
            self._cache.reset(complete=False)
            self._board.reset()
            raise

    def _open(self) -> int:
        with duckdb_errors("reading the projection checkpoint"):
            found = self._conn.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'projection_meta' "
                "AND schema_name = 'main' AND database_name = current_database()"
            ).fetchone()
            meta = None
            if found is not None and found[0]:
                meta = self._conn.execute(
                    "SELECT position, schema_version FROM projection_meta WHERE id = 1"
                ).fetchone()
        if meta is None:
            self._reset()
            return 0
        position, version = int(meta[0]), str(meta[1])
        if version != PROJECTION_VERSION:
            log.info(
                "projection schema changed; starting over",
                stored=version,
                current=PROJECTION_VERSION,
            )
            self._reset()
            return 0
        last = self._store.last_position()
        if position > last:
            log.warning(
                "projection is ahead of the log; starting over", position=position, log=last
            )
            self._reset()
            return 0
        # Rows exist that the cache has not seen: its misses must be looked up. The board
        # loads them on the first read (reading 100,000 rows would slow every start); a
        # projection at position 0 has no rows, so its board starts complete.
        self._cache.reset(complete=position == 0)
        self._board.reset(position=position, empty=position == 0)
        return position

    def _reset(self) -> None:
        """Drop and recreate every table at position 0, in one transaction."""
        conn = self._conn
        with duckdb_errors("resetting the projections"):
            conn.begin()
            try:
                for statement in drop_statements() + create_statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO projection_meta VALUES (1, 0, $version)",
                    {"version": PROJECTION_VERSION},
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        self._cache.reset(complete=True)
        self._board.reset(empty=True)
        self._set_position(0)

    # --- opening again ------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many times the database was opened again (see :meth:`reopen_after`): a
        cursor from :meth:`reader` belongs to the generation it was made in."""
        return self._generation

    def reopen_after(self, error: StorageError, generation: int) -> bool:
        """Open the database again if ``error``, met by a reader of ``generation``, says it
        must be; return whether it was (or has been since): the reader may try once more.

        DuckDB refuses all work on a database after a fatal error (a checkpoint on a full
        disk), and a damaged block shows only when it is read. Left alone, the projections
        would stay frozen until the next start; the projector's own next batch makes the
        same check.
        """
        kind = _breakage(error)
        if kind is None:
            return False
        with self._lock:
            self._check_open()
            if self._generation == generation:
                self._broken = self._broken or kind
                self._reopen()
        return True

    def _reopen(self) -> None:
        """Close the database and open it again (a damaged file is set aside first), then
        go on from its checkpoint; the caller holds ``self._lock``. On failure the reason
        stays, and the next batch tries again."""
        kind, path = self._broken, self._db_path
        with self._cursor_lock:
            self._close_connections()
            self._generation += 1
            file = self._file
            if kind == "damaged" and file is not None and file.exists():
                log.warning(
                    "the projection database is damaged: set aside, rebuilding it from the log",
                    path=str(file),
                    kept_as=str(set_aside(file)),
                )
            position = self._attach(path)
            self._broken = None
        log.warning(
            "the projection database was opened again after it refused all work",
            reason=kind,
            position=position,
        )
        with self._applied:
            self._position = position
            self._applied.notify_all()
        self._publish(self._position_listeners, position)
        self._publish(self._board_listeners, position)
        # Whatever the reopened database lacks is applied at once, not after a pace.
        self._store.wake_waiters()

    # --- applying -----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The checkpoint: the position of the last event the tables reflect."""
        return self._position

    def catch_up(self) -> int:
        """Apply every event the log holds beyond the checkpoint; return how many."""
        return self._catch_up(self.batch_size, None)

    def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply envelopes the caller already holds (they must continue the checkpoint).

        Envelopes at or before the checkpoint are ignored, so delivering one twice is
        harmless; a gap after the checkpoint is refused.
        """
        with self._lock:
            self._check_open()
            fresh = [e for e in envelopes if e.position > self._position]
            if not fresh:
                return
            expected = range(self._position + 1, self._position + 1 + len(fresh))
            if any(e.position != p for e, p in zip(fresh, expected, strict=True)):
                raise ValidationError(
                    f"envelopes must continue the projection at position {self._position + 1} "
                    f"without gaps; got {fresh[0].position}..{fresh[-1].position}"
                )
            self._apply_now(fresh)

    def rebuild(self) -> int:
        """Drop every projection and rebuild it from position 0; return events applied.

        Readers see the tables empty and then filling while this runs.
        """
        with self._lock, _collector_paused():
            self._check_open()
            self._reset()
            with self._bulk_load():
                return self._catch_up(self._rebuild_batch_size, None)

    @contextlib.contextmanager
    def _bulk_load(self) -> Iterator[None]:
        """Set DuckDB up for loading many batches, and back afterwards.

        The secondary indexes are dropped and built once at the end (maintaining them row
        by row costs twice as much), and DuckDB's automatic checkpoints (one per ~16 MB of
        WAL, each rewriting the tables' newest row groups) are deferred to a single one.
        """
        conn = self._conn
        with duckdb_errors("preparing a bulk load"):
            conn.execute("SET checkpoint_threshold = '4GB'")
            for statement in drop_index_statements():
                conn.execute(statement)
        try:
            yield
        finally:
            with duckdb_errors("finishing a bulk load"):
                for statement in index_statements():
                    conn.execute(statement)
                # The configured value, not current_setting's rounded text ("3.8 MiB").
                conn.execute(
                    "SET checkpoint_threshold = $value", {"value": self._checkpoint_threshold}
                )
                conn.execute("CHECKPOINT")

    def run_until_stopped(
        self,
        stop: threading.Event,
        idle_wait: float = 0.5,
        linger: float = 0.0,
        pace: float = COMMIT_PACE,
        pace_events: int = PACE_EVENTS,
    ) -> None:
        """Follow the log until ``stop`` is set: apply what is there, then wait for more.
        Set ``stop``, then call the store's ``wake_waiters``, to stop it at once.

        The wait wakes on the append itself when the writer is in this process. Batching
        needs no timer: whatever arrives while one batch commits is the next batch. After a
        wake-up the projector may also linger ``linger`` seconds; at 5,000 events/s a 10 ms
        linger was measured to *raise* the lag (p99 110-170 ms against 85-95 ms without):
        the sleep adds to every batch, and waking from it means waiting for the GIL again.

        ``pace``: catch-ups start at least this many seconds apart, unless ``pace_events``
        events are waiting first. A DuckDB transaction costs milliseconds of CPU however
        small it is: with 300 fires a second, commits 25 ms apart took 57 % of the CPU of
        the whole scheduler (8.3 of 14.6 s over 20 s), 100 ms apart 34 % (2.65 of 7.8 s).
        A fixed 100 ms pace alone made the lag at 5,000 events a second worse (p99 307
        against 183 ms), hence the count: at that rate 128 events are there after ~25 ms.
        A projector that was idle for longer than ``pace`` starts at once, so a lone write
        is projected without delay; under a large backlog the commits take longer than
        ``pace`` and it never binds. Nor does it when a reader waits for its own writes
        (:meth:`request`): the pace saves CPU on events nobody is waiting to read.
        """
        while not stop.is_set():
            started = time.monotonic()
            self._catch_up(self.batch_size, stop)
            if stop.is_set():
                break
            if self._store.wait_for_events(self._position, idle_wait, until=stop.is_set):
                rest = max(linger, started + pace - time.monotonic())
                if rest > 0:
                    # Woken by the append that makes ``pace_events`` (no polling), by a
                    # reader's request or a stop, else when the pace is up.
                    self._store.wait_for_events(
                        self._position + pace_events - 1,
                        rest,
                        until=lambda: stop.is_set() or self._is_requested(),
                    )

    def request(self, position: int) -> None:
        """A reader waits for ``position``: when it is in the log, start the next catch-up
        at once instead of when the pace is up. Cheap to call again for the same position
        (a burst of reads waits for one)."""
        if position > self._requested and position > self._position:
            with self._request_lock:  # readers on several threads: keep the highest
                if position <= self._requested:
                    return
                self._requested = position
            self._store.wake_waiters()
        if self._failure is not None:
            with self._applied:
                self._retry_wanted = True
                self._applied.notify_all()

    def _is_requested(self) -> bool:
        """Whether a reader waits for a position not applied yet."""
        return self._requested > self._position

    def wait_for_position(self, position: int, timeout: float, *, fail_fast: bool = False) -> bool:
        """Block until the projection has applied ``position`` (read-your-writes); or time out.

        ``fail_fast``: when the projector fails (see :meth:`note_failure`) before it gets
        there, raise :class:`StorageError` with the reason instead of waiting out
        ``timeout``. Called while it is failing, this asks it to try again now (see
        :meth:`pause_after_failure`) and waits for that try: a cause that is gone costs
        the read nothing, one that is not fails it within about a second.
        """
        seen = self._failures
        self.request(position)
        with self._applied:
            if not fail_fast:
                return self._applied.wait_for(lambda: self._position >= position, timeout)

            def failed() -> bool:
                return self._failures > seen and self._failure is not None

            self._applied.wait_for(lambda: self._position >= position or failed(), timeout)
            if self._position >= position:
                return True
            if failed():
                raise projections_failing(str(self._failure))
            return False

    def pause_after_failure(self, delay: float, least: float, stop: threading.Event) -> None:
        """Wait ``delay`` seconds before following the log again after a failure; only
        ``least`` seconds when a reader asks for a position meanwhile (so a cause that is
        gone, a disk with room again, is noticed at the next read, at most one try per
        ``least``). Returns early once ``stop`` is set and :meth:`wake` called."""
        now = time.monotonic()
        deadline, earliest = now + delay, now + min(least, delay)
        with self._applied:
            # The wish is not reset here: a reader may have asked between the failure and
            # this pause. It is taken when the pause ends, for the try that follows.
            while not stop.is_set():
                now = time.monotonic()
                if now >= deadline or (self._retry_wanted and now >= earliest):
                    break
                self._applied.wait((earliest if self._retry_wanted else deadline) - now)
            self._retry_wanted = False

    def wake(self) -> None:
        """Wake :meth:`pause_after_failure` (to see its ``stop``)."""
        with self._applied:
            self._applied.notify_all()

    @property
    def failure(self) -> str | None:
        """Why following the log last failed, until the projector applies something again
        (None while it is healthy). The projections then lag the log until the cause (a
        full disk, say) is gone."""
        return self._failure

    @property
    def failures(self) -> int:
        """How many failures :meth:`note_failure` has recorded."""
        return self._failures

    def note_failure(self, reason: str) -> None:
        """Record that following the log failed (whoever runs the projector tries again
        later), and wake the readers waiting for a position, who fail now with ``reason``
        rather than at their timeout."""
        with self._applied:
            self._failure = reason
            self._failures += 1
            self._applied.notify_all()
        self._publish(self._position_listeners, self._position)
        self._publish(self._board_listeners, self.board_position)

    def _catch_up(self, batch_size: int, stop: threading.Event | None) -> int:
        with self._lock:
            self._check_open()
            if self._broken is not None:
                self._reopen()
            try:
                first = self._store.read_all(self._position + 1, batch_size)
                if not first:
                    return 0
                if len(first) < batch_size:
                    # Live tail: one small batch, no threads.
                    self._apply_now(first, live=stop is not None)
                    return len(first)
                return self._pipeline(first, batch_size, stop)
            except StorageError as exc:
                self._broken = self._broken or _breakage(exc)
                raise

    def _pipeline(
        self, first: Sequence[Envelope], batch_size: int, stop: threading.Event | None
    ) -> int:
        """Work through a backlog: fold the next batch while the previous one commits.

        Reading and folding stay on this thread. A separate reader thread was measured to
        slow rebuilds down: both are pure Python and would only contend for the GIL, while
        the commit is mostly DuckDB work that releases it.
        """
        applied = 0
        committer = _Committer(self._commit)
        envelopes: Sequence[Envelope] = first
        try:
            while True:
                committer.put(self._prepare(envelopes, live=stop is not None))
                applied += len(envelopes)
                if len(envelopes) < batch_size or (stop is not None and stop.is_set()):
                    break
                envelopes = self._store.read_all(envelopes[-1].position + 1, batch_size)
                if not envelopes:
                    break
            committer.finish()
        except BaseException:
            with contextlib.suppress(BaseException):
                committer.finish()
            # Only now, with the committer stopped: batches folded after the failed one
            # left states in the cache that DuckDB never got.
            self._cache.reset(complete=False)
            raise
        return applied

    def _apply_now(self, envelopes: Sequence[Envelope], *, live: bool = False) -> None:
        """Fold and commit one batch on this thread.

        A live batch goes to a loaded task board as soon as it is folded, before the
        DuckDB commit (~8 ms for a few events): a reader of the board waiting for its own
        write is answered then (see :class:`BoardPositions`).
        """
        early = False
        try:
            batch = self._prepare(envelopes, live=live)
            if live and self._board.loaded:
                self._board.apply(batch.last_position, batch.tasks)
                early = True
                self._publish(self._board_listeners, batch.last_position)
            self._commit(batch, board_applied=early)
        except BaseException:
            # The fold mutates cached states in place: they may no longer match DuckDB.
            self._cache.reset(complete=False)
            if early:
                # It holds rows DuckDB never got: unloaded, its next reader loads it from
                # DuckDB once that has the reader's position.
                self._board.reset()
            raise

    def _prepare(self, envelopes: Sequence[Envelope], *, live: bool) -> writer.PreparedBatch:
        """Fold a batch (the caller resets the cache if this or its commit fails); a
        ``live`` one (following the log beside a running scheduler) in slices of
        :data:`FOLD_SLICE` events or more (at most :data:`FOLD_SLICES_MAX` slices), with
        the GIL handed over between them."""
        self._batches_prepared += 1
        span = f"{envelopes[0].position}..{envelopes[-1].position}"
        fold_slice = max(FOLD_SLICE, -(-len(envelopes) // FOLD_SLICES_MAX))
        with duckdb_errors(f"loading rows for positions {span}"):
            batch = writer.prepare(
                self._load_cursor,
                envelopes,
                self._cache,
                self._batches_prepared,
                fold_slice=fold_slice if live else None,
                between_slices=let_others_run if live else None,
            )
        let_others_run()  # the fold is milliseconds of Python: the host's loop next
        return batch

    def _commit(self, batch: writer.PreparedBatch, *, board_applied: bool = False) -> None:
        """Commit a prepared batch; its cached states become evictable. ``board_applied``:
        the task board has the batch already."""
        with duckdb_errors(f"projecting positions {batch.span}"):
            writer.commit(self._conn, batch, self._file)
        self._cache.release(batch.number)
        if not board_applied:
            # Before the position is published: whoever waits for it finds the board too.
            self._board.apply(batch.last_position, batch.tasks)
        self._set_position(batch.last_position)
        if self._on_applied is not None:
            self._on_applied(batch.last_position)

    def add_position_listener(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(position)`` each time the checkpoint moves, on the thread that
        moved it, after the waiters of :meth:`wait_for_position` were woken. Keep it cheap
        (it delays the next batch); an exception it raises is logged and ignored."""
        with self._listeners_lock:
            self._position_listeners = (*self._position_listeners, listener)

    def remove_position_listener(self, listener: Callable[[int], object]) -> None:
        """Stop calling ``listener`` (one registration of it; none is fine)."""
        with self._listeners_lock:
            self._position_listeners = _without(self._position_listeners, listener)

    @property
    def board_position(self) -> int:
        """The position the task board answers for: ahead of :attr:`position` while a live
        batch is in the board and not yet in DuckDB; :attr:`position` while the board is
        not loaded (its first reader loads it from DuckDB)."""
        board = self._board
        return board.position if board.loaded else self._position

    def board_covers(self, position: int) -> bool:
        """Whether the task board is loaded and has applied ``position``."""
        board = self._board
        return board.loaded and board.position >= position

    def _add_board_listener(self, listener: Callable[[int], object]) -> None:
        with self._listeners_lock:
            self._board_listeners = (*self._board_listeners, listener)

    def _remove_board_listener(self, listener: Callable[[int], object]) -> None:
        with self._listeners_lock:
            self._board_listeners = _without(self._board_listeners, listener)

    def _set_position(self, position: int) -> None:
        with self._applied:
            self._position = position
            self._failure = None  # it applies again
            self._applied.notify_all()
        self._publish(self._position_listeners, position)
        self._publish(self._board_listeners, position)

    @staticmethod
    def _publish(listeners: tuple[Callable[[int], object], ...], position: int) -> None:
        for listener in listeners:
            try:
                listener(position)
            except Exception:
                log.exception("a position listener failed", position=position)

    # --- reading ----------------------------------------------------------------------------

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the projection database for one thread's queries; close it after."""
        with self._cursor_lock:
            self._check_open()
            with duckdb_errors("opening a projection cursor"):
                cursor = self._cursor_source.cursor()
                # Session settings are per cursor: answer in UTC on every machine.
                cursor.execute("SET TimeZone = 'UTC'")
                return cursor

    def list_tasks(
        self,
        query: TaskQuery,
        row: Callable[[Values], R] = task_row,  # type: ignore[assignment]
    ) -> Page[R]:
        """The task list from the in-memory task board (see :mod:`.board`): the same page
        as :func:`queries.list_tasks` on this database, without a DuckDB query; each row
        made by ``row`` (:func:`queries.task_row` or :func:`queries.task_summary`). The
        first call after opening the projector loads the board from DuckDB."""
        self._check_open()
        return self._board.list_tasks(query, self.reader, row)

    def get_task(self, task_id: str) -> TaskRow | None:
        """One task from the task board, as :func:`queries.get_task` gives it (None when
        there is no such task); loads the board first if needed."""
        self._check_open()
        values = self._board.get_task(task_id, self.reader)
        return None if values is None else task_row(values)

    def load_board(self) -> None:
        """Load the task board from DuckDB unless it is loaded (blocking: for a query thread)."""
        self._check_open()
        if self._board.loaded:
            return
        cursor = self.reader()
        try:
            self._board.load(cursor)
        finally:
            cursor.close()

    def get_task_if_ready(self, task_id: str, at_least: int = 0) -> tuple[bool, TaskRow | None]:
        """:meth:`get_task` if the board is loaded and has applied position ``at_least``
        (a dictionary look-up, fine on an event loop): ``(True, row or None)``;
        ``(False, None)`` while it is not."""
        self._check_open()
        loaded, values = self._board.task_if_loaded(task_id, at_least)
        return loaded, None if values is None else task_row(values)

    def list_tasks_if_ready(
        self,
        query: TaskQuery,
        row: Callable[[Values], R] = task_row,  # type: ignore[assignment]
        at_least: int = 0,
    ) -> Page[R] | None:
        """:meth:`list_tasks` if the board can answer at once (loaded, at position
        ``at_least`` or later, with a view for this filter and sort): tens of microseconds
        per row, fine to call on an event loop. None when the answer needs slow work
        (loading the board, building a view) or a newer board."""
        self._check_open()
        return self._board.page_if_ready(query, row, at_least)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (after the batch in progress, if any). Idempotent."""
        with self._lock, self._cursor_lock:
            if self._closed:
                return
            self._closed = True
            self._close_connections()
        with self._applied:
            self._applied.notify_all()

    def _close_connections(self) -> None:
        """Close the connection and, with it, every cursor made from it (the readers'
        too). Only then does DuckDB let the database go: while one connection to it is
        open, opening the file again returns the same database, however broken."""
        for conn in (self._load_cursor, self._cursor_source):
            with contextlib.suppress(duckdb.Error):
                conn.close()
        for attempt in range(1, CLOSE_TRIES + 1):
            try:
                self._conn.close()
                break
            except duckdb.ResourceInUseException:
                # A cursor in use on another thread (a reader's query) makes it refuse.
                if attempt < CLOSE_TRIES:
                    time.sleep(CLOSE_RETRY_SECONDS)
            except duckdb.Error:
                break
        self._cache.reset(complete=False)
        self._board.reset()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the projector is closed")

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BoardPositions:
    """The projector's task board as a position source, for readers who wait for their own
    writes (``host_loop.PositionWaiter``). The board may be ahead of DuckDB: a live batch
    reaches a loaded board before its DuckDB commit, so a read answered from the board
    waits for the fold, not the commit. Requests wake the projector as for DuckDB."""

    def __init__(self, projector: Projector) -> None:
        self._projector = projector

    @property
    def position(self) -> int:
        """The projector's :attr:`~Projector.board_position`."""
        return self._projector.board_position

    def add_position_listener(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(position)`` each time the board's position moves."""
        self._projector._add_board_listener(listener)

    def remove_position_listener(self, listener: Callable[[int], object]) -> None:
        """Stop calling ``listener``."""
        self._projector._remove_board_listener(listener)

    def request(self, position: int) -> None:
        """Someone waits for ``position``: catch up at once (see :meth:`Projector.request`)."""
        self._projector.request(position)

    @property
    def failure(self) -> str | None:
        """The projector's :attr:`~Projector.failure`."""
        return self._projector.failure

    @property
    def failures(self) -> int:
        """The projector's :attr:`~Projector.failures`."""
        return self._projector.failures


def _breakage(error: StorageError) -> str | None:
    """Why ``error`` means the database must be opened again, or None if it does not."""
    if says_invalidated(error):
        return "invalidated"
    return "damaged" if says_damaged(error) else None


def _without(
    listeners: tuple[Callable[[int], object], ...], listener: Callable[[int], object]
) -> tuple[Callable[[int], object], ...]:
    """``listeners`` without one registration of ``listener`` (none is fine)."""
    kept = list(listeners)
    with contextlib.suppress(ValueError):
        kept.remove(listener)
    return tuple(kept)
