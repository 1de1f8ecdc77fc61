"""The fold: how a batch of envelopes changes the rows of the read models. Pure: no I/O.

The projector loads the current rows of every key a batch touches (:func:`touched_keys`),
hands them to a :class:`BatchFold`, applies the batch's envelopes in position order, and
writes back the final state of each touched row. Because a row's new state depends only on
its previous state and the events, cutting the log into batches anywhere gives the same
tables as one pass over the whole log; the property tests check exactly that.

Row states are mutable msgspec Structs whose fields are the table's columns in order
(``schema.py``), so a whole batch of them encodes to JSON lines in one C call for DuckDB's
bulk JSON reader (see ``writer.py``). They are not tracked by the cyclic GC: they hold
only scalars, and a rebuild creates millions of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from chronolog.events import (
    Cause,
    CleanupRegistered,
    CleanupRunCompleted,
    CleanupRunFailed,
    CleanupRunStarted,
    CleanupUnregistered,
    DomainEvent,
    Envelope,
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

_encode = msgspec.json.Encoder().encode

#: Outcomes that count as failures, and that turn a completed task's status into ``failed``.
FAILED_OUTCOMES = frozenset({"failed", "timed_out", "interrupted"})

#: Execution statuses that end an execution.
FINISHED = frozenset({"succeeded", "failed", "timed_out", "cancelled", "interrupted"})


def json_text(value: Any) -> str:
    """Encode a value for a JSON column (msgspec: Structs, datetimes and all)."""
    return _encode(value).decode()


def shared_text(text: str | None) -> str | None:
    """One string object for every equal ``text`` (interned): a column whose values repeat
    across tasks (function, zone, policies, trigger) then costs one string, not one per
    task, in every state and board row that holds it. A value no other task repeats costs
    an entry in the interpreter's table of interned strings, which goes with the string."""
    return None if text is None else sys.intern(text)


def cause_text(cause: Cause) -> str:
    """``kind`` or ``kind:id``: the short form of a cause used in ``caused_by``/``paused_by``."""
    return cause.kind if cause.id is None else f"{cause.kind}:{cause.id}"


class TaskState(msgspec.Struct, gc=False):
    """One row of ``tasks`` while it is being folded (fields in column order)."""

    task_id: str
    name: str | None = None
    function_name: str | None = None
    module_id: str | None = None
    status: str = "scheduled"
    recurring: bool | None = None
    trigger_kind: str | None = None
    trigger: str | None = None
    timezone: str | None = None
    parameters: str | None = None
    policies: str | None = None
    next_fire: datetime | None = None
    last_fire: datetime | None = None
    last_outcome: str | None = None
    runs: int = 0
    successes: int = 0
    failures: int = 0
    skips: int = 0
    open_executions: int = 0
    paused_at: datetime | None = None
    pause_note: str | None = None
    paused_by: str | None = None
    end_reason: str | None = None
    ended_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0

    def derive_status(self) -> str:
        """The status is a function of the other columns, so it can never disagree with them.

        Cancelled is final. An open execution shows as ``running`` even on a completed or
        paused task (it is still running); once none is open, a completed task is
        ``failed`` when its last outcome was a failure, a paused one ``paused``.
        """
        if self.end_reason == "cancelled":
            return "cancelled"
        if self.open_executions > 0:
            return "running"
        if self.end_reason is not None:
            return "failed" if self.last_outcome in FAILED_OUTCOMES else "completed"
        if self.paused_at is not None:
            return "paused"
        return "scheduled"

    @property
    def accepts_next_fire(self) -> bool:
        """``next_fire`` stays NULL while the task is paused, cancelled or completed."""
        return self.paused_at is None and self.end_reason is None

    def define(self, definition: TaskDefinition, recurring: bool) -> None:
        trigger = definition.trigger
        self.name = definition.name
        self.function_name = shared_text(definition.function_name)
        self.module_id = shared_text(definition.module_id)
        self.recurring = recurring
        self.trigger_kind = str(type(trigger).__struct_config__.tag)
        # Shared too: tasks on one cron expression (or one instant) have equal triggers.
        self.trigger = shared_text(json_text(trigger))
        self.timezone = shared_text(trigger.timezone)
        self.parameters = shared_text(json_text(definition.parameters))
        self.policies = shared_text(json_text(definition.policies))


class ExecutionState(msgspec.Struct, gc=False):
    """One row of ``executions`` while it is being folded (fields in column order)."""

    execution_id: str
    task_id: str
    position: int
    nominal_time: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    attempt: int | None = None
    reason: str | None = None
    status: str = "running"
    result: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    idempotency_key: str | None = None
    retry_at: datetime | None = None
    late_outcome: str | None = None
    late_result: str | None = None
    late_error_type: str | None = None
    late_error_message: str | None = None
    late_duration_seconds: float | None = None


class RegistrationState(msgspec.Struct, gc=False):
    """One row of ``cleanup_registrations`` while it is being folded."""

    registration_id: str
    directory: str | None = None
    pattern: str | None = None
    rules: str | None = None
    priority: int | None = None
    schedule: str | None = None
    description: str | None = None
    module_id: str | None = None
    task_id: str | None = None
    active: bool = False
    registered_at: datetime | None = None
    unregistered_at: datetime | None = None
    runs: int = 0
    last_run_id: str | None = None
    last_run_at: datetime | None = None
    last_run_status: str | None = None
    bytes_freed_total: int = 0
    updated_at: datetime | None = None
    version: int = 0


class RunState(msgspec.Struct, gc=False):
    """One row of ``cleanup_runs`` while it is being folded."""

    run_id: str
    registration_id: str
    dry_run: bool = False
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    files_examined: int | None = None
    files_matched: int | None = None
    files_selected: int | None = None
    files_removed: int | None = None
    bytes_freed: int | None = None
    dirs_removed: int | None = None
    errors: int | None = None
    skipped: int | None = None
    duration_seconds: float | None = None
    budget_exhausted: bool | None = None
    files_truncated: bool | None = None
    resume_after: str | None = None
    error_type: str | None = None
    error_message: str | None = None


class EventRecord(msgspec.Struct, gc=False):
    """One row of ``events``; ``payload`` is the event's JSON text (current schema)."""

    position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    recorded_at: datetime
    payload: str
    correlation_id: str | None
    causation_id: str | None
    caused_by: str


class SkipRecord(msgspec.Struct, gc=False):
    """One row of ``skips``: one skipped nominal time, or ``count`` of them up to
    ``until``."""

    position: int
    task_id: str
    nominal_time: datetime
    reason: str
    policy: str
    recorded_at: datetime
    count: int
    until: datetime | None


class FileRecord(msgspec.Struct, gc=False):
    """One row of ``cleanup_files``."""

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


#: The row type of each table the fold writes, for the schema consistency test and loads.
ROW_TYPES: dict[str, type[msgspec.Struct]] = {
    "tasks": TaskState,
    "executions": ExecutionState,
    "cleanup_registrations": RegistrationState,
    "cleanup_runs": RunState,
    "events": EventRecord,
    "skips": SkipRecord,
    "cleanup_files": FileRecord,
}


@dataclass
class TouchedKeys:
    """The keys of mutable rows one batch changes; their current rows are loaded first."""

    tasks: set[str] = field(default_factory=set)
    executions: set[str] = field(default_factory=set)
    registrations: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)


# What each event type touches: 1 a task, 2 a task and an execution, 3 a registration,
# 4 a registration and a run. A dict lookup by type is several times cheaper than a chain
# of isinstance checks, and this runs once per event.
_KEY_KIND: dict[type[DomainEvent], int] = {
    TaskScheduled: 1,
    TaskUpdated: 1,
    TaskPaused: 1,
    TaskResumed: 1,
    TaskCancelled: 1,
    TaskCompleted: 1,
    NextFireDecided: 1,
    ExecutionSkipped: 1,
    ExecutionStarted: 2,
    ExecutionSucceeded: 2,
    ExecutionFailed: 2,
    ExecutionTimedOut: 2,
    ExecutionCancelled: 2,
    ExecutionInterrupted: 2,
    LateResultRecorded: 2,
    RetryScheduled: 2,
    CleanupRegistered: 3,
    CleanupUnregistered: 3,
    CleanupRunStarted: 4,
    CleanupRunCompleted: 4,
    CleanupRunFailed: 4,
}


def touched_keys(envelopes: Iterable[Envelope]) -> TouchedKeys:
    """Every task, execution, registration and run that ``envelopes`` mention."""
    keys = TouchedKeys()
    tasks, executions = keys.tasks.add, keys.executions.add
    kinds = _KEY_KIND
    for envelope in envelopes:
        event: Any = envelope.event
        kind = kinds.get(type(event), 0)
        if kind == 2:
            tasks(event.task_id)
            executions(event.execution_id)
        elif kind == 1:
            tasks(event.task_id)
        elif kind == 4:
            keys.registrations.add(event.registration_id)
            keys.runs.add(event.run_id)
        elif kind == 3:
            keys.registrations.add(event.registration_id)
    return keys


class BatchFold:
    """Applies envelopes to row states; afterwards its dicts hold every touched row.

    ``tasks``, ``executions``, ``registrations`` and ``runs`` start with the rows loaded
    for the touched keys and end with their final states; ``events`` and ``skips`` collect
    rows to append; ``files`` maps each run whose file list this batch reported to its
    new rows (they replace any earlier list of that run).
    """

    def __init__(
        self,
        tasks: Iterable[TaskState] = (),
        executions: Iterable[ExecutionState] = (),
        registrations: Iterable[RegistrationState] = (),
        runs: Iterable[RunState] = (),
    ) -> None:
        self.tasks = {state.task_id: state for state in tasks}
        self.executions = {state.execution_id: state for state in executions}
        self.registrations = {state.registration_id: state for state in registrations}
        self.runs = {state.run_id: state for state in runs}
        self.events: list[EventRecord] = []
        self.skips: list[SkipRecord] = []
        self.files: dict[str, list[FileRecord]] = {}
        self.last_position = 0

    # --- driving ----------------------------------------------------------------------------

    def apply_all(
        self,
        envelopes: Sequence[Envelope],
        *,
        slice_size: int | None = None,
        between_slices: Callable[[], object] | None = None,
    ) -> None:
        """Apply ``envelopes`` (in position order) and settle derived columns.

        With ``slice_size``, ``between_slices()`` is called after each slice of that many
        envelopes but the last: the live projector hands the GIL to the host's event loop
        there instead of folding a large batch in one stretch.
        """
        # Stores share metadata objects between events of one append, so the short form of
        # the cause is computed once per object (ids are stable while the batch lives).
        causes: dict[int, str] = {}
        if slice_size is None or between_slices is None or len(envelopes) <= slice_size:
            self._apply_slice(envelopes, causes)
        else:
            for start in range(0, len(envelopes), slice_size):
                if start:
                    between_slices()
                self._apply_slice(envelopes[start : start + slice_size], causes)
        for task in self.tasks.values():
            task.status = task.derive_status()

    def _apply_slice(self, envelopes: Sequence[Envelope], causes: dict[int, str]) -> None:
        handlers = _HANDLERS
        events_append = self.events.append
        for envelope in envelopes:
            event = envelope.event
            metadata = envelope.metadata
            caused_by = causes.get(id(metadata))
            if caused_by is None:
                caused_by = causes[id(metadata)] = cause_text(metadata.caused_by)
            events_append(
                EventRecord(
                    envelope.position,
                    envelope.stream_id,
                    envelope.stream_version,
                    envelope.event_type,
                    envelope.schema_version,
                    envelope.recorded_at,
                    _encode(event).decode(),
                    metadata.correlation_id,
                    metadata.causation_id,
                    caused_by,
                )
            )
            handler = handlers.get(type(event))
            if handler is not None:
                handler(self, envelope, event)
            self.last_position = envelope.position

    # --- rows on demand -----------------------------------------------------------------------

    def task(self, task_id: str, envelope: Envelope) -> TaskState:
        """The task's state, created on first mention; stamps it with ``envelope``."""
        state = self.tasks.get(task_id)
        if state is None:
            state = self.tasks[task_id] = TaskState(task_id=task_id)
        state.updated_at = envelope.recorded_at
        state.version = envelope.stream_version
        return state

    def registration(self, registration_id: str, envelope: Envelope) -> RegistrationState:
        state = self.registrations.get(registration_id)
        if state is None:
            state = self.registrations[registration_id] = RegistrationState(
                registration_id=registration_id
            )
        state.updated_at = envelope.recorded_at
        state.version = envelope.stream_version
        return state

    def finish_execution(
        self, envelope: Envelope, event: Any, status: str
    ) -> tuple[TaskState, ExecutionState, bool]:
        """Mark an execution finished; return (task, execution, first time it finished).

        Counters move only on the transition out of ``running`` (or for an execution whose
        start was never seen), so a repeated outcome event cannot count twice.
        """
        task = self.task(event.task_id, envelope)
        execution = self.executions.get(event.execution_id)
        first = execution is None or execution.status == "running"
        if execution is None:
            execution = self.executions[event.execution_id] = ExecutionState(
                execution_id=event.execution_id, task_id=event.task_id, position=envelope.position
            )
        elif execution.status == "running":
            task.open_executions = max(task.open_executions - 1, 0)
        if first:
            task.last_outcome = status
            if status == "succeeded":
                task.successes += 1
            elif status in FAILED_OUTCOMES:
                task.failures += 1
        execution.status = status
        execution.finished_at = envelope.recorded_at
        return task, execution, first


# --- handlers: one per event type ------------------------------------------------------------


def _task_scheduled(fold: BatchFold, envelope: Envelope, event: TaskScheduled) -> None:
    # A second TaskScheduled on one stream cannot happen through the deciders; treating it
    # as a fresh definition keeps the fold total.
    task = fold.task(event.task_id, envelope)
    task.define(event.definition, event.recurring)
    task.created_at = envelope.recorded_at
    task.next_fire = event.first_fire if task.accepts_next_fire else None


def _task_updated(fold: BatchFold, envelope: Envelope, event: TaskUpdated) -> None:
    task = fold.task(event.task_id, envelope)
    task.define(event.definition, event.recurring)
    if task.accepts_next_fire:
        task.next_fire = event.next_fire


def _task_paused(fold: BatchFold, envelope: Envelope, event: TaskPaused) -> None:
    task = fold.task(event.task_id, envelope)
    task.paused_at = envelope.recorded_at
    task.pause_note = event.note
    task.paused_by = cause_text(event.paused_by)
    task.next_fire = None


def _task_resumed(fold: BatchFold, envelope: Envelope, event: TaskResumed) -> None:
    task = fold.task(event.task_id, envelope)
    task.paused_at = task.pause_note = task.paused_by = None
    if task.accepts_next_fire:
        task.next_fire = event.next_fire


def _task_cancelled(fold: BatchFold, envelope: Envelope, event: TaskCancelled) -> None:
    task = fold.task(event.task_id, envelope)
    task.end_reason = "cancelled"
    task.ended_at = envelope.recorded_at
    task.next_fire = None


def _task_completed(fold: BatchFold, envelope: Envelope, event: TaskCompleted) -> None:
    task = fold.task(event.task_id, envelope)
    if task.end_reason != "cancelled":
        task.end_reason = event.reason
        task.ended_at = envelope.recorded_at
    task.next_fire = None


def _next_fire_decided(fold: BatchFold, envelope: Envelope, event: NextFireDecided) -> None:
    task = fold.task(event.task_id, envelope)
    if task.accepts_next_fire:
        task.next_fire = event.fire_at


def _execution_started(fold: BatchFold, envelope: Envelope, event: ExecutionStarted) -> None:
    task = fold.task(event.task_id, envelope)
    previous = fold.executions.get(event.execution_id)
    if previous is None or previous.status != "running":
        task.open_executions += 1
    task.runs += 1
    task.last_fire = event.nominal_time
    fold.executions[event.execution_id] = ExecutionState(
        execution_id=event.execution_id,
        task_id=event.task_id,
        position=envelope.position,
        nominal_time=event.nominal_time,
        started_at=envelope.recorded_at,
        attempt=event.attempt,
        reason=event.reason,
        idempotency_key=event.idempotency_key,
    )


def _execution_succeeded(fold: BatchFold, envelope: Envelope, event: ExecutionSucceeded) -> None:
    _, execution, _ = fold.finish_execution(envelope, event, "succeeded")
    execution.duration_seconds = event.duration_seconds
    execution.result = json_text(event.result)


def _execution_failed(fold: BatchFold, envelope: Envelope, event: ExecutionFailed) -> None:
    _, execution, _ = fold.finish_execution(envelope, event, "failed")
    execution.duration_seconds = event.duration_seconds
    execution.error_type = event.error_type
    execution.error_message = event.message
    execution.traceback = event.traceback


def _execution_timed_out(fold: BatchFold, envelope: Envelope, event: ExecutionTimedOut) -> None:
    _, execution, _ = fold.finish_execution(envelope, event, "timed_out")
    execution.duration_seconds = event.duration_seconds
    execution.error_type = "TimeoutError"
    execution.error_message = f"timed out after {event.timeout_seconds:g} s"


def _execution_cancelled(fold: BatchFold, envelope: Envelope, event: ExecutionCancelled) -> None:
    _, execution, _ = fold.finish_execution(envelope, event, "cancelled")
    execution.error_message = event.reason


def _execution_interrupted(
    fold: BatchFold, envelope: Envelope, event: ExecutionInterrupted
) -> None:
    _, execution, _ = fold.finish_execution(envelope, event, "interrupted")
    execution.error_message = "the process stopped while the execution ran"


def _late_result(fold: BatchFold, envelope: Envelope, event: LateResultRecorded) -> None:
    # Changes nothing but the execution's late_* columns (and the stream version).
    fold.task(event.task_id, envelope)
    execution = fold.executions.get(event.execution_id)
    if execution is None:
        return
    execution.late_outcome = "succeeded" if event.succeeded else "failed"
    execution.late_result = json_text(event.result) if event.succeeded else None
    execution.late_error_type = event.error_type
    execution.late_error_message = event.message
    execution.late_duration_seconds = event.duration_seconds


def _retry_scheduled(fold: BatchFold, envelope: Envelope, event: RetryScheduled) -> None:
    fold.task(event.task_id, envelope)
    execution = fold.executions.get(event.execution_id)
    if execution is not None:
        execution.retry_at = event.retry_at


def _execution_skipped(fold: BatchFold, envelope: Envelope, event: ExecutionSkipped) -> None:
    task = fold.task(event.task_id, envelope)
    task.skips += event.count
    task.last_outcome = "skipped"
    fold.skips.append(
        SkipRecord(
            envelope.position,
            event.task_id,
            event.nominal_time,
            event.reason,
            event.policy,
            envelope.recorded_at,
            event.count,
            event.until,
        )
    )


def _cleanup_registered(fold: BatchFold, envelope: Envelope, event: CleanupRegistered) -> None:
    reg = fold.registration(event.registration_id, envelope)
    reg.directory = event.directory
    reg.pattern = event.rules.pattern
    reg.rules = json_text(event.rules)
    reg.priority = event.priority
    reg.schedule = event.schedule
    reg.description = event.description
    reg.module_id = event.module_id
    reg.task_id = event.task_id
    reg.active = True
    reg.unregistered_at = None
    if reg.registered_at is None:
        reg.registered_at = envelope.recorded_at


def _cleanup_unregistered(fold: BatchFold, envelope: Envelope, event: CleanupUnregistered) -> None:
    reg = fold.registration(event.registration_id, envelope)
    reg.active = False
    reg.unregistered_at = envelope.recorded_at


def _cleanup_run_started(fold: BatchFold, envelope: Envelope, event: CleanupRunStarted) -> None:
    fold.registration(event.registration_id, envelope)
    fold.runs[event.run_id] = RunState(
        run_id=event.run_id,
        registration_id=event.registration_id,
        dry_run=event.dry_run,
        started_at=envelope.recorded_at,
        resume_after=event.resume_after,
    )


def _finish_run(
    fold: BatchFold, envelope: Envelope, event: Any, status: str
) -> tuple[RegistrationState, RunState, bool]:
    """Mark a run finished; like executions, counters move only on the first finish."""
    reg = fold.registration(event.registration_id, envelope)
    run = fold.runs.get(event.run_id)
    if run is None:
        run = fold.runs[event.run_id] = RunState(
            run_id=event.run_id, registration_id=event.registration_id
        )
        first = True
    else:
        first = run.status == "running"
    run.status = status
    run.finished_at = envelope.recorded_at
    if first:
        reg.runs += 1
        reg.last_run_id = event.run_id
        reg.last_run_at = envelope.recorded_at
        reg.last_run_status = status
    return reg, run, first


def _cleanup_run_completed(fold: BatchFold, envelope: Envelope, event: CleanupRunCompleted) -> None:
    reg, run, first = _finish_run(fold, envelope, event, "completed")
    summary = event.summary
    run.dry_run = event.dry_run
    run.files_examined = summary.files_examined
    run.files_matched = summary.files_matched
    run.files_selected = summary.files_selected
    run.files_removed = summary.files_removed
    run.bytes_freed = summary.bytes_freed
    run.dirs_removed = summary.dirs_removed
    run.errors = summary.errors
    run.skipped = summary.skipped
    run.duration_seconds = summary.duration_seconds
    run.budget_exhausted = summary.budget_exhausted
    run.files_truncated = event.files_truncated
    run.resume_after = event.resume_after
    if first and not event.dry_run:
        reg.bytes_freed_total += summary.bytes_freed
    fold.files[event.run_id] = [
        FileRecord(
            event.run_id,
            event.registration_id,
            seq,
            record.path,
            record.size,
            record.age_seconds,
            record.reasons,
            record.outcome,
            record.error,
            record.path_is_lossy,
        )
        for seq, record in enumerate(event.files)
    ]


def _cleanup_run_failed(fold: BatchFold, envelope: Envelope, event: CleanupRunFailed) -> None:
    _, run, _ = _finish_run(fold, envelope, event, "failed")
    run.error_type = event.error_type
    run.error_message = event.message


_Handler = Callable[[BatchFold, Envelope, Any], None]

_HANDLERS: dict[type[DomainEvent], _Handler] = {
    TaskScheduled: _task_scheduled,
    TaskUpdated: _task_updated,
    TaskPaused: _task_paused,
    TaskResumed: _task_resumed,
    TaskCancelled: _task_cancelled,
    TaskCompleted: _task_completed,
    NextFireDecided: _next_fire_decided,
    ExecutionStarted: _execution_started,
    ExecutionSucceeded: _execution_succeeded,
    ExecutionFailed: _execution_failed,
    ExecutionTimedOut: _execution_timed_out,
    ExecutionCancelled: _execution_cancelled,
    ExecutionInterrupted: _execution_interrupted,
    LateResultRecorded: _late_result,
    RetryScheduled: _retry_scheduled,
    ExecutionSkipped: _execution_skipped,
    CleanupRegistered: _cleanup_registered,
    CleanupUnregistered: _cleanup_unregistered,
    CleanupRunStarted: _cleanup_run_started,
    CleanupRunCompleted: _cleanup_run_completed,
    CleanupRunFailed: _cleanup_run_failed,
}
