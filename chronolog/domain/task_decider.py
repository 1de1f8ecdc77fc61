"""The task decider: ``decide(state, command, now, new_id) -> events``.

Pure: the time and fresh execution ids come in as arguments, nothing is read or written.
Every rule the scheduler applies to a task lives here, so "why did or didn't it run?" is
answered by the events this function returns. Each emitted event is folded into a local
copy of the state at once, so later rules in the same decision see its effect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

from chronolog.domain import commands as cmd
from chronolog.domain.task_state import OpenExecution, TaskState, evolve_task
from chronolog.errors import InvalidStateError, NotFoundError
from chronolog.events import (
    CompletionReason,
    DomainEvent,
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
    SkipReason,
    TaskCancelled,
    TaskCompleted,
    TaskDefinition,
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.triggers import Fire, next_fire
from chronolog.triggers.missed import Missed, missed_since
from chronolog.triggers.spec import DateTrigger

#: Upper bound on missed fire times examined one by one after downtime, a pause or a
#: clock jump (cron triggers and day/week/month intervals; every N seconds, minutes or
#: hours is counted by arithmetic, exactly, whatever the gap), so a decision stays bounded.
#: Past it, the schedule resumes after now and only the examined misses are counted. A
#: job shard decides one message at a time: at 1,000,000, a minutely cron task after two
#: years down held its shard for 4 s; at 100,000, 0.4 s, and gaps of up to 69 days of a
#: minutely cron are still counted exactly.
MAX_MISSED_SCAN = 100_000

#: A gap of up to this many missed fires is recorded one ``ExecutionSkipped`` each; a
#: longer one is one event for the whole gap (``count`` fires from ``nominal_time`` to
#: ``until``). So a catch-up writes a handful of events per task however long the process
#: was down: listing each miss of a long gap (up to 1,000 of them, as this once did) made
#: an hour's outage of 10,000 minutely tasks 600,000 events and a 16 s catch-up, and a
#: day's outage ten million events.
MAX_LISTED_MISSES = 10

#: Retry backoff stops doubling here (2**62 seconds is far past any cap anyway).
_MAX_BACKOFF_EXPONENT = 62

_ONE_US = timedelta(microseconds=1)


def idempotency_key(task_id: str, nominal_time: datetime) -> str:
    """The key shared by every attempt of one nominal time: ``task_id:nominal_time``."""
    return f"{task_id}:{nominal_time.isoformat()}"


class _Decision:
    """Collects events and keeps the state they lead to."""

    def __init__(self, state: TaskState, now: datetime, new_id: Callable[[], str]) -> None:
        self.state = state
        self.now = now
        self.new_id = new_id
        self.events: list[DomainEvent] = []

    def emit(self, event: DomainEvent) -> None:
        self.events.append(event)
        self.state = evolve_task(self.state, event)

    @property
    def definition(self) -> TaskDefinition:
        assert self.state.definition is not None
        return self.state.definition

    def start(
        self,
        nominal: datetime,
        reason: ExecutionReason,
        attempt: int = 1,
        retry_of: str | None = None,
        key: str | None = None,
    ) -> None:
        task_id = self.state.task_id
        execution_id = self.new_id()
        # A retry passes the key of the run it repeats; a manual run is no schedule instant,
        # so it gets its own key and never dedupes against a real fire.
        if key is None and reason == "manual":
            key = f"{task_id}:manual:{execution_id}"
        elif key is None:
            key = idempotency_key(task_id, nominal)
        self.emit(
            ExecutionStarted(
                task_id=task_id,
                execution_id=execution_id,
                nominal_time=nominal,
                attempt=attempt,
                reason=reason,
                idempotency_key=key,
                retry_of=retry_of,
            )
        )


def decide(
    state: TaskState, command: cmd.Command, now: datetime, new_id: Callable[[], str]
) -> list[DomainEvent]:
    """Return the events that ``command`` produces for a task in ``state`` at ``now``.

    Raises :class:`~chronolog.errors.NotFoundError` for a task that does not exist and
    :class:`~chronolog.errors.InvalidStateError` for a command its state forbids; in both
    cases nothing is to be written.
    """
    d = _Decision(state, now, new_id)
    if not state.exists and not isinstance(command, cmd.Schedule):
        raise NotFoundError(f"no task {state.task_id!r}", details={"task_id": state.task_id})
    match command:
        case cmd.Schedule():
            _schedule(d, command)
        case cmd.Update():
            _update(d, command)
        case cmd.Pause():
            _pause(d, command)
        case cmd.Resume():
            _resume(d, command)
        case cmd.Cancel():
            _cancel(d, command)
        case cmd.RunNow():
            _run_now(d, command)
        case cmd.Fire():
            _fire(d, command)
        case cmd.RetryDue():
            _retry_due(d, command)
        case cmd.Finish():
            _finish(d, command)
        case cmd.TimeoutDue():
            _timeout(d, command)
        case cmd.Recover():
            _recover(d, command)
    return d.events


# --- definition and life cycle ------------------------------------------------------------


def _schedule(d: _Decision, c: cmd.Schedule) -> None:
    state = d.state
    if state.exists:
        if state.definition == c.definition and state.recurring == c.recurring:
            return  # the same spec again: an idempotent no-op
        _update(d, cmd.Update(definition=c.definition, recurring=c.recurring, cause=c.cause))
        return
    first = _first_fire(c.definition, state, d.now)
    d.emit(
        TaskScheduled(
            task_id=state.task_id,
            definition=c.definition,
            recurring=c.recurring,
            first_fire=first.nominal if first else None,
        )
    )
    _announce_jitter(d, first)
    _complete_if_done(d)


def _update(d: _Decision, c: cmd.Update) -> None:
    if d.state.is_final:
        raise _final(d.state, "update")
    first = _first_fire(c.definition, d.state, d.now)
    d.emit(
        TaskUpdated(
            task_id=d.state.task_id,
            definition=c.definition,
            recurring=c.recurring,
            next_fire=first.nominal if first else None,
        )
    )
    _announce_jitter(d, first)
    _complete_if_done(d)


def _pause(d: _Decision, c: cmd.Pause) -> None:
    if d.state.is_final:
        raise _final(d.state, "pause")
    if d.state.lifecycle == "paused":
        return
    d.emit(TaskPaused(task_id=d.state.task_id, note=c.note, paused_by=c.cause))


def _resume(d: _Decision, c: cmd.Resume) -> None:
    if d.state.is_final:
        raise _final(d.state, "resume")
    if d.state.lifecycle != "paused":
        return
    trigger = d.definition.trigger
    seed = d.state.task_id
    pending = d.state.next_nominal
    if pending is not None and (d.state.next_fire_at or pending) > d.now:
        following = next_fire(trigger, pending - _ONE_US, seed=seed, runs_so_far=d.state.fires)
    else:
        after = d.now
        if pending is not None:
            # Fires that fell inside the pause do not run (the user asked for silence), but
            # each is recorded, so "why didn't it run?" has an answer.
            fell_inside = _due_since(d, pending)
            _skip_all(d, fell_inside, fell_inside.count, "paused", "fires while paused do not run")
            after = d.now if fell_inside.exhausted else fell_inside.tail[-1]
        following = next_fire(trigger, after, seed=seed, runs_so_far=d.state.fires)
    d.emit(
        TaskResumed(
            task_id=d.state.task_id,
            next_fire=following.nominal if following else None,
            resumed_by=c.cause,
        )
    )
    _announce_jitter(d, following)
    _after_execution(d)


def _cancel(d: _Decision, c: cmd.Cancel) -> None:
    if d.state.lifecycle == "cancelled":
        return
    if d.state.lifecycle == "completed":
        raise _final(d.state, "cancel")
    for execution in d.state.open_executions:
        d.emit(
            ExecutionCancelled(
                task_id=d.state.task_id,
                execution_id=execution.execution_id,
                reason="the task was cancelled",
            )
        )
    d.emit(TaskCancelled(task_id=d.state.task_id, note=c.note, cancelled_by=c.cause))


def _run_now(d: _Decision, c: cmd.RunNow) -> None:
    if d.state.is_final:
        raise _final(d.state, "run")
    d.start(d.now, "manual")


# --- the schedule -------------------------------------------------------------------------


def _fire(d: _Decision, c: cmd.Fire) -> None:
    state = d.state
    if state.lifecycle != "active" or state.next_nominal != c.nominal_time:
        return  # a stale timer entry: the schedule moved on since it was set
    policies = d.definition.policies
    fire_at = state.next_fire_at or c.nominal_time
    grace = policies.misfire_grace_seconds
    if grace is None or (d.now - fire_at).total_seconds() <= grace:
        _run_or_overlap(d, c.nominal_time, "schedule")
        _decide_next(d, c.nominal_time)
        return
    _catch_up(d, c.nominal_time)


def _catch_up(d: _Decision, first_missed: datetime) -> None:
    """Fires later than the misfire grace: apply the task's catch-up policy to them all."""
    policies = d.definition.policies
    limit = max(policies.catchup_limit, 1) if policies.catchup == "run_all" else 1
    missed = _due_since(d, first_missed, keep_tail=limit + 1)
    if policies.catchup == "skip":
        _skip_all(d, missed, missed.count, "misfire", "catchup=skip")
    elif policies.catchup == "run_once":
        _skip_all(d, missed, missed.count - 1, "misfire", "catchup=run_once")
        _run_or_overlap(d, missed.tail[-1], "catch_up")
    else:  # run_all: run them one after another through the queue, up to the limit
        dropped = max(missed.count - limit, 0)
        runnable = missed.between(dropped, missed.count)
        _skip_all(d, missed, dropped, "catch_up_limit", f"catchup=run_all limit={limit}")
        if d.state.open_executions:
            head, rest = None, runnable
        else:
            head, rest = runnable[0], runnable[1:]
        if head is not None:
            d.start(head, "catch_up")
        for nominal in rest:
            d.emit(ExecutionQueued(task_id=d.state.task_id, nominal_time=nominal))
    _decide_next(d, d.now if missed.exhausted else missed.tail[-1])


def _due_since(d: _Decision, first: datetime, keep_tail: int = 1) -> Missed:
    """Nominal times from ``first`` whose fire instant is at or before now (counted; the
    first :data:`MAX_LISTED_MISSES` + 1 and the last ``keep_tail`` kept), walking at most
    :data:`MAX_MISSED_SCAN` of them."""
    return missed_since(
        d.definition.trigger,
        first,
        d.now,
        seed=d.state.task_id,
        runs_so_far=d.state.fires,
        keep_head=MAX_LISTED_MISSES + 1,
        keep_tail=keep_tail,
        walk_limit=MAX_MISSED_SCAN - 1,
    )


def _skip_all(d: _Decision, missed: Missed, how_many: int, reason: SkipReason, policy: str) -> None:
    """Record the first ``how_many`` missed times as skipped: one event each for a few,
    one event for a long gap."""
    if how_many <= 0:
        return
    if how_many <= MAX_LISTED_MISSES:
        for nominal in missed.between(0, how_many):
            d.emit(_skipped(d, nominal, reason, policy))
        return
    d.emit(
        ExecutionSkipped(
            task_id=d.state.task_id,
            nominal_time=missed.head[0],
            until=missed.at(how_many - 1),
            count=how_many,
            reason=reason,
            policy=policy,
        )
    )


def _run_or_overlap(d: _Decision, nominal: datetime, reason: ExecutionReason) -> None:
    """Start an execution for ``nominal`` unless the overlap policy says otherwise."""
    policies = d.definition.policies
    running = d.state.open_executions
    if not running:
        d.start(nominal, reason)
        return
    policy = policies.overlap
    if policy == "skip":
        d.emit(_skipped(d, nominal, "overlap", "overlap=skip"))
    elif policy == "queue_one":
        if d.state.queued:
            d.emit(_skipped(d, nominal, "overlap", "overlap=queue_one"))
        else:
            d.emit(ExecutionQueued(task_id=d.state.task_id, nominal_time=nominal))
    elif policy == "allow":
        if len(running) < max(policies.max_concurrent, 1):
            d.start(nominal, reason)
        else:
            limit = f"overlap=allow max_concurrent={policies.max_concurrent}"
            d.emit(_skipped(d, nominal, "overlap", limit))
    else:  # cancel_running
        for execution in running:
            d.emit(
                ExecutionCancelled(
                    task_id=d.state.task_id,
                    execution_id=execution.execution_id,
                    reason="overlap=cancel_running: a newer fire replaced it",
                )
            )
        d.start(nominal, reason)


def _decide_next(d: _Decision, after: datetime) -> None:
    following = next_fire(
        d.definition.trigger, after, seed=d.state.task_id, runs_so_far=d.state.fires
    )
    if following is not None:
        d.emit(
            NextFireDecided(
                task_id=d.state.task_id,
                nominal_time=following.nominal,
                fire_at=following.at,
                notes=following.notes,
            )
        )
    _complete_if_done(d)


# --- executions ---------------------------------------------------------------------------


def _retry_due(d: _Decision, c: cmd.RetryDue) -> None:
    if d.state.lifecycle != "active":
        return  # paused: the retry waits for resume; final: it was dropped
    for retry in d.state.pending_retries:
        if retry.execution_id == c.execution_id:
            d.start(
                retry.nominal_time,
                "retry",
                retry.attempt,
                retry_of=retry.execution_id,
                key=retry.idempotency_key,
            )
            return


def _finish(d: _Decision, c: cmd.Finish) -> None:
    task_id = d.state.task_id
    execution = d.state.open_execution(c.execution_id)
    if execution is None:
        # It was timed out, cancelled or interrupted already: keep what it returned.
        d.emit(
            LateResultRecorded(
                task_id=task_id,
                execution_id=c.execution_id,
                succeeded=c.outcome == "succeeded",
                result=c.result,
                error_type=c.error_type,
                message=c.message,
                duration_seconds=c.duration_seconds,
            )
        )
        return
    timeout = d.definition.policies.timeout_seconds
    if timeout is not None and c.duration_seconds > timeout:
        # The timer did not get to it (a stop, a busy machine): the outcome is still judged
        # by the deadline, and what the function returned is kept as a late result.
        d.emit(
            ExecutionTimedOut(
                task_id=task_id,
                execution_id=c.execution_id,
                timeout_seconds=timeout,
                duration_seconds=c.duration_seconds,
            )
        )
        _maybe_retry(d, execution)
        _finish(d, c)  # now not open any more: recorded as a late result
        _after_execution(d)
        return
    if c.outcome == "succeeded":
        d.emit(
            ExecutionSucceeded(
                task_id=task_id,
                execution_id=c.execution_id,
                result=c.result,
                result_is_repr=c.result_is_repr,
                result_truncated=c.result_truncated,
                duration_seconds=c.duration_seconds,
            )
        )
    else:
        d.emit(
            ExecutionFailed(
                task_id=task_id,
                execution_id=c.execution_id,
                error_type=c.error_type or "Exception",
                message=c.message or "",
                traceback=c.traceback,
                duration_seconds=c.duration_seconds,
            )
        )
        _maybe_retry(d, execution)
    _after_execution(d)


def _timeout(d: _Decision, c: cmd.TimeoutDue) -> None:
    execution = d.state.open_execution(c.execution_id)
    if execution is None:
        return
    policies = d.definition.policies
    d.emit(
        ExecutionTimedOut(
            task_id=d.state.task_id,
            execution_id=c.execution_id,
            timeout_seconds=policies.timeout_seconds or 0.0,
            duration_seconds=policies.timeout_seconds or 0.0,
        )
    )
    _maybe_retry(d, execution)
    _after_execution(d)


def _recover(d: _Decision, c: cmd.Recover) -> None:
    for execution in d.state.open_executions:
        d.emit(ExecutionInterrupted(task_id=d.state.task_id, execution_id=execution.execution_id))
        _maybe_retry(d, execution)
    _after_execution(d)


def _maybe_retry(d: _Decision, execution: OpenExecution) -> None:
    policies = d.definition.policies
    if d.state.lifecycle == "cancelled" or execution.attempt > policies.max_retries:
        return
    d.emit(
        RetryScheduled(
            task_id=d.state.task_id,
            execution_id=execution.execution_id,
            nominal_time=execution.nominal_time,
            attempt=execution.attempt + 1,
            retry_at=d.now + retry_delay(execution.execution_id, execution.attempt, d.definition),
            idempotency_key=execution.idempotency_key,
        )
    )


def retry_delay(execution_id: str, attempt: int, definition: TaskDefinition) -> timedelta:
    """Exponential backoff with deterministic jitter for the retry after ``attempt``.

    ``base * 2**(attempt-1)``, capped, then spread by ``±retry_jitter`` using a hash of the
    failed execution's id (so replaying the decision gives the same instant).
    """
    policies = definition.policies
    base = policies.retry_backoff_seconds * 2.0 ** min(attempt - 1, _MAX_BACKOFF_EXPONENT)
    delay = min(base, policies.retry_backoff_max_seconds)
    if policies.retry_jitter > 0:
        digest = hashlib.blake2b(execution_id.encode(), digest_size=8).digest()
        spread = int.from_bytes(digest, "big") / float(1 << 64) * 2.0 - 1.0
        delay *= 1.0 + policies.retry_jitter * spread
    return timedelta(seconds=max(delay, 0.0))


def _after_execution(d: _Decision) -> None:
    """An execution ended: start the queued fire, if any, then see if the task is done."""
    if d.state.queued and not d.state.open_executions and d.state.lifecycle == "active":
        d.start(d.state.queued[0], "schedule")
    _complete_if_done(d)


# --- helpers ------------------------------------------------------------------------------


def _first_fire(definition: TaskDefinition, state: TaskState, now: datetime) -> Fire | None:
    """The first fire of a new or updated definition, never at or before one already used."""
    trigger = definition.trigger
    # A one-shot in the past still runs once (as a late or caught-up fire), unless this task
    # already used a fire: then an update does not run it again.
    after = trigger.run_at - _ONE_US if isinstance(trigger, DateTrigger) else now - _ONE_US
    if state.last_nominal is not None:
        after = max(after, state.last_nominal)
    return next_fire(trigger, after, seed=state.task_id, runs_so_far=state.fires)


def _announce_jitter(d: _Decision, fire: Fire | None) -> None:
    # TaskScheduled/Updated/Resumed carry the nominal time; a jittered instant (or a DST
    # note) needs its own event so the timer, replay and "explain" see the same moment.
    if fire is not None and (fire.at != fire.nominal or fire.notes):
        d.emit(
            NextFireDecided(
                task_id=d.state.task_id,
                nominal_time=fire.nominal,
                fire_at=fire.at,
                notes=fire.notes,
            )
        )


def _complete_if_done(d: _Decision) -> None:
    s = d.state
    if (
        s.lifecycle != "active"
        or s.next_nominal is not None
        or s.open_executions
        or s.pending_retries
        or s.queued
    ):
        return
    trigger = d.definition.trigger
    reason: CompletionReason
    if isinstance(trigger, DateTrigger):
        reason = "one_shot"
    elif trigger.max_runs is not None and s.fires >= trigger.max_runs:
        reason = "max_runs"
    else:
        reason = "end_date"
    d.emit(TaskCompleted(task_id=s.task_id, reason=reason))


def _skipped(d: _Decision, nominal: datetime, reason: SkipReason, policy: str) -> ExecutionSkipped:
    return ExecutionSkipped(
        task_id=d.state.task_id, nominal_time=nominal, reason=reason, policy=policy
    )


def _final(state: TaskState, verb: str) -> InvalidStateError:
    return InvalidStateError(
        f"cannot {verb} task {state.task_id!r}: it is {state.status}",
        details={"task_id": state.task_id, "status": state.status},
    )
