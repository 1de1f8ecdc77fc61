"""A task's state, rebuilt by folding the events of its stream.

The state holds exactly what the task decider needs to take its next decision and what
the facade reports about one task; the DuckDB projections keep richer read models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from chronolog.events import (
    DomainEvent,
    Envelope,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionQueued,
    ExecutionReason,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    LateResultRecorded,
    NextFireDecided,
    RetryScheduled,
    TaskCancelled,
    TaskCompleted,
    TaskDefinition,
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)

#: Where a task is in its life, apart from whether something is running right now.
TaskLifecycle = Literal["new", "active", "paused", "completed", "cancelled"]

#: The status users see (``running`` while an execution is open on an active task).
TaskStatus = Literal["new", "scheduled", "running", "paused", "completed", "cancelled", "failed"]

Outcome = Literal["succeeded", "failed", "timed_out", "cancelled", "interrupted", "skipped"]

_FAILED_OUTCOMES = ("failed", "timed_out", "interrupted")


class OpenExecution(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """An execution that has started and not yet finished."""

    execution_id: str
    nominal_time: datetime
    attempt: int
    reason: ExecutionReason
    idempotency_key: str | None = None


class PendingRetry(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A failed execution (``execution_id``) waiting to be tried again as ``attempt``."""

    execution_id: str
    nominal_time: datetime
    attempt: int
    retry_at: datetime
    idempotency_key: str | None = None


class TaskState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Everything the decider knows about one task.

    ``fires`` counts nominal times consumed by the schedule (run, queued or skipped), which
    is what a trigger's ``max_runs`` limits; ``last_nominal`` is the newest of them, so
    schedules never go backwards. Consuming the pending ``next_nominal`` clears it until a
    ``NextFireDecided`` names the following one.
    """

    task_id: str
    definition: TaskDefinition | None = None
    recurring: bool = False
    lifecycle: TaskLifecycle = "new"
    next_nominal: datetime | None = None
    next_fire_at: datetime | None = None
    last_nominal: datetime | None = None
    fires: int = 0
    open_executions: tuple[OpenExecution, ...] = ()
    pending_retries: tuple[PendingRetry, ...] = ()
    queued: tuple[datetime, ...] = ()
    runs: int = 0
    successes: int = 0
    failures: int = 0
    last_outcome: Outcome | None = None
    pause_note: str | None = None
    version: int = 0

    @property
    def status(self) -> TaskStatus:
        """The status shown to users."""
        if self.lifecycle == "completed":
            return "failed" if self.last_outcome in _FAILED_OUTCOMES else "completed"
        if self.lifecycle == "active":
            return "running" if self.open_executions else "scheduled"
        return self.lifecycle

    @property
    def exists(self) -> bool:
        """Whether the task was ever scheduled."""
        return self.lifecycle != "new"

    @property
    def is_final(self) -> bool:
        """Completed or cancelled: no command changes it any more."""
        return self.lifecycle in ("completed", "cancelled")

    def open_execution(self, execution_id: str) -> OpenExecution | None:
        """The open execution with this id, if any."""
        for execution in self.open_executions:
            if execution.execution_id == execution_id:
                return execution
        return None


def _close(state: TaskState, execution_id: str, outcome: Outcome, success: bool) -> TaskState:
    if state.open_execution(execution_id) is None:
        # Already closed (a late duplicate): the first outcome stands.
        return state
    return replace(
        state,
        open_executions=tuple(e for e in state.open_executions if e.execution_id != execution_id),
        successes=state.successes + (1 if success else 0),
        failures=state.failures + (0 if success or outcome == "cancelled" else 1),
        last_outcome=outcome,
    )


@functools.singledispatch
def _apply(event: DomainEvent, state: TaskState) -> TaskState:
    # Events of other streams (cleanup) or purely informational ones change nothing here.
    return state


@_apply.register
def _(event: TaskScheduled, state: TaskState) -> TaskState:
    return replace(
        state,
        definition=event.definition,
        recurring=event.recurring,
        lifecycle="active",
        next_nominal=event.first_fire,
        next_fire_at=event.first_fire,
    )


@_apply.register
def _(event: TaskUpdated, state: TaskState) -> TaskState:
    return replace(
        state,
        definition=event.definition,
        recurring=event.recurring,
        next_nominal=event.next_fire,
        next_fire_at=event.next_fire,
    )


@_apply.register
def _(event: TaskPaused, state: TaskState) -> TaskState:
    return replace(state, lifecycle="paused", pause_note=event.note)


@_apply.register
def _(event: TaskResumed, state: TaskState) -> TaskState:
    return replace(
        state,
        lifecycle="active",
        pause_note=None,
        next_nominal=event.next_fire,
        next_fire_at=event.next_fire,
    )


@_apply.register
def _(event: TaskCancelled, state: TaskState) -> TaskState:
    return replace(
        state,
        lifecycle="cancelled",
        next_nominal=None,
        next_fire_at=None,
        pending_retries=(),
        queued=(),
    )


@_apply.register
def _(event: TaskCompleted, state: TaskState) -> TaskState:
    return replace(state, lifecycle="completed", next_nominal=None, next_fire_at=None, queued=())


@_apply.register
def _(event: NextFireDecided, state: TaskState) -> TaskState:
    return replace(state, next_nominal=event.nominal_time, next_fire_at=event.fire_at)


@_apply.register
def _(event: ExecutionStarted, state: TaskState) -> TaskState:
    opened = OpenExecution(
        execution_id=event.execution_id,
        nominal_time=event.nominal_time,
        attempt=event.attempt,
        reason=event.reason,
        idempotency_key=event.idempotency_key,
    )
    state = replace(state, open_executions=(*state.open_executions, opened), runs=state.runs + 1)
    if event.reason == "retry":
        return replace(
            state,
            pending_retries=tuple(
                r for r in state.pending_retries if r.execution_id != event.retry_of
            ),
        )
    if event.reason == "manual":
        return state
    if event.nominal_time in state.queued:
        # A queued fire was consumed (and counted) when it was queued.
        return replace(state, queued=tuple(q for q in state.queued if q != event.nominal_time))
    return _consume(state, event.nominal_time)


@_apply.register
def _(event: ExecutionQueued, state: TaskState) -> TaskState:
    return _consume(replace(state, queued=(*state.queued, event.nominal_time)), event.nominal_time)


@_apply.register
def _(event: ExecutionSkipped, state: TaskState) -> TaskState:
    last = event.until or event.nominal_time
    return replace(_consume(state, last, event.count), last_outcome="skipped")


def _consume(state: TaskState, nominal: datetime, count: int = 1) -> TaskState:
    """Count nominal times the schedule used up; the pending next fire, if among them,
    stops being pending."""
    pending = state.next_nominal
    cleared = pending is not None and nominal >= pending
    return replace(
        state,
        fires=state.fires + count,
        last_nominal=_later(state.last_nominal, nominal),
        next_nominal=None if cleared else pending,
        next_fire_at=None if cleared else state.next_fire_at,
    )


@_apply.register
def _(event: ExecutionSucceeded, state: TaskState) -> TaskState:
    return _close(state, event.execution_id, "succeeded", True)


@_apply.register
def _(event: ExecutionFailed, state: TaskState) -> TaskState:
    return _close(state, event.execution_id, "failed", False)


@_apply.register
def _(event: ExecutionTimedOut, state: TaskState) -> TaskState:
    return _close(state, event.execution_id, "timed_out", False)


@_apply.register
def _(event: ExecutionCancelled, state: TaskState) -> TaskState:
    return _close(state, event.execution_id, "cancelled", False)


@_apply.register
def _(event: ExecutionInterrupted, state: TaskState) -> TaskState:
    return _close(state, event.execution_id, "interrupted", False)


@_apply.register
def _(event: LateResultRecorded, state: TaskState) -> TaskState:
    # Recorded for the history; the timed-out outcome stands.
    return state


@_apply.register
def _(event: RetryScheduled, state: TaskState) -> TaskState:
    retry = PendingRetry(
        execution_id=event.execution_id,
        nominal_time=event.nominal_time,
        attempt=event.attempt,
        retry_at=event.retry_at,
        idempotency_key=event.idempotency_key,
    )
    return replace(state, pending_retries=(*state.pending_retries, retry))


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


# singledispatch looks the type up through a weak-keyed cache on every call; the fold runs
# for every event of every replay, so the resolved handlers are kept in a plain dict.
_handlers: dict[type, Callable[[Any, TaskState], TaskState]] = {}


def _handler(event_type: type) -> Callable[[Any, TaskState], TaskState]:
    handler = _handlers.get(event_type)
    if handler is None:
        handler = _handlers[event_type] = _apply.dispatch(event_type)
    return handler


def evolve_task(state: TaskState, item: Envelope | DomainEvent) -> TaskState:
    """Fold one event (or envelope) of the task's stream into its state."""
    if isinstance(item, Envelope):
        event = item.event
        return replace(_handler(type(event))(event, state), version=item.stream_version)
    return replace(_handler(type(item))(item, state), version=state.version + 1)


def replay_task(task_id: str, events: Iterable[Envelope | DomainEvent]) -> TaskState:
    """Rebuild a task's state from its stream."""
    return functools.reduce(evolve_task, events, TaskState(task_id=task_id))
