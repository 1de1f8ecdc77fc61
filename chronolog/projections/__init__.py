"""DuckDB read models derived only from the event log: schema, projector, queries, exports.

The projector folds the log into tables (``tasks``, ``executions``, ``skips``, ``events``,
``cleanup_registrations``, ``cleanup_runs``, ``cleanup_files``, ``projection_meta``) in
batches, exactly once; ``queries`` answers the facade's questions from them; the task
board (``board``) keeps the ``tasks`` rows in memory as well and answers task lists;
``analyst`` gives people read-only SQL, snapshot exports and private rebuilds.

Its names are loaded on first use: the row types (``TaskRow``, ``Page``, …) travel to hosts
whose scheduler runs in another process, and unpickling one there must not load DuckDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronolog.lazy_names import lazy_getattr

if TYPE_CHECKING:
    from chronolog.projections import queries
    from chronolog.projections.analyst import SqlResult, export, read_only_sql, rebuild_private
    from chronolog.projections.projector import Projector
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
    from chronolog.projections.schema import PROJECTION_VERSION, SCHEMA_VERSION

_ROWS = "chronolog.projections.rows"
_LAZY = {
    "queries": "chronolog.projections.queries",
    "SqlResult": "chronolog.projections.analyst",
    "export": "chronolog.projections.analyst",
    "read_only_sql": "chronolog.projections.analyst",
    "rebuild_private": "chronolog.projections.analyst",
    "Projector": "chronolog.projections.projector",
    "PROJECTION_VERSION": "chronolog.projections.schema",
    "SCHEMA_VERSION": "chronolog.projections.schema",
    **dict.fromkeys(
        (
            "CleanupFileRow",
            "CleanupRow",
            "CleanupRunRow",
            "Decision",
            "ExecutionRow",
            "Page",
            "SkipRow",
            "TaskRow",
            "TaskStats",
            "TaskSummary",
        ),
        _ROWS,
    ),
}
__all__ = [
    "PROJECTION_VERSION",
    "SCHEMA_VERSION",
    "CleanupFileRow",
    "CleanupRow",
    "CleanupRunRow",
    "Decision",
    "ExecutionRow",
    "Page",
    "Projector",
    "SkipRow",
    "SqlResult",
    "TaskRow",
    "TaskStats",
    "TaskSummary",
    "export",
    "queries",
    "read_only_sql",
    "rebuild_private",
]

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
