"""Each query on a real DuckDB file: filters, sorting, pagination, validation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import duckdb
import pytest
from test_projections_helpers import (
    at,
    cancelled,
    completed,
    failed,
    late,
    next_fire,
    paused,
    registered,
    retry,
    run_completed,
    run_failed,
    run_started,
    scheduled,
    skipped,
    started,
    store_with,
    succeeded,
    timed_out,
)

from chronolog.errors import NotFoundError, ValidationError
from chronolog.projections import Projector, queries


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """Five tasks with varied histories and two cleanup registrations, projected to disk."""
    events = [
        scheduled("alpha", first_fire=at(10), name="alpha", function_name="mail.send"),
        scheduled("bravo", first_fire=at(5), name="bravo", module_id="sync"),
        scheduled("charlie", first_fire=None, name="charlie", recurring=False),
        scheduled("delta", first_fire=at(1), name="delta", function_name="mail.send"),
        scheduled("echo", first_fire=at(2), name="echo", module_id=None),
    ]
    # alpha: three successes of 1, 2 and 4 seconds, a failure, a timeout with a late result.
    for n, duration in enumerate((1.0, 2.0, 4.0), start=1):
        events += [started("alpha", n, nominal=at(n)), succeeded("alpha", n, duration=duration)]
    events += [started("alpha", 4, nominal=at(4)), failed("alpha", 4, duration=8.0)]
    events += [retry("alpha", 4, nominal=at(4)), started("alpha", 5, nominal=at(4), attempt=2)]
    events += [timed_out("alpha", 5), late("alpha", 5), next_fire("alpha", at(30))]
    events += [skipped("alpha", at(31), "overlap"), skipped("alpha", at(32), "misfire")]
    events += [skipped("echo", at(40), "misfire", until=at(50), count=11)]
    # bravo: paused by an agent while running
    events += [started("bravo", 1, nominal=at(5)), paused("bravo", note="db migration")]
    # charlie: one-shot that failed and completed; delta: cancelled; echo: running
    events += [started("charlie", 1), failed("charlie", 1), completed("charlie")]
    events += [cancelled("delta"), started("echo", 1, nominal=at(2))]
    events += [
        registered("logs"),
        registered("tmp", module_id=None),
        run_started("logs", "r1"),
        run_completed("logs", "r1", files=3),
        run_started("logs", "r2", dry_run=True),
        run_completed("logs", "r2", files=1, dry_run=True),
        run_started("tmp", "r3"),
        run_failed("tmp", "r3"),
    ]
    path = tmp_path_factory.mktemp("queries") / "p.duckdb"
    projector = Projector(store_with(*events), path)
    projector.catch_up()
    cursor = projector.reader()
    yield cursor
    cursor.close()
    projector.close()


class TestListTasks:
    def test_defaults_sort_by_creation(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Without arguments: every task, oldest first, total counted."""
        page = queries.list_tasks(conn)
        assert [t.task_id for t in page.items] == ["alpha", "bravo", "charlie", "delta", "echo"]
        assert (page.total, page.limit, page.offset, page.has_more) == (5, 100, 0, False)

    def test_status_filters(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Each status selects the tasks in it."""
        by_status = {
            status: [t.task_id for t in queries.list_tasks(conn, status=status).items]
            for status in sorted(queries.TASK_STATUSES)
        }
        assert by_status == {
            "cancelled": ["delta"],
            "completed": [],
            "failed": ["charlie"],
            "paused": [],
            "running": ["bravo", "echo"],
            "scheduled": ["alpha"],
        }

    def test_combined_filters(self, conn: duckdb.DuckDBPyConnection) -> None:
        """module, function and recurring filters combine with AND."""
        page = queries.list_tasks(conn, function_name="mail.send", module_id="billing")
        assert [t.task_id for t in page.items] == ["alpha", "delta"]
        assert queries.list_tasks(conn, recurring=False).total == 1
        assert queries.list_tasks(conn, module_id="nowhere").items == ()
        assert queries.list_tasks(conn, module_id="nowhere").total == 0

    def test_sorting_puts_nulls_last_both_ways(self, conn: duckdb.DuckDBPyConnection) -> None:
        """next_fire ascending and descending; tasks without one come last either way."""
        ascending = [t.task_id for t in queries.list_tasks(conn, sort="next_fire").items]
        assert ascending == ["echo", "alpha", "bravo", "charlie", "delta"]
        descending = [
            t.task_id for t in queries.list_tasks(conn, sort="next_fire", descending=True).items
        ]
        assert descending == ["alpha", "echo", "delta", "charlie", "bravo"]
        by_name = [t.name for t in queries.list_tasks(conn, sort="name", descending=True).items]
        assert by_name == ["echo", "delta", "charlie", "bravo", "alpha"]

    def test_pagination_and_past_the_end(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Pages partition the result; a page past the end is empty but keeps the total."""
        first = queries.list_tasks(conn, limit=2)
        second = queries.list_tasks(conn, limit=2, offset=2)
        last = queries.list_tasks(conn, limit=2, offset=4)
        ids = [t.task_id for page in (first, second, last) for t in page.items]
        assert ids == ["alpha", "bravo", "charlie", "delta", "echo"]
        assert first.has_more and not last.has_more
        beyond = queries.list_tasks(conn, limit=2, offset=50)
        assert (beyond.items, beyond.total) == ((), 5)

    def test_rows_carry_decoded_json(self, conn: duckdb.DuckDBPyConnection) -> None:
        """trigger, parameters and policies come back as dicts."""
        alpha = queries.list_tasks(conn, limit=1).items[0]
        assert alpha.trigger is not None and alpha.trigger["kind"] == "interval"
        assert alpha.parameters == {"n": 1}
        assert alpha.policies is not None and alpha.policies["overlap"] == "skip"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"status": "sleeping"},
            {"sort": "task_id; DROP TABLE tasks"},
            {"limit": 0},
            {"limit": 1001},
            {"limit": True},
            {"offset": -1},
            {"recurring": "yes"},
            {"module_id": ""},
        ],
    )
    def test_bad_arguments_are_refused(
        self, conn: duckdb.DuckDBPyConnection, kwargs: dict[str, object]
    ) -> None:
        """Out-of-range or unknown arguments raise ValidationError before any SQL runs."""
        with pytest.raises(ValidationError):
            queries.list_tasks(conn, **kwargs)  # type: ignore[arg-type]


class TestGetTask:
    def test_found_and_missing(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A known task comes back whole; an unknown one is None."""
        bravo = queries.get_task(conn, "bravo")
        assert bravo is not None
        assert (bravo.status, bravo.pause_note, bravo.paused_by) == (
            "running",
            "db migration",
            "agent:ops",
        )
        assert queries.get_task(conn, "zulu") is None


class TestExecutions:
    def test_newest_first_for_one_task(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A task's executions by nominal time, newest first; retries after their original."""
        page = queries.list_executions(conn, task_id="alpha")
        ids = [e.execution_id for e in page.items]
        assert ids == ["alpha-x5", "alpha-x4", "alpha-x3", "alpha-x2", "alpha-x1"]
        assert page.total == 5
        timed = page.items[0]
        assert (timed.status, timed.late_outcome, timed.late_result) == (
            "timed_out",
            "succeeded",
            42,
        )
        assert page.items[2].result == {"rows": 3}

    def test_status_and_time_window(self, conn: duckdb.DuckDBPyConnection) -> None:
        """status filters; since is inclusive and until exclusive on the nominal time."""
        assert queries.list_executions(conn, status="failed").total == 2
        window = queries.list_executions(conn, task_id="alpha", since=at(2), until=at(4))
        assert [e.execution_id for e in window.items] == ["alpha-x3", "alpha-x2"]
        nothing = queries.list_executions(conn, since=at(1000))
        assert (nothing.items, nothing.total) == ((), 0)

    def test_pagination_past_the_end(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Offsets past the last row give an empty page with the right total."""
        page = queries.list_executions(conn, task_id="alpha", limit=2, offset=4)
        assert [e.execution_id for e in page.items] == ["alpha-x1"]
        beyond = queries.list_executions(conn, task_id="alpha", limit=2, offset=10)
        assert (beyond.items, beyond.total) == ((), 5)

    def test_get_execution(self, conn: duckdb.DuckDBPyConnection) -> None:
        """One execution by id, or None."""
        execution = queries.get_execution(conn, "alpha-x4")
        assert execution is not None and execution.retry_at is not None
        assert queries.get_execution(conn, "nope") is None

    def test_bad_windows_are_refused(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Naive datetimes and reversed windows raise ValidationError."""
        with pytest.raises(ValidationError):
            queries.list_executions(conn, since=datetime(2024, 1, 1))
        with pytest.raises(ValidationError):
            queries.list_executions(conn, since=at(5), until=at(1))
        with pytest.raises(ValidationError):
            queries.list_executions(conn, status="exploded")

    def test_skips(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Skipped nominal times with reasons, newest first, filterable by task and time."""
        page = queries.list_skips(conn, task_id="alpha")
        assert [(s.nominal_time, s.reason) for s in page.items] == [
            (at(32), "misfire"),
            (at(31), "overlap"),
        ]
        assert queries.list_skips(conn, task_id="bravo").total == 0
        assert queries.list_skips(conn, until=at(31) + timedelta(seconds=1)).total == 1

    def test_a_skipped_gap_is_found_by_any_time_inside_it(
        self, conn: duckdb.DuckDBPyConnection
    ) -> None:
        """A row summarising a gap (at(40) to at(50)) is in every window that overlaps it."""
        [gap] = queries.list_skips(conn, task_id="echo").items
        assert (gap.nominal_time, gap.until, gap.count) == (at(40), at(50), 11)
        assert queries.list_skips(conn, task_id="echo", since=at(45), until=at(46)).total == 1
        assert queries.list_skips(conn, task_id="echo", since=at(50)).total == 1
        assert queries.list_skips(conn, task_id="echo", since=at(51)).total == 0
        assert queries.list_skips(conn, task_id="echo", until=at(40)).total == 0


class TestStats:
    def test_counts_rate_and_percentiles(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Three successes out of five outcomes; durations 1, 2, 4, 8, 30 seconds."""
        stats = queries.task_stats(conn, "alpha")
        assert (stats.runs, stats.successes, stats.failures) == (5, 3, 2)
        assert (stats.failed, stats.timed_out, stats.skipped, stats.running) == (1, 1, 2, 0)
        assert stats.success_rate == pytest.approx(0.6)
        assert stats.duration_p50 == pytest.approx(4.0)
        assert stats.duration_p95 == pytest.approx(8.0 + 0.8 * 22.0)
        assert stats.duration_max == 30.0

    def test_a_task_without_runs(self, conn: duckdb.DuckDBPyConnection) -> None:
        """No executions: zeros and no rate."""
        stats = queries.task_stats(conn, "delta")
        assert (stats.runs, stats.success_rate, stats.duration_p50) == (0, None, None)

    def test_unknown_task(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Stats of a task the projection lacks: NotFoundError."""
        with pytest.raises(NotFoundError):
            queries.task_stats(conn, "zulu")


class TestExplain:
    def test_every_decision_in_order_with_a_sentence(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Scheduling, fires, outcomes, retries, skips and their reasons, in log order."""
        decisions = queries.explain(conn, "alpha")
        kinds = [d.kind for d in decisions]
        assert kinds[:3] == ["scheduled", "fired", "succeeded"]
        assert kinds.count("fired") == 5
        assert "retry" in kinds and "late_result" in kinds and "next_fire" in kinds
        assert [d.position for d in decisions] == sorted(d.position for d in decisions)
        skip = [d for d in decisions if d.kind == "skipped"]
        assert "previous execution was still running" in skip[0].sentence
        assert "grace window" in skip[1].sentence
        failure = next(d for d in decisions if d.kind == "failed")
        assert failure.execution_id == "alpha-x4"
        assert "ValueError: bad input" in failure.sentence

    def test_who_paused_and_why(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A pause names who paused and the note."""
        pause = [d for d in queries.explain(conn, "bravo") if d.kind == "paused"]
        assert pause[0].sentence == "Paused by agent:ops: db migration."

    def test_completion_and_cancellation(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Terminal decisions say why the task ended."""
        assert queries.explain(conn, "charlie")[-1].sentence == "Completed: its one run is done."
        assert queries.explain(conn, "delta")[-1].kind == "cancelled"

    def test_a_skipped_gap_says_how_many_fires_and_when(
        self, conn: duckdb.DuckDBPyConnection
    ) -> None:
        """One event for a long gap is one sentence with its count and its span."""
        [gap] = [d for d in queries.explain(conn, "echo") if d.kind == "skipped"]
        assert gap.sentence.startswith("Skipped 11 fires, from ")
        assert "grace window" in gap.sentence
        assert gap.nominal_time == at(40)

    def test_unknown_task_has_no_decisions(self, conn: duckdb.DuckDBPyConnection) -> None:
        """explain of an unknown task is empty (the facade turns that into not found)."""
        assert queries.explain(conn, "zulu") == []


class TestCleanups:
    def test_registrations(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Active registrations by priority then id, with their last run."""
        rows = queries.list_cleanups(conn)
        assert [(r.registration_id, r.last_run_status) for r in rows] == [
            ("logs", "completed"),
            ("tmp", "failed"),
        ]
        assert rows[0].rules is not None and rows[0].rules["pattern"] == "*.log"
        assert [r.registration_id for r in queries.list_cleanups(conn, module_id="logs")] == [
            "logs"
        ]
        assert queries.list_cleanups(conn, module_id="nobody") == []

    def test_runs(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Runs newest first, filtered by registration, status and dry run."""
        assert queries.list_cleanup_runs(conn).total == 3
        dry = queries.list_cleanup_runs(conn, dry_run=True)
        assert [r.run_id for r in dry.items] == ["r2"]
        failed_runs = queries.list_cleanup_runs(conn, registration_id="tmp", status="failed")
        assert [r.error_type for r in failed_runs.items] == ["UnsafePathError"]
        beyond = queries.list_cleanup_runs(conn, offset=3)
        assert (beyond.items, beyond.total) == ((), 3)

    def test_files(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A run's files in the order reported, paginated."""
        page = queries.list_cleanup_files(conn, "r1", limit=2)
        assert [(f.seq, f.path, f.reasons) for f in page.items] == [
            (0, "app.0.log", ("age",)),
            (1, "app.1.log", ("age",)),
        ]
        assert page.total == 3 and page.has_more
        assert queries.list_cleanup_files(conn, "none").total == 0

    def test_position(self, conn: duckdb.DuckDBPyConnection) -> None:
        """projection_position reports the checkpoint."""
        assert (
            queries.projection_position(conn)
            == conn.execute("SELECT max(position) FROM events").fetchone()[0]
        )  # type: ignore[index]
