"""Typed queries over the projections. Arguments are validated and bound as parameters;
the only SQL text chosen from arguments comes from fixed whitelists (sort columns).

Every function takes a DuckDB connection or cursor (``Projector.reader()``, or any
connection to a projection file or export) and raises
:class:`~chronolog.errors.ValidationError` for bad arguments and
:class:`~chronolog.errors.StorageError` when DuckDB fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import duckdb
import msgspec

from chronolog.clock import ensure_utc
from chronolog.errors import NotFoundError, ValidationError
from chronolog.events import DEFAULT_CODEC, EVENT_TYPES
from chronolog.limits import is_utf8
from chronolog.projections.db import duckdb_errors
from chronolog.projections.explain import decision
from chronolog.projections.rows import (
    CleanupFileRow,
    CleanupRow,
    CleanupRunRow,
    Decision,
    ExecutionRow,
    Page,
    SkipRow,
    TaskRow,
    TaskStats,
    TaskSummary,
)
from chronolog.projections.schema import column_names

R = TypeVar("R")

TASK_STATUSES: Final = frozenset(
    {"scheduled", "running", "paused", "completed", "cancelled", "failed"}
)
EXECUTION_STATUSES: Final = frozenset(
    {"running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"}
)
RUN_STATUSES: Final = frozenset({"running", "completed", "failed"})
#: Sort keys ``list_tasks`` accepts, and the columns they order by.
TASK_SORTS: Final = {
    "created_at": "created_at",
    "next_fire": "next_fire",
    "name": "name",
    "updated_at": "updated_at",
    "last_fire": "last_fire",
}
MAX_LIMIT: Final = 1000
#: Largest ``offset`` accepted (a bound, so every value fits DuckDB's 64-bit OFFSET).
MAX_OFFSET: Final = 1_000_000_000

_json_decode = msgspec.json.decode

__all__ = [
    "EXECUTION_STATUSES",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "TASK_SORTS",
    "TASK_STATUSES",
    "CleanupFileRow",
    "CleanupRow",
    "CleanupRunRow",
    "Decision",
    "ExecutionRow",
    "Page",
    "SkipRow",
    "TaskQuery",
    "TaskRow",
    "TaskStats",
    "TaskSummary",
    "explain",
    "get_execution",
    "get_task",
    "list_cleanup_files",
    "list_cleanup_runs",
    "list_cleanups",
    "list_executions",
    "list_skips",
    "list_tasks",
    "list_tasks_sql",
    "projection_position",
    "task_query",
    "task_row",
    "task_stats",
    "task_summary",
]

# --- validation ------------------------------------------------------------------------------


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ValidationError(f"offset must be an integer from 0 to {MAX_OFFSET}, got {offset!r}")


def _check_choice(name: str, value: str | None, allowed: frozenset[str]) -> None:
    if value is not None and value not in allowed:
        choices = ", ".join(sorted(allowed))
        raise ValidationError(f"{name} must be one of {choices}; got {value!r}")


def _check_text(name: str, value: str | None) -> None:
    # DuckDB takes UTF-8 only: a lone surrogate (undecodable bytes from a command line)
    # would fail inside the query as a storage error.
    if value is not None and (not isinstance(value, str) or not value or not is_utf8(value)):
        raise ValidationError(f"{name} must be a non-empty string of valid text, got {value!r}")


def _check_flag(name: str, value: bool | None) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(f"{name} must be true, false or omitted, got {value!r}")


def _check_window(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise ValidationError(f"{name} must be a datetime, got {value!r}")
    since_utc = None if since is None else ensure_utc(since, "since")
    until_utc = None if until is None else ensure_utc(until, "until")
    if since_utc is not None and until_utc is not None and since_utc > until_utc:
        raise ValidationError("since must not be after until")


# --- plumbing --------------------------------------------------------------------------------


def _fetch(
    conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    with duckdb_errors("querying the projections"):
        return conn.execute(sql, params).fetchall()


def _columns(table: str) -> str:
    return ", ".join(f'"{name}"' for name in column_names(table))


def _json(text: str | None) -> Any:
    return None if text is None else _json_decode(text)


def _json_or_none(text: str | None) -> Any:
    return None if text is None else _json_decode(text)


def task_row(r: Sequence[Any]) -> TaskRow:
    """A ``tasks`` row (columns in schema order) as a :class:`TaskRow`, JSON decoded.

    Spelled out positionally on purpose (:data:`TASK_JSON_COLUMNS` says where the JSON
    columns are; a test pins the order): this runs for every row of every task-list page,
    and explicit arguments cost a third less than building a list to unpack.
    """
    return TaskRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], _json_or_none(r[7]), r[8],
        _json_or_none(r[9]), _json_or_none(r[10]), r[11], r[12], r[13], r[14], r[15],
        r[16], r[17], r[18], r[19], r[20], r[21], r[22], r[23], r[24], r[25], r[26],
    )  # fmt: skip


def task_summary(r: Sequence[Any]) -> TaskSummary:
    """A ``tasks`` row (columns in schema order) as a :class:`TaskSummary`: like
    :func:`task_row` without ``parameters`` (9) and ``policies`` (10)."""
    trigger = r[7]
    return TaskSummary(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6],
        None if trigger is None else _json_decode(trigger), r[8], r[11], r[12], r[13],
        r[14], r[15], r[16], r[17], r[18], r[19], r[20], r[21], r[22], r[23], r[24],
        r[25], r[26],
    )  # fmt: skip


#: Where ``task_row`` expects the JSON columns (a test pins them to the schema).
TASK_JSON_COLUMNS: Final = {"trigger": 7, "parameters": 9, "policies": 10}


def _execution(row: Sequence[Any]) -> ExecutionRow:
    values = dict(zip(column_names("executions"), row, strict=True))
    values["result"] = _json(values["result"])
    values["late_result"] = _json(values["late_result"])
    return ExecutionRow(**values)


def _skip(row: Sequence[Any]) -> SkipRow:
    return SkipRow(**dict(zip(column_names("skips"), row, strict=True)))


def _cleanup(row: Sequence[Any]) -> CleanupRow:
    values = dict(zip(column_names("cleanup_registrations"), row, strict=True))
    values["rules"] = _json(values["rules"])
    return CleanupRow(**values)


def _run(row: Sequence[Any]) -> CleanupRunRow:
    return CleanupRunRow(**dict(zip(column_names("cleanup_runs"), row, strict=True)))


def _file(row: Sequence[Any]) -> CleanupFileRow:
    values = dict(zip(column_names("cleanup_files"), row, strict=True))
    values["reasons"] = tuple(values["reasons"])
    return CleanupFileRow(**values)


def _page(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    where: list[str],
    params: dict[str, Any],
    order: str,
    limit: int,
    offset: int,
    convert: Callable[[Sequence[Any]], R],
    *,
    selective: bool,
) -> Page[R]:
    """One page plus the total count, from one statement (so both see one snapshot).

    ``selective`` filters (one task's executions, through its index) count with a window
    over the few matching rows. Broad ones (all tasks with a status) count in a separate
    subquery: a window would carry every match through a full sort instead of a top-N.
    """
    condition = " AND ".join(where) if where else "TRUE"
    columns = _columns(table)
    values = {**params, "limit": limit, "offset": offset}
    if selective:
        rows = _fetch(
            conn,
            f"SELECT count(*) OVER () AS total, {columns} FROM {table} WHERE {condition} "
            f"ORDER BY {order} LIMIT $limit OFFSET $offset",
            values,
        )
        if not rows and offset:
            del values["limit"], values["offset"]
            counted = _fetch(conn, f"SELECT count(*) FROM {table} WHERE {condition}", values)
            return Page(items=(), total=int(counted[0][0]), limit=limit, offset=offset)
    else:
        rows = _fetch(
            conn,
            f"SELECT counted.total, page.* "
            f"FROM (SELECT count(*) AS total FROM {table} WHERE {condition}) AS counted "
            f"LEFT JOIN (SELECT {columns} FROM {table} WHERE {condition} "
            f"ORDER BY {order} LIMIT $limit OFFSET $offset) AS page ON TRUE "
            f"ORDER BY {order}",
            values,
        )
    total = int(rows[0][0]) if rows else 0
    # Past the end the LEFT JOIN still yields the count, on a row of NULLs (every table's
    # first column is its NOT NULL key).
    items = tuple(convert(row[1:]) for row in rows if row[1] is not None)
    return Page(items=items, total=total, limit=limit, offset=offset)


# --- tasks -----------------------------------------------------------------------------------


def _filters(
    equal: dict[str, Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    time_column: str = "nominal_time",
) -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses and parameters: ``column = value`` for each value given, plus an
    optional ``since <= time_column < until`` window. Column names come from the code,
    values only ever travel as parameters."""
    where = [f"{column} = ${column}" for column, value in equal.items() if value is not None]
    params = {column: value for column, value in equal.items() if value is not None}
    if since is not None:
        where.append(f"{time_column} >= $since")
        params["since"] = since
    if until is not None:
        where.append(f"{time_column} < $until")
        params["until"] = until
    return where, params


class TaskQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated task-list request: the filters (``None``: any), the order and the page."""

    status: str | None = None
    module_id: str | None = None
    function_name: str | None = None
    recurring: bool | None = None
    sort: str = "created_at"
    descending: bool = False
    limit: int = 100
    offset: int = 0

    def filters(self) -> dict[str, str | bool]:
        """The filters given, by column name (each must equal its value)."""
        given = {
            "status": self.status,
            "module_id": self.module_id,
            "function_name": self.function_name,
            "recurring": self.recurring,
        }
        return {column: value for column, value in given.items() if value is not None}


def task_query(
    *,
    status: str | None = None,
    module_id: str | None = None,
    function_name: str | None = None,
    recurring: bool | None = None,
    sort: str = "created_at",
    descending: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> TaskQuery:
    """Validate the arguments of a task list (raises :class:`ValidationError`)."""
    _check_choice("status", status, TASK_STATUSES)
    _check_text("module_id", module_id)
    _check_text("function_name", function_name)
    _check_flag("recurring", recurring)
    _check_flag("descending", descending)
    if sort not in TASK_SORTS:
        raise ValidationError(f"sort must be one of {', '.join(TASK_SORTS)}; got {sort!r}")
    _check_page(limit, offset)
    return TaskQuery(
        status=status,
        module_id=module_id,
        function_name=function_name,
        recurring=recurring,
        sort=sort,
        descending=descending,
        limit=limit,
        offset=offset,
    )


def list_tasks(
    conn: duckdb.DuckDBPyConnection,
    *,
    status: str | None = None,
    module_id: str | None = None,
    function_name: str | None = None,
    recurring: bool | None = None,
    sort: str = "created_at",
    descending: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> Page[TaskRow]:
    """Tasks matching every given filter, sorted by ``sort`` (NULLs last, then task id).

    This reads DuckDB (any projection file or export). A running scheduler answers the
    same question from the projector's in-memory index (:meth:`Projector.list_tasks`),
    which gives the same pages without a query per request.
    """
    query = task_query(
        status=status,
        module_id=module_id,
        function_name=function_name,
        recurring=recurring,
        sort=sort,
        descending=descending,
        limit=limit,
        offset=offset,
    )
    return list_tasks_sql(conn, query)


def list_tasks_sql(conn: duckdb.DuckDBPyConnection, query: TaskQuery) -> Page[TaskRow]:
    """:func:`list_tasks` for an already validated :class:`TaskQuery`."""
    where, params = _filters(dict(query.filters()))
    direction = "DESC" if query.descending else "ASC"
    order = f"{TASK_SORTS[query.sort]} {direction} NULLS LAST, task_id {direction}"
    return _page(
        conn, "tasks", where, params, order, query.limit, query.offset, task_row, selective=False
    )


def get_task(conn: duckdb.DuckDBPyConnection, task_id: str) -> TaskRow | None:
    """One task, or None when the projection has no such task."""
    _check_text("task_id", task_id)
    rows = _fetch(
        conn, f"SELECT {_columns('tasks')} FROM tasks WHERE task_id = $id", {"id": task_id}
    )
    return task_row(rows[0]) if rows else None


# --- executions ------------------------------------------------------------------------------


def list_executions(
    conn: duckdb.DuckDBPyConnection,
    *,
    task_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[ExecutionRow]:
    """Executions, newest nominal time first; ``since <= nominal_time < until``."""
    _check_text("task_id", task_id)
    _check_choice("status", status, EXECUTION_STATUSES)
    _check_window(since, until)
    _check_page(limit, offset)
    where, params = _filters({"task_id": task_id, "status": status}, since=since, until=until)
    order = "nominal_time DESC NULLS LAST, position DESC"
    selective = task_id is not None
    return _page(
        conn, "executions", where, params, order, limit, offset, _execution, selective=selective
    )


def get_execution(conn: duckdb.DuckDBPyConnection, execution_id: str) -> ExecutionRow | None:
    """One execution, or None."""
    _check_text("execution_id", execution_id)
    rows = _fetch(
        conn,
        f"SELECT {_columns('executions')} FROM executions WHERE execution_id = $id",
        {"id": execution_id},
    )
    return _execution(rows[0]) if rows else None


def list_skips(
    conn: duckdb.DuckDBPyConnection,
    *,
    task_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[SkipRow]:
    """Skipped nominal times, newest first: the rows with a skipped time in
    ``since <= t < until`` (a row for a long gap spans ``nominal_time`` to ``until``)."""
    _check_text("task_id", task_id)
    _check_window(since, until)
    _check_page(limit, offset)
    where, params = _filters({"task_id": task_id}, until=until)
    if since is not None:
        where.append('coalesce("until", nominal_time) >= $since')
        params["since"] = since
    order = "nominal_time DESC, position DESC"
    return _page(conn, "skips", where, params, order, limit, offset, _skip, selective=False)


def task_stats(conn: duckdb.DuckDBPyConnection, task_id: str) -> TaskStats:
    """Counts, success rate and duration percentiles of one task's executions.

    Raises :class:`~chronolog.errors.NotFoundError` for a task the projection lacks.
    """
    _check_text("task_id", task_id)
    rows = _fetch(
        conn,
        """
        SELECT
            count(e.execution_id),
            count(*) FILTER (WHERE e.status = 'running'),
            count(*) FILTER (WHERE e.status = 'succeeded'),
            count(*) FILTER (WHERE e.status = 'failed'),
            count(*) FILTER (WHERE e.status = 'timed_out'),
            count(*) FILTER (WHERE e.status = 'interrupted'),
            count(*) FILTER (WHERE e.status = 'cancelled'),
            quantile_cont(e.duration_seconds, 0.5),
            quantile_cont(e.duration_seconds, 0.95),
            avg(e.duration_seconds),
            max(e.duration_seconds),
            min(e.started_at),
            max(e.started_at),
            any_value(t.skips)
        FROM tasks t LEFT JOIN executions e ON e.task_id = t.task_id
        WHERE t.task_id = $id
        GROUP BY t.task_id
        """,
        {"id": task_id},
    )
    if not rows:
        raise NotFoundError(f"no task {task_id!r} in the projections", details={"task_id": task_id})
    (runs, running, ok, failed, timed_out, interrupted, cancelled, p50, p95, mean, longest,
     first, last, skipped) = rows[0]  # fmt: skip
    failures = failed + timed_out + interrupted
    finished = ok + failures
    return TaskStats(
        task_id=task_id,
        runs=runs,
        running=running,
        successes=ok,
        failures=failures,
        failed=failed,
        timed_out=timed_out,
        interrupted=interrupted,
        cancelled=cancelled,
        skipped=int(skipped or 0),
        success_rate=ok / finished if finished else None,
        duration_p50=p50,
        duration_p95=p95,
        duration_mean=mean,
        duration_max=longest,
        first_started_at=first,
        last_started_at=last,
    )


def explain(conn: duckdb.DuckDBPyConnection, task_id: str) -> list[Decision]:
    """Every decision recorded about a task, in log order, each with a sentence.

    Read from the raw ``events`` table, so it shows what the tables fold away: each next
    fire, each skip and why, each retry, who paused and with what note. Empty for an
    unknown task.
    """
    _check_text("task_id", task_id)
    rows = _fetch(
        conn,
        "SELECT position, recorded_at, event_type, payload, caused_by FROM events "
        "WHERE stream_id = $stream ORDER BY position",
        {"stream": f"task-{task_id}"},
    )
    decisions: list[Decision] = []
    for position, recorded_at, event_type, payload, caused_by in rows:
        cls = EVENT_TYPES.get(event_type)
        if cls is None:
            continue
        # The stored payload is already upcast to the current schema of its type.
        event = DEFAULT_CODEC.decode_event(event_type, cls.schema_version, payload.encode())
        found = decision(position, recorded_at, event, caused_by)
        if found is not None:
            decisions.append(found)
    return decisions


# --- cleanup ---------------------------------------------------------------------------------


def list_cleanups(
    conn: duckdb.DuckDBPyConnection,
    *,
    include_inactive: bool = False,
    module_id: str | None = None,
) -> list[CleanupRow]:
    """Cleanup registrations by priority, then id (only active ones unless asked)."""
    _check_flag("include_inactive", include_inactive)
    _check_text("module_id", module_id)
    where, params = _filters({"module_id": module_id})
    where = ["TRUE", *where] if include_inactive else ["active", *where]
    rows = _fetch(
        conn,
        f"SELECT {_columns('cleanup_registrations')} FROM cleanup_registrations "
        f"WHERE {' AND '.join(where)} ORDER BY priority NULLS LAST, registration_id",
        params,
    )
    return [_cleanup(row) for row in rows]


def list_cleanup_runs(
    conn: duckdb.DuckDBPyConnection,
    *,
    registration_id: str | None = None,
    status: str | None = None,
    dry_run: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[CleanupRunRow]:
    """Cleanup runs, newest first."""
    _check_text("registration_id", registration_id)
    _check_choice("status", status, RUN_STATUSES)
    _check_flag("dry_run", dry_run)
    _check_page(limit, offset)
    where, params = _filters(
        {"registration_id": registration_id, "status": status, "dry_run": dry_run}
    )
    order = "started_at DESC NULLS LAST, run_id DESC"
    return _page(conn, "cleanup_runs", where, params, order, limit, offset, _run, selective=False)


def list_cleanup_files(
    conn: duckdb.DuckDBPyConnection, run_id: str, *, limit: int = 1000, offset: int = 0
) -> Page[CleanupFileRow]:
    """The files one cleanup run reported, in the order it reported them."""
    _check_text("run_id", run_id)
    _check_page(limit, offset)
    return _page(
        conn,
        "cleanup_files",
        ["run_id = $run_id"],
        {"run_id": run_id},
        "seq",
        limit,
        offset,
        _file,
        selective=True,
    )


def projection_position(conn: duckdb.DuckDBPyConnection) -> int:
    """The log position the projection (or an export of it) reflects."""
    rows = _fetch(conn, "SELECT position FROM projection_meta WHERE id = 1", {})
    return int(rows[0][0]) if rows else 0
