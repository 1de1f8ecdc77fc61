"""The ``chronolog`` command line.

Settings come from a TOML file (``--config``), then ``CHRONOLOG_*`` environment variables,
then flags, each overriding the one before. Exit codes: 0 success, 1 failure, 2 bad input
or usage, 3 the data directory is busy (a scheduler runs there), 4 not found.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from chronolog.cli import commands as c
from chronolog.errors import ChronologError, NotFoundError, StoreLockedError, ValidationError
from chronolog.settings import Settings, load_settings

_EXIT_BY_CODE = {
    NotFoundError.code: c.EXIT_NOT_FOUND,
    "no_data": c.EXIT_NOT_FOUND,
    StoreLockedError.code: c.EXIT_BUSY,
    "busy": c.EXIT_BUSY,
    "invalid_argument": c.EXIT_USAGE,
    "invalid_trigger": c.EXIT_USAGE,
    "unknown_function": c.EXIT_USAGE,
    "unsafe_path": c.EXIT_USAGE,
    "read_only": c.EXIT_USAGE,
}


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML settings file (default: $CHRONOLOG_CONFIG)")
    common.add_argument("--data-dir", help="data directory (setting data_dir)")
    common.add_argument("--log-format", choices=["auto", "json", "console"], help="log output")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chronolog`` command."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="chronolog",
        # The module's docstring, without its reStructuredText quoting.
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", parents=[common], help="run the live demo on an embedded data directory"
    )
    demo.add_argument("--seconds", type=float, default=12.0, help="how long to watch (default 12)")
    demo.set_defaults(handler=c.cmd_demo)

    for name, help_text in (
        ("run", "run the scheduler with the HTTP API, from a config file"),
        ("serve", "serve the HTTP API (and the scheduler behind it)"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=help_text)
        cmd.add_argument("--host", help="HTTP bind address (setting http_host, default 127.0.0.1)")
        cmd.add_argument("--port", type=int, help="HTTP port (setting http_port)")
        cmd.add_argument(
            "--token", help="bearer token required by the HTTP API (setting http_token)"
        )
        cmd.add_argument(
            "--function",
            action="append",
            default=[],
            metavar="NAME=MODULE:CALLABLE",
            help="register a task function (repeatable; adds to the settings' functions)",
        )
        if name == "run":
            cmd.add_argument("--no-http", action="store_true", help="run without the HTTP API")
        cmd.set_defaults(handler=c.cmd_run)

    tasks = sub.add_parser("tasks", help="list, show and command tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    listing = tasks_sub.add_parser("list", parents=[common], help="list tasks")
    listing.add_argument(
        "--status", choices=["scheduled", "running", "paused", "completed", "cancelled", "failed"]
    )
    listing.add_argument("--module", help="only this module id")
    listing.add_argument("--function", help="only this function name")
    listing.add_argument("--recurring", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--offset", type=int, default=0)
    listing.set_defaults(handler=c.cmd_tasks_list)
    for action, handler in (
        ("show", c.cmd_tasks_show),
        ("pause", c.cmd_tasks_pause),
        ("resume", c.cmd_tasks_resume),
        ("cancel", c.cmd_tasks_cancel),
        ("run", c.cmd_tasks_run),
    ):
        cmd = tasks_sub.add_parser(action, parents=[common], help=f"{action} a task")
        cmd.add_argument("task_id")
        if action in ("pause", "cancel"):
            cmd.add_argument("--note", help="why (kept in the log)")
        if action == "run":
            cmd.add_argument(
                "--wait", type=float, default=60.0, help="seconds to wait for the outcome"
            )
            cmd.add_argument(
                "--function",
                action="append",
                default=[],
                metavar="NAME=MODULE:CALLABLE",
                help="register the task's function so it can run here",
            )
        cmd.set_defaults(handler=handler)

    history = sub.add_parser("history", parents=[common], help="execution history, newest first")
    history.add_argument("--task", help="only this task")
    history.add_argument(
        "--status",
        choices=["running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"],
    )
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--offset", type=int, default=0)
    history.set_defaults(handler=c.cmd_history)

    explain = sub.add_parser("explain", parents=[common], help="why a task did or didn't run")
    explain.add_argument("task_id")
    explain.set_defaults(handler=c.cmd_explain)

    preview = sub.add_parser(
        "preview", parents=[common], help="a task's next fire times with DST notes"
    )
    preview.add_argument("task_id")
    preview.add_argument("--count", type=int, default=10)
    preview.set_defaults(handler=c.cmd_preview)

    sql = sub.add_parser(
        "sql", parents=[common], help="one read-only SQL statement on the projections"
    )
    sql.add_argument("statement")
    sql.add_argument("--max-rows", type=int, default=1000)
    sql.set_defaults(handler=c.cmd_sql)

    export = sub.add_parser("export", parents=[common], help="snapshot the projections to a file")
    export.add_argument("path")
    export.add_argument("--format", choices=["duckdb", "parquet"], default="duckdb")
    export.set_defaults(handler=c.cmd_export)

    rebuild = sub.add_parser(
        "rebuild", parents=[common], help="rebuild the projections from the log"
    )
    rebuild.add_argument(
        "--out", help="build a private DuckDB file here instead (works while the scheduler runs)"
    )
    rebuild.set_defaults(handler=c.cmd_rebuild)

    cleanup = sub.add_parser("cleanup", help="Housekeeper registrations and runs")
    cleanup_sub = cleanup.add_subparsers(dest="cleanup_command", required=True, metavar="ACTION")
    clist = cleanup_sub.add_parser("list", parents=[common], help="list registrations")
    clist.add_argument("--all", action="store_true", help="include unregistered ones")
    clist.set_defaults(handler=c.cmd_cleanup_list)
    crun = cleanup_sub.add_parser("run", parents=[common], help="run registrations now")
    crun.add_argument(
        "registration_id", nargs="?", help="one registration (default: all, by priority)"
    )
    crun.add_argument(
        "--dry-run", action="store_true", help="report what would be removed, remove nothing"
    )
    crun.set_defaults(handler=c.cmd_cleanup_run)

    mcp = sub.add_parser("mcp", parents=[common], help="serve the agent tools over MCP (stdio)")
    mcp.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME=MODULE:CALLABLE",
        help="register a task function agents may schedule (repeatable)",
    )
    mcp.add_argument(
        "--functions",
        action="append",
        default=None,
        metavar="MODULE[:CALLABLE]",
        help="call CALLABLE(service) to register functions (default register_functions; "
        "repeatable; default: $CHRONOLOG_MCP_FUNCTIONS)",
    )
    mcp.add_argument("--agent-id", default="mcp", help="recorded as the cause of agents' changes")
    mcp.set_defaults(handler=c.cmd_mcp)
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Settings:
    """Settings from the config file, the environment and the flags, in that order."""
    env = dict(os.environ if environ is None else environ)
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("data_dir", "data_dir"),
        ("log_format", "log_format"),
        ("host", "http_host"),
        ("port", "http_port"),
        ("token", "http_token"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    config = getattr(args, "config", None) or env.get("CHRONOLOG_CONFIG")
    settings = load_settings(config, overrides=overrides, environ=env)
    extra = getattr(args, "function", None) or []
    if extra:
        functions = dict(settings.functions)
        for item in extra:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise ValidationError(f"--function {item!r} must look like NAME=module:callable")
            functions[name] = spec
        settings = settings.replace(functions=functions)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chronolog`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
        code: int = args.handler(args, settings)
        return code
    except ChronologError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return _EXIT_BY_CODE.get(exc.code, c.EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``chronolog tasks list | head``): stop quietly, with the
        # status a shell gives a command killed by SIGPIPE. Standard output now points at
        # /dev/null, so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
