"""Opening DuckDB and mapping its errors: shared by the projector and the queries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb

from chronolog.errors import StorageError

IN_MEMORY = ":memory:"


@contextlib.contextmanager
def duckdb_errors(action: str) -> Iterator[None]:
    """Map DuckDB's exceptions onto :class:`StorageError` (nothing above this sees them)."""
    try:
        yield
    except duckdb.Error as exc:
        raise StorageError(f"{action} failed: {exc}") from exc


def connect(db_path: str | Path | None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB database (``None`` or ``":memory:"``: in memory) with UTC sessions."""
    target = IN_MEMORY if db_path is None or str(db_path) == IN_MEMORY else str(db_path)
    with duckdb_errors(f"opening the projection database {target}"):
        conn = duckdb.connect(target, read_only=read_only)
        # Timestamps come back as aware UTC datetimes, whatever the machine's zone.
        conn.execute("SET TimeZone = 'UTC'")
    return conn


__all__ = ["IN_MEMORY", "connect", "duckdb_errors"]
