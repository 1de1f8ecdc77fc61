"""Where chronolog's logs go: JSON lines, or the host's standard logging handlers.

structlog's configuration is process-wide and its loggers keep the first one they used,
so each host here runs in a subprocess of its own, as a real host would.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import structlog

from chronolog import logs

HOST = textwrap.dedent(
    """
    import json, logging, sys
    from chronolog import AppContext, SchedulerModule, Settings

    class Keep(logging.Handler):
        def emit(self, record):
            fields = {k: v for k, v in vars(record).items() if k in ("tasks", "seconds",
                      "name_", "interrupted_tasks")}
            print(json.dumps({"logger": record.name, "level": record.levelname,
                              "message": record.getMessage(), **fields}), flush=True)

    logging.getLogger("chronolog").addHandler(Keep())
    logging.getLogger("chronolog").setLevel(logging.INFO)
    module = SchedulerModule(Settings(data_dir=sys.argv[1], log_format=sys.argv[2],
                                      engine=sys.argv[3]))
    module.register(AppContext())
    module.start_blocking()
    module.stop_blocking()
    """
)


def run_host(
    tmp_path: Path, log_format: str, engine: str = "thread"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HOST, str(tmp_path / "data"), log_format, engine],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_the_hosts_logging_handlers_get_chronologs_records(tmp_path: Path) -> None:
    """``log_format="logging"``: records on ``chronolog.*`` loggers, fields as attributes,
    nothing written to stderr by chronolog itself."""
    done = run_host(tmp_path, "logging")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    started = [r for r in records if r["message"] == "scheduler started"]
    assert started, records
    assert started[0]["logger"] == "chronolog.runtime"
    assert started[0]["level"] == "INFO"
    assert started[0]["tasks"] == 0 and isinstance(started[0]["seconds"], float)
    assert done.stderr == ""


def test_json_lines_reach_no_logging_handler(tmp_path: Path) -> None:
    """The default for a process without a terminal: JSON lines on stderr; the host's
    logging handlers see none of them."""
    done = run_host(tmp_path, "auto")
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(line["event"] == "scheduler started" for line in lines)


def test_a_scheduler_process_writes_json_lines_for_its_host(tmp_path: Path) -> None:
    """With ``engine="process"`` the scheduler's own events come from the child, which
    has no host handlers: it writes JSON lines to the stderr it shares with the host."""
    done = run_host(tmp_path, "logging", engine="process")
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "scheduler started" for line in lines), done.stderr


def test_fields_named_like_record_attributes_are_renamed() -> None:
    """An event field called ``name`` (or ``module``, ``args`` …) would make logging raise
    ``KeyError``: it reaches the record with a trailing underscore instead."""
    event = {"event": "x", "name": "backup", "module": "core", "exc_info": True, "tasks": 1}
    cleared = logs._clear_of_record_attributes(None, "info", dict(event))
    assert cleared == {
        "event": "x",
        "name_": "backup",
        "module_": "core",
        "exc_info": True,
        "tasks": 1,
    }
    kwargs = structlog.stdlib.render_to_log_kwargs(None, "info", cleared)
    record = logging.getLogger("chronolog.test").makeRecord(
        "chronolog.test",
        logging.INFO,
        __file__,
        1,
        kwargs["msg"],
        (),
        None,
        extra=kwargs["extra"],
    )
    assert (record.name, record.name_) == ("chronolog.test", "backup")  # type: ignore[attr-defined]
