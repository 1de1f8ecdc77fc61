"""What the queries return: frozen msgspec Structs, ready for the facade, HTTP and agents.

Columns that hold JSON text in DuckDB (trigger, parameters, policies, results, rules) are
decoded here, so callers get dicts and values, never JSON strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a listing: ``items`` in order and ``total`` matches over all pages."""

    items: tuple[T, ...]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        """Whether rows exist beyond this page."""
        return self.offset + len(self.items) < self.total


class TaskRow(msgspec.Struct, frozen=True, gc=False):
    """A task as the ``tasks`` projection shows it (see the README's table reference).

    Fields are in the table's column order and may be given positionally: the task list
    builds a hundred of these per page, and positional construction is several times
    cheaper than keywords. Not tracked by the cyclic GC: a row holds values and JSON
    dicts, never itself.
    """

    task_id: str
    name: str | None
    function_name: str | None
    module_id: str | None
    status: str
    recurring: bool | None
    trigger_kind: str | None
    trigger: dict[str, Any] | None
    timezone: str | None
    parameters: dict[str, Any] | None
    policies: dict[str, Any] | None
    next_fire: datetime | None
    last_fire: datetime | None
    last_outcome: str | None
    runs: int
    successes: int
    failures: int
    skips: int
    open_executions: int
    paused_at: datetime | None
    pause_note: str | None
    paused_by: str | None
    end_reason: str | None
    ended_at: datetime | None
    created_at: datetime | None
    updated_at: datetime
    version: int


class TaskSummary(msgspec.Struct, frozen=True, gc=False):
    """A task as list views show it: a :class:`TaskRow` without ``parameters`` and
    ``policies``.

    Listing pages of these skips decoding two JSON columns per row that a list does not
    show (the HTTP listing uses it). Fields are positional, in :class:`TaskRow`'s order.
    Not tracked by the cyclic GC (a page makes a hundred; they hold no cycles).
    """

    task_id: str
    name: str | None
    function_name: str | None
    module_id: str | None
    status: str
    recurring: bool | None
    trigger_kind: str | None
    trigger: dict[str, Any] | None
    timezone: str | None
    next_fire: datetime | None
    last_fire: datetime | None
    last_outcome: str | None
    runs: int
    successes: int
    failures: int
    skips: int
    open_executions: int
    paused_at: datetime | None
    pause_note: str | None
    paused_by: str | None
    end_reason: str | None
    ended_at: datetime | None
    created_at: datetime | None
    updated_at: datetime
    version: int


class ExecutionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One execution from the ``executions`` projection."""

    execution_id: str
    task_id: str
    position: int
    nominal_time: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    attempt: int | None
    reason: str | None
    status: str
    result: Any
    error_type: str | None
    error_message: str | None
    traceback: str | None
    idempotency_key: str | None
    retry_at: datetime | None
    late_outcome: str | None
    late_result: Any
    late_error_type: str | None
    late_error_message: str | None
    late_duration_seconds: float | None


class SkipRow(msgspec.Struct, frozen=True, kw_only=True):
    """A nominal time that was not run (``ExecutionSkipped``), from ``skips``; or, for a
    long gap, ``count`` of them from ``nominal_time`` to ``until``."""

    position: int
    task_id: str
    nominal_time: datetime
    reason: str
    policy: str
    recorded_at: datetime
    count: int = 1
    until: datetime | None = None


class TaskStats(msgspec.Struct, frozen=True, kw_only=True):
    """Aggregates over one task's executions.

    ``failures`` counts failed, timed-out and interrupted executions; ``success_rate`` is
    ``successes / (successes + failures)`` (None before the first outcome). Durations are
    over executions that report one (succeeded, failed, timed out), in seconds.
    """

    task_id: str
    runs: int
    running: int
    successes: int
    failures: int
    failed: int
    timed_out: int
    interrupted: int
    cancelled: int
    skipped: int
    success_rate: float | None
    duration_p50: float | None
    duration_p95: float | None
    duration_mean: float | None
    duration_max: float | None
    first_started_at: datetime | None
    last_started_at: datetime | None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """One thing the scheduler (or someone) decided about a task, with a sentence saying it.

    ``kind`` is one of: scheduled, updated, paused, resumed, cancelled, completed,
    next_fire, fired, succeeded, failed, timed_out, execution_cancelled, interrupted,
    late_result, skipped, retry.
    """

    position: int
    at: datetime
    kind: str
    sentence: str
    caused_by: str
    execution_id: str | None = None
    nominal_time: datetime | None = None


class CleanupRow(msgspec.Struct, frozen=True, kw_only=True):
    """A cleanup registration from ``cleanup_registrations``."""

    registration_id: str
    directory: str | None
    pattern: str | None
    rules: dict[str, Any] | None
    priority: int | None
    schedule: str | None
    description: str | None
    module_id: str | None
    task_id: str | None
    active: bool
    registered_at: datetime | None
    unregistered_at: datetime | None
    runs: int
    last_run_id: str | None
    last_run_at: datetime | None
    last_run_status: str | None
    bytes_freed_total: int
    updated_at: datetime
    version: int


class CleanupRunRow(msgspec.Struct, frozen=True, kw_only=True):
    """One cleanup run from ``cleanup_runs``."""

    run_id: str
    registration_id: str
    dry_run: bool
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    files_examined: int | None
    files_matched: int | None
    files_selected: int | None
    files_removed: int | None
    bytes_freed: int | None
    dirs_removed: int | None
    errors: int | None
    skipped: int | None
    duration_seconds: float | None
    budget_exhausted: bool | None
    files_truncated: bool | None
    resume_after: str | None
    error_type: str | None
    error_message: str | None


class CleanupFileRow(msgspec.Struct, frozen=True, kw_only=True):
    """One file a cleanup run removed, would remove, skipped or failed on."""

    run_id: str
    registration_id: str
    seq: int
    path: str
    size: int
    age_seconds: float
    reasons: tuple[str, ...]
    outcome: str
    error: str | None
    path_is_lossy: bool


__all__ = [
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
]
