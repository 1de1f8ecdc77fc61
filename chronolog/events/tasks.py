"""Domain events in a task's stream (``task-<id>``): its definition and life cycle."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from chronolog.clock import AwareDatetime
from chronolog.events.base import Cause, DomainEvent
from chronolog.triggers.spec import TriggerSpec

OverlapPolicy = Literal["skip", "queue_one", "allow", "cancel_running"]
CatchupPolicy = Literal["run_once", "run_all", "skip"]
CompletionReason = Literal["one_shot", "end_date", "max_runs"]


class TaskPolicies(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """How a task's executions behave: retries, timeout, overlap and catch-up."""

    max_retries: int = 0
    retry_backoff_seconds: float = 1.0
    retry_backoff_max_seconds: float = 3600.0
    retry_jitter: float = 0.1
    timeout_seconds: float | None = None
    overlap: OverlapPolicy = "skip"
    max_concurrent: int = 1
    catchup: CatchupPolicy = "run_once"
    catchup_limit: int = 100
    misfire_grace_seconds: float | None = 60.0


class TaskDefinition(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Everything that defines a task apart from its id: what runs, with what, and when."""

    name: str
    function_name: str
    module_id: str | None = None
    parameters: dict[str, Any] = {}
    trigger: TriggerSpec
    policies: TaskPolicies = TaskPolicies()


class TaskScheduled(DomainEvent, frozen=True, kw_only=True):
    """A task was created; ``first_fire`` is the nominal time of its first run (None: never)."""

    task_id: str
    definition: TaskDefinition
    recurring: bool
    first_fire: AwareDatetime | None


class TaskUpdated(DomainEvent, frozen=True, kw_only=True):
    """A task's definition was replaced; ``next_fire`` is recomputed from the new trigger."""

    task_id: str
    definition: TaskDefinition
    recurring: bool
    next_fire: AwareDatetime | None


class TaskPaused(DomainEvent, frozen=True, kw_only=True):
    """A task stopped firing until resumed.

    Schema version 2 renamed ``reason`` to ``note`` and added ``paused_by``; version-1
    payloads are upcast on read (see ``chronolog.events.upcasting``).
    """

    schema_version = 2

    task_id: str
    note: str | None = None
    paused_by: Cause = Cause()


class TaskResumed(DomainEvent, frozen=True, kw_only=True):
    """A paused task fires again from ``next_fire``."""

    task_id: str
    next_fire: AwareDatetime | None
    resumed_by: Cause = Cause()


class TaskCancelled(DomainEvent, frozen=True, kw_only=True):
    """A task will never fire again."""

    task_id: str
    note: str | None = None
    cancelled_by: Cause = Cause()


class TaskCompleted(DomainEvent, frozen=True, kw_only=True):
    """A task has nothing left to fire: one-shot done, end date passed or run limit hit."""

    task_id: str
    reason: CompletionReason


class NextFireDecided(DomainEvent, frozen=True, kw_only=True):
    """The scheduler chose the task's next fire (``fire_at`` includes jitter).

    ``notes`` records where a DST or month-end rule moved the time.
    """

    task_id: str
    nominal_time: AwareDatetime
    fire_at: AwareDatetime
    notes: tuple[str, ...] = ()


TASK_EVENTS: tuple[type[DomainEvent], ...] = (
    TaskScheduled,
    TaskUpdated,
    TaskPaused,
    TaskResumed,
    TaskCancelled,
    TaskCompleted,
    NextFireDecided,
)
