"""Sentences for "why did (or didn't) it run?": one :class:`Decision` per task event.

Pure: given an event and where it sits in the log, say what was decided in words a host
developer or an on-call human would use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chronolog.events import (
    Cause,
    DomainEvent,
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
    TaskCancelled,
    TaskCompleted,
    TaskDefinition,
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.projections.apply import cause_text
from chronolog.projections.rows import Decision
from chronolog.triggers.spec import DateTrigger, IntervalTrigger

_SKIP_REASONS = {
    "misfire": "it was missed by more than the grace window (the scheduler was down or busy)",
    "overlap": "the previous execution was still running",
    "paused": "the task was paused",
    "catch_up_limit": "it was beyond the catch-up limit",
}
_COMPLETION = {
    "one_shot": "its one run is done",
    "end_date": "its end date has passed",
    "max_runs": "it reached its maximum number of runs",
}


def when(value: datetime | None) -> str:
    """An instant as ``2024-03-10 07:30:00 UTC`` (sub-second digits only when present)."""
    if value is None:
        return "never"
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + " UTC"


def _who(cause: Cause) -> str:
    return cause_text(cause)


def _trigger(definition: TaskDefinition) -> str:
    trigger = definition.trigger
    if isinstance(trigger, DateTrigger):
        return f"once at {when(trigger.run_at)}"
    if isinstance(trigger, IntervalTrigger):
        return f"every {trigger.every} {trigger.unit} ({trigger.timezone})"
    return f"on cron '{trigger.expression}' ({trigger.timezone})"


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


def describe(event: DomainEvent) -> tuple[str, str, str | None, datetime | None] | None:
    """(kind, sentence, execution_id, nominal_time) for a task-stream event; None otherwise."""
    e: Any = event
    match event:
        case TaskScheduled():
            d = e.definition
            first = f"first fire at {when(e.first_fire)}" if e.first_fire else "it never fires"
            sentence = f"Scheduled '{d.name}' to run {d.function_name} {_trigger(d)}; {first}."
            return "scheduled", sentence, None, e.first_fire
        case TaskUpdated():
            d = e.definition
            sentence = (
                f"Updated: now '{d.name}' runs {d.function_name} {_trigger(d)}; "
                f"next fire at {when(e.next_fire)}."
            )
            return "updated", sentence, None, e.next_fire
        case TaskPaused():
            note = f": {e.note}" if e.note else ""
            return "paused", f"Paused by {_who(e.paused_by)}{note}.", None, None
        case TaskResumed():
            sentence = f"Resumed by {_who(e.resumed_by)}; next fire at {when(e.next_fire)}."
            return "resumed", sentence, None, e.next_fire
        case TaskCancelled():
            note = f": {e.note}" if e.note else ""
            sentence = f"Cancelled by {_who(e.cancelled_by)}{note}; it will never fire again."
            return "cancelled", sentence, None, None
        case TaskCompleted():
            reason = _COMPLETION.get(e.reason, e.reason)
            return "completed", f"Completed: {reason}.", None, None
        case NextFireDecided():
            sentence = f"Next fire set for {when(e.fire_at)}"
            if e.fire_at != e.nominal_time:
                sentence += f" (nominal {when(e.nominal_time)}, moved by jitter)"
            if e.notes:
                sentence += f"; {'; '.join(e.notes)}"
            return "next_fire", sentence + ".", None, e.nominal_time
        case ExecutionStarted():
            how = {"schedule": "on schedule", "manual": "manually", "retry": "as a retry"}.get(
                e.reason, "to catch up"
            )
            sentence = (
                f"Fired {how} for {when(e.nominal_time)}: execution {e.execution_id}, "
                f"attempt {e.attempt}."
            )
            return "fired", sentence, e.execution_id, e.nominal_time
        case ExecutionSucceeded():
            sentence = f"Execution {e.execution_id} succeeded in {_seconds(e.duration_seconds)}."
            return "succeeded", sentence, e.execution_id, None
        case ExecutionFailed():
            sentence = (
                f"Execution {e.execution_id} failed after {_seconds(e.duration_seconds)}: "
                f"{e.error_type}: {e.message}"
            )
            return "failed", sentence, e.execution_id, None
        case ExecutionTimedOut():
            sentence = (
                f"Execution {e.execution_id} timed out: still running after its "
                f"{_seconds(e.timeout_seconds)} limit."
            )
            return "timed_out", sentence, e.execution_id, None
        case ExecutionCancelled():
            sentence = f"Execution {e.execution_id} was cancelled: {e.reason}."
            return "execution_cancelled", sentence, e.execution_id, None
        case ExecutionInterrupted():
            sentence = (
                f"Execution {e.execution_id} was interrupted: the process stopped while it ran."
            )
            return "interrupted", sentence, e.execution_id, None
        case LateResultRecorded():
            outcome = "succeeded" if e.succeeded else f"failed ({e.error_type}: {e.message})"
            sentence = (
                f"Execution {e.execution_id} had timed out but finished later and {outcome} "
                f"after {_seconds(e.duration_seconds)}; recorded, changes nothing."
            )
            return "late_result", sentence, e.execution_id, None
        case ExecutionSkipped():
            why = _SKIP_REASONS.get(e.reason, e.reason)
            fires = f"the fire for {when(e.nominal_time)}"
            if e.until is not None and e.count > 1:
                fires = f"{e.count} fires, from {when(e.nominal_time)} to {when(e.until)},"
            sentence = f"Skipped {fires} because {why} (policy {e.policy})."
            return "skipped", sentence, None, e.nominal_time
        case RetryScheduled():
            sentence = (
                f"Will retry execution {e.execution_id} at {when(e.retry_at)} "
                f"as attempt {e.attempt}."
            )
            return "retry", sentence, e.execution_id, e.nominal_time
    return None


def decision(
    position: int, recorded_at: datetime, event: DomainEvent, caused_by: str
) -> Decision | None:
    """The :class:`Decision` for one logged event (None for events that decide nothing)."""
    described = describe(event)
    if described is None:
        return None
    kind, sentence, execution_id, nominal_time = described
    return Decision(
        position=position,
        at=recorded_at,
        kind=kind,
        sentence=sentence,
        caused_by=caused_by,
        execution_id=execution_id,
        nominal_time=nominal_time,
    )
