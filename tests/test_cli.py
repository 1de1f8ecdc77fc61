"""The command line, run as a subprocess against real data directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from chronolog import AppContext, SchedulerModule, Settings


def chronolog(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m chronolog ARGS``."""
    full_env = {**os.environ, "CHRONOLOG_LOG_LEVEL": "warning", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "chronolog", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def job(n: int = 1) -> int:
    return n * 2


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with three tasks (one paused) and a cleanup registration."""
    data = tmp_path / "data"
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "old.log").write_text("x" * 100)
    old = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    os.utime(clean / "old.log", (old, old))
    (clean / "new.log").write_text("y")
    app = AppContext()
    module = SchedulerModule(
        Settings(data_dir=str(data), cleanup_allowed_roots=(str(tmp_path),), log_level="warning")
    )
    module.register(app)
    module.start_blocking()
    svc = app.get_service("scheduler_service").sync
    svc.register_function("job", job, module_id="tests")
    later = datetime.now(UTC) + timedelta(days=1)
    svc.schedule_event(
        name="daily",
        function_name="job",
        next_execution=later,
        recurring=True,
        interval_type="days",
        interval_value=1,
        event_id="daily",
        module_id="tests",
    ).unwrap()
    svc.schedule_event(
        name="once", function_name="job", next_execution=later, event_id="once"
    ).unwrap()
    svc.schedule_event(
        name="cron",
        function_name="job",
        cron_expression="30 2 * * *",
        timezone="Europe/Berlin",
        event_id="cron",
    ).unwrap()
    svc.pause_event("once", note="hold").unwrap()
    svc.register_cleanup(str(clean), "*.log", retention_days=7).unwrap()
    module.stop_blocking()
    return data


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class TestHelp:
    @pytest.mark.parametrize(
        "command",
        [
            [],
            ["demo"],
            ["run"],
            ["serve"],
            ["tasks"],
            ["tasks", "list"],
            ["tasks", "pause"],
            ["history"],
            ["explain"],
            ["preview"],
            ["sql"],
            ["export"],
            ["rebuild"],
            ["cleanup"],
            ["cleanup", "run"],
            ["mcp"],
        ],
    )
    def test_help_everywhere(self, command: list[str]) -> None:
        """Every command and subcommand answers --help with exit code 0."""
        result = chronolog(*command, "--help")
        assert result.returncode == 0
        assert "usage: chronolog" in result.stdout

    def test_unknown_command_is_a_usage_error(self) -> None:
        """A typo exits with 2 and says what is wrong."""
        result = chronolog("taks")
        assert result.returncode == 2
        assert "invalid choice" in result.stderr


class TestReading:
    def test_tasks_list_table_and_json(self, data_dir: Path) -> None:
        """Tables for people, JSON for scripts, with filters."""
        table = chronolog("tasks", "list", "--data-dir", str(data_dir))
        assert table.returncode == 0
        assert "daily" in table.stdout and "STATUS" in table.stdout
        page = _json(
            chronolog("tasks", "list", "--data-dir", str(data_dir), "--json", "--status", "paused")
        )
        assert [t["task_id"] for t in page["items"]] == ["once"]
        recurring = _json(
            chronolog("tasks", "list", "--data-dir", str(data_dir), "--json", "--recurring")
        )
        # The cleanup registration is a recurring task too.
        assert {"daily", "cron"} <= {t["task_id"] for t in recurring["items"]}

    def test_show_explain_preview_history(self, data_dir: Path) -> None:
        """One task, its story, its next fires (DST noted) and its history."""
        shown = _json(chronolog("tasks", "show", "once", "--data-dir", str(data_dir), "--json"))
        assert shown["task"]["pause_note"] == "hold"
        story = _json(chronolog("explain", "once", "--data-dir", str(data_dir), "--json"))
        assert [d["kind"] for d in story][:2] == ["scheduled", "paused"]
        fires = _json(
            chronolog("preview", "cron", "--count", "400", "--data-dir", str(data_dir), "--json")
        )
        assert any("does not exist" in note for f in fires for note in f["notes"])
        history = _json(chronolog("history", "--data-dir", str(data_dir), "--json"))
        assert history["total"] == 0

    def test_missing_task_and_missing_data(self, data_dir: Path, tmp_path: Path) -> None:
        """Not found exits with 4."""
        assert chronolog("tasks", "show", "nope", "--data-dir", str(data_dir)).returncode == 4
        assert chronolog("explain", "nope", "--data-dir", str(data_dir)).returncode == 4
        missing = chronolog("tasks", "list", "--data-dir", str(tmp_path / "nothing"))
        assert missing.returncode == 4 and "no chronolog data" in missing.stderr

    def test_undecodable_arguments_are_bad_input(self, data_dir: Path) -> None:
        """Bytes that are not UTF-8 in an argument (Python reads them as lone surrogates)
        are bad input, exit 2, in a query and in a command alike; nothing changes."""
        listed = chronolog("tasks", "list", "--module", "\udcff", "--data-dir", str(data_dir))
        assert listed.returncode == 2 and "valid text" in listed.stderr, listed.stderr
        paused = chronolog(
            "tasks", "pause", "daily", "--note", "bad \udcff", "--data-dir", str(data_dir)
        )
        assert paused.returncode == 2 and "not valid Unicode" in paused.stderr, paused.stderr
        page = _json(chronolog("tasks", "list", "--data-dir", str(data_dir), "--json"))
        assert {t["task_id"]: t["status"] for t in page["items"]}["daily"] == "scheduled"

    def test_a_reader_that_goes_away_ends_it_quietly(self, data_dir: Path) -> None:
        """``chronolog … | head``: once the reader has gone, the command stops with the
        status of a command killed by SIGPIPE, and no traceback."""
        command = [sys.executable, "-m", "chronolog", "sql", "select * from range(200000)"]
        process = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "CHRONOLOG_LOG_LEVEL": "warning"},
        )
        assert process.stdout is not None
        assert process.stdout.readline()
        process.stdout.close()
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 141, errors
        assert b"Traceback" not in errors

    def test_sql_is_read_only(self, data_dir: Path) -> None:
        """SELECT works; a write is refused with exit 2 and nothing changes."""
        rows = _json(
            chronolog(
                "sql", "select count(*) as n from tasks", "--data-dir", str(data_dir), "--json"
            )
        )
        assert rows["columns"] == ["n"] and rows["rows"][0][0] >= 3
        refused = chronolog("sql", "delete from tasks", "--data-dir", str(data_dir))
        assert refused.returncode == 2
        again = _json(
            chronolog("sql", "select count(*) from tasks", "--data-dir", str(data_dir), "--json")
        )
        assert again["rows"] == rows["rows"]

    def test_export_and_rebuild(self, data_dir: Path, tmp_path: Path) -> None:
        """Exports as DuckDB and Parquet; rebuilds in place and as a private copy."""
        out = tmp_path / "snap.duckdb"
        assert chronolog("export", str(out), "--data-dir", str(data_dir)).returncode == 0
        assert out.exists()
        parquet = tmp_path / "parquet"
        assert (
            chronolog(
                "export", str(parquet), "--format", "parquet", "--data-dir", str(data_dir)
            ).returncode
            == 0
        )
        assert (parquet / "tasks.parquet").exists()
        rebuilt = _json(chronolog("rebuild", "--data-dir", str(data_dir), "--json"))
        assert rebuilt["position"] > 0
        private = _json(
            chronolog(
                "rebuild",
                "--out",
                str(tmp_path / "private.duckdb"),
                "--data-dir",
                str(data_dir),
                "--json",
            )
        )
        assert private["position"] == rebuilt["position"]


class TestCommands:
    def test_pause_resume_cancel(self, data_dir: Path) -> None:
        """Commands change the task and say its new status."""
        assert (
            chronolog(
                "tasks", "pause", "daily", "--note", "ops", "--data-dir", str(data_dir)
            ).stdout.strip()
            == "daily: paused"
        )
        assert (
            chronolog("tasks", "resume", "daily", "--data-dir", str(data_dir)).stdout.strip()
            == "daily: scheduled"
        )
        assert (
            chronolog("tasks", "cancel", "daily", "--data-dir", str(data_dir)).stdout.strip()
            == "daily: cancelled"
        )
        again = chronolog("tasks", "pause", "daily", "--data-dir", str(data_dir))
        assert again.returncode == 1 and "invalid_state" in again.stderr

    def test_run_now_with_a_configured_function(self, data_dir: Path) -> None:
        """`tasks run` runs the task's function here when the settings name it."""
        result = chronolog(
            "tasks",
            "run",
            "daily",
            "--function",
            "job=tests.test_cli:job",
            "--data-dir",
            str(data_dir),
            "--json",
            env={"PYTHONPATH": str(Path(__file__).parents[1])},
        )
        outcome = _json(result)
        assert outcome["execution"]["status"] == "succeeded"
        assert outcome["execution"]["result"] == 2

    def test_cleanup_list_and_dry_run(self, data_dir: Path, tmp_path: Path) -> None:
        """A dry run reports the old file and removes nothing; a real run removes it."""
        listed = _json(chronolog("cleanup", "list", "--data-dir", str(data_dir), "--json"))
        assert len(listed) == 1
        env = {"CHRONOLOG_CLEANUP_ALLOWED_ROOTS": f'["{tmp_path}"]'}
        dry = _json(
            chronolog("cleanup", "run", "--dry-run", "--data-dir", str(data_dir), "--json", env=env)
        )
        assert dry[0]["report"]["summary"]["files_selected"] == 1
        assert (tmp_path / "clean" / "old.log").exists()
        real = _json(chronolog("cleanup", "run", "--data-dir", str(data_dir), "--json", env=env))
        assert real[0]["report"]["summary"]["files_removed"] == 1
        assert not (tmp_path / "clean" / "old.log").exists()
        assert (tmp_path / "clean" / "new.log").exists()

    def test_busy_data_dir_refuses_changes_but_reads(self, data_dir: Path) -> None:
        """With a scheduler running, changes exit 3 and reads use a private snapshot."""
        module = SchedulerModule(Settings(data_dir=str(data_dir), log_level="warning"))
        module.register(AppContext())
        module.start_blocking()
        try:
            busy = chronolog("tasks", "pause", "daily", "--data-dir", str(data_dir))
            assert busy.returncode == 3 and "running" in busy.stderr
            listed = _json(chronolog("tasks", "list", "--data-dir", str(data_dir), "--json"))
            assert listed["total"] >= 3
            # Exports read the same snapshot; writing the export file is not a change to
            # the data directory (a read-only snapshot once made the DuckDB one fail).
            for name, form in (("snap.duckdb", "duckdb"), ("parquet", "parquet")):
                out = data_dir.parent / name
                exported = chronolog(
                    "export", str(out), "--format", form, "--data-dir", str(data_dir)
                )
                assert exported.returncode == 0, exported.stderr
            tasks = duckdb.connect(str(data_dir.parent / "snap.duckdb"), read_only=True)
            assert tasks.execute("SELECT count(*) FROM tasks").fetchone() == (listed["total"],)
            tasks.close()
            assert (data_dir.parent / "parquet" / "tasks.parquet").is_file()
        finally:
            module.stop_blocking()

    def test_reads_beside_a_running_scheduler_need_no_temporary_directory(
        self, data_dir: Path, tmp_path: Path
    ) -> None:
        """In a container whose root file system is read-only there is no usable
        temporary directory: a read beside a running scheduler keeps its private snapshot
        in the data directory instead, and removes it afterwards."""
        module = SchedulerModule(Settings(data_dir=str(data_dir), log_level="warning"))
        module.register(AppContext())
        module.start_blocking()
        try:
            # What tempfile does when no candidate directory is writable.
            no_temp = (
                "import sys, tempfile; tempfile.tempdir = sys.argv.pop(1); "
                "from chronolog.cli import main; sys.exit(main())"
            )
            listed = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    no_temp,
                    str(tmp_path / "no-such-directory"),
                    "tasks",
                    "list",
                    "--data-dir",
                    str(data_dir),
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "CHRONOLOG_LOG_LEVEL": "warning"},
            )
            assert listed.returncode == 0, listed.stderr
            assert _json(listed)["total"] >= 3
            assert not [p for p in data_dir.iterdir() if "chronolog-cli" in p.name]
        finally:
            module.stop_blocking()


class TestConfiguration:
    def test_file_then_environment_then_flags(self, data_dir: Path, tmp_path: Path) -> None:
        """TOML < CHRONOLOG_* < flags; each layer overrides the one before."""
        config = tmp_path / "chronolog.toml"
        config.write_text(f'data_dir = "{tmp_path / "elsewhere"}"\nlog_level = "warning"\n')
        from_file = chronolog("tasks", "list", "--config", str(config))
        assert from_file.returncode == 4  # the file's data_dir is empty
        from_env = chronolog(
            "tasks", "list", "--config", str(config), env={"CHRONOLOG_DATA_DIR": str(data_dir)}
        )
        assert from_env.returncode == 0 and "daily" in from_env.stdout
        from_flag = chronolog(
            "tasks",
            "list",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "none"),
            env={"CHRONOLOG_DATA_DIR": str(data_dir)},
        )
        assert from_flag.returncode == 4

    def test_bad_values_name_the_key(self, tmp_path: Path) -> None:
        """A bad setting exits 2 with the key and where it came from."""
        config = tmp_path / "bad.toml"
        config.write_text("executor_threads = 0\n")
        result = chronolog("tasks", "list", "--config", str(config))
        assert result.returncode == 2
        assert "executor_threads" in result.stderr and "bad.toml" in result.stderr
        unknown = tmp_path / "unknown.toml"
        unknown.write_text("colour = 'blue'\n")
        result = chronolog("tasks", "list", "--config", str(unknown))
        assert result.returncode == 2 and "colour" in result.stderr


class TestDemo:
    def test_demo_runs_and_ends_with_history(self, tmp_path: Path) -> None:
        """The README's first command: a short demo ends with the execution history."""
        result = chronolog("demo", "--seconds", "4", "--data-dir", str(tmp_path / "demo"))
        assert result.returncode == 0, result.stderr
        assert "execution history (from the DuckDB projections)" in result.stdout
        assert "Welcome email" in result.stdout and "succeeded" in result.stdout
        assert "[unknown_function]" in result.stdout
