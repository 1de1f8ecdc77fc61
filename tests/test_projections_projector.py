"""The projector's life: checkpoints, restarts, schema changes, following the log, failures."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import msgspec
import pytest
from test_projections_helpers import (
    append_all,
    at,
    definition,
    invalidate,
    one,
    project,
    scheduled,
    started,
    store_with,
    succeeded,
    table_contents,
)

from chronolog.errors import StorageError, StoreClosedError, ValidationError
from chronolog.events import DomainEvent
from chronolog.projections import Projector, writer
from chronolog.projections import projector as projector_module
from chronolog.projections.schema import PROJECTION_VERSION
from chronolog.projections.synthetic import synthetic_log
from chronolog.store import EventStore, InMemoryEventStore, SQLiteEventStore


def synthetic_store(events: int, seed: int = 0) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for append in synthetic_log(events=events, tasks=40, cleanups=2, seed=seed):
        store.append(append.stream_id, append.events, metadata=append.metadata)
    return store


def meta(conn: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    row = conn.execute("SELECT position, schema_version FROM projection_meta").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


class TestCheckpoint:
    def test_catch_up_applies_everything_and_records_the_position(self, tmp_path: Path) -> None:
        """catch_up returns how many events it applied; the checkpoint is the last position."""
        store = synthetic_store(3_000)
        projector = Projector(store, tmp_path / "p.duckdb", batch_size=250)
        assert projector.catch_up() == 3_000
        assert projector.position == 3_000
        assert meta(projector.reader()) == (3_000, PROJECTION_VERSION)
        assert projector.catch_up() == 0

    def test_a_reopened_projector_continues_from_its_checkpoint(self, tmp_path: Path) -> None:
        """Events appended while closed are applied on the next catch-up, and only those."""
        store = store_with(scheduled("a"))
        path = tmp_path / "p.duckdb"
        Projector(store, path).close()
        with Projector(store, path) as projector:
            assert projector.catch_up() == 1
        append_all(store, [started("a", 1), succeeded("a", 1)])
        with Projector(store, path) as projector:
            assert projector.position == 1
            assert projector.catch_up() == 2
            row = one(projector.reader(), "SELECT runs, successes, version FROM tasks")
            assert row == {"runs": 1, "successes": 1, "version": 3}

    def test_in_memory_databases_work_too(self) -> None:
        """``None`` or ``":memory:"`` keeps the projections in memory."""
        for target in (None, ":memory:"):
            with Projector(store_with(scheduled("a")), target) as projector:
                assert projector.catch_up() == 1

    def test_rebuild_gives_the_same_tables(self, tmp_path: Path) -> None:
        """rebuild() drops everything and replays from position 0 to identical tables."""
        store = synthetic_store(2_000, seed=3)
        with Projector(store, tmp_path / "p.duckdb", batch_size=333) as projector:
            projector.catch_up()
            before = table_contents(projector.reader())
            assert projector.rebuild() == 2_000
            assert table_contents(projector.reader()) == before
            threshold = projector.reader().execute("SELECT current_setting('checkpoint_threshold')")
            assert threshold.fetchone() == ("16.0 MiB",)  # the live setting again


class TestCheckpointPolicy:
    """DuckDB checkpoints (WAL folded into the file) happen where the projector says; no
    setting of them loses or repeats an event."""

    def test_the_live_threshold_is_the_projectors(self, tmp_path: Path) -> None:
        """The projector's connection checkpoints at the threshold it was given."""
        path = tmp_path / "p.duckdb"
        query = "SELECT current_setting('checkpoint_threshold')"
        with Projector(InMemoryEventStore(), path, checkpoint_threshold="4MB") as projector:
            reader = projector.reader()
            assert reader.execute(query).fetchall() == [("3.8 MiB",)]
            projector.rebuild()  # a bulk load raises it for a while, then puts it back
            assert reader.execute(query).fetchall() == [("3.8 MiB",)]
        assert projector_module.CHECKPOINT_THRESHOLD == "16MiB"  # DuckDB's own default

    def test_duckdb_gives_freed_memory_back(self, tmp_path: Path) -> None:
        """The allocator's background threads are on, so what a checkpoint freed does not
        stay resident."""
        with Projector(InMemoryEventStore(), tmp_path / "p.duckdb") as projector:
            query = "SELECT current_setting('allocator_background_threads')"
            assert projector.reader().execute(query).fetchall() == [(True,)]

    @pytest.mark.parametrize("threshold", ["1KB", "4MB", "1GB"])
    def test_frequent_or_rare_checkpoints_keep_every_event(
        self, tmp_path: Path, threshold: str
    ) -> None:
        """A checkpoint after nearly every batch, or none until close: after reopening, the
        tables equal a rebuild's."""
        store = synthetic_store(3_000, seed=5)
        path = tmp_path / "p.duckdb"
        with Projector(store, path, batch_size=97, checkpoint_threshold=threshold) as projector:
            projector.catch_up()
        with Projector(store, path, checkpoint_threshold=threshold) as projector:
            assert projector.position == 3_000
            incremental = table_contents(projector.reader())
        with Projector(store, tmp_path / "rebuilt.duckdb") as projector:
            projector.rebuild()
            assert table_contents(projector.reader()) == incremental

    def test_a_bad_threshold_is_a_storage_error(self, tmp_path: Path) -> None:
        """DuckDB's refusal surfaces as the one error type, and nothing is left open."""
        with pytest.raises(StorageError):
            Projector(InMemoryEventStore(), tmp_path / "p.duckdb", checkpoint_threshold="lots")
        with Projector(InMemoryEventStore(), tmp_path / "p.duckdb") as projector:
            assert projector.position == 0


class TestSchemaVersion:
    def test_a_file_from_another_projection_version_is_rebuilt(self, tmp_path: Path) -> None:
        """A stored schema version that differs from the code's empties the file for a rebuild."""
        store = store_with(scheduled("a"), scheduled("b"))
        path = tmp_path / "p.duckdb"
        with Projector(store, path) as projector:
            projector.catch_up()
        conn = duckdb.connect(str(path))
        conn.execute("UPDATE projection_meta SET schema_version = '0-old'")
        conn.execute("CREATE TABLE stale AS SELECT 1 AS x")
        conn.close()
        with Projector(store, path) as projector:
            assert projector.position == 0
            assert one(projector.reader(), "SELECT count(*) AS n FROM tasks") == {"n": 0}
            assert projector.catch_up() == 2
            assert meta(projector.reader()) == (2, PROJECTION_VERSION)

    def test_a_projection_ahead_of_the_log_is_rebuilt(self, tmp_path: Path) -> None:
        """A file projected from a longer (another) log is not trusted."""
        path = tmp_path / "p.duckdb"
        with Projector(store_with(scheduled("a"), scheduled("b")), path) as projector:
            projector.catch_up()
        with Projector(store_with(scheduled("c")), path) as projector:
            assert projector.position == 0
            projector.catch_up()
            tasks = projector.reader().execute("SELECT task_id FROM tasks").fetchall()
            assert tasks == [("c",)]


class TestDamagedFile:
    """The projections are derived from the log: a damaged file is set aside and rebuilt."""

    @pytest.mark.parametrize("damage", ["garbage", "truncated", "bad checksum"])
    def test_a_damaged_file_is_set_aside_and_rebuilt(self, tmp_path: Path, damage: str) -> None:
        """A foreign header, a truncated file or a block whose checksum does not match
        (what DuckDB names damage): the file is renamed ``….damaged-<time>``, byte for
        byte, and a new one catches up from the log to the same tables."""
        store = synthetic_store(2_000, seed=7)
        path = tmp_path / "p.duckdb"
        with Projector(store, path) as projector:
            projector.catch_up()
            expected = table_contents(projector.reader())
        data = bytearray(path.read_bytes())
        if damage == "garbage":
            data[:4096] = b"\xab" * 4096
        elif damage == "truncated":
            del data[100:]
        else:
            data[12_288:12_300] = b"\x00" * 12  # inside the first block after the headers
        path.write_bytes(bytes(data))
        with Projector(store, path) as projector:
            assert projector.position == 0
            assert projector.catch_up() == 2_000
            assert table_contents(projector.reader()) == expected
        [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("p.duckdb.damaged-")]
        assert aside.read_bytes() == bytes(data)

    def test_other_failures_are_raised_and_nothing_is_moved(self, tmp_path: Path) -> None:
        """A path DuckDB cannot open for another reason (here a directory) is an error;
        nothing is renamed."""
        path = tmp_path / "p.duckdb"
        path.mkdir()
        with pytest.raises(StorageError):
            Projector(InMemoryEventStore(), path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.duckdb"]


class TestInvalidatedDatabase:
    """DuckDB refuses all work on a database after a fatal error until it is opened again;
    the projector opens it again instead of failing until the next start."""

    def test_the_projectors_next_batch_opens_it_again(self, tmp_path: Path) -> None:
        """The batch that meets the refusal fails; the next try opens the file again (its
        committed batches intact) and goes on to the same tables as a fresh projection."""
        store = synthetic_store(1_500, seed=5)
        with Projector(store, tmp_path / "p.duckdb", batch_size=500) as projector:
            projector.catch_up()
            invalidate(projector)
            for append in synthetic_log(events=300, tasks=5, seed=6):
                store.append(append.stream_id, append.events, metadata=append.metadata)
            with pytest.raises(StorageError, match="invalidated"):
                projector.catch_up()
            assert projector.generation == 0
            assert projector.catch_up() == store.last_position() - 1_500
            assert projector.generation == 1
            got = table_contents(projector.reader())
        with Projector(store, tmp_path / "fresh.duckdb") as fresh:
            fresh.catch_up()
            assert got == table_contents(fresh.reader())

    def test_a_reader_that_meets_it_opens_it_again_once(self, tmp_path: Path) -> None:
        """A reader's query fails first (an idle projector has no batch to fail):
        ``reopen_after`` opens the database again and says the reader may try once more;
        a second reader of the same generation does not open it a second time."""
        store = synthetic_store(1_000, seed=2)
        with Projector(store, tmp_path / "p.duckdb") as projector:
            projector.catch_up()
            expected = table_contents(projector.reader())
            invalidate(projector)
            errors = []
            for _ in range(2):
                try:
                    projector.reader()
                except StorageError as exc:
                    errors.append(exc)
            assert len(errors) == 2
            assert projector.reopen_after(errors[0], generation=0)
            assert projector.reopen_after(errors[1], generation=0)
            assert projector.generation == 1
            assert projector.position == 1_000
            assert table_contents(projector.reader()) == expected
            assert projector.catch_up() == 0

    def test_a_reader_busy_on_an_old_cursor_does_not_keep_the_old_database(
        self, tmp_path: Path
    ) -> None:
        """While one connection to a database is open, DuckDB hands the same (refusing)
        database to whoever opens the file again. The reopen closes every cursor of the
        old one, waiting for one that another thread is using."""
        store = synthetic_store(1_000, seed=3)
        with Projector(store, tmp_path / "p.duckdb") as projector:
            projector.catch_up()
            old = projector.reader()
            invalidate(projector)
            stop = threading.Event()

            def hammer() -> None:
                while not stop.is_set():
                    with contextlib.suppress(duckdb.Error):
                        old.execute("SELECT count(*) FROM tasks").fetchall()

            thread = threading.Thread(target=hammer)
            thread.start()
            try:
                refused = StorageError("reading failed")
                refused.__cause__ = duckdb.FatalException("database has been invalidated")
                assert projector.reopen_after(refused, generation=0)
                assert one(projector.reader(), "SELECT count(*) AS n FROM tasks")["n"] > 0
            finally:
                stop.set()
                thread.join(timeout=10)

    def test_an_in_memory_database_is_rebuilt_from_the_log(self) -> None:
        """Opening an in-memory database again starts it empty: catching up rebuilds it.
        (DuckDB never checkpoints one: the refusal is an internal error's.)"""
        store = synthetic_store(800, seed=4)
        with Projector(store, None) as projector:
            projector.catch_up()
            expected = table_contents(projector.reader())
            refused = StorageError("reading failed")
            refused.__cause__ = duckdb.InternalException("INTERNAL Error: a failed assertion")
            assert projector.reopen_after(refused, generation=0)
            assert projector.position == 0
            assert projector.catch_up() == 800
            assert table_contents(projector.reader()) == expected

    def test_damage_met_by_a_reader_sets_the_file_aside(self, tmp_path: Path) -> None:
        """A damaged block shows only when it is read: the reader's error (what DuckDB
        says of a block whose checksum does not match) sets the file aside and a new one
        is rebuilt from the log."""
        store = synthetic_store(600, seed=8)
        path = tmp_path / "p.duckdb"
        with Projector(store, path) as projector:
            projector.catch_up()
            expected = table_contents(projector.reader())
            damage = StorageError("reading tasks failed")
            damage.__cause__ = duckdb.IOException(
                "Corrupt database file: computed checksum 1 does not match stored checksum 2"
            )
            assert projector.reopen_after(damage, generation=0)
            assert projector.position == 0
            assert projector.catch_up() == 600
            assert table_contents(projector.reader()) == expected
        assert [p.name.startswith("p.duckdb.damaged-") for p in tmp_path.iterdir()].count(True)

    def test_other_errors_open_nothing_again(self, tmp_path: Path) -> None:
        """A full disk's refused commit, say, leaves the database as it is."""
        with Projector(store_with(scheduled("a")), tmp_path / "p.duckdb") as projector:
            projector.catch_up()
            full = StorageError("projecting failed")
            full.__cause__ = duckdb.IOException("No space left on device")
            assert not projector.reopen_after(full, generation=0)
            assert projector.generation == 0
            assert not [p for p in tmp_path.iterdir() if "damaged" in p.name]


@contextlib.contextmanager
def following(
    store: EventStore, projector: Projector, *, wake: DomainEvent, **options: float
) -> Iterator[None]:
    """Run ``projector.run_until_stopped`` (idle wait 5 s) on a thread for the block; then
    stop it, appending ``wake`` so the wait sees the stop at once, and close the projector."""
    stop = threading.Event()
    thread = threading.Thread(target=projector.run_until_stopped, args=(stop, 5.0), kwargs=options)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        append_all(store, [wake])
        thread.join(timeout=10)
        projector.close()
    assert not thread.is_alive()


def reached(projector: Projector, position: int, timeout: float) -> bool:
    """Whether the projector applies ``position`` within ``timeout``, watched through a
    position listener (unlike ``wait_for_position``, this does not ask it to hurry)."""
    there = threading.Event()

    def listener(published: int) -> None:
        if published >= position:
            there.set()

    projector.add_position_listener(listener)
    try:
        return projector.position >= position or there.wait(timeout)
    finally:
        projector.remove_position_listener(listener)


class TestFollowing:
    def test_a_live_batch_is_folded_in_slices_a_catch_up_at_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Following the log, a 250-event batch is folded in slices of FOLD_SLICE with the
        GIL handed over between them; an explicit catch-up folds at once. Same tables."""
        pauses: list[str] = []
        monkeypatch.setattr(projector_module, "FOLD_SLICE", 100)
        monkeypatch.setattr(projector_module, "let_others_run", lambda: pauses.append("pause"))
        store = synthetic_store(250)
        caught_up = Projector(store, tmp_path / "caught-up.duckdb")
        try:
            caught_up.catch_up()
            assert pauses == ["pause"]  # after the fold only
            expected = table_contents(caught_up.reader())
        finally:
            caught_up.close()
        pauses.clear()
        live = Projector(store, tmp_path / "live.duckdb")
        with following(store, live, wake=succeeded("zz", 1)):
            assert reached(live, 250, timeout=10)
            # Two hand-overs inside the fold (slices of 100, 100, 50), one after it.
            assert pauses[:3] == ["pause"] * 3
            reader = live.reader()
            try:
                assert table_contents(reader) == expected
            finally:
                reader.close()

    def test_a_live_batch_reaches_a_loaded_board_before_duckdb_commits_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Following the log, the task board gets a batch once it is folded and publishes
        its position then; DuckDB and the checkpoint follow when the commit is done."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        gate = threading.Event()
        gate.set()
        original = writer.commit

        def gated(
            conn: duckdb.DuckDBPyConnection,
            batch: writer.PreparedBatch,
            db_path: Path | None = None,
        ) -> None:
            assert gate.wait(10)
            original(conn, batch, db_path)

        monkeypatch.setattr(writer, "commit", gated)
        heard: list[int] = []
        projector.board_positions.add_position_listener(heard.append)
        with following(store, projector, wake=succeeded("zz", 1)):
            assert projector.wait_for_position(1, timeout=10)
            assert projector.get_task_if_ready("a")[0]  # a new projection's board is loaded
            gate.clear()
            append_all(store, [started("a", 1)])
            deadline = time.monotonic() + 10
            while projector.board_position < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert (projector.board_positions.position, projector.position) == (2, 1)
            assert 2 in heard
            ready, row = projector.get_task_if_ready("a", at_least=2)
            assert ready and row is not None and row.status == "running"
            assert one(projector.reader(), "SELECT status FROM tasks") == {"status": "scheduled"}
            gate.set()
            assert projector.wait_for_position(2, timeout=10)
            assert one(projector.reader(), "SELECT status FROM tasks") == {"status": "running"}

    def test_a_failed_commit_reports_its_own_error(self, tmp_path: Path) -> None:
        """A COMMIT that fails (a full disk) ends DuckDB's transaction; the rollback after
        it must not replace the error that says why with "no transaction is active"."""

        class FullDisk:
            def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
                self._conn = conn

            def __getattr__(self, name: str) -> object:
                return getattr(self._conn, name)

            def commit(self) -> None:
                self._conn.rollback()  # as DuckDB leaves it: no transaction
                raise duckdb.IOException('Could not write file "x.wal": No space left on device')

        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        real = projector._conn
        projector._conn = FullDisk(real)  # type: ignore[assignment]
        try:
            with pytest.raises(StorageError, match="No space left on device"):
                projector.catch_up()
        finally:
            projector._conn = real
        assert projector.position == 0
        assert projector.catch_up() == 1
        projector.close()

    def test_a_read_that_asks_before_the_pause_still_cuts_it_short(self, tmp_path: Path) -> None:
        """A reader may ask for a try between a failure and the pause after it: the pause
        must still end early for it (it used to forget the wish, and the read waited out
        the whole pause, up to 30 s, then timed out)."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        try:
            projector.note_failure("No space left on device")
            projector.request(5)  # before the pause begins
            stop = threading.Event()
            started = time.monotonic()
            projector.pause_after_failure(30.0, 0.05, stop)
            assert time.monotonic() - started < 5
            started = time.monotonic()  # the wish was used up by that try
            projector.pause_after_failure(0.3, 0.05, stop)
            assert time.monotonic() - started >= 0.25
        finally:
            projector.close()

    def test_run_until_stopped_follows_appends(self, tmp_path: Path) -> None:
        """The loop projects new events soon after they are appended, and stops when told."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        with following(store, projector, wake=succeeded("a", 1)):
            assert projector.wait_for_position(1, timeout=10)
            append_all(store, [started("a", 1)])
            started_at = time.monotonic()
            assert projector.wait_for_position(2, timeout=10)
            assert time.monotonic() - started_at < 4.0  # woken by the append, not idle_wait
            status = one(projector.reader(), "SELECT status FROM tasks")
            assert status == {"status": "running"}

    def test_catch_ups_are_paced_but_an_idle_projector_starts_at_once(self, tmp_path: Path) -> None:
        """Under a steady trickle catch-ups start ``pace`` apart (one DuckDB transaction
        for several events, not one each); after an idle spell longer than ``pace`` a new
        event is projected at once."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        pace = 2.0
        with following(store, projector, wake=started("a", 2), pace=pace):
            assert projector.wait_for_position(1, timeout=10)
            append_all(store, [started("a", 1)])
            appended = time.monotonic()
            assert reached(projector, 2, timeout=10)
            assert time.monotonic() - appended > pace / 2  # waited for its turn
            time.sleep(pace)
            append_all(store, [succeeded("a", 1)])
            appended = time.monotonic()
            assert reached(projector, 3, timeout=10)
            assert time.monotonic() - appended < pace / 2  # idle long enough: no wait

    def test_enough_waiting_events_start_a_catch_up_before_the_pace_is_up(
        self, tmp_path: Path
    ) -> None:
        """Within the pace, one waiting event waits for its turn; once ``pace_events``
        wait, the catch-up starts at once (a high rate is committed as it comes)."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        pace = 2.0
        with following(store, projector, wake=started("a", 9), pace=pace, pace_events=3):
            assert projector.wait_for_position(1, timeout=10)
            time.sleep(pace)
            append_all(store, [started("a", 1)])  # after an idle spell: at once
            appended = time.monotonic()
            assert projector.wait_for_position(2, timeout=10)
            assert time.monotonic() - appended < pace / 4
            append_all(store, [succeeded("a", 1)])
            assert not reached(projector, 3, timeout=pace / 8)  # waits its turn
            append_all(store, [started("a", 2), succeeded("a", 2)])
            appended = time.monotonic()
            assert reached(projector, 5, timeout=10)
            assert time.monotonic() - appended < pace / 4  # three waiting: no more waiting

    def test_a_stop_and_wake_waiters_end_any_wait_at_once(self, tmp_path: Path) -> None:
        """Setting ``stop`` and waking the store's waiters stops a projector waiting for
        events (idle) or for its pace, without an append (the module stops it so)."""
        store = store_with(scheduled("a"))
        for wait_for_pace in (False, True):
            projector = Projector(store, tmp_path / f"p{wait_for_pace}.duckdb")
            stop = threading.Event()
            thread = threading.Thread(
                target=projector.run_until_stopped,
                args=(stop, 60.0),
                kwargs={"pace": 60.0, "pace_events": 10**6},
            )
            thread.start()
            assert projector.wait_for_position(store.last_position(), timeout=10)
            if wait_for_pace:
                append_all(store, [started("a", store.last_position())])
            time.sleep(0.1)  # into its wait (a stop before it is seen at once anyway)
            stop.set()
            store.wake_waiters()
            thread.join(timeout=10)  # the waits are 60 s long
            assert not thread.is_alive()
            projector.close()

    @pytest.mark.parametrize("engine", ["memory", "sqlite"])
    def test_a_reader_waiting_for_its_writes_ends_the_pace(
        self, tmp_path: Path, engine: str
    ) -> None:
        """The pace spares CPU on events nobody waits to read: a reader that waits for a
        position (read-your-writes) starts the catch-up at once, from another thread."""
        store: InMemoryEventStore | SQLiteEventStore
        if engine == "memory":
            store = store_with(scheduled("a"))
        else:
            store = SQLiteEventStore(tmp_path / "log.sqlite")
            append_all(store, [scheduled("a")])
        projector = Projector(store, tmp_path / "p.duckdb")
        pace = 60.0  # longer than any wait below: only the request can start the catch-up
        with following(store, projector, wake=started("a", 9), pace=pace, pace_events=10**6):
            assert projector.wait_for_position(1, timeout=10)  # after an idle spell: at once
            append_all(store, [started("a", 1)])
            assert not reached(projector, 2, timeout=0.2)  # nobody waits: its turn comes later
            asked = time.monotonic()
            assert projector.wait_for_position(2, timeout=10)
            assert time.monotonic() - asked < 5
            append_all(store, [succeeded("a", 1)])
            projector.request(3)  # what the facade's loop-side waiter does
            assert reached(projector, 3, timeout=10)
            assert projector.wait_for_position(3, timeout=0)  # applied: no request needed
        if engine == "sqlite":
            store.close()

    def test_position_listeners_hear_every_checkpoint(self, tmp_path: Path) -> None:
        """A listener is called with each new checkpoint, on the committing thread; one that
        fails does not stop the batch or the others; a removed one is no longer called."""
        store = store_with(scheduled("a"))
        heard: list[tuple[int, str]] = []

        def failing(position: int) -> None:
            raise RuntimeError("listener bug")

        def listener(position: int) -> None:
            heard.append((position, threading.current_thread().name))

        with Projector(store, tmp_path / "p.duckdb") as projector:
            projector.add_position_listener(failing)
            projector.add_position_listener(listener)
            worker = threading.Thread(target=projector.catch_up, name="committer")
            worker.start()
            worker.join()
            assert projector.position == 1
            projector.remove_position_listener(listener)
            projector.remove_position_listener(listener)  # not registered any more: fine
            append_all(store, [started("a", 1)])
            projector.catch_up()
        assert heard == [(1, "committer")]

    def test_wait_for_position_times_out(self, tmp_path: Path) -> None:
        """Waiting for a position nobody applies returns False after the timeout."""
        with Projector(store_with(scheduled("a")), tmp_path / "p.duckdb") as projector:
            assert projector.wait_for_position(0, timeout=0.01)
            assert not projector.wait_for_position(1, timeout=0.05)

    def test_readers_see_whole_batches_only(self, tmp_path: Path) -> None:
        """A reader never sees events without the checkpoint that covers them."""
        store = synthetic_store(4_000, seed=5)
        projector = Projector(store, tmp_path / "p.duckdb", batch_size=200)
        seen: list[tuple[int, int]] = []
        done = threading.Event()

        def watch() -> None:
            cursor = projector.reader()
            while not done.is_set():
                cursor.execute("BEGIN TRANSACTION")
                position = cursor.execute("SELECT position FROM projection_meta").fetchone()
                count = cursor.execute("SELECT count(*) FROM events").fetchone()
                cursor.execute("COMMIT")
                assert position is not None and count is not None
                seen.append((position[0], count[0]))
            cursor.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            projector.catch_up()
        finally:
            done.set()
            watcher.join()
            projector.close()
        assert seen and all(position == count for position, count in seen)

    def test_apply_ignores_old_envelopes_and_refuses_gaps(self, tmp_path: Path) -> None:
        """Redelivered envelopes are skipped; an envelope past a gap is refused."""
        store = store_with(scheduled("a"), started("a", 1), succeeded("a", 1))
        envelopes = store.read_all()
        with Projector(InMemoryEventStore(), tmp_path / "p.duckdb") as projector:
            projector.apply(envelopes[:2])
            projector.apply(envelopes[:2])
            assert projector.position == 2
            with pytest.raises(ValidationError):
                projector.apply([msgspec.structs.replace(envelopes[2], position=5)])
            with pytest.raises(ValidationError):
                projector.apply([envelopes[2], msgspec.structs.replace(envelopes[2], position=6)])
            assert projector.position == 2
            projector.apply(envelopes)
            assert projector.position == 3
            assert one(projector.reader(), "SELECT count(*) AS n FROM executions") == {"n": 1}


class TestFailures:
    def test_a_failed_commit_changes_nothing_and_the_retry_is_exact(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A commit that fails midway rolls back: checkpoint and rows as before; the next
        catch-up applies the batch once."""
        store = synthetic_store(1_500, seed=9)
        path = tmp_path / "p.duckdb"
        projector = Projector(store, path, batch_size=400, cache_rows=50)
        calls = {"n": 0}
        original = writer.commit

        class FailsAtCheckpoint:
            """The connection, except that moving the checkpoint fails: by then the batch's
            deletes and inserts have run inside the transaction."""

            def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
                self._conn = conn

            def __getattr__(self, name: str) -> object:
                return getattr(self._conn, name)

            def execute(self, sql: str, params: object = None) -> object:
                if sql.startswith("UPDATE projection_meta"):
                    raise duckdb.IOException("disk on fire")
                return self._conn.execute(sql, params)

        def flaky(
            conn: duckdb.DuckDBPyConnection,
            batch: writer.PreparedBatch,
            db_path: Path | None = None,
        ) -> None:
            calls["n"] += 1
            target = FailsAtCheckpoint(conn) if calls["n"] == 3 else conn
            original(target, batch, db_path)  # type: ignore[arg-type]

        monkeypatch.setattr(writer, "commit", flaky)
        with pytest.raises(StorageError):
            projector.catch_up()
        assert projector.position == 800
        assert meta(projector.reader())[0] == 800
        assert one(projector.reader(), "SELECT max(position) AS p FROM events") == {"p": 800}
        assert projector.catch_up() == 700
        incremental = table_contents(projector.reader())
        projector.close()
        with Projector(store, tmp_path / "fresh.duckdb") as fresh:
            fresh.rebuild()
            assert table_contents(fresh.reader()) == incremental

    def test_a_failed_live_commit_leaves_no_board_ahead_of_duckdb(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The board got the live batch before its commit failed: it is unloaded then, so
        no reader is answered from rows DuckDB never got; the next read after the retry
        loads it again."""
        store = store_with(scheduled("a"))
        projector = Projector(store, tmp_path / "p.duckdb")
        assert projector.catch_up() == 1
        assert projector.get_task_if_ready("a")[0]
        original = writer.commit

        def failing(
            conn: duckdb.DuckDBPyConnection,
            batch: writer.PreparedBatch,
            db_path: Path | None = None,
        ) -> None:
            raise duckdb.IOException("disk on fire")

        monkeypatch.setattr(writer, "commit", failing)
        append_all(store, [started("a", 1)])
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                projector.run_until_stopped(threading.Event(), 5.0)
            except StorageError as exc:
                errors.append(exc)

        thread = threading.Thread(target=follow)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive() and len(errors) == 1
        assert (projector.position, projector.board_position) == (1, 1)
        assert projector.get_task_if_ready("a") == (False, None)
        monkeypatch.setattr(writer, "commit", original)
        assert projector.catch_up() == 1
        row = projector.get_task("a")
        assert row is not None and row.status == "running"
        projector.close()

    def test_a_closed_projector_refuses_work(self, tmp_path: Path) -> None:
        """After close, every method raises StoreClosedError; close is idempotent."""
        projector = Projector(store_with(scheduled("a")), tmp_path / "p.duckdb")
        projector.close()
        projector.close()
        for call in (projector.catch_up, projector.rebuild, projector.reader):
            with pytest.raises(StoreClosedError):
                call()

    def test_bad_arguments(self, tmp_path: Path) -> None:
        """Batch sizes below one are refused before anything is opened."""
        with pytest.raises(ValidationError):
            Projector(InMemoryEventStore(), tmp_path / "p.duckdb", batch_size=0)

    def test_an_unusable_path_is_a_storage_error(self, tmp_path: Path) -> None:
        """DuckDB's own errors surface as StorageError."""
        with pytest.raises(StorageError):
            Projector(InMemoryEventStore(), tmp_path / "missing" / "dir" / "p.duckdb")


class TestJsonReader:
    """Large row sets go into DuckDB through its JSON reader (see ``writer``)."""

    def test_a_backlog_projects_under_a_small_duckdb_memory_limit(self, tmp_path: Path) -> None:
        """DuckDB's default memory limit is 80 % of the RAM (or of a container's limit):
        about 1.4 GiB in a 1.8 GB container. A backlog of thousands of events, projected
        through the JSON reader, fits under 1 GiB. (The reader sets aside twice the longest
        line it is told to expect for each file: told 1 GiB, it asked for 2 GiB and every
        rebuild failed there.)"""
        store = store_with(*(scheduled(f"t{i}") for i in range(3 * writer.APPENDER_MAX_ROWS)))
        projector = Projector(store, tmp_path / "p.duckdb")
        try:
            projector.reader().execute("SET memory_limit = '1GB'")
            assert projector.catch_up() == 3 * writer.APPENDER_MAX_ROWS
            count = one(projector.reader(), "SELECT count(*) AS n FROM tasks")
            assert count == {"n": 3 * writer.APPENDER_MAX_ROWS}
        finally:
            projector.close()

    def test_a_line_longer_than_duckdbs_default_goes_in_whole(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A task whose parameters make its row longer than the reader's default longest
        line (16 MiB), among small ones, is projected whole through the JSON reader."""
        monkeypatch.setattr(writer, "APPENDER_MAX_ROWS", 0)
        big = "x" * (writer.DEFAULT_OBJECT_BYTES + 1000)
        events: list[DomainEvent] = [scheduled("small-1")]
        events.append(
            msgspec.structs.replace(
                scheduled("big"), definition=definition(parameters={"blob": big})
            )
        )
        events.append(scheduled("small-2"))
        with project(tmp_path / "p.duckdb", *events) as projector:
            row = one(
                projector.reader(),
                "SELECT length(parameters) AS n FROM tasks WHERE task_id = 'big'",
            )
            assert row["n"] > len(big)
            count = one(projector.reader(), "SELECT count(*) AS n FROM tasks")
            assert count == {"n": 3}

    def test_rows_are_staged_beside_the_database_not_in_a_temporary_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """In a container whose root file system is read-only, no temporary directory is
        usable: a backlog still projects, its rows staged beside the database file, and
        nothing of them is left there."""
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-directory"))
        data = tmp_path / "data"
        data.mkdir()
        count = 2 * writer.APPENDER_MAX_ROWS
        with Projector(
            store_with(*(scheduled(f"t{i}") for i in range(count))), data / "p.duckdb"
        ) as projector:
            assert projector.catch_up() == count
        assert sorted(p.name for p in data.iterdir()) == ["p.duckdb"]

    def test_rows_left_staged_by_a_stopped_process_are_removed_at_open(
        self, tmp_path: Path
    ) -> None:
        """Only the process holding the database stages rows for it, so whatever is left
        beside it at open is a stopped process's; another database's are left alone."""
        leftover = tmp_path / f"{writer.staging_prefix(tmp_path / 'p.duckdb')}x1"
        other = tmp_path / f"{writer.staging_prefix(tmp_path / 'other.duckdb')}x2"
        for directory in (leftover, other):
            directory.mkdir()
            (directory / "tasks.jsonl").write_bytes(b"{}\n")
        Projector(store_with(scheduled("a")), tmp_path / "p.duckdb").close()
        assert not leftover.exists()
        assert other.exists()

    def test_rows_that_cannot_be_staged_are_a_storage_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A full disk while staging: a StorageError saying so, nothing applied, and the
        next catch-up, once there is room, applies everything."""
        count = 2 * writer.APPENDER_MAX_ROWS
        projector = Projector(
            store_with(*(scheduled(f"t{i}") for i in range(count))), tmp_path / "p.duckdb"
        )
        try:
            real = Path.write_bytes

            def full(self: Path, data: bytes) -> int:
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(Path, "write_bytes", full)
            with pytest.raises(StorageError, match="No space left on device"):
                projector.catch_up()
            assert projector.position == 0
            monkeypatch.setattr(Path, "write_bytes", real)
            assert projector.catch_up() == count
        finally:
            projector.close()


@pytest.mark.parametrize(
    ("longest", "expected"),
    [
        (0, writer.DEFAULT_OBJECT_BYTES),
        (writer.DEFAULT_OBJECT_BYTES - 1, writer.DEFAULT_OBJECT_BYTES),
        (writer.DEFAULT_OBJECT_BYTES, 2 * writer.DEFAULT_OBJECT_BYTES),
        (3 * writer.DEFAULT_OBJECT_BYTES, 4 * writer.DEFAULT_OBJECT_BYTES),
    ],
)
def test_the_reader_expects_the_batchs_longest_line(longest: int, expected: int) -> None:
    """DuckDB's default unless a line needs more, then the next power of two above it."""
    assert writer.object_bytes(longest) == expected


def test_the_longest_line_is_measured_once_the_lines_exceed_the_default() -> None:
    limit = writer.DEFAULT_OBJECT_BYTES
    # Under the default size nothing needs to know more than the whole length.
    assert writer._longest_line(b"a\nbb\n") == 5
    many = b"x" * 10 + b"\n" + b"y" * (limit + 5) + b"\n" + b"z" * 3
    assert writer._longest_line(many) == limit + 5
    assert writer._longest_line(b"q" * (limit + 1)) == limit + 1


def test_a_database_path_that_is_not_unicode_is_refused(tmp_path: Path) -> None:
    """A file name with undecodable bytes (Linux allows any): a StorageError saying so,
    where DuckDB raised a bare "std::bad_cast"."""
    path = tmp_path / os.fsdecode(b"bad\xffname") / "p.duckdb"
    with pytest.raises(StorageError, match="not valid Unicode"):
        Projector(store_with(scheduled("a")), path)


def test_a_database_path_with_a_question_mark_is_refused(tmp_path: Path) -> None:
    """DuckDB reads "file?option" and would put its WAL at "file.wal?option": refused
    with a StorageError saying why, and nothing is created."""
    with pytest.raises(StorageError, match="'\\?' in its path"):
        Projector(store_with(scheduled("a")), tmp_path / "why?" / "p.duckdb")
    assert list(tmp_path.iterdir()) == []


class TestSqliteLog:
    def test_projects_a_sqlite_log_opened_read_only(self, tmp_path: Path) -> None:
        """The projector reads through the store contract, whatever the backend."""
        writer_store = SQLiteEventStore(tmp_path / "data", synchronous="OFF")
        try:
            append_all(writer_store, [scheduled("a", first_fire=at(3)), started("a", 1)])
            reader_store = SQLiteEventStore(tmp_path / "data", read_only=True)
            with Projector(reader_store, tmp_path / "p.duckdb") as projector:
                assert projector.catch_up() == 2
                row = one(projector.reader(), "SELECT status, next_fire FROM tasks")
                assert row == {"status": "running", "next_fire": at(3)}
            reader_store.close()
        finally:
            writer_store.close()
