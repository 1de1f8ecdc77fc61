"""Opening DuckDB and mapping its errors: shared by the projector and the queries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from chronolog.errors import StorageError
from chronolog.limits import is_utf8

IN_MEMORY = ":memory:"

#: What DuckDB says of a damaged database file, as opposed to one that is locked, busy or
#: out of reach: a truncated file, a foreign one, a block whose checksum does not match.
_DAMAGE = (
    "not a valid DuckDB database file",
    "Could not read enough bytes",
    "Corrupt database file",
)


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
    if "?" in target:
        # DuckDB takes "file?option=value" and puts its WAL at "file.wal?option=value":
        # with a "?" in a directory's name, the first commit fails.
        raise StorageError(
            f"cannot keep a DuckDB database at {target}: a '?' in its path is read as the "
            "start of options"
        )
    if not is_utf8(target):  # DuckDB failed with "std::bad_cast"
        raise StorageError(
            f"cannot keep a DuckDB database at {target!r}: the path is not valid Unicode "
            "(undecodable bytes in a file name)"
        )
    with duckdb_errors(f"opening the projection database {target}"):
        conn = duckdb.connect(target, read_only=read_only)
        # Timestamps come back as aware UTC datetimes, whatever the machine's zone.
        conn.execute("SET TimeZone = 'UTC'")
    return conn


def says_damaged(error: StorageError) -> bool:
    """Whether ``error`` is DuckDB saying the database file is damaged."""
    cause = error.__cause__
    return isinstance(cause, duckdb.Error) and any(text in str(cause) for text in _DAMAGE)


def says_invalidated(error: StorageError) -> bool:
    """Whether ``error`` comes from a DuckDB database that refuses all work from then on.

    DuckDB invalidates a database after a fatal or internal error (a checkpoint that hit a
    full disk is one): every later statement on any of its connections fails, until the
    database is opened again. The file itself is intact; opening it replays its WAL.
    """
    cause = error.__cause__
    return isinstance(cause, duckdb.FatalException | duckdb.InternalException) or (
        isinstance(cause, duckdb.Error) and "database has been invalidated" in str(cause)
    )


def damaged_file(db_path: str | Path | None, error: StorageError) -> Path | None:
    """The database file ``db_path``, if ``error`` (from opening or first reading it) says
    the file is damaged; None for any other failure and for an in-memory database."""
    if db_path is None or str(db_path) == IN_MEMORY or not says_damaged(error):
        return None
    return Path(db_path)


def set_aside(path: Path) -> Path:
    """Rename ``path`` (and its WAL, if any) to ``<name>.damaged-<UTC time>`` and return
    the new name: kept for a look, out of the way of a new database."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    path.rename(aside)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        wal.rename(aside.with_name(aside.name + ".wal"))
    return aside


__all__ = [
    "IN_MEMORY",
    "connect",
    "damaged_file",
    "duckdb_errors",
    "says_damaged",
    "says_invalidated",
    "set_aside",
]
