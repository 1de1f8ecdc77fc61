"""State snapshots: a start that folds from the snapshot file gives exactly the states a fold
of the whole log gives, whatever the cut, and a file that does not belong is never trusted."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog import AppContext, SchedulerModule, Settings
from chronolog.actors.recovery import (
    FINGERPRINT,
    TASK_STREAM_PREFIX,
    FoldedStreams,
    Snapshotter,
    fold_log,
    load_snapshot,
    task_state,
)
from chronolog.actors.runtime import Runtime
from chronolog.functions import FunctionRegistry
from chronolog.projections.synthetic import synthetic_log
from chronolog.store import InMemoryEventStore
from chronolog.store.snapshots import (
    SNAPSHOTS_FILENAME,
    Anchor,
    SnapshotFile,
    StateRow,
    open_snapshots,
)
from chronolog.testing import FakeClock


def _log(events: int, tasks: int = 20, seed: int = 0) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for append in synthetic_log(events=events, tasks=tasks, cleanups=2, seed=seed):
        store.append(append.stream_id, append.events, metadata=append.metadata)
    return store


def _whole(store: InMemoryEventStore) -> FoldedStreams:
    folded = FoldedStreams()
    fold_log(store, folded)
    return folded


def _all_streams(folded: FoldedStreams) -> list[str]:
    return [TASK_STREAM_PREFIX + t for t in folded.tasks] + [
        f"cleanup-{c}" for c in folded.cleanups
    ]


def _save_at(snapshots: SnapshotFile, store: InMemoryEventStore, cut: int) -> FoldedStreams:
    """Fold the log up to ``cut`` and save every state, as of ``cut``."""
    folded = FoldedStreams()
    anchor = fold_log(store, folded, until=cut)
    if anchor is not None:
        snapshots.save(folded.position, anchor, folded.rows(_all_streams(folded)))
    return folded


# Built once: hypothesis draws cuts and pages over these logs.
LOGS = {seed: _log(1_500, seed=seed) for seed in (1, 2)}
WHOLE = {seed: _whole(store) for seed, store in LOGS.items()}


class TestSnapshotFile:
    def test_a_new_file_has_no_position(self, tmp_path: Path) -> None:
        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, "f1")
        try:
            assert snapshots.position() == (0, None)
            assert list(snapshots.rows()) == []
            assert snapshots.row("task-a") is None
        finally:
            snapshots.close()

    def test_saved_rows_and_position_come_back_after_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / SNAPSHOTS_FILENAME
        snapshots = SnapshotFile(path, "f1")
        rows = [StateRow(f"task-{i}", i + 1, str(i).encode()) for i in range(700)]
        snapshots.save(42, Anchor("task-9", 10), rows)
        snapshots.save(50, Anchor("task-1", 3), [StateRow("task-1", 3, b"new")])
        snapshots.close()
        snapshots = SnapshotFile(path, "f1")
        try:
            assert snapshots.position() == (50, Anchor("task-1", 3))
            assert {r.stream_id: r for r in snapshots.rows()}["task-1"] == StateRow(
                "task-1", 3, b"new"
            )
            assert snapshots.row("task-5") == StateRow("task-5", 6, b"5")
            wanted = [f"task-{i}" for i in range(0, 700, 3)] + ["task-none"]
            found = snapshots.rows_for(wanted)
            assert sorted(found) == sorted(wanted[:-1])
        finally:
            snapshots.close()

    def test_another_fingerprint_empties_the_file(self, tmp_path: Path) -> None:
        """States saved for another shape are never decoded as this one's."""
        path = tmp_path / SNAPSHOTS_FILENAME
        snapshots = SnapshotFile(path, "f1")
        snapshots.save(7, Anchor("task-a", 1), [StateRow("task-a", 1, b"x")])
        snapshots.close()
        snapshots = SnapshotFile(path, "f2")
        try:
            assert snapshots.position() == (0, None)
            assert snapshots.row("task-a") is None
        finally:
            snapshots.close()

    def test_a_damaged_file_is_set_aside_and_a_new_one_made(self, tmp_path: Path) -> None:
        path = tmp_path / SNAPSHOTS_FILENAME
        path.write_bytes(b"this is not a database" * 200)
        snapshots = SnapshotFile(path, "f1")
        try:
            assert snapshots.position() == (0, None)
            snapshots.save(3, Anchor("task-a", 1), [StateRow("task-a", 1, b"x")])
            assert snapshots.position()[0] == 3
        finally:
            snapshots.close()
        assert [p.name for p in tmp_path.glob(f"{SNAPSHOTS_FILENAME}.damaged-*")]

    def test_a_file_that_cannot_be_opened_means_no_snapshots(self, tmp_path: Path) -> None:
        """A directory where the file should be: the start goes on without snapshots."""
        (tmp_path / SNAPSHOTS_FILENAME).mkdir()
        assert open_snapshots(tmp_path / SNAPSHOTS_FILENAME, "f1") is None


class TestFoldFromSnapshot:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.sampled_from(sorted(LOGS)), cut=st.integers(0, 1_500), ahead=st.integers(0, 300))
    def test_any_cut_gives_the_states_of_the_whole_fold(
        self, seed: int, cut: int, ahead: int
    ) -> None:
        """Saved at any position, with rows saved ahead of it (a save cut short between a
        page's rows and the next position), load + tail == the whole log's fold; so does
        each task's own fold from its saved state."""
        store = LOGS[seed]
        with tempfile.TemporaryDirectory() as directory:
            snapshots = SnapshotFile(Path(directory) / SNAPSHOTS_FILENAME, FINGERPRINT)
            try:
                folded = _save_at(snapshots, store, cut)
                if ahead and folded.position:
                    touched: set[str] = set()
                    fold_log(store, folded, touched, until=folded.position + ahead)
                    position, anchor = snapshots.position()
                    assert anchor is not None
                    snapshots.save(position, anchor, folded.rows(touched))
                loaded = load_snapshot(snapshots, store)
                assert loaded.position == min(cut, 1_500)
                fold_log(store, loaded, page=97)
                assert loaded.tasks == WHOLE[seed].tasks
                assert loaded.cleanups == WHOLE[seed].cleanups
                for task_id in list(WHOLE[seed].tasks)[:5]:
                    assert task_state(store, snapshots, task_id) == WHOLE[seed].tasks[task_id]
            finally:
                snapshots.close()

    @settings(max_examples=15, deadline=None)
    @given(page=st.integers(1, 400), first=st.integers(0, 1_500))
    def test_the_snapshotter_catches_up_page_by_page(self, page: int, first: int) -> None:
        """From a file saved anywhere, its pages bring it to the log's end, equal to the
        whole fold."""
        store = LOGS[1]
        with tempfile.TemporaryDirectory() as directory:
            snapshots = SnapshotFile(Path(directory) / SNAPSHOTS_FILENAME, FINGERPRINT)
            try:
                _save_at(snapshots, store, first)
                snapshotter = Snapshotter(snapshots, store, page=page)
                snapshotter.position = snapshots.position()[0]
                snapshotter.catch_up(deadline=time.monotonic() + 60)
                assert snapshots.position()[0] == store.last_position()
                loaded = load_snapshot(snapshots, store)
                assert loaded.tasks == WHOLE[1].tasks
                assert loaded.cleanups == WHOLE[1].cleanups
            finally:
                snapshots.close()

    def test_a_start_folds_the_tail_and_a_stop_saves_it(self, tmp_path: Path) -> None:
        """A start from a snapshot behind the log folds the tail; the snapshotter keeps
        what it folded and a stop saves it, so the next start folds nothing."""
        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, FINGERPRINT)
        store = _log(1_500, seed=2)  # its own: the start appends (runs it finds open)
        try:
            _save_at(snapshots, store, 600)
            runtime = Runtime(
                Settings(), store, FunctionRegistry(), fire_timers=False, snapshots=snapshots
            )
            runtime.start()
            assert runtime.recovered_from == 600
            runtime.stop(wait_for_executions=0)
            assert snapshots.position()[0] == store.last_position()
            loaded, whole = load_snapshot(snapshots, store), _whole(store)
            assert loaded.tasks == whole.tasks
            assert loaded.cleanups == whole.cleanups
        finally:
            snapshots.close()

    def test_a_snapshot_of_another_log_is_dropped(self, tmp_path: Path) -> None:
        """Anchored to the event at its position: with another log (a restored backup,
        another directory's log) it is emptied and the whole log is folded."""
        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, FINGERPRINT)
        try:
            _save_at(snapshots, LOGS[1], 1_000)
            loaded = load_snapshot(snapshots, LOGS[2])
            assert loaded.position == 0 and not loaded.tasks
            assert snapshots.position() == (0, None)
            shorter = _log(400, seed=1)
            _save_at(snapshots, LOGS[1], 1_000)
            assert load_snapshot(snapshots, shorter).position == 0
        finally:
            snapshots.close()

    def test_a_row_that_does_not_decode_drops_the_snapshot(self, tmp_path: Path) -> None:
        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, FINGERPRINT)
        try:
            _save_at(snapshots, LOGS[1], 800)
            position, anchor = snapshots.position()
            assert anchor is not None
            stream = next(iter(WHOLE[1].tasks))
            snapshots.save(position, anchor, [StateRow(TASK_STREAM_PREFIX + stream, 1, b"\xc1")])
            assert load_snapshot(snapshots, LOGS[1]).position == 0
        finally:
            snapshots.close()


def _noop() -> None:
    return None


class TestModuleRestart:
    def _start(self, data_dir: Path, clock: FakeClock) -> tuple[SchedulerModule, Any]:
        app = AppContext()
        module = SchedulerModule(Settings(data_dir=str(data_dir)), clock=clock)
        module.register(app)
        service = app.get_service("scheduler_service")
        service.register_function("noop", _noop)
        module.start_blocking()
        return module, service

    def test_a_restart_folds_from_the_snapshot_and_answers_the_same(self, tmp_path: Path) -> None:
        """A stop brings the snapshot up to the log; the next start folds only what came
        after it (nothing), and every task reads the same; without the file, the whole
        log is folded, to the same answers."""
        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        module, service = self._start(tmp_path, clock)
        ids = []
        for i in range(30):
            result = service.sync.schedule_event(
                name=f"t{i}",
                function_name="noop",
                next_execution=clock.now() + timedelta(minutes=10 + i),
                recurring=i % 2 == 0,
                interval_type="hours",
                interval_value=1,
            )
            assert result.ok, result.error
            ids.append(result.value)
        assert service.sync.pause_event(ids[0], note="hold").ok
        assert service.sync.cancel_event(ids[1]).ok
        before = {i: service.sync.get_event(i).value for i in ids}
        last = module.runtime.store.last_position()
        module.stop_blocking()

        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, FINGERPRINT)
        assert snapshots.position()[0] == last
        snapshots.close()

        module, service = self._start(tmp_path, clock)
        try:
            assert module.runtime.recovered_from == last
            assert module.runtime.recovered_tasks == 30
            assert {i: service.sync.get_event(i).value for i in ids} == before
            assert service.sync.resume_event(ids[0]).ok
            after = {i: service.sync.get_event(i).value for i in ids}
        finally:
            module.stop_blocking()
        assert after[ids[0]].status == "scheduled"

        for name in list(tmp_path.glob(f"{SNAPSHOTS_FILENAME}*")):
            name.unlink()
        module, service = self._start(tmp_path, clock)
        try:
            assert module.runtime.recovered_from == 0
            assert {i: service.sync.get_event(i).value for i in ids} == after
        finally:
            module.stop_blocking()

    def test_the_snapshotter_saves_while_the_scheduler_runs(self, tmp_path: Path) -> None:
        """Once the log is ``every_events`` past the file, the snapshotter's thread folds
        the new events in, without a stop."""
        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        store = InMemoryEventStore(clock=clock)
        snapshots = SnapshotFile(tmp_path / SNAPSHOTS_FILENAME, FINGERPRINT)
        runtime = Runtime(
            Settings(),
            store,
            FunctionRegistry(),
            clock=clock,
            fire_timers=False,
            snapshots=snapshots,
            snapshot_options={"every_events": 50, "check_seconds": 0.01, "page": 16},
        )
        runtime.start()
        try:
            for append in synthetic_log(events=400, tasks=10, cleanups=1, seed=5):
                store.append(append.stream_id, append.events, metadata=append.metadata)
            deadline = time.monotonic() + 10
            while snapshots.position()[0] < 350 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert snapshots.position()[0] >= 350
        finally:
            runtime.stop(wait_for_executions=0)
        assert snapshots.position()[0] == store.last_position()
        loaded = load_snapshot(snapshots, store)
        assert loaded.tasks == _whole(store).tasks
        snapshots.close()
