"""Commands a task's decider accepts. Plain data: the shell fills in ids and the time."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from chronolog.events import Cause, TaskDefinition

FinishOutcome = Literal["succeeded", "failed"]


class Schedule(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Create the task, or (same id) update it when the definition differs."""

    definition: TaskDefinition
    recurring: bool
    cause: Cause = Cause()


class Update(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Replace the definition of an existing task."""

    definition: TaskDefinition
    recurring: bool
    cause: Cause = Cause()


class Pause(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Stop firing until resumed."""

    note: str | None = None
    cause: Cause = Cause()


class Resume(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Fire again from the next instant after now."""

    cause: Cause = Cause()


class Cancel(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Never fire again."""

    note: str | None = None
    cause: Cause = Cause()


class RunNow(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Run once now, outside the schedule."""

    cause: Cause = Cause()


class Fire(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The timer says the task's pending fire for ``nominal_time`` is due."""

    nominal_time: datetime


class RetryDue(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The timer says the retry of the failed execution ``execution_id`` is due."""

    execution_id: str


class Finish(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The executor reports that an execution's function returned or raised."""

    execution_id: str
    outcome: FinishOutcome
    duration_seconds: float
    result: Any = None
    result_is_repr: bool = False
    result_truncated: bool = False
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None


class TimeoutDue(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The timer says an execution has run past the task's timeout."""

    execution_id: str


class Recover(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The process restarted: executions still open in the log were cut off."""


Command = (
    Schedule
    | Update
    | Pause
    | Resume
    | Cancel
    | RunNow
    | Fire
    | RetryDue
    | Finish
    | TimeoutDue
    | Recover
)
