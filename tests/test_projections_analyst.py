"""Analyst access: read-only SQL, snapshot exports, and private rebuilds from another process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from test_projections_helpers import scheduled, started, store_with, table_contents

from chronolog.errors import ConflictError, RequestTimeoutError, ValidationError
from chronolog.projections import Projector, analyst, export, read_only_sql
from chronolog.projections.schema import TABLES
from chronolog.projections.synthetic import synthetic_log
from chronolog.store import InMemoryEventStore, SQLiteEventStore


@pytest.fixture
def projector(tmp_path: Path) -> Iterator[Projector]:
    store = store_with(scheduled("a"), scheduled("b"), started("a", 1))
    with Projector(store, tmp_path / "live.duckdb") as projector:
        projector.catch_up()
        yield projector


def synthetic_store(events: int) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for append in synthetic_log(events=events, tasks=50, cleanups=2, seed=11):
        store.append(append.stream_id, append.events, metadata=append.metadata)
    return store


class TestReadOnlySql:
    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT status, count(*) FROM tasks GROUP BY status",
            "WITH running AS (SELECT * FROM tasks WHERE status = 'running') SELECT * FROM running",
            "FROM executions",
            "DESCRIBE tasks",
            "SHOW TABLES",
            "SUMMARIZE executions",
            "EXPLAIN SELECT * FROM tasks",
            "PRAGMA table_info('tasks')",
            "SELECT * FROM information_schema.columns WHERE table_name = 'tasks'",
            "SELECT range FROM range(3)",
            "select payload->>'task_id' from events -- comment with DELETE",
        ],
    )
    def test_reading_statements_run(self, projector: Projector, sql: str) -> None:
        """SELECT in its forms, EXPLAIN, DESCRIBE, SHOW and descriptive PRAGMAs are allowed."""
        result = read_only_sql(projector.reader(), sql)
        assert result.columns and not result.truncated

    @pytest.mark.parametrize(
        "sql",
        [
            "DELETE FROM tasks",
            "UPDATE tasks SET status = 'x'",
            "INSERT INTO tasks SELECT * FROM tasks",
            "CREATE TABLE x AS SELECT 1",
            "DROP TABLE tasks",
            "ALTER TABLE tasks ADD COLUMN x INT",
            "ATTACH 'other.duckdb'",
            "COPY tasks TO 'out.csv'",
            "EXPORT DATABASE 'dump'",
            "SET threads = 1",
            "CHECKPOINT",
            "PRAGMA enable_profiling",
            "EXPLAIN ANALYZE DELETE FROM tasks",
            "SELECT 1; DELETE FROM tasks",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_text('/etc/hostname')",
            "FROM '/etc/passwd'",
            "SELECT count(*) FROM glob('/*')",
            "SELECT * FROM tasks WHERE task_id IN (SELECT * FROM read_text('x'))",
            "SELECT * FROM query('DELETE FROM tasks')",
            "",
        ],
    )
    def test_anything_else_is_refused(self, projector: Projector, sql: str) -> None:
        """Writes, settings, other files and several statements are refused unrun."""
        with pytest.raises(ValidationError):
            read_only_sql(projector.reader(), sql)
        assert projector.reader().execute("SELECT count(*) FROM tasks").fetchone() == (2,)

    def test_a_write_that_slipped_through_is_rolled_back(
        self, projector: Projector, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Even with the statement check disabled, the transaction is rolled back."""
        monkeypatch.setattr(analyst, "check_read_only", lambda conn, sql: None)
        read_only_sql(projector.reader(), "CREATE TABLE sneaky AS SELECT 1 AS x")
        tables = projector.reader().execute("SELECT table_name FROM duckdb_tables()").fetchall()
        assert ("sneaky",) not in tables

    def test_parameters_and_row_limit(self, projector: Projector) -> None:
        """Parameters bind; rows beyond max_rows are cut and flagged."""
        result = read_only_sql(
            projector.reader(), "SELECT task_id FROM tasks WHERE status = ?", ["running"]
        )
        assert result == (["task_id"], [("a",)], False)
        capped = read_only_sql(projector.reader(), "SELECT * FROM range(10)", max_rows=3)
        assert (len(capped.rows), capped.truncated) == (3, True)

    def test_errors_and_timeouts(self, projector: Projector) -> None:
        """DuckDB errors are ValidationErrors; a query past its timeout is interrupted."""
        with pytest.raises(ValidationError, match="no_such_column"):
            read_only_sql(projector.reader(), "SELECT no_such_column FROM tasks")
        with pytest.raises(RequestTimeoutError):
            read_only_sql(
                projector.reader(),
                "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3",
                timeout=0.2,
            )


class TestExport:
    def test_duckdb_snapshot_is_consistent_while_projecting(self, tmp_path: Path) -> None:
        """A snapshot taken during a catch-up has whole batches: checkpoint == events mirrored."""
        store = synthetic_store(6_000)
        with Projector(store, tmp_path / "live.duckdb", batch_size=300) as projector:
            worker = threading.Thread(target=projector.catch_up)
            worker.start()
            snapshots = []
            for k in range(3):
                snapshots.append(export(projector.reader(), tmp_path / f"snap{k}.duckdb"))
            worker.join()
        for path in snapshots:
            conn = duckdb.connect(str(path), read_only=True)
            position = conn.execute("SELECT position FROM projection_meta").fetchone()
            events = conn.execute("SELECT count(*), coalesce(max(position), 0) FROM events")
            assert position is not None and events.fetchone() == (position[0], position[0])
            tables = {row[0] for row in conn.execute("SHOW TABLES").fetchall()}
            assert tables == set(TABLES)
            conn.close()
        assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    def test_duckdb_export_replaces_an_older_snapshot(
        self, projector: Projector, tmp_path: Path
    ) -> None:
        """Exporting over an existing file swaps it whole."""
        target = tmp_path / "snap.duckdb"
        target.write_bytes(b"old")
        export(projector.reader(), target)
        conn = duckdb.connect(str(target), read_only=True)
        assert table_contents(conn) == table_contents(projector.reader())
        conn.close()

    def test_parquet_export_has_one_file_per_table(
        self, projector: Projector, tmp_path: Path
    ) -> None:
        """The Parquet snapshot is a directory of <table>.parquet files."""
        target = export(projector.reader(), tmp_path / "snap", "parquet")
        assert sorted(p.name for p in target.iterdir()) == sorted(f"{t}.parquet" for t in TABLES)
        conn = duckdb.connect()
        count = conn.execute(
            "SELECT count(*) FROM read_parquet(?)", [str(target / "tasks.parquet")]
        )
        assert count.fetchone() == (2,)
        with pytest.raises(ConflictError):
            export(projector.reader(), target, "parquet")

    def test_bad_targets(self, projector: Projector, tmp_path: Path) -> None:
        """Unknown formats and missing directories are refused, leaving nothing behind."""
        with pytest.raises(ValidationError):
            export(projector.reader(), tmp_path / "x", "csv")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            export(projector.reader(), tmp_path / "missing" / "x.duckdb")
        assert sorted(os.listdir(tmp_path)) == ["live.duckdb", "live.duckdb.wal"] or sorted(
            os.listdir(tmp_path)
        ) == ["live.duckdb"]


class TestRebuildPrivate:
    def test_rebuild_in_another_process_while_the_scheduler_writes(self, tmp_path: Path) -> None:
        """With the writing store open here, a subprocess builds an identical private file."""
        data = tmp_path / "data"
        live = SQLiteEventStore(data, synchronous="OFF")
        try:
            for append in synthetic_log(events=3_000, tasks=30, cleanups=2, seed=4):
                live.append(append.stream_id, append.events, metadata=append.metadata)
            with Projector(live, tmp_path / "live.duckdb") as projector:
                projector.catch_up()
                out = tmp_path / "mine.duckdb"
                command = [sys.executable, "-m", "chronolog.projections.analyst", "rebuild"]
                done = subprocess.run(
                    [*command, str(data), str(out)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert done.returncode == 0, done.stderr
                assert "log position 3000" in done.stdout
                private = duckdb.connect(str(out), read_only=True)
                assert table_contents(private) == table_contents(projector.reader())
                private.close()
            live.append("task-late", [scheduled("late")])  # the writer is still ours
        finally:
            live.close()
        assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    def test_export_command_on_a_file_nobody_holds(self, tmp_path: Path) -> None:
        """The command line snapshots a closed projection file to Parquet."""
        with Projector(store_with(scheduled("a")), tmp_path / "p.duckdb") as projector:
            projector.catch_up()
        assert (
            analyst.main(
                ["export", str(tmp_path / "p.duckdb"), str(tmp_path / "pq"), "--format", "parquet"]
            )
            == 0
        )
        assert (tmp_path / "pq" / "tasks.parquet").exists()
        assert analyst.main(["rebuild", str(tmp_path / "no-log"), str(tmp_path / "x.duckdb")]) == 1
