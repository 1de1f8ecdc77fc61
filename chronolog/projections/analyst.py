"""Ways for people to read the history while the scheduler owns the live DuckDB file.

DuckDB lets one process open a file for writing and no other process open it at all, so an
analyst gets one of:

* :func:`read_only_sql` — ad-hoc SQL on a connection to the projections (the command
  line's ``chronolog sql``, or a host's code on ``module.require_projector().reader()``),
  refused unless it can only read the projection tables, and run in a transaction that is
  rolled back (no HTTP route or agent tool takes SQL);
* :func:`export` — a consistent snapshot as a DuckDB file or a directory of Parquet files,
  written under a temporary name and renamed into place;
* :func:`rebuild_private` — a private DuckDB file built straight from the SQLite log,
  opened read-only; safe from another process while the scheduler runs.

From a shell: ``python -m chronolog.projections.analyst rebuild DATA_DIR OUT.duckdb`` or
``… export PROJECTIONS.duckdb OUT [--format parquet]`` (the latter only on a file no
scheduler holds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import duckdb

from chronolog.errors import ConflictError, RequestTimeoutError, StorageError, ValidationError
from chronolog.projections.db import connect, duckdb_errors
from chronolog.projections.projector import REBUILD_BATCH_SIZE, Projector
from chronolog.projections.schema import TABLES
from chronolog.store.sqlite import SQLiteEventStore

ExportFormat = Literal["duckdb", "parquet"]

#: Table functions a read-only query may call: generators and catalog introspection. Every
#: file reader (read_csv, read_text, glob, …) is left out, so SQL through the scheduler can
#: read the projections and nothing else on the machine.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "json_each",
        "json_tree",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_table_info",
        "pragma_show",
        "pragma_storage_info",
        "pragma_database_size",
    }
)
#: PRAGMAs that only describe the database.
SAFE_PRAGMAS = frozenset(
    {
        "table_info",
        "show",
        "show_tables",
        "show_tables_expanded",
        "database_size",
        "database_list",
        "storage_info",
        "version",
        "platform",
    }
)
MAX_SQL_LENGTH = 100_000
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?", re.IGNORECASE)
_PRAGMA = re.compile(r"^\s*PRAGMA\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(|=|;|$)", re.IGNORECASE)


class SqlResult(NamedTuple):
    """What :func:`read_only_sql` returns: column names, rows, and whether rows were cut."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


# --- read-only SQL ---------------------------------------------------------------------------


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _relation_exists(conn: duckdb.DuckDBPyConnection, ref: dict[str, Any]) -> bool:
    row = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
            UNION ALL
            SELECT database_name, schema_name, view_name FROM duckdb_views()
        )
        WHERE lower(name) = lower($name)
          AND ($schema = '' OR lower(schema_name) = lower($schema))
          AND ($catalog = '' OR lower(database_name) = lower($catalog))
        """,
        {
            "name": ref.get("table_name", ""),
            "schema": ref.get("schema_name", ""),
            "catalog": ref.get("catalog_name", ""),
        },
    ).fetchone()
    return bool(row and row[0])


def _check_select(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse a SELECT that reads anything but existing tables, views and safe functions.

    The parse tree comes from DuckDB itself (``json_serialize_sql``), so quoting tricks
    cannot hide a reference. A name that is neither a table, a view nor a CTE would be
    a *replacement scan* (``FROM 'secrets.csv'`` reads the file): refused.
    """
    with duckdb_errors("parsing the query"):
        row = conn.execute("SELECT json_serialize_sql($sql::VARCHAR)", {"sql": sql}).fetchone()
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error"):
        raise ValidationError(
            f"only read-only queries are allowed: {tree.get('error_message', 'cannot parse')}"
        )
    nodes = list(_walk(tree))
    ctes = {
        str(entry.get("key", "")).lower()
        for node in nodes
        if isinstance(node.get("cte_map"), dict)
        for entry in node["cte_map"].get("map", [])
    }
    for node in nodes:
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in SAFE_TABLE_FUNCTIONS:
                raise ValidationError(f"the table function {name}() is not allowed here")
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            is_cte = not node.get("schema_name") and name.lower() in ctes
            if not is_cte:
                with duckdb_errors("checking the query's tables"):
                    exists = _relation_exists(conn, node)
                if not exists:
                    raise ValidationError(f"no table or view named {name!r}")


def check_read_only(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise :class:`ValidationError` unless ``sql`` is one statement that only reads.

    Allowed: SELECT (with WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, which DuckDB parses as
    SELECT), EXPLAIN of such a SELECT, and the descriptive PRAGMAs in :data:`SAFE_PRAGMAS`.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise ValidationError("the query must be a non-empty string")
    if len(sql) > MAX_SQL_LENGTH:
        raise ValidationError(f"the query is longer than {MAX_SQL_LENGTH} characters")
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise ValidationError(f"cannot parse the query: {exc}") from exc
    if len(statements) != 1:
        raise ValidationError(f"send exactly one statement, not {len(statements)}")
    statement = statements[0]
    kind = statement.type
    text = statement.query
    if kind == duckdb.StatementType.SELECT:
        _check_select(conn, text)
    elif kind == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", text, count=1)
        if inner == text:
            raise ValidationError("cannot read the EXPLAIN statement")
        check_read_only(conn, inner)
        if conn.extract_statements(inner)[0].type != duckdb.StatementType.SELECT:
            raise ValidationError("EXPLAIN is allowed for SELECT statements only")
    elif kind == duckdb.StatementType.PRAGMA:
        match = _PRAGMA.match(text)
        if match is None or match.group(1).lower() not in SAFE_PRAGMAS:
            allowed = ", ".join(sorted(SAFE_PRAGMAS))
            raise ValidationError(f"only these PRAGMAs are allowed: {allowed}")
    else:
        raise ValidationError(
            f"only read-only statements are allowed (SELECT, EXPLAIN, PRAGMA); got {kind.name}"
        )


def read_only_sql(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    max_rows: int = 10_000,
    timeout: float | None = 30.0,
) -> SqlResult:
    """Run one read-only statement and return at most ``max_rows`` rows.

    The statement is checked by :func:`check_read_only`, then run on a fresh cursor inside
    a transaction that is always rolled back, so even a check that let a write through
    could not change the projections. After ``timeout`` seconds it is interrupted
    (:class:`RequestTimeoutError`). DuckDB's errors (unknown column, bad syntax) come back
    as :class:`ValidationError` with DuckDB's message.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValidationError(f"max_rows must be a positive integer, got {max_rows!r}")
    check_read_only(conn, sql)
    with duckdb_errors("opening a cursor"):
        cursor = conn.cursor()
    timer = None
    timed_out = threading.Event()
    if timeout is not None:

        def interrupt() -> None:
            timed_out.set()
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()

        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute("BEGIN TRANSACTION")
        try:
            if timer is not None:
                timer.start()
            cursor.execute(sql, params)
            description = cursor.description or []
            rows = cursor.fetchmany(max_rows + 1)
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
    except duckdb.Error as exc:
        if timed_out.is_set():
            raise RequestTimeoutError(f"the query ran longer than {timeout} s") from exc
        raise ValidationError(f"the query failed: {exc}") from exc
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.close()
    columns = [str(column[0]) for column in description]
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows)


# --- snapshots -------------------------------------------------------------------------------


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(
    conn: duckdb.DuckDBPyConnection,
    path: str | os.PathLike[str],
    format: ExportFormat = "duckdb",
) -> Path:
    """Write a consistent snapshot of every projection table to ``path`` and return it.

    ``duckdb``: one database file (replacing ``path`` atomically if it exists). ``parquet``:
    a directory with ``<table>.parquet`` per table (``path`` must not exist yet, or be an
    empty directory). All tables are read in one transaction, so they agree with each
    other and with ``projection_meta.position``; the snapshot appears under its final name
    only when complete.
    """
    if format not in ("duckdb", "parquet"):
        raise ValidationError(f"format must be 'duckdb' or 'parquet', got {format!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise ValidationError(f"the directory {target.parent} does not exist")
    if format == "parquet" and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConflictError(f"{target} already exists; choose a new directory")
    if format == "duckdb" and target.is_dir():
        raise ConflictError(f"{target} is a directory")
    temporary = _temporary_sibling(target)
    try:
        with duckdb_errors(f"exporting the projections to {target}"):
            cursor = conn.cursor()
            try:
                if format == "duckdb":
                    _export_duckdb(cursor, temporary)
                else:
                    _export_parquet(cursor, temporary)
            finally:
                cursor.close()
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        raise
    return target


def _export_duckdb(cursor: duckdb.DuckDBPyConnection, temporary: Path) -> None:
    # The alias is ours (never user text); the file path is bound as a parameter.
    # READ_WRITE: an attachment inherits the connection's mode, and the command line reads
    # a running scheduler's projections through a read-only one.
    alias = f"chronolog_export_{uuid.uuid4().hex}"
    cursor.execute(f"ATTACH $path AS {alias} (READ_WRITE)", {"path": str(temporary)})
    try:
        cursor.execute("BEGIN TRANSACTION")
        try:
            for table in TABLES:
                cursor.execute(f"CREATE TABLE {alias}.{table} AS SELECT * FROM {table}")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
    finally:
        cursor.execute(f"DETACH {alias}")


def _export_parquet(cursor: duckdb.DuckDBPyConnection, temporary: Path) -> None:
    temporary.mkdir()
    cursor.execute("BEGIN TRANSACTION")
    try:
        for table in TABLES:
            cursor.execute(
                f"COPY (SELECT * FROM {table}) TO $path (FORMAT parquet)",
                {"path": str(temporary / f"{table}.parquet")},
            )
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    for file in temporary.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def rebuild_private(
    data_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    batch_size: int = REBUILD_BATCH_SIZE,
) -> int:
    """Build a private DuckDB file at ``out_path`` from the SQLite log in ``data_dir``.

    The log is opened read-only (no lock, no writes), so this is safe from another process
    while the scheduler runs; the file reflects the log as far as it was read, and its
    ``projection_meta.position`` says how far. Returns that position.
    """
    target = Path(out_path)
    if not target.parent.is_dir():
        raise ValidationError(f"the directory {target.parent} does not exist")
    if target.is_dir():
        raise ConflictError(f"{target} is a directory")
    temporary = _temporary_sibling(target)
    store = SQLiteEventStore(data_dir, read_only=True)
    try:
        projector = Projector(store, temporary, rebuild_batch_size=batch_size)
        try:
            projector.rebuild()
            position = projector.position
        finally:
            projector.close()
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    except BaseException:
        for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    finally:
        store.close()
    return position


# --- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``rebuild DATA_DIR OUT`` or ``export DB OUT [--format parquet]``; prints the result."""
    parser = argparse.ArgumentParser(prog="python -m chronolog.projections.analyst")
    commands = parser.add_subparsers(dest="command", required=True)
    rebuild = commands.add_parser("rebuild", help="build a private DuckDB file from the log")
    rebuild.add_argument("data_dir")
    rebuild.add_argument("out")
    snapshot = commands.add_parser("export", help="snapshot a projection file no one holds")
    snapshot.add_argument("database")
    snapshot.add_argument("out")
    snapshot.add_argument("--format", choices=("duckdb", "parquet"), default="duckdb")
    args = parser.parse_args(argv)
    try:
        if args.command == "rebuild":
            position = rebuild_private(args.data_dir, args.out)
            print(f"{args.out}: projections at log position {position}")
        else:
            conn = connect(args.database, read_only=True)
            try:
                export(conn, args.out, args.format)
            finally:
                conn.close()
            print(f"{args.out}: snapshot of {args.database}")
    except (StorageError, ValidationError, ConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
