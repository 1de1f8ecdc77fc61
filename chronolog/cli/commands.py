"""The command handlers. Each takes the parsed arguments and the settings, returns an exit code."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from chronolog.cli.output import Progress, print_json, print_table
from chronolog.cli.workspace import Workspace
from chronolog.errors import ValidationError
from chronolog.functions import register_configured_functions
from chronolog.projections import export as export_snapshot
from chronolog.projections import queries, read_only_sql, rebuild_private
from chronolog.result import Result
from chronolog.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
EXIT_NOT_FOUND = 4


def _value(result: Result[Any]) -> Any:
    """The result's value, or raise its error as a chronolog exception."""
    return result.unwrap()


# --- the scheduler itself ------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the live demo on an embedded data directory."""
    from chronolog.demo import run_demo

    return asyncio.run(run_demo(args.data_dir, seconds=args.seconds))


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the scheduler (and, unless --no-http, the HTTP API) until SIGINT or SIGTERM."""
    from chronolog.module import AppContext, SchedulerModule

    module = SchedulerModule(settings)
    module.register(AppContext())
    register_configured_functions(module.service, settings)
    module.start_blocking()
    server = None
    try:
        if not getattr(args, "no_http", False):
            from chronolog.api.server import HttpServer

            server = HttpServer(module.service, settings)
            server.start()
            print(f"chronolog: HTTP API on {server.url}", file=sys.stderr)
        print(
            f"chronolog: scheduler running on {settings.data_dir} (Ctrl-C to stop)", file=sys.stderr
        )
        _wait_for_signal()
    finally:
        if server is not None:
            server.stop()
        module.stop_blocking()
    return EXIT_OK


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(1.0)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the agent tools over MCP on stdio."""
    from chronolog.api.mcp_server import main_mcp

    return main_mcp(settings, functions=args.functions, agent_id=args.agent_id)


# --- tasks ---------------------------------------------------------------------------------

_TASK_COLUMNS = ("task_id", "name", "function_name", "status", "next_fire", "last_outcome", "runs")


def cmd_tasks_list(args: argparse.Namespace, settings: Settings) -> int:
    """List tasks with filters."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        page = queries.list_tasks(
            conn,
            status=args.status,
            module_id=args.module,
            function_name=args.function,
            recurring=args.recurring,
            limit=args.limit,
            offset=args.offset,
        )
    if args.json:
        print_json(page)
    else:
        print_table([[getattr(t, c) for c in _TASK_COLUMNS] for t in page.items], _TASK_COLUMNS)
        print(f"{len(page.items)} of {page.total}")
    return EXIT_OK


def cmd_tasks_show(args: argparse.Namespace, settings: Settings) -> int:
    """Show one task."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        task = queries.get_task(conn, args.task_id)
        stats = queries.task_stats(conn, args.task_id) if task is not None else None
    if task is None:
        print(f"error [not_found]: no task {args.task_id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print_json({"task": task, "stats": stats})
    else:
        fields = [(k, getattr(task, k)) for k in task.__struct_fields__]
        if stats is not None:
            fields += [(f"stats.{k}", getattr(stats, k)) for k in stats.__struct_fields__]
        print_table(fields, ("field", "value"))
    return EXIT_OK


def _task_command(verb: str) -> Any:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        with _workspace(settings, write=True) as ws:
            svc = ws.service.sync
            if verb == "pause":
                result = svc.pause_event(args.task_id, note=args.note, caused_by=_cli_cause())
            elif verb == "resume":
                result = svc.resume_event(args.task_id, caused_by=_cli_cause())
            elif verb == "cancel":
                result = svc.cancel_event(args.task_id, note=args.note, caused_by=_cli_cause())
            else:
                return _run_task(args, ws)
            _value(result)
            task = _value(svc.get_event(args.task_id))
        if args.json:
            print_json(task)
        else:
            print(f"{args.task_id}: {task.status}")
        return EXIT_OK

    handler.__doc__ = f"{verb.capitalize()} a task."
    return handler


def _run_task(args: argparse.Namespace, ws: Workspace) -> int:
    svc = ws.service.sync
    execution_id = _value(svc.execute_now(args.task_id, caused_by=_cli_cause()))
    deadline = time.monotonic() + args.wait
    row = None
    while time.monotonic() < deadline:
        page = _value(svc.get_executions(event_id=args.task_id, limit=20))
        row = next((r for r in page.items if r.execution_id == execution_id), None)
        if row is not None and row.status != "running":
            break
        time.sleep(0.05)
    if args.json:
        print_json({"execution_id": execution_id, "execution": row})
    else:
        status = row.status if row is not None else "running"
        print(f"{args.task_id}: execution {execution_id} {status}")
        if row is not None and row.error_message:
            print(f"  {row.error_type}: {row.error_message}")
    return EXIT_OK if row is not None and row.status == "succeeded" else EXIT_FAILED


def _cli_cause() -> Any:
    from chronolog.events import Cause

    return Cause(kind="cli")


cmd_tasks_pause = _task_command("pause")
cmd_tasks_resume = _task_command("resume")
cmd_tasks_cancel = _task_command("cancel")
cmd_tasks_run = _task_command("run")


# --- history, explain, preview -------------------------------------------------------------

_HISTORY_COLUMNS = (
    "execution_id",
    "task_id",
    "nominal_time",
    "attempt",
    "reason",
    "status",
    "duration_seconds",
)


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """Execution history, newest first."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        page = queries.list_executions(
            conn, task_id=args.task, status=args.status, limit=args.limit, offset=args.offset
        )
    if args.json:
        print_json(page)
    else:
        print_table(
            [[getattr(r, c) for c in _HISTORY_COLUMNS] for r in page.items], _HISTORY_COLUMNS
        )
        print(f"{len(page.items)} of {page.total}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    """Every decision about a task, in order."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        decisions = queries.explain(conn, args.task_id)
    if not decisions:
        print(f"error [not_found]: no task {args.task_id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print_json(decisions)
    else:
        print_table(
            [(d.position, d.at, d.kind, d.sentence) for d in decisions], ("#", "at", "kind", "what")
        )
    return EXIT_OK


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    """The next fire instants of a task, with DST and month-end notes."""
    from chronolog.domain import replay_task
    from chronolog.store import SQLiteEventStore
    from chronolog.triggers import preview

    if not 1 <= args.count <= 1000:
        raise ValidationError("--count must be from 1 to 1000")
    with SQLiteEventStore(settings.data_path, read_only=True) as store:
        state = replay_task(args.task_id, store.read_stream(f"task-{args.task_id}"))
    if not state.exists or state.definition is None:
        print(f"error [not_found]: no task {args.task_id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    after = now if state.last_nominal is None else max(now, state.last_nominal)
    fires = preview(
        state.definition.trigger, after, args.count, seed=args.task_id, runs_so_far=state.fires
    )
    if state.lifecycle != "active":
        fires = []
    if args.json:
        print_json(fires)
    else:
        print_table(
            [(f.nominal, f.local, "; ".join(f.notes)) for f in fires], ("utc", "local", "notes")
        )
    return EXIT_OK


# --- analysts --------------------------------------------------------------------------------


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    """Run one read-only SQL statement on the projections."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        result = read_only_sql(conn, args.statement, max_rows=args.max_rows)
    if args.json:
        print_json({"columns": result.columns, "rows": result.rows, "truncated": result.truncated})
    else:
        print_table(result.rows, result.columns)
        if result.truncated:
            print(f"(first {args.max_rows} rows)")
    return EXIT_OK


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write a consistent snapshot of the projections (DuckDB file or Parquet directory)."""
    progress = Progress("export")
    with _workspace(settings, write=False, progress=progress.update) as ws, ws.connection() as conn:
        progress.update(0, 1)
        path = export_snapshot(conn, args.path, args.format)
        progress.update(1, 1)
    progress.finish()
    if args.json:
        print_json({"path": str(path), "format": args.format})
    else:
        print(f"exported to {path}")
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the projections from the log (in place, or a private copy with --out)."""
    progress = Progress("rebuild")
    if args.out:
        position = rebuild_private(settings.data_path, args.out)
        progress.update(position, position)
        progress.finish()
        result = {"path": args.out, "position": position}
    else:
        with _workspace(settings, write=True) as ws:
            assert ws.module is not None
            applied = ws.module.require_projector().rebuild()
            progress.update(applied, applied)
            progress.finish()
            result = {"path": str(settings.data_path / "projections.duckdb"), "position": applied}
    if args.json:
        print_json(result)
    else:
        print(f"rebuilt {result['path']} up to position {result['position']}")
    return EXIT_OK


# --- cleanup ---------------------------------------------------------------------------------

_CLEANUP_COLUMNS = ("registration_id", "directory", "pattern", "priority", "schedule", "active")


def cmd_cleanup_list(args: argparse.Namespace, settings: Settings) -> int:
    """Cleanup registrations."""
    with _workspace(settings, write=False) as ws, ws.connection() as conn:
        rows = queries.list_cleanups(conn, include_inactive=args.all)
    if args.json:
        print_json(rows)
    else:
        print_table(
            [[getattr(r, c, None) for c in _CLEANUP_COLUMNS] for r in rows], _CLEANUP_COLUMNS
        )
    return EXIT_OK


def cmd_cleanup_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one registration (or all, by priority) now; --dry-run removes nothing."""
    progress = Progress("cleanup")
    with _workspace(settings, write=True) as ws:
        outcomes = _value(ws.service.sync.run_cleanup(args.registration_id, dry_run=args.dry_run))
    progress.update(len(outcomes), len(outcomes))
    progress.finish()
    if args.json:
        print_json(outcomes)
        return EXIT_OK if all(o.report is not None for o in outcomes) else EXIT_FAILED
    rows = []
    for o in outcomes:
        if o.report is None:
            rows.append((o.registration_id, "failed", "-", "-", "-", o.error))
            continue
        s = o.report.summary
        verb = "would remove" if args.dry_run else "removed"
        count = s.files_selected if args.dry_run else s.files_removed
        freed = s.bytes_selected if args.dry_run else s.bytes_freed
        rows.append((o.registration_id, verb, s.files_examined, count, freed, f"{s.errors} errors"))
    print_table(rows, ("registration", "action", "examined", "files", "bytes", "notes"))
    return EXIT_OK if all(o.report is not None for o in outcomes) else EXIT_FAILED


@contextlib.contextmanager
def _workspace(settings: Settings, *, write: bool, progress: Any = None) -> Iterator[Workspace]:
    """Open the data directory for one command and always close it again."""
    workspace = Workspace(settings)
    workspace.open(write=write, progress=progress)
    try:
        yield workspace
    finally:
        workspace.close()
