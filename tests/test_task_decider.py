"""The pure task decider: what each command does to a task, as the events it returns.

Every test drives ``decide`` the way the shell does: a fixed ``now``, deterministic
execution ids, and each returned event folded into the state before the next command.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from chronolog.domain import commands as cmd
from chronolog.domain import task_decider
from chronolog.domain.task_decider import (
    MAX_LISTED_MISSES,
    decide,
    idempotency_key,
    retry_delay,
)
from chronolog.domain.task_state import TaskState, evolve_task, replay_task
from chronolog.errors import (
    ChronologError,
    InvalidStateError,
    InvalidTriggerError,
    NotFoundError,
)
from chronolog.events import (
    Cause,
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
    TaskPolicies,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.triggers import CronTrigger, DateTrigger, IntervalTrigger, TriggerSpec, missed

TASK = "t1"
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a Monday
SEC = timedelta(seconds=1)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


# --- helpers ----------------------------------------------------------------------------


def hourly(**kw: Any) -> IntervalTrigger:
    """Every hour on the hour, anchored at T0."""
    return IntervalTrigger(**{"every": 1, "unit": "hours", "start": T0, **kw})


def definition(trigger: TriggerSpec, name: str = "job", **policies: Any) -> TaskDefinition:
    return TaskDefinition(
        name=name, function_name="fn", trigger=trigger, policies=TaskPolicies(**policies)
    )


class Task:
    """Drives the decider like the shell: owns ``now``, the ids and the folded state."""

    def __init__(self, now: datetime = T0 - HOUR, task_id: str = TASK) -> None:
        self.now = now
        self.state = TaskState(task_id=task_id)
        self.log: list[DomainEvent] = []
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"x{next(self._ids)}"

    def do(self, command: cmd.Command, at: datetime | None = None) -> list[DomainEvent]:
        if at is not None:
            self.now = at
        events = decide(self.state, command, self.now, self.new_id)
        for event in events:
            self.state = evolve_task(self.state, event)
        self.log.extend(events)
        return events

    def schedule(self, definition: TaskDefinition, recurring: bool = True) -> list[DomainEvent]:
        return self.do(cmd.Schedule(definition=definition, recurring=recurring))

    def fire(self, at: datetime | None = None) -> list[DomainEvent]:
        """Fire the pending next nominal time, at its fire instant unless told otherwise."""
        nominal = self.state.next_nominal
        assert nominal is not None, "no pending fire"
        return self.do(cmd.Fire(nominal_time=nominal), at or self.state.next_fire_at)

    def finish(
        self, execution_id: str, outcome: cmd.FinishOutcome = "succeeded"
    ) -> list[DomainEvent]:
        return self.do(
            cmd.Finish(
                execution_id=execution_id,
                outcome=outcome,
                duration_seconds=1.5,
                error_type="RuntimeError" if outcome == "failed" else None,
                message="boom" if outcome == "failed" else None,
            )
        )

    def rejects(self, command: cmd.Command, error: type[ChronologError]) -> None:
        """``command`` raises ``error`` and the task is left exactly as it was."""
        before = self.state
        with pytest.raises(error):
            decide(self.state, command, self.now, self.new_id)
        assert self.state == before

    @property
    def running(self) -> list[str]:
        return [e.execution_id for e in self.state.open_executions]


def only_started(events: list[DomainEvent]) -> ExecutionStarted:
    starts = [e for e in events if isinstance(e, ExecutionStarted)]
    assert len(starts) == 1, events
    return starts[0]


def started(
    execution_id: str,
    nominal: datetime,
    reason: ExecutionReason,
    attempt: int = 1,
    retry_of: str | None = None,
) -> ExecutionStarted:
    manual = reason == "manual"
    key = f"{TASK}:manual:{execution_id}" if manual else f"{TASK}:{nominal.isoformat()}"
    return ExecutionStarted(
        task_id=TASK,
        execution_id=execution_id,
        nominal_time=nominal,
        attempt=attempt,
        reason=reason,
        idempotency_key=key,
        retry_of=retry_of,
    )


def next_decided(nominal: datetime) -> NextFireDecided:
    return NextFireDecided(task_id=TASK, nominal_time=nominal, fire_at=nominal)


def skipped(nominal: datetime, reason: SkipReason, policy: str) -> ExecutionSkipped:
    return ExecutionSkipped(task_id=TASK, nominal_time=nominal, reason=reason, policy=policy)


def gap_skipped(
    first: datetime, count: int, step: timedelta, reason: SkipReason, policy: str
) -> ExecutionSkipped:
    """The one event of a gap of ``count`` skipped fires ``step`` apart from ``first``."""
    return ExecutionSkipped(
        task_id=TASK,
        nominal_time=first,
        until=first + (count - 1) * step,
        count=count,
        reason=reason,
        policy=policy,
    )


PAUSED_POLICY = "fires while paused do not run"


def paused_skips(*nominals: datetime) -> list[ExecutionSkipped]:
    """The skips a resume records for fires that fell inside the pause."""
    return [skipped(n, "paused", PAUSED_POLICY) for n in nominals]


def one_shot(run_at: datetime = T0, **policies: Any) -> TaskDefinition:
    return definition(DateTrigger(run_at=run_at), **policies)


# --- schedule and update ----------------------------------------------------------------


class TestSchedule:
    def test_interval_first_fire_is_the_next_grid_point_after_now(self) -> None:
        """An hourly interval anchored in the past first fires on the next hour after now."""
        task = Task(now=T0 + 90 * MIN)
        events = task.schedule(definition(hourly()))
        assert events == [
            TaskScheduled(
                task_id=TASK,
                definition=definition(hourly()),
                recurring=True,
                first_fire=T0 + 2 * HOUR,
            )
        ]
        assert task.state.status == "scheduled"
        assert task.state.next_nominal == T0 + 2 * HOUR

    def test_interval_fire_at_exactly_now_is_the_first(self) -> None:
        """A grid point equal to now is not lost: it is the first fire."""
        task = Task(now=T0 + 3 * HOUR)
        task.schedule(definition(hourly()))
        assert task.state.next_nominal == T0 + 3 * HOUR

    def test_interval_anchored_in_the_future_first_fires_at_its_start(self) -> None:
        """An interval whose start lies ahead fires first at the start itself."""
        task = Task(now=T0 - 5 * HOUR)
        task.schedule(definition(hourly()))
        assert task.state.next_nominal == T0

    def test_cron_first_fire(self) -> None:
        """A weekday 09:00 Berlin cron scheduled at 10:00 Berlin on Monday first fires Tuesday."""
        task = Task(now=T0)  # Monday 10:00 in Berlin
        task.schedule(definition(CronTrigger(expression="0 9 * * 1-5", timezone="Europe/Berlin")))
        assert task.state.next_nominal == datetime(2030, 1, 8, 8, 0, tzinfo=UTC)

    def test_date_first_fire_is_run_at(self) -> None:
        """A one-shot's first fire is its run_at."""
        task = Task(now=T0 - HOUR)
        events = task.schedule(one_shot(), recurring=False)
        assert [type(e) for e in events] == [TaskScheduled]
        assert task.state.next_nominal == T0

    def test_date_in_the_past_still_fires_once_as_a_catch_up(self) -> None:
        """A one-shot scheduled after its run_at is kept and runs once, as a catch-up fire."""
        task = Task(now=T0 + 3 * HOUR)
        task.schedule(one_shot(), recurring=False)
        assert task.state.next_nominal == T0
        events = task.fire(at=task.now)
        assert events == [started("x1", T0, "catch_up")]
        assert task.state.next_nominal is None

    def test_date_slightly_in_the_past_is_a_late_scheduled_fire(self) -> None:
        """A one-shot whose run_at passed within the misfire grace runs as a normal fire."""
        task = Task(now=T0 + 10 * SEC)
        task.schedule(one_shot(), recurring=False)
        assert task.fire(at=task.now) == [started("x1", T0, "schedule")]

    def test_jittered_first_fire_is_announced(self) -> None:
        """A jittered trigger adds a NextFireDecided whose fire_at lies within the jitter."""
        task = Task(now=T0 - 30 * MIN)
        events = task.schedule(definition(hourly(jitter_seconds=30)))
        assert [type(e) for e in events] == [TaskScheduled, NextFireDecided]
        decided = events[1]
        assert isinstance(decided, NextFireDecided)
        assert decided.nominal_time == T0
        assert T0 < decided.fire_at <= T0 + 30 * SEC
        assert task.state.next_fire_at == decided.fire_at

    def test_same_spec_again_is_a_no_op(self) -> None:
        """Scheduling the same definition again returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        assert task.schedule(definition(hourly())) == []

    def test_same_spec_again_on_a_cancelled_task_is_a_no_op(self) -> None:
        """An idempotent re-schedule does not fail even when the task is cancelled."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Cancel())
        assert task.schedule(definition(hourly())) == []

    def test_another_spec_is_an_update(self) -> None:
        """Scheduling a different definition under the same id updates the task."""
        task = Task(now=T0 + 10 * MIN)
        task.schedule(definition(hourly()))
        new = definition(hourly(every=2), name="renamed")
        events = task.schedule(new)
        assert events == [
            TaskUpdated(task_id=TASK, definition=new, recurring=True, next_fire=T0 + 2 * HOUR)
        ]
        assert task.state.definition == new
        assert task.state.next_nominal == T0 + 2 * HOUR

    def test_a_changed_recurring_flag_is_an_update(self) -> None:
        """Same definition, different ``recurring``: still an update."""
        task = Task()
        task.schedule(definition(hourly()))
        events = task.schedule(definition(hourly()), recurring=False)
        assert [type(e) for e in events] == [TaskUpdated]
        assert task.state.recurring is False

    def test_a_trigger_that_never_fires_completes_at_once(self) -> None:
        """An interval whose end passed before it was scheduled is scheduled and completed."""
        task = Task(now=T0 + 3 * HOUR)
        events = task.schedule(definition(hourly(end=T0 + 2 * HOUR)))
        assert events == [
            TaskScheduled(
                task_id=TASK,
                definition=definition(hourly(end=T0 + 2 * HOUR)),
                recurring=True,
                first_fire=None,
            ),
            TaskCompleted(task_id=TASK, reason="end_date"),
        ]
        assert task.state.status == "completed"

    def test_an_invalid_trigger_is_rejected_without_events(self) -> None:
        """A trigger that cannot produce a schedule raises InvalidTriggerError."""
        task = Task()
        bad = definition(IntervalTrigger(every=0, unit="hours", start=T0))
        task.rejects(cmd.Schedule(definition=bad, recurring=True), InvalidTriggerError)
        assert not task.state.exists

    def test_update_recomputes_from_now_not_from_the_old_pending_fire(self) -> None:
        """An update chooses the new trigger's first fire after now."""
        task = Task(now=T0 + 10 * MIN)
        task.schedule(definition(hourly()))
        task.do(cmd.Update(definition=definition(hourly(every=3)), recurring=True))
        assert task.state.next_nominal == T0 + 3 * HOUR

    def test_update_at_the_instant_of_a_fire_does_not_rearm_it(self) -> None:
        """An update in the same instant as the 09:00 fire keeps 10:00 next, not 09:00 again."""
        task = Task()
        task.schedule(definition(hourly()))
        task.finish(only_started(task.fire(at=T0)).execution_id)
        events = task.do(cmd.Update(definition=definition(hourly(), "renamed"), recurring=True))
        assert events == [
            TaskUpdated(
                task_id=TASK,
                definition=definition(hourly(), "renamed"),
                recurring=True,
                next_fire=T0 + HOUR,
            )
        ]
        assert task.state.next_nominal == T0 + HOUR
        assert task.do(cmd.Fire(nominal_time=T0)) == []

    def test_update_counts_earlier_fires_towards_max_runs(self) -> None:
        """max_runs of a new definition counts the fires the task already used."""
        task = Task()
        task.schedule(definition(hourly()))
        task.finish(only_started(task.fire()).execution_id)
        task.finish(only_started(task.fire()).execution_id)
        events = task.do(cmd.Update(definition=definition(hourly(max_runs=2)), recurring=True))
        assert [type(e) for e in events] == [TaskUpdated, TaskCompleted]
        assert events[-1] == TaskCompleted(task_id=TASK, reason="max_runs")

    def test_update_keeps_a_paused_task_paused(self) -> None:
        """Updating a paused task replaces its definition but does not resume it."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause())
        task.do(cmd.Update(definition=definition(hourly(), name="b"), recurring=True))
        assert task.state.status == "paused"
        assert task.fire() == []


class TestUnknownTask:
    @pytest.mark.parametrize(
        "command",
        [
            cmd.Update(definition=definition(hourly()), recurring=True),
            cmd.Pause(),
            cmd.Resume(),
            cmd.Cancel(),
            cmd.RunNow(),
            cmd.Fire(nominal_time=T0),
            cmd.RetryDue(execution_id="x1"),
            cmd.Finish(execution_id="x1", outcome="succeeded", duration_seconds=0.0),
            cmd.TimeoutDue(execution_id="x1"),
            cmd.Recover(),
        ],
        ids=lambda c: type(c).__name__,
    )
    def test_commands_on_an_unknown_task_raise_not_found(self, command: cmd.Command) -> None:
        """Every command but Schedule on a task that was never scheduled is NotFoundError."""
        task = Task()
        task.rejects(command, NotFoundError)

    def test_not_found_names_the_task(self) -> None:
        """The error carries the task id for the caller."""
        with pytest.raises(NotFoundError) as info:
            decide(TaskState(task_id="nope"), cmd.Pause(), T0, lambda: "x")
        assert info.value.details == {"task_id": "nope"}


# --- fires ------------------------------------------------------------------------------


class TestFire:
    def test_on_time_starts_and_decides_the_next_fire(self) -> None:
        """A fire on time starts attempt 1 (reason schedule) and decides the next fire."""
        task = Task()
        task.schedule(definition(hourly()))
        events = task.fire()
        assert events == [started("x1", T0, "schedule"), next_decided(T0 + HOUR)]
        assert task.state.status == "running"
        assert task.state.fires == 1
        assert task.state.last_nominal == T0

    def test_idempotency_key_is_task_and_nominal_time(self) -> None:
        """The idempotency key is ``task_id:nominal`` (ISO), kept even when the fire is late."""
        task = Task()
        task.schedule(definition(hourly()))
        start = only_started(task.fire(at=T0 + 30 * SEC))
        assert start.idempotency_key == "t1:2030-01-07T09:00:00+00:00"
        assert start.idempotency_key == idempotency_key(TASK, T0)
        assert start.nominal_time == T0

    def test_late_within_grace_is_a_normal_fire(self) -> None:
        """A fire late by less than the misfire grace runs as a scheduled fire."""
        task = Task()
        task.schedule(definition(hourly(), misfire_grace_seconds=60))
        assert task.fire(at=T0 + 59 * SEC)[0] == started("x1", T0, "schedule")

    def test_late_by_exactly_the_grace_is_still_on_time(self) -> None:
        """The grace window includes its end."""
        task = Task()
        task.schedule(definition(hourly(), misfire_grace_seconds=60))
        assert task.fire(at=T0 + 60 * SEC)[0] == started("x1", T0, "schedule")

    def test_grace_is_measured_from_the_jittered_instant(self) -> None:
        """With jitter, lateness counts from fire_at, not from the nominal time."""
        task = Task(now=T0 - 30 * MIN)
        task.schedule(definition(hourly(jitter_seconds=30), misfire_grace_seconds=1))
        fire_at = task.state.next_fire_at
        assert fire_at is not None and fire_at > T0 + SEC
        assert only_started(task.fire(at=fire_at + SEC)).reason == "schedule"

    @pytest.mark.parametrize("nominal", [T0 - HOUR, T0 + HOUR, T0 + US])
    def test_a_stale_fire_does_nothing(self, nominal: datetime) -> None:
        """A Fire whose nominal time is not the pending next fire returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        assert task.do(cmd.Fire(nominal_time=nominal), at=T0 + HOUR) == []
        assert task.state.next_nominal == T0

    def test_a_repeated_fire_does_nothing(self) -> None:
        """Firing the same nominal time twice runs it once."""
        task = Task()
        task.schedule(definition(hourly()))
        task.fire()
        assert task.do(cmd.Fire(nominal_time=T0)) == []

    def test_a_paused_task_does_not_fire(self) -> None:
        """A Fire for the pending time of a paused task returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause())
        assert task.do(cmd.Fire(nominal_time=T0), at=T0) == []

    def test_a_cancelled_task_does_not_fire(self) -> None:
        """After cancel, the old pending fire returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Cancel())
        assert task.do(cmd.Fire(nominal_time=T0), at=T0) == []

    def test_a_completed_task_does_not_fire(self) -> None:
        """After a one-shot completed, a Fire for its run_at returns no events."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.finish(only_started(task.fire()).execution_id)
        assert task.state.status == "completed"
        assert task.do(cmd.Fire(nominal_time=T0)) == []

    def test_the_next_fire_follows_the_nominal_time_not_now(self) -> None:
        """A late fire decides the fire after its nominal time, so nothing is skipped."""
        task = Task()
        task.schedule(definition(hourly(), misfire_grace_seconds=None))
        events = task.fire(at=T0 + 5 * HOUR)
        assert events[-1] == next_decided(T0 + HOUR)


# --- overlap ----------------------------------------------------------------------------


def running_task(**policies: Any) -> Task:
    """An hourly task whose 09:00 execution ``x1`` is still running at 10:00."""
    task = Task()
    task.schedule(definition(hourly(), **policies))
    task.fire()
    assert task.running == ["x1"]
    return task


class TestOverlap:
    def test_skip(self) -> None:
        """overlap=skip: a fire while running is skipped (reason overlap)."""
        task = running_task(overlap="skip")
        events = task.fire()
        assert events == [
            skipped(T0 + HOUR, "overlap", "overlap=skip"),
            next_decided(T0 + 2 * HOUR),
        ]
        assert task.running == ["x1"]
        assert task.state.fires == 2
        assert task.state.last_outcome == "skipped"

    def test_queue_one_queues_once_then_skips(self) -> None:
        """queue_one: the first overlapping fire is queued, the next one skipped."""
        task = running_task(overlap="queue_one")
        assert task.fire()[0] == ExecutionQueued(task_id=TASK, nominal_time=T0 + HOUR)
        assert task.fire()[0] == skipped(T0 + 2 * HOUR, "overlap", "overlap=queue_one")
        assert task.state.queued == (T0 + HOUR,)

    def test_queued_fire_starts_when_the_running_one_finishes(self) -> None:
        """Finishing the running execution starts the queued fire with its own nominal time."""
        task = running_task(overlap="queue_one")
        task.fire()
        events = task.finish("x1")
        assert events == [
            ExecutionSucceeded(task_id=TASK, execution_id="x1", duration_seconds=1.5),
            started("x2", T0 + HOUR, "schedule"),
        ]
        assert task.state.queued == ()
        assert task.state.fires == 2  # the queued fire was counted once, when queued

    def test_queued_fire_starts_after_a_failure_too(self) -> None:
        """A failed execution also releases the queued fire (after scheduling its retry)."""
        task = running_task(overlap="queue_one", max_retries=1, retry_jitter=0.0)
        task.fire()
        events = task.finish("x1", "failed")
        assert [type(e) for e in events] == [ExecutionFailed, RetryScheduled, ExecutionStarted]

    def test_allow_up_to_max_concurrent(self) -> None:
        """overlap=allow starts overlapping fires up to max_concurrent, then skips."""
        task = running_task(overlap="allow", max_concurrent=2)
        assert task.fire()[0] == started("x2", T0 + HOUR, "schedule")
        assert task.fire()[0] == skipped(T0 + 2 * HOUR, "overlap", "overlap=allow max_concurrent=2")
        assert task.running == ["x1", "x2"]

    def test_cancel_running_cancels_then_starts(self) -> None:
        """cancel_running: the open executions are cancelled and the new fire starts."""
        task = running_task(overlap="cancel_running")
        events = task.fire()
        assert events == [
            ExecutionCancelled(
                task_id=TASK,
                execution_id="x1",
                reason="overlap=cancel_running: a newer fire replaced it",
            ),
            started("x2", T0 + HOUR, "schedule"),
            next_decided(T0 + 2 * HOUR),
        ]
        assert task.running == ["x2"]

    def test_cancel_running_cancels_every_open_execution(self) -> None:
        """Manual runs open alongside are cancelled as well."""
        task = running_task(overlap="cancel_running")
        task.do(cmd.RunNow())
        events = task.fire()
        cancelled = [e.execution_id for e in events if isinstance(e, ExecutionCancelled)]
        assert cancelled == ["x1", "x2"]
        assert task.running == ["x3"]

    def test_a_cancelled_execution_is_not_retried(self) -> None:
        """An execution replaced by cancel_running gets no retry."""
        task = running_task(overlap="cancel_running", max_retries=3)
        assert not any(isinstance(e, RetryScheduled) for e in task.fire())
        assert task.state.pending_retries == ()

    def test_finish_of_the_replaced_execution_is_a_late_result(self) -> None:
        """The cancelled execution's result arrives later: only LateResultRecorded."""
        task = running_task(overlap="cancel_running")
        task.fire()
        before = task.state
        events = task.finish("x1")
        assert [type(e) for e in events] == [LateResultRecorded]
        assert task.running == ["x2"]
        assert task.state.successes == before.successes


# --- misfires and catch-up --------------------------------------------------------------


def after_downtime(**policies: Any) -> tuple[Task, list[DomainEvent]]:
    """An hourly task (first fire 09:00) whose process was down until 13:30."""
    task = Task()
    task.schedule(definition(hourly(), **policies))
    return task, task.fire(at=T0 + 4 * HOUR + 30 * MIN)


class TestMisfire:
    def test_run_once_skips_all_but_the_last_and_runs_it(self) -> None:
        """catchup=run_once: earlier misses are skipped (misfire), the latest runs as catch_up."""
        task, events = after_downtime(catchup="run_once")
        policy = "catchup=run_once"
        assert events == [
            skipped(T0, "misfire", policy),
            skipped(T0 + HOUR, "misfire", policy),
            skipped(T0 + 2 * HOUR, "misfire", policy),
            skipped(T0 + 3 * HOUR, "misfire", policy),
            started("x1", T0 + 4 * HOUR, "catch_up"),
            next_decided(T0 + 5 * HOUR),
        ]
        assert task.state.fires == 5

    def test_skip_skips_every_miss(self) -> None:
        """catchup=skip: every missed fire is an ExecutionSkipped, nothing runs."""
        task, events = after_downtime(catchup="skip")
        assert events == [
            *[skipped(T0 + k * HOUR, "misfire", "catchup=skip") for k in range(5)],
            next_decided(T0 + 5 * HOUR),
        ]
        assert task.running == []

    def test_run_all_starts_one_and_queues_the_rest(self) -> None:
        """catchup=run_all: the first miss starts, the others are queued in order."""
        _, events = after_downtime(catchup="run_all")
        assert events == [
            started("x1", T0, "catch_up"),
            *[ExecutionQueued(task_id=TASK, nominal_time=T0 + k * HOUR) for k in range(1, 5)],
            next_decided(T0 + 5 * HOUR),
        ]

    def test_run_all_runs_the_queue_one_after_another(self) -> None:
        """Each finish of a run_all catch-up starts the next queued miss."""
        task, _ = after_downtime(catchup="run_all")
        nominals = []
        while task.running:
            (execution_id,) = task.running
            nominals.append(task.state.open_executions[0].nominal_time)
            task.finish(execution_id)
        assert nominals == [T0 + k * HOUR for k in range(5)]
        assert task.state.queued == ()

    def test_queued_catch_ups_start_with_reason_schedule(self) -> None:
        """Design note: only the head of a run_all catch-up carries reason catch_up."""
        task, _ = after_downtime(catchup="run_all")
        assert only_started(task.finish("x1")).reason == "schedule"

    def test_run_all_beyond_the_limit_is_skipped(self) -> None:
        """Misses beyond catchup_limit (the oldest) are skipped with reason catch_up_limit."""
        _, events = after_downtime(catchup="run_all", catchup_limit=2)
        policy = "catchup=run_all limit=2"
        assert events == [
            skipped(T0, "catch_up_limit", policy),
            skipped(T0 + HOUR, "catch_up_limit", policy),
            skipped(T0 + 2 * HOUR, "catch_up_limit", policy),
            started("x1", T0 + 3 * HOUR, "catch_up"),
            ExecutionQueued(task_id=TASK, nominal_time=T0 + 4 * HOUR),
            next_decided(T0 + 5 * HOUR),
        ]

    def test_run_all_while_running_queues_every_miss(self) -> None:
        """With an execution still open, run_all queues all misses and starts none."""
        task = Task()
        task.schedule(definition(hourly(), catchup="run_all"))
        task.fire()
        events = task.fire(at=T0 + 3 * HOUR + 30 * MIN)
        assert [type(e) for e in events] == [ExecutionQueued] * 3 + [NextFireDecided]
        assert task.state.queued == (T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR)

    def test_queued_misses_wait_until_nothing_runs(self) -> None:
        """Design note: with overlap=allow, the run_all queue starts only when all runs end."""
        task = Task()
        task.schedule(definition(hourly(), overlap="allow", max_concurrent=2, catchup="run_all"))
        task.fire()
        task.fire()
        task.fire(at=T0 + 4 * HOUR + 30 * MIN)
        assert task.state.queued == (T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR)
        assert [type(e) for e in task.finish("x1")] == [ExecutionSucceeded]
        assert task.finish("x2")[-1] == started("x3", T0 + 2 * HOUR, "schedule")

    def test_run_once_catch_up_respects_the_overlap_policy(self) -> None:
        """The catch-up run meets a running execution: overlap=skip skips it."""
        task = Task()
        task.schedule(definition(hourly(), catchup="run_once", overlap="skip"))
        task.fire()
        events = task.fire(at=T0 + 3 * HOUR + 30 * MIN)
        assert events[-2] == skipped(T0 + 3 * HOUR, "overlap", "overlap=skip")

    def test_beyond_grace_by_a_microsecond_is_a_misfire(self) -> None:
        """One microsecond past the grace window the catch-up policy applies."""
        task = Task()
        task.schedule(definition(hourly(), misfire_grace_seconds=60, catchup="skip"))
        events = task.fire(at=T0 + 60 * SEC + US)
        assert events[0] == skipped(T0, "misfire", "catchup=skip")

    def test_no_grace_means_always_on_time(self) -> None:
        """misfire_grace_seconds=None: however late, the fire runs as scheduled."""
        task = Task()
        task.schedule(definition(hourly(), misfire_grace_seconds=None, catchup="skip"))
        events = task.fire(at=T0 + 30 * 24 * HOUR)
        assert events == [started("x1", T0, "schedule"), next_decided(T0 + HOUR)]

    def test_run_once_runs_once_however_long_the_downtime(self) -> None:
        """A minutely task down for 15 days (21,601 fires due) catches up with a single run."""
        task = Task(now=T0)
        task.schedule(definition(IntervalTrigger(every=1, unit="minutes", start=T0)))
        back = T0 + timedelta(days=15)
        runs = 0
        while task.state.next_nominal is not None and task.state.next_nominal <= back:
            for event in task.fire(at=back):
                if isinstance(event, ExecutionStarted):
                    runs += 1
                    task.finish(event.execution_id)
        assert runs == 1
        total = 15 * 24 * 60 + 1  # T0 up to and including the minute it came back
        assert task.state.fires == total
        assert task.state.next_nominal == back + MIN

    def test_a_long_gap_is_one_skip_event(self) -> None:
        """More than MAX_LISTED_MISSES misses become one ExecutionSkipped with count and
        until, however long the gap: a catch-up writes a few events per task."""
        task = Task(now=T0)
        task.schedule(definition(IntervalTrigger(every=1, unit="minutes", start=T0)))
        back = T0 + timedelta(days=15)
        events = task.fire(at=back)
        policy = "catchup=run_once"
        last = 15 * 24 * 60
        assert events == [
            gap_skipped(T0, last, MIN, "misfire", policy),
            started("x1", back, "catch_up"),
            next_decided(back + MIN),
        ]
        assert task.state.last_nominal == back

    def test_exactly_max_listed_misses_need_no_summary(self) -> None:
        """A gap of exactly MAX_LISTED_MISSES skips lists them all; one more is one
        summary instead."""
        for extra, expected in ((0, [1] * MAX_LISTED_MISSES), (1, [MAX_LISTED_MISSES + 1])):
            task = Task(now=T0)
            task.schedule(
                definition(IntervalTrigger(every=1, unit="minutes", start=T0), catchup="skip")
            )
            events = task.fire(at=T0 + (MAX_LISTED_MISSES - 1 + extra) * MIN)
            skips = [e for e in events if isinstance(e, ExecutionSkipped)]
            assert [e.count for e in skips] == expected
            assert skips[0].nominal_time == T0
            assert all((e.until is None) == (e.count == 1) for e in skips)

    def test_summary_under_catchup_skip_counts_every_miss(self) -> None:
        """catchup=skip over a long gap: listed skips plus the summary's count equal the misses."""
        task = Task(now=T0)
        task.schedule(
            definition(IntervalTrigger(every=1, unit="minutes", start=T0), catchup="skip")
        )
        events = task.fire(at=T0 + 2_500 * MIN)
        skips = [e for e in events if isinstance(e, ExecutionSkipped)]
        assert len(skips) == 1
        assert skips[0].count == 2_501 == task.state.fires
        assert (skips[0].nominal_time, skips[0].until) == (T0, T0 + 2_500 * MIN)
        assert task.running == []
        assert task.state.next_nominal == T0 + 2_501 * MIN

    def test_run_all_limit_drops_into_a_summary(self) -> None:
        """run_all: the oldest misses beyond catchup_limit are summarised."""
        task = Task(now=T0)
        trigger = IntervalTrigger(every=1, unit="minutes", start=T0)
        task.schedule(definition(trigger, catchup="run_all", catchup_limit=3))
        events = task.fire(at=T0 + 1_999 * MIN)
        skips = [e for e in events if isinstance(e, ExecutionSkipped)]
        assert [e.count for e in skips] == [2_000 - 3]
        assert (skips[0].nominal_time, skips[0].until) == (T0, T0 + 1_996 * MIN)
        assert {e.reason for e in skips} == {"catch_up_limit"}
        assert task.state.queued == (T0 + 1_998 * MIN, T0 + 1_999 * MIN)
        assert task.state.fires == 2_000

    def test_when_the_scan_cap_is_hit_the_schedule_resumes_after_now(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past MAX_MISSED_SCAN (misses walked one by one, as a daily interval's are) only
        the examined misses count and the next fire is after now."""
        monkeypatch.setattr(task_decider, "MAX_MISSED_SCAN", 50)
        monkeypatch.setattr(task_decider, "MAX_LISTED_MISSES", 10)
        task = Task(now=T0)
        task.schedule(definition(IntervalTrigger(every=1, unit="days", start=T0)))
        back = T0 + 500 * DAY + 30 * SEC
        events = task.fire(at=back)
        skips = [e for e in events if isinstance(e, ExecutionSkipped)]
        assert skips == [gap_skipped(T0, 49, DAY, "misfire", "catchup=run_once")]
        assert only_started(events) == started("x1", T0 + 49 * DAY, "catch_up")
        assert events[-1] == next_decided(T0 + 501 * DAY)
        assert task.state.fires == 50

    def test_an_elapsed_interval_counts_every_miss_past_the_scan_cap(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every N seconds/minutes/hours is a grid: its misses are counted by arithmetic,
        exactly, however many there are."""
        monkeypatch.setattr(task_decider, "MAX_MISSED_SCAN", 50)
        task = Task(now=T0)
        task.schedule(definition(IntervalTrigger(every=1, unit="minutes", start=T0)))
        back = T0 + 500 * MIN + 30 * SEC
        events = task.fire(at=back)
        [skip] = [e for e in events if isinstance(e, ExecutionSkipped)]
        assert (skip.nominal_time, skip.until, skip.count) == (T0, T0 + 499 * MIN, 500)
        assert only_started(events) == started("x1", T0 + 500 * MIN, "catch_up")
        assert events[-1] == next_decided(T0 + 501 * MIN)
        assert task.state.fires == 501

    @pytest.mark.parametrize(
        ("trigger", "exact"),
        [
            (IntervalTrigger(every=1, unit="minutes", start=T0), True),
            (CronTrigger(expression="* * * * *", start=T0), True),
            (CronTrigger(expression="* * * * *", timezone="Europe/Berlin", start=T0), False),
        ],
        ids=["interval", "cron-utc", "cron-dst"],
    )
    def test_a_gap_of_decades_costs_a_bounded_decision(
        self, monkeypatch: pytest.MonkeyPatch, trigger: TriggerSpec, exact: bool
    ) -> None:
        """After a clock jump of 50 years (a device whose clock started at 1970, then
        synchronised), a minutely task's catch-up evaluates its trigger at most
        MAX_MISSED_SCAN times (100,000, not one per missed minute: the shard that decides
        it decides nothing else meanwhile), then resumes after now. A minutely interval,
        and a cron in a zone without DST, need a handful of evaluations and count every
        missed minute (only the gap's first and last days are walked); a cron in a DST
        zone walks the days of its 100 changes (1,440 fires each)."""
        calls = 0
        real = missed.next_fire

        def counted(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(missed, "next_fire", counted)
        task = Task(now=T0)
        task.schedule(definition(trigger))
        back = T0 + timedelta(days=50 * 365)
        calls = 0
        events = task.fire(at=back)
        # Exact: the walk covers the gap's first and last days at most (the interval's grid
        # not even that). Otherwise one more look per quiet span (two DST changes a year).
        assert calls <= (2 * 24 * 60 + 2 if exact else task_decider.MAX_MISSED_SCAN + 2 + 100)
        assert task_decider.MAX_MISSED_SCAN <= 100_000
        assert events[-1].nominal_time > back  # type: ignore[union-attr]
        if exact:
            assert task.state.fires == 50 * 365 * 24 * 60 + 1

    def test_misfire_of_a_one_shot_with_skip_completes_it(self) -> None:
        """A one-shot missed beyond grace under catchup=skip is skipped and completed."""
        task = Task(now=T0 + 3 * HOUR)
        task.schedule(one_shot(catchup="skip"), recurring=False)
        events = task.fire(at=task.now)
        assert events == [
            skipped(T0, "misfire", "catchup=skip"),
            TaskCompleted(task_id=TASK, reason="one_shot"),
        ]
        assert task.state.status == "completed"


# --- retries and timeouts ---------------------------------------------------------------


def policies_def(**policies: Any) -> TaskDefinition:
    return definition(hourly(), **policies)


class TestRetryDelay:
    def test_backoff_doubles(self) -> None:
        """Without jitter the delay after attempt n is base * 2**(n-1)."""
        d = policies_def(retry_backoff_seconds=2.0, retry_jitter=0.0)
        delays = [retry_delay("x", n, d).total_seconds() for n in range(1, 6)]
        assert delays == [2.0, 4.0, 8.0, 16.0, 32.0]

    def test_backoff_is_capped(self) -> None:
        """The doubling stops at retry_backoff_max_seconds."""
        d = policies_def(retry_backoff_seconds=10.0, retry_backoff_max_seconds=50.0, retry_jitter=0)
        delays = [retry_delay("x", n, d).total_seconds() for n in range(1, 6)]
        assert delays == [10.0, 20.0, 40.0, 50.0, 50.0]

    def test_jitter_stays_within_its_bounds(self) -> None:
        """Jitter spreads the delay within ±retry_jitter of the backoff, around it."""
        d = policies_def(retry_backoff_seconds=100.0, retry_jitter=0.2)
        delays = [retry_delay(f"exec-{i}", 1, d).total_seconds() for i in range(300)]
        assert all(80.0 <= s <= 120.0 for s in delays)
        assert min(delays) < 90.0 < 110.0 < max(delays)  # it really spreads both ways

    def test_jitter_may_exceed_the_cap(self) -> None:
        """Design note: jitter is applied after the cap, so a delay can exceed it by ±jitter."""
        d = policies_def(retry_backoff_seconds=10.0, retry_backoff_max_seconds=10.0)
        delays = [retry_delay(f"e{i}", 5, d).total_seconds() for i in range(200)]
        assert all(9.0 <= s <= 11.0 for s in delays)
        assert max(delays) > 10.0

    def test_jitter_is_deterministic_per_execution(self) -> None:
        """The same failed execution always gets the same delay (replay gives one instant)."""
        d = policies_def(retry_backoff_seconds=100.0, retry_jitter=0.5)
        assert retry_delay("abc", 3, d) == retry_delay("abc", 3, d)
        assert retry_delay("abc", 1, d) != retry_delay("abd", 1, d)

    def test_zero_backoff_retries_at_once(self) -> None:
        """A zero backoff gives a zero delay."""
        d = policies_def(retry_backoff_seconds=0.0)
        assert retry_delay("x", 4, d) == timedelta(0)

    def test_a_very_high_attempt_is_capped_not_an_overflow(self) -> None:
        """max_retries has no upper bound, so attempt 1100 still gives the capped delay."""
        d = policies_def(retry_backoff_seconds=1.0, retry_backoff_max_seconds=60.0, retry_jitter=0)
        assert retry_delay("x", 1100, d) == timedelta(seconds=60)
        assert retry_delay("x", 10**9, d) == timedelta(seconds=60)

    def test_a_very_high_attempt_with_jitter_stays_near_the_cap(self) -> None:
        """With jitter, a huge attempt is still within ±retry_jitter of the cap."""
        d = policies_def(retry_backoff_seconds=1.0, retry_backoff_max_seconds=60.0)
        assert 54.0 <= retry_delay("x", 5_000, d).total_seconds() <= 66.0


def failing_task(max_retries: int, **kw: Any) -> Task:
    """An hourly task with ``max_retries`` whose 09:00 execution x1 is running."""
    task = Task()
    task.schedule(definition(hourly(), max_retries=max_retries, retry_backoff_seconds=10.0, **kw))
    task.fire()
    return task


class TestRetries:
    def test_a_failed_attempt_schedules_the_next(self) -> None:
        """A failure with retries left emits RetryScheduled(attempt 2, now + retry_delay)."""
        task = failing_task(2)
        task.now = T0 + 7 * SEC
        events = task.finish("x1", "failed")
        assert task.state.definition is not None
        delay = retry_delay("x1", 1, task.state.definition)
        assert events == [
            ExecutionFailed(
                task_id=TASK,
                execution_id="x1",
                error_type="RuntimeError",
                message="boom",
                duration_seconds=1.5,
            ),
            RetryScheduled(
                task_id=TASK,
                execution_id="x1",
                nominal_time=T0,
                attempt=2,
                retry_at=T0 + 7 * SEC + delay,
                idempotency_key=f"{TASK}:{T0.isoformat()}",
            ),
        ]
        assert 9.0 <= delay.total_seconds() <= 11.0
        assert task.state.status == "scheduled"
        assert len(task.state.pending_retries) == 1

    def test_retry_due_starts_the_attempt_with_the_same_key(self) -> None:
        """RetryDue starts attempt n (reason retry) under the original idempotency key."""
        task = failing_task(2)
        task.finish("x1", "failed")
        retry = task.state.pending_retries[0]
        assert retry.execution_id == "x1"
        events = task.do(cmd.RetryDue(execution_id="x1"), at=retry.retry_at)
        assert events == [started("x2", T0, "retry", attempt=2, retry_of="x1")]
        assert only_started(events).idempotency_key == idempotency_key(TASK, T0)
        assert task.state.pending_retries == ()
        assert task.state.fires == 1  # a retry does not consume a fire

    def test_backoff_doubles_between_attempts(self) -> None:
        """The second retry waits about twice as long as the first."""
        task = failing_task(3, retry_jitter=0.0)
        task.now = T0
        task.finish("x1", "failed")
        assert task.state.pending_retries[0].retry_at == T0 + 10 * SEC
        task.do(cmd.RetryDue(execution_id="x1"))
        task.finish("x2", "failed")
        assert task.state.pending_retries[0].retry_at == T0 + 20 * SEC
        assert task.state.pending_retries[0].attempt == 3

    def test_exhausted_retries_schedule_nothing(self) -> None:
        """max_retries=2 allows three attempts; the third failure schedules no retry."""
        task = failing_task(2)
        for attempt, execution_id in ((2, "x2"), (3, "x3")):
            failed = task.running[0]
            task.finish(failed, "failed")
            start = only_started(task.do(cmd.RetryDue(execution_id=failed)))
            assert (start.execution_id, start.attempt, start.retry_of) == (
                execution_id,
                attempt,
                failed,
            )
        events = task.finish("x3", "failed")
        assert [type(e) for e in events] == [ExecutionFailed]
        assert task.state.pending_retries == ()

    def test_no_retries_by_default(self) -> None:
        """With max_retries=0 a failure is final."""
        task = failing_task(0)
        assert [type(e) for e in task.finish("x1", "failed")] == [ExecutionFailed]

    @pytest.mark.parametrize("execution_id", ["x2", "nope", ""])
    def test_a_retry_due_for_an_unknown_execution_does_nothing(self, execution_id: str) -> None:
        """RetryDue naming no failed execution with a pending retry returns no events."""
        task = failing_task(2)
        task.finish("x1", "failed")
        before = task.state
        assert task.do(cmd.RetryDue(execution_id=execution_id)) == []
        assert task.state == before

    def test_a_retry_due_for_a_running_or_succeeded_execution_does_nothing(self) -> None:
        """Only a failed execution's id with its retry still pending starts anything."""
        task = failing_task(2, overlap="allow", max_concurrent=2)
        task.fire()  # x2 runs beside x1
        assert task.do(cmd.RetryDue(execution_id="x2")) == []
        task.finish("x2")
        assert task.do(cmd.RetryDue(execution_id="x2")) == []
        assert task.running == ["x1"]

    def test_retry_due_twice_starts_once(self) -> None:
        """A duplicated RetryDue does not start the attempt twice."""
        task = failing_task(2)
        task.finish("x1", "failed")
        assert only_started(task.do(cmd.RetryDue(execution_id="x1"))).execution_id == "x2"
        assert task.do(cmd.RetryDue(execution_id="x1")) == []
        assert task.running == ["x2"]

    def test_a_paused_task_holds_its_retry(self) -> None:
        """RetryDue on a paused task does nothing and keeps the retry pending."""
        task = failing_task(2)
        task.finish("x1", "failed")
        task.do(cmd.Pause())
        assert task.do(cmd.RetryDue(execution_id="x1")) == []
        assert len(task.state.pending_retries) == 1
        task.do(cmd.Resume())
        assert only_started(task.do(cmd.RetryDue(execution_id="x1"))).attempt == 2

    def test_a_failure_on_a_paused_task_is_still_retried(self) -> None:
        """Pausing does not drop the retry policy of a running execution."""
        task = failing_task(1)
        task.do(cmd.Pause())
        assert [type(e) for e in task.finish("x1", "failed")] == [ExecutionFailed, RetryScheduled]

    def test_cancel_drops_pending_retries(self) -> None:
        """A cancelled task forgets its pending retries, and RetryDue does nothing."""
        task = failing_task(2)
        task.finish("x1", "failed")
        task.do(cmd.Cancel())
        assert task.state.pending_retries == ()
        assert task.do(cmd.RetryDue(execution_id="x1")) == []

    def test_manual_runs_are_retried_at_their_own_nominal_time(self) -> None:
        """A failed manual run is retried with the manual run's nominal time (its start)."""
        task = Task()
        task.schedule(definition(hourly(), max_retries=1))
        at = T0 - 10 * MIN
        task.do(cmd.RunNow(), at=at)
        task.finish("x1", "failed")
        retry = task.state.pending_retries[0]
        assert (retry.execution_id, retry.nominal_time, retry.attempt) == ("x1", at, 2)
        start = only_started(task.do(cmd.RetryDue(execution_id="x1")))
        assert (start.execution_id, start.nominal_time, start.attempt) == ("x2", at, 2)
        assert (start.reason, start.retry_of) == ("retry", "x1")
        assert task.state.next_nominal == T0  # the schedule is untouched
        assert task.state.fires == 0

    def test_a_retry_of_a_manual_run_keeps_the_manual_key(self) -> None:
        """Every attempt of a manual run shares the manual run's idempotency key."""
        task = Task()
        task.schedule(definition(hourly(), max_retries=1))
        first = only_started(task.do(cmd.RunNow(), at=T0))
        task.finish("x1", "failed")
        retry = only_started(task.do(cmd.RetryDue(execution_id="x1")))
        assert retry.idempotency_key == first.idempotency_key == "t1:manual:x1"

    def test_two_failed_runs_of_one_instant_both_get_their_retry(self) -> None:
        """Two manual runs in the same instant both failing leave two pending retries."""
        task = Task()
        task.schedule(definition(hourly(), max_retries=1))
        task.do(cmd.RunNow())
        task.do(cmd.RunNow())
        task.finish("x1", "failed")
        task.finish("x2", "failed")
        retries = task.state.pending_retries
        assert [(r.execution_id, r.nominal_time, r.attempt) for r in retries] == [
            ("x1", task.now, 2),
            ("x2", task.now, 2),
        ]

    def test_each_retry_due_starts_exactly_its_own_retry(self) -> None:
        """Twin retries (same nominal time and attempt) start one each, by execution id."""
        task = Task()
        task.schedule(definition(hourly(), max_retries=1))
        task.do(cmd.RunNow())
        task.do(cmd.RunNow())
        task.finish("x1", "failed")
        task.finish("x2", "failed")
        assert task.do(cmd.RetryDue(execution_id="x2")) == [
            msgspec.structs.replace(
                started("x3", task.now, "retry", attempt=2, retry_of="x2"),
                idempotency_key=f"{TASK}:manual:x2",
            )
        ]
        assert [r.execution_id for r in task.state.pending_retries] == ["x1"]
        assert task.do(cmd.RetryDue(execution_id="x2")) == []
        assert task.do(cmd.RetryDue(execution_id="x1")) == [
            msgspec.structs.replace(
                started("x4", task.now, "retry", attempt=2, retry_of="x1"),
                idempotency_key=f"{TASK}:manual:x1",
            )
        ]
        assert task.state.pending_retries == ()
        assert task.running == ["x3", "x4"]


class TestOneShotOutcome:
    def test_succeeded_one_shot_is_completed(self) -> None:
        """A one-shot whose run succeeded completes with status completed."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.fire()
        events = task.finish("x1")
        assert events[-1] == TaskCompleted(task_id=TASK, reason="one_shot")
        assert task.state.status == "completed"

    def test_failed_one_shot_without_retries_is_failed(self) -> None:
        """A one-shot whose only attempt failed completes with status failed."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.fire()
        events = task.finish("x1", "failed")
        assert [type(e) for e in events] == [ExecutionFailed, TaskCompleted]
        assert task.state.status == "failed"

    def test_one_shot_waits_for_its_retries(self) -> None:
        """A one-shot with a pending retry is not completed yet."""
        task = Task()
        task.schedule(one_shot(max_retries=1), recurring=False)
        task.fire()
        task.finish("x1", "failed")
        assert task.state.lifecycle == "active"
        task.do(cmd.RetryDue(execution_id="x1"))
        events = task.finish("x2", "failed")
        assert [type(e) for e in events] == [ExecutionFailed, TaskCompleted]
        assert task.state.status == "failed"

    def test_one_shot_that_succeeds_on_retry_is_completed(self) -> None:
        """A one-shot whose retry succeeded ends as completed, not failed."""
        task = Task()
        task.schedule(one_shot(max_retries=1), recurring=False)
        task.fire()
        task.finish("x1", "failed")
        task.do(cmd.RetryDue(execution_id="x1"))
        task.finish("x2")
        assert task.state.status == "completed"

    def test_timed_out_one_shot_is_failed(self) -> None:
        """A one-shot whose only attempt timed out completes with status failed."""
        task = Task()
        task.schedule(one_shot(timeout_seconds=5.0), recurring=False)
        task.fire()
        task.do(cmd.TimeoutDue(execution_id="x1"))
        assert task.state.status == "failed"

    def test_updating_a_one_shot_after_it_fired_does_not_run_it_again(self) -> None:
        """Renaming a one-shot while its retry is pending does not fire run_at a second time."""
        task = Task()
        task.schedule(one_shot(max_retries=1), recurring=False)
        task.fire()
        task.finish("x1", "failed")
        renamed = definition(DateTrigger(run_at=T0), "renamed", max_retries=1)
        events = task.do(cmd.Update(definition=renamed, recurring=False), at=T0 + HOUR)
        assert events == [
            TaskUpdated(task_id=TASK, definition=renamed, recurring=False, next_fire=None)
        ]
        assert task.state.next_nominal is None
        assert task.do(cmd.Fire(nominal_time=T0)) == []
        task.do(cmd.RetryDue(execution_id="x1"))
        assert task.finish("x2")[-1] == TaskCompleted(task_id=TASK, reason="one_shot")
        assert task.state.fires == 1

    def test_updating_a_running_one_shot_completes_it_when_it_finishes(self) -> None:
        """A one-shot updated while its only run is open completes once that run ends."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.fire()
        renamed = definition(DateTrigger(run_at=T0), "renamed")
        assert [type(e) for e in task.do(cmd.Update(definition=renamed, recurring=False))] == [
            TaskUpdated
        ]
        assert task.state.lifecycle == "active"
        assert task.finish("x1")[-1] == TaskCompleted(task_id=TASK, reason="one_shot")

    def test_updating_a_one_shot_before_it_fired_moves_it(self) -> None:
        """A one-shot that has not fired yet can be moved to a later run_at."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        later = definition(DateTrigger(run_at=T0 + HOUR))
        task.do(cmd.Update(definition=later, recurring=False))
        assert task.state.next_nominal == T0 + HOUR
        assert task.fire() == [started("x1", T0 + HOUR, "schedule")]


class TestTimeout:
    def test_timeout_records_and_retries(self) -> None:
        """TimeoutDue closes the execution as timed out and applies the retry policy."""
        task = failing_task(1, timeout_seconds=30.0)
        events = task.do(cmd.TimeoutDue(execution_id="x1"), at=T0 + 30 * SEC)
        assert events[0] == ExecutionTimedOut(
            task_id=TASK, execution_id="x1", timeout_seconds=30.0, duration_seconds=30.0
        )
        assert isinstance(events[1], RetryScheduled) and events[1].attempt == 2
        assert len(events) == 2
        assert task.running == []
        assert task.state.last_outcome == "timed_out"
        assert task.state.failures == 1

    def test_timeout_for_a_closed_execution_does_nothing(self) -> None:
        """A TimeoutDue arriving after the execution finished returns no events."""
        task = failing_task(1, timeout_seconds=30.0)
        task.finish("x1")
        assert task.do(cmd.TimeoutDue(execution_id="x1")) == []

    def test_a_finish_after_a_timeout_is_only_a_late_result(self) -> None:
        """The function returning after its timeout is recorded, and changes nothing else."""
        task = failing_task(1, timeout_seconds=30.0)
        task.do(cmd.TimeoutDue(execution_id="x1"))
        before = task.state
        events = task.finish("x1")
        assert events == [
            LateResultRecorded(
                task_id=TASK, execution_id="x1", succeeded=True, duration_seconds=1.5
            )
        ]
        assert evolve_task(before, events[0]) == task.state
        assert task.state.last_outcome == "timed_out"
        assert len(task.state.pending_retries) == 1

    def test_a_failed_late_result_keeps_its_error(self) -> None:
        """A late failure keeps its error type and message."""
        task = failing_task(0, timeout_seconds=30.0)
        task.do(cmd.TimeoutDue(execution_id="x1"))
        (late,) = task.finish("x1", "failed")
        assert isinstance(late, LateResultRecorded)
        assert (late.succeeded, late.error_type, late.message) == (False, "RuntimeError", "boom")

    def test_a_second_finish_is_a_late_result(self) -> None:
        """A duplicated Finish is recorded as late; the first outcome stands."""
        task = failing_task(0)
        task.finish("x1")
        assert [type(e) for e in task.finish("x1", "failed")] == [LateResultRecorded]
        assert task.state.last_outcome == "succeeded"
        assert task.state.failures == 0


class TestRecover:
    def test_each_open_execution_is_interrupted_and_retried(self) -> None:
        """Recover interrupts every open execution and schedules its retry."""
        task = Task()
        task.schedule(definition(hourly(), overlap="allow", max_concurrent=2, max_retries=1))
        task.fire()
        task.fire()
        events = task.do(cmd.Recover(), at=T0 + 2 * HOUR)
        assert [type(e) for e in events] == [
            ExecutionInterrupted,
            RetryScheduled,
            ExecutionInterrupted,
            RetryScheduled,
        ]
        retries = [e for e in events if isinstance(e, RetryScheduled)]
        assert [(r.execution_id, r.nominal_time, r.attempt) for r in retries] == [
            ("x1", T0, 2),
            ("x2", T0 + HOUR, 2),
        ]
        assert task.running == []
        assert task.state.last_outcome == "interrupted"

    def test_without_retries_left_only_interrupts(self) -> None:
        """An interrupted attempt with no retries left is just interrupted."""
        task = failing_task(0)
        assert task.do(cmd.Recover()) == [ExecutionInterrupted(task_id=TASK, execution_id="x1")]

    def test_nothing_open_means_nothing_to_recover(self) -> None:
        """Recover on an idle task returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        assert task.do(cmd.Recover()) == []

    def test_an_interrupted_one_shot_without_retries_is_failed(self) -> None:
        """A one-shot cut off by a crash, with no retries, completes as failed."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.fire()
        events = task.do(cmd.Recover())
        assert events == [
            ExecutionInterrupted(task_id=TASK, execution_id="x1"),
            TaskCompleted(task_id=TASK, reason="one_shot"),
        ]
        assert task.state.status == "failed"

    def test_recover_releases_a_queued_fire(self) -> None:
        """After the interrupted execution, the queued fire starts."""
        task = running_task(overlap="queue_one")
        task.fire()
        events = task.do(cmd.Recover())
        assert events[-1] == started("x2", T0 + HOUR, "schedule")

    def test_a_late_finish_after_recover_is_a_late_result(self) -> None:
        """The old process's result, if it ever arrives, is only recorded."""
        task = failing_task(0)
        task.do(cmd.Recover())
        assert [type(e) for e in task.finish("x1")] == [LateResultRecorded]


# --- life cycle -------------------------------------------------------------------------


def final_task(kind: str) -> Task:
    task = Task()
    if kind == "completed":
        task.schedule(one_shot(), recurring=False)
        task.finish(only_started(task.fire()).execution_id)
    else:
        task.schedule(definition(hourly()))
        task.do(cmd.Cancel())
    assert task.state.lifecycle == kind
    return task


class TestPauseResume:
    def test_pause_keeps_note_and_cause(self) -> None:
        """Pause records the note and who paused it; the status is paused."""
        task = Task()
        task.schedule(definition(hourly()))
        who = Cause(kind="agent", id="ops-bot")
        events = task.do(cmd.Pause(note="maintenance", cause=who))
        assert events == [TaskPaused(task_id=TASK, note="maintenance", paused_by=who)]
        assert task.state.status == "paused"
        assert task.state.pause_note == "maintenance"

    def test_pause_twice_is_a_no_op(self) -> None:
        """Pausing a paused task returns no events and keeps the first note."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause(note="first"))
        assert task.do(cmd.Pause(note="second")) == []
        assert task.state.pause_note == "first"

    def test_a_running_execution_survives_pause(self) -> None:
        """Pausing does not stop the open execution; its finish is recorded normally."""
        task = running_task()
        task.do(cmd.Pause())
        assert task.running == ["x1"]
        assert [type(e) for e in task.finish("x1")] == [ExecutionSucceeded]
        assert task.state.status == "paused"

    def test_resume_skips_fires_inside_the_pause(self) -> None:
        """Fires during the pause never run; resume records each as skipped, then resumes."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause(), at=T0 - MIN)
        who = Cause(kind="http")
        events = task.do(cmd.Resume(cause=who), at=T0 + 3 * HOUR + 20 * MIN)
        assert events == [
            *paused_skips(T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR),
            TaskResumed(task_id=TASK, next_fire=T0 + 4 * HOUR, resumed_by=who),
        ]
        assert task.state.status == "scheduled"
        assert task.state.pause_note is None
        assert task.state.fires == 4  # fires inside the pause are consumed, as skips
        assert task.state.last_nominal == T0 + 3 * HOUR
        assert task.state.last_outcome == "skipped"
        assert task.do(cmd.Fire(nominal_time=T0)) == []
        assert task.fire() == [
            started("x1", T0 + 4 * HOUR, "schedule"),
            next_decided(T0 + 5 * HOUR),
        ]

    def test_a_fire_due_at_the_instant_of_resume_is_skipped(self) -> None:
        """A fire whose instant equals the resume instant fell inside the pause."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause(), at=T0 - MIN)
        events = task.do(cmd.Resume(), at=T0 + HOUR)
        assert events == [
            *paused_skips(T0, T0 + HOUR),
            TaskResumed(task_id=TASK, next_fire=T0 + 2 * HOUR),
        ]

    def test_paused_skips_count_towards_max_runs(self) -> None:
        """Fires skipped during a pause use up max_runs; past it the resume completes."""
        task = Task()
        task.schedule(definition(hourly(max_runs=3)))
        task.do(cmd.Pause(), at=T0 - MIN)
        events = task.do(cmd.Resume(), at=T0 + 10 * HOUR)
        assert events == [
            *paused_skips(T0, T0 + HOUR, T0 + 2 * HOUR),
            TaskResumed(task_id=TASK, next_fire=None),
            TaskCompleted(task_id=TASK, reason="max_runs"),
        ]
        assert task.state.status == "completed"

    def test_a_long_pause_is_one_skip_event(self) -> None:
        """A minutely task paused for two days records the fires it missed as one event."""
        task = Task(now=T0 - MIN)
        task.schedule(definition(IntervalTrigger(every=1, unit="minutes", start=T0)))
        task.do(cmd.Pause())
        back = T0 + timedelta(days=2) + 30 * SEC
        events = task.do(cmd.Resume(), at=back)
        total = 2 * 24 * 60 + 1
        assert events[:-1] == [gap_skipped(T0, total, MIN, "paused", PAUSED_POLICY)]
        assert events[-1] == TaskResumed(task_id=TASK, next_fire=T0 + total * MIN)
        assert task.state.fires == total

    def test_a_pause_past_the_scan_cap_resumes_after_now(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past MAX_MISSED_SCAN (fires walked one by one, as a daily interval's are) the
        examined fires are skipped and the next fire is after now."""
        monkeypatch.setattr(task_decider, "MAX_MISSED_SCAN", 5)
        task = Task()
        task.schedule(definition(IntervalTrigger(every=1, unit="days", start=T0)))
        task.do(cmd.Pause(), at=T0 - MIN)
        events = task.do(cmd.Resume(), at=T0 + 20 * DAY + MIN)
        assert events == [
            *paused_skips(*(T0 + k * DAY for k in range(5))),
            TaskResumed(task_id=TASK, next_fire=T0 + 21 * DAY),
        ]
        assert task.state.fires == 5

    def test_resume_before_the_pending_fire_keeps_it(self) -> None:
        """Resumed before its next fire was due, the task keeps that fire."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause(), at=T0 - 30 * MIN)
        events = task.do(cmd.Resume(), at=T0 - 10 * MIN)
        assert events == [TaskResumed(task_id=TASK, next_fire=T0)]
        assert task.state.fires == 0

    def test_resume_before_a_jittered_fire_keeps_its_instant(self) -> None:
        """A kept jittered fire is announced again with the same fire instant."""
        task = Task(now=T0 - 30 * MIN)
        task.schedule(definition(hourly(jitter_seconds=30)))
        fire_at = task.state.next_fire_at
        assert fire_at is not None and fire_at > T0
        task.do(cmd.Pause())
        events = task.do(cmd.Resume(), at=T0)  # nominal reached, jittered instant not yet
        assert events == [
            TaskResumed(task_id=TASK, next_fire=T0),
            NextFireDecided(task_id=TASK, nominal_time=T0, fire_at=fire_at),
        ]
        assert (task.state.next_nominal, task.state.next_fire_at) == (T0, fire_at)

    def test_resume_on_an_active_task_is_a_no_op(self) -> None:
        """Resuming a task that is not paused returns no events."""
        task = Task()
        task.schedule(definition(hourly()))
        assert task.do(cmd.Resume()) == []

    def test_resume_past_the_end_completes(self) -> None:
        """Resumed after its end date, a recurring task completes (end_date)."""
        task = Task()
        task.schedule(definition(hourly(end=T0 + 2 * HOUR)))
        task.do(cmd.Pause())
        events = task.do(cmd.Resume(), at=T0 + 5 * HOUR)
        assert events == [
            *paused_skips(T0, T0 + HOUR, T0 + 2 * HOUR),
            TaskResumed(task_id=TASK, next_fire=None),
            TaskCompleted(task_id=TASK, reason="end_date"),
        ]

    def test_a_one_shot_paused_over_its_run_at_completes_without_running(self) -> None:
        """A one-shot resumed after its run_at records the skip (paused) and completes."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.do(cmd.Pause(), at=T0 - MIN)
        events = task.do(cmd.Resume(), at=T0 + HOUR)
        assert events == [
            *paused_skips(T0),
            TaskResumed(task_id=TASK, next_fire=None),
            TaskCompleted(task_id=TASK, reason="one_shot"),
        ]
        assert task.state.status == "completed"
        assert (task.state.runs, task.state.fires) == (0, 1)

    def test_a_fire_queued_before_a_pause_starts_on_resume(self) -> None:
        """The queued 10:00 fire waits out the pause and starts on resume, before later fires."""
        task = running_task(overlap="queue_one")
        task.fire()  # 10:00 queued behind x1
        task.do(cmd.Pause())
        assert task.finish("x1") == [  # finished while paused: the queue waits
            ExecutionSucceeded(task_id=TASK, execution_id="x1", duration_seconds=1.5)
        ]
        assert list(task.state.queued) == [T0 + HOUR]
        events = task.do(cmd.Resume(), at=T0 + 5 * HOUR + MIN)
        assert events == [
            *paused_skips(T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR),
            TaskResumed(task_id=TASK, next_fire=T0 + 6 * HOUR),
            started("x2", T0 + HOUR, "schedule"),
        ]
        assert not task.state.queued
        assert task.finish("x2") == [
            ExecutionSucceeded(task_id=TASK, execution_id="x2", duration_seconds=1.5)
        ]
        assert only_started(task.fire()).nominal_time == T0 + 6 * HOUR

    def test_a_queued_fire_still_waits_on_resume_while_a_run_is_open(self) -> None:
        """Resumed while the execution it queued behind still runs, the fire keeps waiting."""
        task = running_task(overlap="queue_one")
        task.fire()  # 10:00 queued behind x1
        task.do(cmd.Pause())
        events = task.do(cmd.Resume(), at=T0 + HOUR + MIN)
        assert events == [TaskResumed(task_id=TASK, next_fire=T0 + 2 * HOUR)]
        assert task.finish("x1")[-1] == started("x2", T0 + HOUR, "schedule")

    @pytest.mark.parametrize("kind", ["completed", "cancelled"])
    @pytest.mark.parametrize(
        "command",
        [
            cmd.Pause(),
            cmd.Resume(),
            cmd.Update(definition=definition(hourly(), "other"), recurring=True),
            cmd.Schedule(definition=definition(hourly(), "other"), recurring=True),
            cmd.RunNow(),
        ],
        ids=lambda c: type(c).__name__,
    )
    def test_final_tasks_reject_changes(self, kind: str, command: cmd.Command) -> None:
        """Pause, resume, update and run on a completed or cancelled task: InvalidStateError."""
        task = final_task(kind)
        task.rejects(command, InvalidStateError)

    def test_invalid_state_names_the_status(self) -> None:
        """The error says which status forbade the command."""
        task = final_task("cancelled")
        with pytest.raises(InvalidStateError) as info:
            decide(task.state, cmd.Resume(), task.now, task.new_id)
        assert info.value.details == {"task_id": TASK, "status": "cancelled"}

    def test_run_now_on_a_paused_task_is_allowed(self) -> None:
        """A paused task can still be run by hand."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause())
        assert only_started(task.do(cmd.RunNow())).reason == "manual"


class TestCancel:
    def test_cancel(self) -> None:
        """Cancel records the note and cause; the task is cancelled with nothing pending."""
        task = Task()
        task.schedule(definition(hourly()))
        who = Cause(kind="cli")
        assert task.do(cmd.Cancel(note="gone", cause=who)) == [
            TaskCancelled(task_id=TASK, note="gone", cancelled_by=who)
        ]
        assert task.state.status == "cancelled"
        assert task.state.next_nominal is None

    def test_cancel_with_an_open_execution(self) -> None:
        """Open executions are cancelled first, then the task."""
        task = running_task()
        events = task.do(cmd.Cancel())
        assert events == [
            ExecutionCancelled(task_id=TASK, execution_id="x1", reason="the task was cancelled"),
            TaskCancelled(task_id=TASK),
        ]
        assert task.running == []

    def test_cancel_twice_is_a_no_op(self) -> None:
        """Cancelling a cancelled task returns no events."""
        task = final_task("cancelled")
        assert task.do(cmd.Cancel()) == []

    def test_cancel_a_completed_task_is_rejected(self) -> None:
        """Design note: cancelling a completed task is InvalidStateError, not a no-op."""
        task = final_task("completed")
        task.rejects(cmd.Cancel(), InvalidStateError)

    def test_cancel_drops_the_queue(self) -> None:
        """A queued fire is dropped by cancel and never starts."""
        task = running_task(overlap="queue_one")
        task.fire()
        task.do(cmd.Cancel())
        assert task.state.queued == ()
        assert task.finish("x1") == [
            LateResultRecorded(
                task_id=TASK, execution_id="x1", succeeded=True, duration_seconds=1.5
            )
        ]

    def test_a_cancelled_paused_task_stays_cancelled(self) -> None:
        """A paused task can be cancelled; resume is then rejected."""
        task = Task()
        task.schedule(definition(hourly()))
        task.do(cmd.Pause())
        task.do(cmd.Cancel())
        task.rejects(cmd.Resume(), InvalidStateError)


class TestCompletion:
    def test_max_runs_completes_after_the_last_run_finishes(self) -> None:
        """With max_runs=2 the second fire decides no next fire; its finish completes the task."""
        task = Task()
        task.schedule(definition(hourly(max_runs=2)))
        task.finish(only_started(task.fire()).execution_id)
        events = task.fire()
        assert events == [started("x2", T0 + HOUR, "schedule")]
        assert task.state.lifecycle == "active"
        assert task.finish("x2")[-1] == TaskCompleted(task_id=TASK, reason="max_runs")
        assert task.state.status == "completed"

    def test_skipped_fires_count_towards_max_runs(self) -> None:
        """Design note: a fire skipped by overlap uses up one of max_runs."""
        task = Task()
        task.schedule(definition(hourly(max_runs=2), overlap="skip"))
        task.fire()
        task.fire()  # skipped: x1 still running
        assert task.state.next_nominal is None
        assert task.finish("x1")[-1] == TaskCompleted(task_id=TASK, reason="max_runs")

    def test_max_runs_waits_for_retries(self) -> None:
        """The last run's pending retry holds completion back until it ends."""
        task = Task()
        task.schedule(definition(hourly(max_runs=1), max_retries=1))
        task.fire()
        task.finish("x1", "failed")
        assert task.state.lifecycle == "active"
        task.do(cmd.RetryDue(execution_id="x1"))
        assert task.finish("x2")[-1] == TaskCompleted(task_id=TASK, reason="max_runs")

    def test_end_date_completes(self) -> None:
        """The last fire before the end date completes the task when it finishes."""
        task = Task()
        task.schedule(definition(hourly(end=T0 + HOUR + 30 * MIN)))
        task.finish(only_started(task.fire()).execution_id)
        assert task.fire() == [started("x2", T0 + HOUR, "schedule")]
        assert task.finish("x2")[-1] == TaskCompleted(task_id=TASK, reason="end_date")

    def test_a_failed_last_run_of_a_recurring_task_reads_failed(self) -> None:
        """Status after completion reflects the last outcome, for recurring tasks too."""
        task = Task()
        task.schedule(definition(hourly(max_runs=1)))
        task.fire()
        task.finish("x1", "failed")
        assert task.state.status == "failed"


class TestRunNow:
    def test_run_now_is_a_manual_execution_at_now(self) -> None:
        """RunNow starts a manual attempt 1 whose nominal time is now."""
        task = Task()
        task.schedule(definition(hourly()))
        at = T0 - 17 * MIN
        assert task.do(cmd.RunNow(), at=at) == [started("x1", at, "manual")]

    def test_a_manual_run_has_its_own_idempotency_key(self) -> None:
        """A manual run's key is ``task_id:manual:execution_id``, never a schedule instant's."""
        task = Task()
        task.schedule(definition(hourly(), overlap="allow", max_concurrent=2))
        manual = only_started(task.do(cmd.RunNow(), at=T0))
        scheduled = only_started(task.fire())
        assert manual.idempotency_key == "t1:manual:x1"
        assert scheduled.idempotency_key == idempotency_key(TASK, T0)
        assert manual.nominal_time == scheduled.nominal_time == T0

    def test_manual_runs_in_one_instant_get_distinct_keys(self) -> None:
        """Two manual runs at the same instant do not share a key."""
        task = Task()
        task.schedule(definition(hourly()))
        keys = [only_started(task.do(cmd.RunNow())).idempotency_key for _ in range(2)]
        assert keys == ["t1:manual:x1", "t1:manual:x2"]

    def test_run_now_does_not_consume_a_fire_or_move_the_schedule(self) -> None:
        """The pending fire, the fire count and last_nominal are untouched."""
        task = Task()
        task.schedule(definition(hourly(max_runs=1)))
        before = task.state
        task.do(cmd.RunNow(), at=T0 - MIN)
        assert task.state.next_nominal == before.next_nominal == T0
        assert (task.state.fires, task.state.last_nominal) == (0, None)
        task.finish("x1")
        assert only_started(task.fire()).nominal_time == T0

    def test_run_now_ignores_the_overlap_policy(self) -> None:
        """Design note: a manual run starts even while a scheduled one runs (overlap=skip)."""
        task = running_task(overlap="skip")
        assert only_started(task.do(cmd.RunNow())).reason == "manual"
        assert task.running == ["x1", "x2"]

    def test_a_manual_run_does_not_complete_a_one_shot(self) -> None:
        """Running a one-shot by hand before run_at leaves its scheduled fire pending."""
        task = Task()
        task.schedule(one_shot(), recurring=False)
        task.do(cmd.RunNow(), at=T0 - HOUR)
        task.finish("x1")
        assert task.state.lifecycle == "active"
        assert task.state.next_nominal == T0


class TestReplay:
    def test_replaying_the_log_gives_the_live_state(self) -> None:
        """Folding a whole busy history from scratch gives the state built step by step."""
        task = Task()
        task.schedule(definition(hourly(), overlap="queue_one", max_retries=1))
        task.fire()
        task.fire()
        task.finish("x1", "failed")
        task.do(cmd.Pause(note="n"))
        task.do(cmd.RetryDue(execution_id="x1"))
        task.do(cmd.Resume(), at=T0 + 4 * HOUR + MIN)
        task.do(cmd.RetryDue(execution_id="x1"))
        task.do(cmd.RunNow())
        task.do(cmd.Update(definition=definition(hourly(), "renamed"), recurring=True))
        task.fire(at=T0 + 30 * HOUR)
        task.do(cmd.Cancel())
        assert any(isinstance(e, ExecutionSkipped) and e.reason == "paused" for e in task.log)
        assert replay_task(TASK, task.log) == task.state
        assert task.state.version == len(task.log)
