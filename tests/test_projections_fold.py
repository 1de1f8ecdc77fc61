"""What the projection tables say after given event sequences (real DuckDB files)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from test_projections_helpers import (
    T0,
    at,
    cancelled,
    completed,
    definition,
    execution_cancelled,
    execution_id,
    failed,
    interrupted,
    late,
    next_fire,
    one,
    paused,
    project,
    registered,
    resumed,
    retry,
    run_completed,
    run_failed,
    run_started,
    scheduled,
    skipped,
    started,
    succeeded,
    timed_out,
    unregistered,
    updated,
)

from chronolog.events import Cause, EventMetadata, TaskDefinition
from chronolog.projections import Projector
from chronolog.projections.apply import ROW_TYPES, TaskState
from chronolog.projections.schema import TABLES, column_names
from chronolog.store import InMemoryEventStore


def task_row(projector: Projector, task_id: str = "a") -> dict[str, object]:
    return one(projector.reader(), "SELECT * FROM tasks WHERE task_id = ?", [task_id])


def execution_row(projector: Projector, task_id: str = "a", n: int = 1) -> dict[str, object]:
    return one(
        projector.reader(),
        "SELECT * FROM executions WHERE execution_id = ?",
        [execution_id(task_id, n)],
    )


class TestSchema:
    def test_row_structs_match_the_table_columns(self) -> None:
        """Each fold row type has exactly its table's columns, in order (rows go in by name)."""
        for table, row_type in ROW_TYPES.items():
            assert row_type.__struct_fields__ == column_names(table), table

    def test_every_table_but_the_meta_table_has_a_row_type(self) -> None:
        """Nothing the projector writes is left without a declared shape."""
        assert set(ROW_TYPES) == set(TABLES) - {"projection_meta"}


class TestTaskStatus:
    def test_a_new_task_is_scheduled_with_its_definition(self, tmp_path: Path) -> None:
        """TaskScheduled creates the row: definition columns, first fire, creation time."""
        p = project(tmp_path / "p.duckdb", scheduled("a", first_fire=at(5)))
        row = task_row(p)
        assert row["status"] == "scheduled"
        assert row["name"] == "report"
        assert row["function_name"] == "reports.build"
        assert row["module_id"] == "billing"
        assert row["trigger_kind"] == "interval"
        assert row["timezone"] == "Europe/Berlin"
        assert msgspec.json.decode(row["parameters"]) == {"n": 1}
        assert msgspec.json.decode(row["trigger"])["every"] == 5
        assert row["next_fire"] == at(5)
        assert row["created_at"] == row["updated_at"]
        assert row["version"] == 1
        assert row["runs"] == 0

    def test_running_while_an_execution_is_open_then_back_to_scheduled(
        self, tmp_path: Path
    ) -> None:
        """ExecutionStarted makes the task running; its outcome makes it scheduled again."""
        p = project(tmp_path / "p.duckdb", scheduled("a"), started("a", 1))
        assert task_row(p)["status"] == "running"
        assert task_row(p)["open_executions"] == 1
        p.close()
        p = project(tmp_path / "q.duckdb", scheduled("a"), started("a", 1), succeeded("a", 1))
        row = task_row(p)
        assert (row["status"], row["open_executions"]) == ("scheduled", 0)

    def test_two_open_executions_keep_it_running_until_both_end(self, tmp_path: Path) -> None:
        """Status is running while *any* execution is open."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            started("a", 1),
            started("a", 2, nominal=at(5)),
            succeeded("a", 1),
        )
        assert task_row(p)["status"] == "running"
        p.close()
        p = project(
            tmp_path / "q.duckdb",
            scheduled("a"),
            started("a", 1),
            started("a", 2, nominal=at(5)),
            succeeded("a", 1),
            failed("a", 2),
        )
        assert task_row(p)["status"] == "scheduled"

    def test_paused_while_running_shows_running_then_paused(self, tmp_path: Path) -> None:
        """A pause during an execution takes effect in the status once it finishes."""
        events = [scheduled("a"), started("a", 1), paused("a")]
        p = project(tmp_path / "p.duckdb", *events)
        row = task_row(p)
        assert (row["status"], row["next_fire"]) == ("running", None)
        assert row["pause_note"] == "maintenance"
        assert row["paused_by"] == "agent:ops"
        p.close()
        p = project(tmp_path / "q.duckdb", *events, succeeded("a", 1))
        assert task_row(p)["status"] == "paused"

    def test_next_fire_is_null_while_paused_and_set_by_resume(self, tmp_path: Path) -> None:
        """Pausing clears next_fire, decisions while paused do not set it, resuming does."""
        base = [scheduled("a", first_fire=at(5)), paused("a"), next_fire("a", at(10))]
        p = project(tmp_path / "p.duckdb", *base)
        row = task_row(p)
        assert (row["status"], row["next_fire"], row["paused_at"] is not None) == (
            "paused",
            None,
            True,
        )
        p.close()
        p = project(tmp_path / "q.duckdb", *base, resumed("a", at(20)))
        row = task_row(p)
        assert (row["status"], row["next_fire"]) == ("scheduled", at(20))
        assert (row["paused_at"], row["pause_note"], row["paused_by"]) == (None, None, None)

    def test_next_fire_follows_the_latest_decision(self, tmp_path: Path) -> None:
        """first_fire, then NextFireDecided, then TaskUpdated: the latest one wins."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a", first_fire=at(5)),
            next_fire("a", at(10)),
            updated("a", next_fire=at(30)),
        )
        row = task_row(p)
        assert row["next_fire"] == at(30)
        assert row["name"] == "renamed"

    def test_completed_after_success(self, tmp_path: Path) -> None:
        """TaskCompleted after a successful last run: completed, no next fire."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a", recurring=False),
            started("a", 1),
            succeeded("a", 1),
            completed("a"),
        )
        row = task_row(p)
        assert (row["status"], row["next_fire"], row["end_reason"]) == (
            "completed",
            None,
            "one_shot",
        )
        assert row["ended_at"] is not None

    @pytest.mark.parametrize("outcome", [failed, timed_out, interrupted])
    def test_completed_after_a_failure_is_failed(self, tmp_path: Path, outcome: object) -> None:
        """TaskCompleted when the last outcome failed, timed out or was interrupted: failed."""
        assert callable(outcome)
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a", recurring=False),
            started("a", 1),
            outcome("a", 1),
            completed("a", "max_runs"),
        )
        assert task_row(p)["status"] == "failed"

    def test_completed_after_a_cancelled_execution_is_completed(self, tmp_path: Path) -> None:
        """A cancelled execution is not a failure."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            started("a", 1),
            execution_cancelled("a", 1),
            completed("a", "end_date"),
        )
        assert task_row(p)["status"] == "completed"

    def test_cancelled_is_final(self, tmp_path: Path) -> None:
        """After TaskCancelled nothing brings the task back, not even an execution start."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            cancelled("a"),
            next_fire("a", at(10)),
            resumed("a", at(20)),
            started("a", 1),
        )
        row = task_row(p)
        assert (row["status"], row["next_fire"], row["end_reason"]) == (
            "cancelled",
            None,
            "cancelled",
        )


class TestSharedText:
    def test_repeating_columns_share_one_string_across_tasks(self) -> None:
        """The projector keeps tens of thousands of task states in memory: a function name,
        trigger, zone or policies text that many tasks repeat is held once, not once per
        task (each decoded event brings its own copy)."""
        encoded = msgspec.msgpack.encode(definition(parameters={"mode": "full"}))
        states = []
        for task_id in ("a", "b"):
            state = TaskState(task_id=task_id)
            state.define(msgspec.msgpack.decode(encoded, type=TaskDefinition), True)
            states.append(state)
        first, second = states
        shared = ("function_name", "module_id", "trigger", "timezone", "parameters", "policies")
        for column in shared:
            assert getattr(first, column) == getattr(second, column) is not None
            assert getattr(first, column) is getattr(second, column), column
        assert first.name == second.name == "report"


class TestTaskCounters:
    def test_runs_successes_failures_and_skips(self, tmp_path: Path) -> None:
        """runs counts starts; failures count failed, timed out and interrupted; skips count."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            started("a", 1, nominal=at(0)),
            succeeded("a", 1),
            started("a", 2, nominal=at(5)),
            failed("a", 2),
            retry("a", 2, nominal=at(5)),
            started("a", 3, nominal=at(5), attempt=2, reason="retry"),
            timed_out("a", 3),
            started("a", 4, nominal=at(10)),
            interrupted("a", 4),
            started("a", 5, nominal=at(15)),
            execution_cancelled("a", 5),
            skipped("a", at(20)),
        )
        row = task_row(p)
        assert (row["runs"], row["successes"], row["failures"], row["skips"]) == (5, 1, 3, 1)
        assert row["last_fire"] == at(15)
        assert row["last_outcome"] == "skipped"
        assert row["version"] == 13

    def test_a_repeated_outcome_does_not_count_twice(self, tmp_path: Path) -> None:
        """Counters move on the first finish of an execution only."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            started("a", 1),
            succeeded("a", 1),
            succeeded("a", 1),
        )
        row = task_row(p)
        assert (row["runs"], row["successes"], row["open_executions"]) == (1, 1, 0)

    def test_late_results_change_no_counter(self, tmp_path: Path) -> None:
        """LateResultRecorded is kept on the execution but the task's outcome stays timed_out."""
        p = project(
            tmp_path / "p.duckdb", scheduled("a"), started("a", 1), timed_out("a", 1), late("a", 1)
        )
        row = task_row(p)
        assert (row["last_outcome"], row["successes"], row["failures"]) == ("timed_out", 0, 1)


class TestExecutions:
    def test_one_row_per_execution_with_its_life(self, tmp_path: Path) -> None:
        """Start and outcome land on one row: times, duration, attempt, result."""
        p = project(
            tmp_path / "p.duckdb", scheduled("a"), started("a", 1, nominal=at(5)), succeeded("a", 1)
        )
        row = execution_row(p)
        assert row["status"] == "succeeded"
        assert row["nominal_time"] == at(5)
        assert row["started_at"] <= row["finished_at"]
        assert row["duration_seconds"] == 1.5
        assert (row["attempt"], row["reason"]) == (1, "schedule")
        assert msgspec.json.decode(row["result"]) == {"rows": 1}
        assert row["idempotency_key"] == f"a:{at(5).isoformat()}"

    def test_failure_with_retry(self, tmp_path: Path) -> None:
        """A failed execution records its error and when the retry is due."""
        p = project(
            tmp_path / "p.duckdb", scheduled("a"), started("a", 1), failed("a", 1), retry("a", 1)
        )
        row = execution_row(p)
        assert (row["status"], row["error_type"], row["error_message"]) == (
            "failed",
            "ValueError",
            "bad input",
        )
        assert row["traceback"] == "Traceback ..."
        assert row["retry_at"] == T0 + timedelta(seconds=10)

    def test_timeout_then_late_result(self, tmp_path: Path) -> None:
        """Time-outs say so in the error columns; a late result fills the late_* columns."""
        p = project(
            tmp_path / "p.duckdb", scheduled("a"), started("a", 1), timed_out("a", 1), late("a", 1)
        )
        row = execution_row(p)
        assert (row["status"], row["error_type"]) == ("timed_out", "TimeoutError")
        assert (row["late_outcome"], row["late_duration_seconds"]) == ("succeeded", 45.0)
        assert msgspec.json.decode(row["late_result"]) == 42

    def test_cancelled_and_interrupted(self, tmp_path: Path) -> None:
        """Cancellation keeps its reason; an interruption has no duration."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            started("a", 1),
            execution_cancelled("a", 1),
            started("a", 2),
            interrupted("a", 2),
        )
        first, second = execution_row(p, n=1), execution_row(p, n=2)
        assert (first["status"], first["error_message"]) == ("cancelled", "shutdown")
        assert (second["status"], second["duration_seconds"]) == ("interrupted", None)

    def test_an_outcome_without_a_start_still_gets_a_row(self, tmp_path: Path) -> None:
        """Nothing in the log is dropped, even an outcome whose start is missing."""
        p = project(tmp_path / "p.duckdb", scheduled("a"), succeeded("a", 7))
        row = execution_row(p, n=7)
        assert (row["status"], row["nominal_time"]) == ("succeeded", None)
        assert task_row(p)["successes"] == 1

    def test_skips_have_their_own_rows(self, tmp_path: Path) -> None:
        """Each ExecutionSkipped is a row in skips with its reason and policy."""
        p = project(tmp_path / "p.duckdb", scheduled("a"), skipped("a", at(5), "misfire"))
        row = one(p.reader(), "SELECT * FROM skips")
        assert (row["task_id"], row["nominal_time"], row["reason"], row["policy"]) == (
            "a",
            at(5),
            "misfire",
            "skip",
        )
        assert (row["count"], row["until"]) == (1, None)

    def test_a_gap_summarised_in_one_event_counts_every_skipped_fire(self, tmp_path: Path) -> None:
        """A long gap's one ExecutionSkipped adds its ``count`` to the task's skips, and
        its row spans the gap."""
        p = project(
            tmp_path / "p.duckdb",
            scheduled("a"),
            skipped("a", at(0), "misfire"),
            skipped("a", at(1), "misfire", until=at(60), count=60),
        )
        assert task_row(p)["skips"] == 61
        rows = (
            p.reader()
            .execute("SELECT nominal_time, count, until FROM skips ORDER BY position")
            .fetchall()
        )
        assert rows == [(at(0), 1, None), (at(1), 60, at(60))]


class TestCleanup:
    def test_registration_runs_and_files(self, tmp_path: Path) -> None:
        """Runs land in cleanup_runs, their files in cleanup_files, totals on the registration."""
        p = project(
            tmp_path / "p.duckdb",
            registered("logs"),
            run_started("logs", "r1"),
            run_completed("logs", "r1", files=3),
            run_started("logs", "r2", dry_run=True),
            run_completed("logs", "r2", files=2, dry_run=True),
            run_started("logs", "r3"),
            run_failed("logs", "r3"),
        )
        conn = p.reader()
        reg = one(conn, "SELECT * FROM cleanup_registrations")
        assert (reg["active"], reg["runs"], reg["last_run_status"]) == (True, 3, "failed")
        assert reg["bytes_freed_total"] == 600  # dry runs free nothing
        assert msgspec.json.decode(reg["rules"])["retention_days"] == 7.0
        runs = dict(conn.execute("SELECT run_id, status FROM cleanup_runs").fetchall())
        assert runs == {"r1": "completed", "r2": "completed", "r3": "failed"}
        files = conn.execute(
            "SELECT run_id, seq, path, outcome, reasons FROM cleanup_files ORDER BY run_id, seq"
        ).fetchall()
        assert files[0] == ("r1", 0, "app.0.log", "removed", ["age"])
        assert [f[0] for f in files] == ["r1", "r1", "r1", "r2", "r2"]
        failed_run = one(conn, "SELECT * FROM cleanup_runs WHERE run_id = 'r3'")
        assert (failed_run["error_type"], failed_run["finished_at"] is not None) == (
            "UnsafePathError",
            True,
        )

    def test_unregistering_keeps_the_history(self, tmp_path: Path) -> None:
        """An unregistered registration stays, inactive, with its runs."""
        p = project(
            tmp_path / "p.duckdb",
            registered("logs"),
            run_started("logs", "r1"),
            run_completed("logs", "r1"),
            unregistered("logs"),
        )
        reg = one(p.reader(), "SELECT * FROM cleanup_registrations")
        assert (reg["active"], reg["runs"], reg["unregistered_at"] is not None) == (False, 1, True)


class TestEventsMirror:
    def test_every_event_is_mirrored_with_its_metadata(self, tmp_path: Path) -> None:
        """The events table holds each envelope: position, stream, type, payload, causes."""
        store = InMemoryEventStore()
        meta = EventMetadata(
            correlation_id="req-1", causation_id="cmd-1", caused_by=Cause(kind="http", id="tok")
        )
        store.append("task-a", [scheduled("a"), next_fire("a", at(5))], metadata=meta)
        p = Projector(store, tmp_path / "p.duckdb")
        assert p.catch_up() == 2
        rows = p.reader().execute("SELECT * FROM events ORDER BY position").fetchall()
        assert [r[:5] for r in rows] == [
            (1, "task-a", 1, "TaskScheduled", 1),
            (2, "task-a", 2, "NextFireDecided", 1),
        ]
        assert rows[0][7:] == ("req-1", "cmd-1", "http:tok")
        payload = msgspec.json.decode(rows[1][6])
        assert payload["type"] == "NextFireDecided"
        assert payload["fire_at"] in ("2024-01-01T09:05:00Z", "2024-01-01T09:05:00+00:00")
