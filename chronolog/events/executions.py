"""Domain events about executions (one run of a task's function), in the task's stream."""

from __future__ import annotations

from typing import Any, Literal

from chronolog.clock import AwareDatetime
from chronolog.events.base import DomainEvent

ExecutionReason = Literal["schedule", "manual", "retry", "catch_up"]
SkipReason = Literal["misfire", "overlap", "paused", "catch_up_limit"]


class ExecutionStarted(DomainEvent, frozen=True, kw_only=True):
    """An execution began. Durable before the function is called.

    ``idempotency_key`` is ``task_id:nominal_time`` and is shared by retries of the same
    nominal time, so a function can de-duplicate at-least-once deliveries (a manual run
    gets ``task_id:manual:execution_id``). ``retry_of`` names the failed execution a retry
    repeats.
    """

    task_id: str
    execution_id: str
    nominal_time: AwareDatetime
    attempt: int
    reason: ExecutionReason
    idempotency_key: str
    retry_of: str | None = None


class ExecutionSucceeded(DomainEvent, frozen=True, kw_only=True):
    """The function returned. ``result`` is its value when encodable, else its repr."""

    task_id: str
    execution_id: str
    result: Any = None
    result_is_repr: bool = False
    result_truncated: bool = False
    duration_seconds: float


class ExecutionFailed(DomainEvent, frozen=True, kw_only=True):
    """The function raised."""

    task_id: str
    execution_id: str
    error_type: str
    message: str
    traceback: str | None = None
    duration_seconds: float


class ExecutionTimedOut(DomainEvent, frozen=True, kw_only=True):
    """The function ran longer than the task's timeout."""

    task_id: str
    execution_id: str
    timeout_seconds: float
    duration_seconds: float


class ExecutionCancelled(DomainEvent, frozen=True, kw_only=True):
    """The execution was cancelled (overlap ``cancel_running``, task cancelled, shutdown)."""

    task_id: str
    execution_id: str
    reason: str


class ExecutionInterrupted(DomainEvent, frozen=True, kw_only=True):
    """The process died while the execution ran; found during recovery."""

    task_id: str
    execution_id: str


class LateResultRecorded(DomainEvent, frozen=True, kw_only=True):
    """A thread that timed out finished later; its outcome is kept but changes nothing."""

    task_id: str
    execution_id: str
    succeeded: bool
    result: Any = None
    error_type: str | None = None
    message: str | None = None
    duration_seconds: float


class ExecutionSkipped(DomainEvent, frozen=True, kw_only=True):
    """A nominal time was not run, and why: missed beyond grace, overlap, a pause, or
    catch-up rules.

    A gap of more than a few misses is one event: ``count`` nominal times from
    ``nominal_time`` to ``until`` (logs written before this rule list up to a thousand
    misses one by one, then summarise the rest the same way).
    """

    task_id: str
    nominal_time: AwareDatetime
    reason: SkipReason
    policy: str
    count: int = 1
    until: AwareDatetime | None = None


class ExecutionQueued(DomainEvent, frozen=True, kw_only=True):
    """A fire arrived while the task was running and its overlap policy is ``queue_one``:
    it starts as soon as the running execution finishes."""

    task_id: str
    nominal_time: AwareDatetime


class RetryScheduled(DomainEvent, frozen=True, kw_only=True):
    """A failed execution will be tried again at ``retry_at`` as attempt ``attempt``,
    under the same ``idempotency_key`` (None in logs written before the key was kept)."""

    task_id: str
    execution_id: str
    nominal_time: AwareDatetime
    attempt: int
    retry_at: AwareDatetime
    idempotency_key: str | None = None


EXECUTION_EVENTS: tuple[type[DomainEvent], ...] = (
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionTimedOut,
    ExecutionCancelled,
    ExecutionInterrupted,
    LateResultRecorded,
    ExecutionSkipped,
    ExecutionQueued,
    RetryScheduled,
)
