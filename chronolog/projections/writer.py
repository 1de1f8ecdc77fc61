"""Bulk I/O between a batch fold and DuckDB: load the touched rows, write the final ones.

A batch goes through two steps. :func:`prepare` (Python: load misses, fold, encode) turns
envelopes into a :class:`PreparedBatch`; :func:`commit` (DuckDB) writes it as one
transaction together with the checkpoint. The projector may prepare batch N+1 on one
thread while another commits batch N.

Every statement handles a whole batch, never one event. Large row sets go in through
DuckDB's JSON reader: msgspec encodes the row Structs to JSON lines in one C call and
``INSERT … SELECT * FROM read_json(…)`` parses them inside DuckDB. Measured on these rows,
that costs the Python thread about a fifth of what the appender does (which converts each
value while holding the GIL), and DuckDB's part runs without the GIL. Each such statement
has a fixed cost of a few milliseconds, though, so small row sets (the live tail) go
through the appender instead. Both paths store identical values: JSON columns are sent as
text, never as nested JSON that DuckDB would re-serialise.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb
import msgspec
from msgspec.structs import astuple

from chronolog.errors import StorageError
from chronolog.events import Envelope
from chronolog.projections.apply import (
    BatchFold,
    ExecutionState,
    RegistrationState,
    RunState,
    TaskState,
    touched_keys,
)
from chronolog.projections.cache import StateCache, TableCache
from chronolog.projections.schema import TABLES, column_names

_State = TypeVar("_State", TaskState, ExecutionState, RegistrationState, RunState)

#: The longest JSON line DuckDB's reader is told to expect unless a batch has a longer one
#: (DuckDB's own default). The reader sets aside twice this much memory for every file, so
#: the size follows each batch's longest line rather than the largest one possible (a
#: task's parameters have no size limit): a fixed 1 GiB asked DuckDB for 2 GiB per insert,
#: more than its whole default memory limit (80 % of the RAM or of a container's limit) on
#: a machine with less than about 2.6 GB, where every rebuild then failed.
DEFAULT_OBJECT_BYTES = 1 << 24

_TEMP_PREFIX = "chronolog-projection-"

#: Row sets up to this size use the appender; larger ones the JSON reader.
APPENDER_MAX_ROWS = 1_000

_ENCODER = msgspec.json.Encoder()


class JsonLines(NamedTuple):
    """Rows encoded as JSON lines for DuckDB's reader, and the length of the longest."""

    data: bytes
    longest: int

    @classmethod
    def encode(cls, rows: Sequence[Any]) -> JsonLines:
        data = _ENCODER.encode_lines(rows)
        return cls(data, _longest_line(data))


def _longest_line(data: bytes) -> int:
    """The length of the longest line of ``data``; at most ``len(data)`` when that is under
    :data:`DEFAULT_OBJECT_BYTES` (then nothing needs to know more)."""
    if len(data) <= DEFAULT_OBJECT_BYTES:
        return len(data)
    longest = start = 0
    find = data.find
    while (end := find(b"\n", start)) >= 0:
        longest = max(longest, end - start)
        start = end + 1
    return max(longest, len(data) - start)


def object_bytes(longest: int) -> int:
    """The ``maximum_object_size`` for lines of up to ``longest`` bytes: DuckDB's default,
    else the next power of two (so only a few statements are ever made)."""
    if longest < DEFAULT_OBJECT_BYTES:
        return DEFAULT_OBJECT_BYTES
    return 1 << longest.bit_length()


def _read_json(columns: tuple[tuple[str, str], ...], max_object: int) -> str:
    """``read_json`` of a JSON-lines file into ``columns`` (other keys are ignored)."""
    spec = ", ".join(f"'{name}': '{kind.removesuffix(' NOT NULL')}'" for name, kind in columns)
    return (
        f"read_json($path, format = 'newline_delimited', records = true, "
        f"maximum_object_size = {max_object}, columns = {{{spec}}})"
    )


@functools.cache
def _insert_sql(table: str, max_object: int) -> str:
    return f"INSERT INTO {table} BY NAME SELECT * FROM {_read_json(TABLES[table], max_object)}"


@dataclass
class PreparedBatch:
    """A folded batch, ready to commit: rows to delete by key, JSON lines to insert."""

    number: int
    first_position: int
    last_position: int
    #: (table, key column, keys that already have a row)
    deletes: list[tuple[str, str, list[str]]] = field(default_factory=list)
    #: (table, JSON lines of the new rows, or the rows as tuples for the appender). Taken
    #: at prepare time: the states themselves may change while this batch waits to commit.
    inserts: list[tuple[str, JsonLines | list[tuple[Any, ...]]]] = field(default_factory=list)
    #: The final ``tasks`` rows of this batch as column tuples, for the in-memory task board.
    tasks: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def span(self) -> str:
        return f"{self.first_position}..{self.last_position}"


def _load_table(
    conn: duckdb.DuckDBPyConnection,
    cache: TableCache[_State],
    table: str,
    keys: set[str],
    state_type: type[_State],
) -> dict[str, _State]:
    """Cached states for ``keys``, plus the misses read from DuckDB in one query."""
    states, misses = cache.lookup(keys)
    if misses:
        names = column_names(table)
        columns = ", ".join(f'"{name}"' for name in names)
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE {names[0]} IN (SELECT unnest($keys))",
            {"keys": list(misses)},
        ).fetchall()
        for row in rows:
            states[row[0]] = state_type(*row)
    return states


def prepare(
    conn: duckdb.DuckDBPyConnection,
    envelopes: Sequence[Envelope],
    cache: StateCache,
    batch_number: int,
    *,
    fold_slice: int | None = None,
    between_slices: Callable[[], object] | None = None,
) -> PreparedBatch:
    """Fold ``envelopes`` over the current rows they touch and encode the result.

    Current rows come from ``cache``, else from ``conn`` in one query per table; the final
    states are remembered in ``cache`` straight away, pinned under ``batch_number`` until
    the caller releases them after the commit, so the next batch can be prepared before this
    one commits (the caller resets the cache if the commit fails). ``fold_slice`` and
    ``between_slices``: see :meth:`BatchFold.apply_all`.
    """
    keys = touched_keys(envelopes)
    tasks = _load_table(conn, cache.tasks, "tasks", keys.tasks, TaskState)
    executions = _load_table(conn, cache.executions, "executions", keys.executions, ExecutionState)
    registrations = _load_table(
        conn, cache.registrations, "cleanup_registrations", keys.registrations, RegistrationState
    )
    runs = _load_table(conn, cache.runs, "cleanup_runs", keys.runs, RunState)
    fold = BatchFold(tasks.values(), executions.values(), registrations.values(), runs.values())
    fold.apply_all(envelopes, slice_size=fold_slice, between_slices=between_slices)
    cache.remember(fold, batch_number)

    # Touched rows are replaced whole: deleted, then inserted with their final state. Only
    # keys that already had a row are deleted: during a rebuild most keys are new. (Updating
    # just the changed columns in place was measured: slower per batch, and no fewer DuckDB
    # checkpoints, whose WAL volume is mostly the new events rows.)
    replaced_files = [run_id for run_id in runs if run_id in fold.files]
    deletes = [
        ("tasks", "task_id", list(tasks)),
        ("executions", "execution_id", list(executions)),
        ("cleanup_registrations", "registration_id", list(registrations)),
        ("cleanup_runs", "run_id", list(runs)),
        ("cleanup_files", "run_id", replaced_files),
    ]
    inserts: list[tuple[str, Sequence[Any]]] = [
        ("tasks", list(fold.tasks.values())),
        ("executions", list(fold.executions.values())),
        ("cleanup_registrations", list(fold.registrations.values())),
        ("cleanup_runs", list(fold.runs.values())),
        ("cleanup_files", [row for file_rows in fold.files.values() for row in file_rows]),
        ("skips", fold.skips),
        ("events", fold.events),
    ]
    # The board needs the task rows as tuples in any case; the appender takes the same list.
    task_rows = [astuple(state) for state in fold.tasks.values()]
    return PreparedBatch(
        number=batch_number,
        first_position=envelopes[0].position,
        last_position=envelopes[-1].position,
        deletes=[entry for entry in deletes if entry[2]],
        inserts=[
            (table, task_rows if table == "tasks" and _small(items) else _snapshot(items))
            for table, items in inserts
            if items
        ],
        tasks=task_rows,
    )


def _small(rows: Sequence[Any]) -> bool:
    return len(rows) <= APPENDER_MAX_ROWS


def _snapshot(rows: Sequence[Any]) -> JsonLines | list[tuple[Any, ...]]:
    """Rows as JSON lines (many) or as tuples for the appender (few)."""
    if not _small(rows):
        return JsonLines.encode(rows)
    return [astuple(row) for row in rows]


def staging_prefix(db_path: Path) -> str:
    """The name prefix of the directories that stage JSON lines for the database
    ``db_path``, beside it (see :func:`commit`)."""
    return f".{db_path.name}.staging-"


def commit(
    conn: duckdb.DuckDBPyConnection, batch: PreparedBatch, db_path: Path | None = None
) -> None:
    """Write ``batch`` and move the checkpoint to its last position, in one transaction.

    JSON lines are staged in a temporary directory that lives only as long as this call
    (small batches go through the appender and need none): beside ``db_path``, so that no
    directory but the database's own need be writable (a container whose root file system
    is read-only has no usable temporary directory), else in the system's. Failing to
    stage them (a full disk) raises :class:`StorageError`.
    """
    try:
        _commit(conn, batch, db_path)
    except OSError as exc:
        where = db_path.parent if db_path is not None else "the temporary directory"
        raise StorageError(f"staging rows for DuckDB in {where} failed: {exc}") from exc


def _commit(conn: duckdb.DuckDBPyConnection, batch: PreparedBatch, db_path: Path | None) -> None:
    staged = any(isinstance(rows, JsonLines) for _, rows in batch.inserts)
    with contextlib.ExitStack() as stack:
        directory = None
        if staged:
            prefix, parent = _TEMP_PREFIX, None
            if db_path is not None:
                prefix, parent = staging_prefix(db_path), db_path.parent
            temporary = tempfile.TemporaryDirectory(
                prefix=prefix, dir=parent, ignore_cleanup_errors=True
            )
            directory = Path(stack.enter_context(temporary))
        conn.begin()
        try:
            for table, key, keys in batch.deletes:
                conn.execute(
                    f"DELETE FROM {table} WHERE {key} IN (SELECT unnest($keys))",
                    {"keys": keys},
                )
            for table, rows in batch.inserts:
                if isinstance(rows, JsonLines):
                    assert directory is not None
                    path = directory / f"{table}.jsonl"
                    path.write_bytes(rows.data)
                    sql = _insert_sql(table, object_bytes(rows.longest))
                    conn.execute(sql, {"path": str(path)})
                else:
                    with conn.appender(table) as appender:
                        appender.append_rows(rows)
            conn.execute(
                "UPDATE projection_meta SET position = $position WHERE id = 1",
                {"position": batch.last_position},
            )
            conn.commit()
        except BaseException:
            # A COMMIT that failed (a full disk) has ended the transaction: its rollback
            # would raise "no transaction is active" over the error that says why.
            with contextlib.suppress(duckdb.Error):
                conn.rollback()
            raise
