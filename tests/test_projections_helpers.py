"""Shared builders for the projection tests: short constructors for domain events, and a
helper that appends them to a store and projects them into a DuckDB file on disk.

(No tests live here; the other ``test_projections_*`` modules import these.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from chronolog.errors import StorageError
from chronolog.events import (
    Cause,
    CleanupRegistered,
    CleanupRunCompleted,
    CleanupRunFailed,
    CleanupRunStarted,
    CleanupUnregistered,
    DomainEvent,
    EventMetadata,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    LateResultRecorded,
    NextFireDecided,
    RetryScheduled,
    SkipReason,
    TaskCancelled,
    TaskCompleted,
    TaskDefinition,
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.housekeeping.model import CleanupFileRecord, CleanupRules, CleanupSummary
from chronolog.projections import Projector
from chronolog.projections.schema import KEYS, TABLES
from chronolog.store import InMemoryEventStore
from chronolog.store.base import EventStore
from chronolog.triggers.spec import DateTrigger, IntervalTrigger

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """``T0`` plus some minutes."""
    return T0 + timedelta(minutes=minutes)


def definition(
    name: str = "report",
    function_name: str = "reports.build",
    module_id: str | None = "billing",
    *,
    recurring: bool = True,
    parameters: dict[str, Any] | None = None,
) -> TaskDefinition:
    trigger = (
        IntervalTrigger(every=5, unit="minutes", start=T0, timezone="Europe/Berlin")
        if recurring
        else DateTrigger(run_at=T0)
    )
    return TaskDefinition(
        name=name,
        function_name=function_name,
        module_id=module_id,
        parameters=parameters if parameters is not None else {"n": 1},
        trigger=trigger,
    )


def scheduled(
    task_id: str,
    *,
    first_fire: datetime | None = T0,
    recurring: bool = True,
    name: str = "report",
    function_name: str = "reports.build",
    module_id: str | None = "billing",
) -> TaskScheduled:
    return TaskScheduled(
        task_id=task_id,
        definition=definition(name, function_name, module_id, recurring=recurring),
        recurring=recurring,
        first_fire=first_fire,
    )


def updated(task_id: str, *, next_fire: datetime | None, name: str = "renamed") -> TaskUpdated:
    return TaskUpdated(
        task_id=task_id, definition=definition(name), recurring=True, next_fire=next_fire
    )


def paused(task_id: str, note: str | None = "maintenance", by: Cause | None = None) -> TaskPaused:
    return TaskPaused(task_id=task_id, note=note, paused_by=by or Cause(kind="agent", id="ops"))


def resumed(task_id: str, next_fire: datetime | None) -> TaskResumed:
    return TaskResumed(task_id=task_id, next_fire=next_fire)


def cancelled(task_id: str) -> TaskCancelled:
    return TaskCancelled(task_id=task_id, note="obsolete")


def completed(task_id: str, reason: str = "one_shot") -> TaskCompleted:
    return TaskCompleted(task_id=task_id, reason=reason)  # type: ignore[arg-type]


def next_fire(task_id: str, when: datetime) -> NextFireDecided:
    return NextFireDecided(task_id=task_id, nominal_time=when, fire_at=when)


def execution_id(task_id: str, n: int) -> str:
    return f"{task_id}-x{n}"


def started(
    task_id: str, n: int, *, nominal: datetime = T0, attempt: int = 1, reason: str = "schedule"
) -> ExecutionStarted:
    return ExecutionStarted(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        nominal_time=nominal,
        attempt=attempt,
        reason=reason,  # type: ignore[arg-type]
        idempotency_key=f"{task_id}:{nominal.isoformat()}",
    )


def succeeded(task_id: str, n: int, *, duration: float = 1.5, result: Any = None) -> DomainEvent:
    return ExecutionSucceeded(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        result={"rows": n} if result is None else result,
        duration_seconds=duration,
    )


def failed(task_id: str, n: int, *, duration: float = 0.5) -> DomainEvent:
    return ExecutionFailed(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        error_type="ValueError",
        message="bad input",
        traceback="Traceback ...",
        duration_seconds=duration,
    )


def timed_out(task_id: str, n: int) -> DomainEvent:
    return ExecutionTimedOut(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        timeout_seconds=30.0,
        duration_seconds=30.0,
    )


def execution_cancelled(task_id: str, n: int) -> DomainEvent:
    return ExecutionCancelled(
        task_id=task_id, execution_id=execution_id(task_id, n), reason="shutdown"
    )


def interrupted(task_id: str, n: int) -> DomainEvent:
    return ExecutionInterrupted(task_id=task_id, execution_id=execution_id(task_id, n))


def late(task_id: str, n: int, *, ok: bool = True) -> DomainEvent:
    return LateResultRecorded(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        succeeded=ok,
        result=42 if ok else None,
        error_type=None if ok else "RuntimeError",
        message=None if ok else "late failure",
        duration_seconds=45.0,
    )


def retry(task_id: str, n: int, *, attempt: int = 2, nominal: datetime = T0) -> DomainEvent:
    return RetryScheduled(
        task_id=task_id,
        execution_id=execution_id(task_id, n),
        nominal_time=nominal,
        attempt=attempt,
        retry_at=nominal + timedelta(seconds=10),
    )


def skipped(
    task_id: str,
    nominal: datetime,
    reason: SkipReason = "overlap",
    *,
    until: datetime | None = None,
    count: int = 1,
) -> DomainEvent:
    return ExecutionSkipped(
        task_id=task_id,
        nominal_time=nominal,
        reason=reason,
        policy="skip",
        until=until,
        count=count,
    )


def registered(registration_id: str, *, module_id: str | None = "logs") -> DomainEvent:
    return CleanupRegistered(
        registration_id=registration_id,
        directory=f"/srv/{registration_id}",
        rules=CleanupRules(pattern="*.log", retention_days=7.0),
        module_id=module_id,
        description="old logs",
    )


def unregistered(registration_id: str) -> DomainEvent:
    return CleanupUnregistered(registration_id=registration_id)


def run_started(registration_id: str, run_id: str, *, dry_run: bool = False) -> DomainEvent:
    return CleanupRunStarted(registration_id=registration_id, run_id=run_id, dry_run=dry_run)


def run_completed(
    registration_id: str, run_id: str, *, files: int = 2, dry_run: bool = False
) -> DomainEvent:
    records = tuple(
        CleanupFileRecord(
            path=f"app.{k}.log",
            size=100 * (k + 1),
            age_seconds=86_400.0 * 9,
            reasons=("age",),
            outcome="would_remove" if dry_run else "removed",
        )
        for k in range(files)
    )
    freed = 0 if dry_run else sum(r.size for r in records)
    return CleanupRunCompleted(
        registration_id=registration_id,
        run_id=run_id,
        dry_run=dry_run,
        summary=CleanupSummary(
            files_examined=files + 3,
            files_matched=files,
            files_selected=files,
            files_removed=0 if dry_run else files,
            bytes_freed=freed,
            duration_seconds=0.25,
        ),
        files=records,
    )


def run_failed(registration_id: str, run_id: str) -> DomainEvent:
    return CleanupRunFailed(
        registration_id=registration_id,
        run_id=run_id,
        error_type="UnsafePathError",
        message="directory is a symlink",
    )


def stream_of(event: DomainEvent) -> str:
    """The stream an event belongs in: ``task-<id>`` or ``cleanup-<id>``."""
    task_id = getattr(event, "task_id", None)
    if task_id is not None and not hasattr(event, "registration_id"):
        return f"task-{task_id}"
    return f"cleanup-{event.registration_id}"  # type: ignore[attr-defined]


def append_all(
    store: EventStore, events: Iterable[DomainEvent], metadata: EventMetadata | None = None
) -> None:
    """Append events one by one, each to its own stream, in the given order."""
    for event in events:
        store.append(stream_of(event), [event], metadata=metadata)


def store_with(*events: DomainEvent) -> InMemoryEventStore:
    store = InMemoryEventStore()
    append_all(store, events)
    return store


def project(path: Path, *events: DomainEvent, batch_size: int = 10_000) -> Projector:
    """A projector over an in-memory log holding ``events``, caught up, on a file."""
    projector = Projector(store_with(*events), path, batch_size=batch_size)
    projector.catch_up()
    return projector


def one(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> dict[str, Any]:
    """The single row ``sql`` returns, as a dict."""
    cursor = conn.execute(sql, list(params))
    rows = cursor.fetchall()
    assert len(rows) == 1, rows
    names = [d[0] for d in cursor.description]
    return dict(zip(names, rows[0], strict=True))


def table_contents(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows, in key order: what equal projections must share."""
    contents = {}
    for table in TABLES:
        order = ", ".join(f'"{key}"' for key in KEYS[table])
        contents[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    return contents


def invalidate(projector: Projector) -> None:
    """Make DuckDB refuse all further work on the projector's database, as a checkpoint
    that hits a full disk does (a real fatal error, not a stand-in)."""
    cursor = projector.reader()
    cursor.execute("SET debug_checkpoint_abort = 'before_header'")
    # Something for the checkpoint to write, that leaves the tables as they are.
    cursor.execute("CREATE TABLE scratch (x INTEGER)")
    cursor.execute("DROP TABLE scratch")
    with pytest.raises(duckdb.FatalException):
        cursor.execute("FORCE CHECKPOINT")  # FORCE: waits for a commit in progress
    with pytest.raises(StorageError, match="invalidated"):
        projector.reader()
