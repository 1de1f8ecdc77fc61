"""The DuckDB schema of the read models: tables, their columns, and the schema version.

Column order here is the order the projector writes rows in: the fold's row Structs in
``apply.py`` have exactly these fields, in this order (a test checks it).

JSON-valued columns (``trigger``, ``parameters``, ``policies``, ``result``, ``rules``,
``payload``) are VARCHAR holding JSON text: DuckDB's JSON operators work on them as they
are (``payload->>'task_id'``), and the JSON type's validation on insert would cost the
projector a third of its write time.
"""

from __future__ import annotations

import hashlib

from chronolog.events import ALL_EVENT_TYPES

#: Bump when a table's shape or the meaning of a column changes: a projection written by
#: another version is dropped and rebuilt from the log when it is opened.
SCHEMA_VERSION = 2


def _event_schema_fingerprint() -> str:
    # The events table stores payloads upcast to the *current* event schemas, so a change
    # of any event's schema_version must also force a rebuild.
    text = ",".join(f"{cls.__name__}:{cls.schema_version}" for cls in ALL_EVENT_TYPES)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: What ``projection_meta.schema_version`` holds: the table schema plus the event schemas.
PROJECTION_VERSION = f"{SCHEMA_VERSION}-{_event_schema_fingerprint()}"

TASKS: tuple[tuple[str, str], ...] = (
    ("task_id", "VARCHAR NOT NULL"),
    ("name", "VARCHAR"),
    ("function_name", "VARCHAR"),
    ("module_id", "VARCHAR"),
    ("status", "VARCHAR NOT NULL"),
    ("recurring", "BOOLEAN"),
    ("trigger_kind", "VARCHAR"),
    ("trigger", "VARCHAR"),
    ("timezone", "VARCHAR"),
    ("parameters", "VARCHAR"),
    ("policies", "VARCHAR"),
    ("next_fire", "TIMESTAMPTZ"),
    ("last_fire", "TIMESTAMPTZ"),
    ("last_outcome", "VARCHAR"),
    ("runs", "INTEGER NOT NULL"),
    ("successes", "INTEGER NOT NULL"),
    ("failures", "INTEGER NOT NULL"),
    ("skips", "INTEGER NOT NULL"),
    ("open_executions", "INTEGER NOT NULL"),
    ("paused_at", "TIMESTAMPTZ"),
    ("pause_note", "VARCHAR"),
    ("paused_by", "VARCHAR"),
    ("end_reason", "VARCHAR"),
    ("ended_at", "TIMESTAMPTZ"),
    ("created_at", "TIMESTAMPTZ"),
    ("updated_at", "TIMESTAMPTZ NOT NULL"),
    ("version", "BIGINT NOT NULL"),
)

EXECUTIONS: tuple[tuple[str, str], ...] = (
    ("execution_id", "VARCHAR NOT NULL"),
    ("task_id", "VARCHAR NOT NULL"),
    ("position", "BIGINT NOT NULL"),
    ("nominal_time", "TIMESTAMPTZ"),
    ("started_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    ("duration_seconds", "DOUBLE"),
    ("attempt", "INTEGER"),
    ("reason", "VARCHAR"),
    ("status", "VARCHAR NOT NULL"),
    ("result", "VARCHAR"),
    ("error_type", "VARCHAR"),
    ("error_message", "VARCHAR"),
    ("traceback", "VARCHAR"),
    ("idempotency_key", "VARCHAR"),
    ("retry_at", "TIMESTAMPTZ"),
    ("late_outcome", "VARCHAR"),
    ("late_result", "VARCHAR"),
    ("late_error_type", "VARCHAR"),
    ("late_error_message", "VARCHAR"),
    ("late_duration_seconds", "DOUBLE"),
)

SKIPS: tuple[tuple[str, str], ...] = (
    ("position", "BIGINT NOT NULL"),
    ("task_id", "VARCHAR NOT NULL"),
    ("nominal_time", "TIMESTAMPTZ NOT NULL"),
    ("reason", "VARCHAR NOT NULL"),
    ("policy", "VARCHAR NOT NULL"),
    ("recorded_at", "TIMESTAMPTZ NOT NULL"),
    ("count", "INTEGER NOT NULL"),
    ("until", "TIMESTAMPTZ"),
)

EVENTS: tuple[tuple[str, str], ...] = (
    ("position", "BIGINT NOT NULL"),
    ("stream_id", "VARCHAR NOT NULL"),
    ("stream_version", "BIGINT NOT NULL"),
    ("event_type", "VARCHAR NOT NULL"),
    ("schema_version", "INTEGER NOT NULL"),
    ("recorded_at", "TIMESTAMPTZ NOT NULL"),
    ("payload", "VARCHAR NOT NULL"),
    ("correlation_id", "VARCHAR"),
    ("causation_id", "VARCHAR"),
    ("caused_by", "VARCHAR NOT NULL"),
)

CLEANUP_REGISTRATIONS: tuple[tuple[str, str], ...] = (
    ("registration_id", "VARCHAR NOT NULL"),
    ("directory", "VARCHAR"),
    ("pattern", "VARCHAR"),
    ("rules", "VARCHAR"),
    ("priority", "INTEGER"),
    ("schedule", "VARCHAR"),
    ("description", "VARCHAR"),
    ("module_id", "VARCHAR"),
    ("task_id", "VARCHAR"),
    ("active", "BOOLEAN NOT NULL"),
    ("registered_at", "TIMESTAMPTZ"),
    ("unregistered_at", "TIMESTAMPTZ"),
    ("runs", "INTEGER NOT NULL"),
    ("last_run_id", "VARCHAR"),
    ("last_run_at", "TIMESTAMPTZ"),
    ("last_run_status", "VARCHAR"),
    ("bytes_freed_total", "BIGINT NOT NULL"),
    ("updated_at", "TIMESTAMPTZ NOT NULL"),
    ("version", "BIGINT NOT NULL"),
)

CLEANUP_RUNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("registration_id", "VARCHAR NOT NULL"),
    ("dry_run", "BOOLEAN NOT NULL"),
    ("status", "VARCHAR NOT NULL"),
    ("started_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    ("files_examined", "INTEGER"),
    ("files_matched", "INTEGER"),
    ("files_selected", "INTEGER"),
    ("files_removed", "INTEGER"),
    ("bytes_freed", "BIGINT"),
    ("dirs_removed", "INTEGER"),
    ("errors", "INTEGER"),
    ("skipped", "INTEGER"),
    ("duration_seconds", "DOUBLE"),
    ("budget_exhausted", "BOOLEAN"),
    ("files_truncated", "BOOLEAN"),
    ("resume_after", "VARCHAR"),
    ("error_type", "VARCHAR"),
    ("error_message", "VARCHAR"),
)

CLEANUP_FILES: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR NOT NULL"),
    ("registration_id", "VARCHAR NOT NULL"),
    ("seq", "INTEGER NOT NULL"),
    ("path", "VARCHAR NOT NULL"),
    ("size", "BIGINT NOT NULL"),
    ("age_seconds", "DOUBLE NOT NULL"),
    ("reasons", "VARCHAR[] NOT NULL"),
    ("outcome", "VARCHAR NOT NULL"),
    ("error", "VARCHAR"),
    ("path_is_lossy", "BOOLEAN NOT NULL"),
)

PROJECTION_META: tuple[tuple[str, str], ...] = (
    ("id", "INTEGER NOT NULL"),
    ("position", "BIGINT NOT NULL"),
    ("schema_version", "VARCHAR NOT NULL"),
)

#: Every projection table with its columns, in creation order.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "tasks": TASKS,
    "executions": EXECUTIONS,
    "skips": SKIPS,
    "events": EVENTS,
    "cleanup_registrations": CLEANUP_REGISTRATIONS,
    "cleanup_runs": CLEANUP_RUNS,
    "cleanup_files": CLEANUP_FILES,
    "projection_meta": PROJECTION_META,
}

#: The key of each table (what the projector deletes and re-inserts by, and what the
#: equality tests order by). Not declared as PRIMARY KEY: DuckDB's ART index makes each
#: bulk delete+insert several times slower, and uniqueness follows from the projector
#: applying every position exactly once inside one transaction.
KEYS: dict[str, tuple[str, ...]] = {
    "tasks": ("task_id",),
    "executions": ("execution_id",),
    "skips": ("position",),
    "events": ("position",),
    "cleanup_registrations": ("registration_id",),
    "cleanup_runs": ("run_id",),
    "cleanup_files": ("run_id", "seq"),
    "projection_meta": ("id",),
}


def column_names(table: str) -> tuple[str, ...]:
    """The column names of ``table`` in declaration order."""
    return tuple(name for name, _ in TABLES[table])


#: Secondary indexes (DuckDB ART). One task's execution history is the hot query that
#: filters a big table on a selective key: with the index it reads ~100 rows instead of
#: scanning a million. The projector looks executions up (and deletes them) by id, a few
#: dozen per live batch: the second index turns each of those scans into probes. The raw
#: ``events`` table gets none: ``explain`` scans it in milliseconds, while an index would
#: cost the projector ~2 s per million events.
INDEXES: dict[str, tuple[str, str]] = {
    "executions_by_task": ("executions", "task_id"),
    "executions_by_id": ("executions", "execution_id"),
}


def create_statements() -> list[str]:
    """DDL creating every table and index (idempotent)."""
    statements = []
    for table, columns in TABLES.items():
        body = ", ".join(f'"{name}" {kind}' for name, kind in columns)
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
    statements.extend(index_statements())
    return statements


def index_statements() -> list[str]:
    """DDL creating the secondary indexes (idempotent)."""
    return [
        f'CREATE INDEX IF NOT EXISTS {name} ON {table} ("{column}")'
        for name, (table, column) in INDEXES.items()
    ]


def drop_index_statements() -> list[str]:
    """DDL dropping the secondary indexes (a bulk load recreates them at the end)."""
    return [f"DROP INDEX IF EXISTS {name}" for name in INDEXES]


def drop_statements() -> list[str]:
    """DDL dropping every table (idempotent)."""
    return [f"DROP TABLE IF EXISTS {table}" for table in TABLES]
