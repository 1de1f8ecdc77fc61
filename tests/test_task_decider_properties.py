"""Properties of the task decider over random command sequences.

A random task (interval, cron or date trigger; random policies) is driven by random
commands the shell could send, with ``now`` only moving forward: fires of the pending next
nominal time at random lateness, finishes and timeouts of open executions, due retries
(by the failed execution's id), pause/resume/cancel/run-now, recovery, updates at any
instant to any definition, late and stale messages. After every step the history must
satisfy:

(a) folding the stored (encoded and decoded) events from scratch gives the live state, and
    deciding again on the same inputs gives the same events;
(b) the nominal times the schedule consumes (started on schedule or as a catch-up, skipped
    one by one or as a summary ``nominal_time..until``, queued) strictly increase; queued
    fires start in queue order;
(c) a nominal time starts at most once on schedule; it runs again only as the retry of a
    failed execution (``retry_of``, its nominal time, the next attempt), each scheduled
    retry at most once; manual runs have their own key;
(d) ``fires`` equals the nominal times consumed, a summary skip counting ``count`` (which
    matches the trigger's nominal times in its range); they never exceed ``max_runs``,
    and a one-shot definition consumes at most one;
(e) nothing starts, queues or retries after the task is cancelled or completed; a paused
    task only runs manual runs, and skips with reason ``paused`` come only from a resume;
(f) ``decide`` raises nothing but ``InvalidStateError`` here (a ``ChronologError``);
plus the overlap policy, the retry instants and the jittered fire instants.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog.domain import commands as cmd
from chronolog.domain import task_decider
from chronolog.domain.task_decider import (
    MAX_LISTED_MISSES,
    MAX_MISSED_SCAN,
    decide,
    idempotency_key,
    retry_delay,
)
from chronolog.domain.task_state import TaskState, evolve_task, replay_task
from chronolog.errors import ChronologError, InvalidStateError
from chronolog.events import (
    DEFAULT_CODEC,
    DomainEvent,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionQueued,
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
    TaskPolicies,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.triggers import CronTrigger, DateTrigger, IntervalTrigger, TriggerSpec, next_fire
from chronolog.triggers.fire import jitter_for

TASK = "prop-task"
T0 = datetime(2030, 3, 1, 0, 0, tzinfo=UTC)

CRON_EXPRESSIONS = ["*/5 * * * *", "0 * * * *", "*/20 9-17 * * 1-5", "30 2 * * *", "0 0 * * 0"]


# --- strategies -------------------------------------------------------------------------


@st.composite
def triggers(draw: st.DrawFn) -> TriggerSpec:
    common: dict[str, Any] = {
        "max_runs": draw(st.none() | st.integers(1, 6)),
        "jitter_seconds": draw(st.sampled_from([0.0, 0.0, 20.0])),
    }
    if draw(st.booleans()):
        common["end"] = T0 + timedelta(hours=draw(st.integers(2, 48)))
    kind = draw(st.sampled_from(["interval", "cron", "date"]))
    if kind == "interval":
        return IntervalTrigger(
            every=draw(st.integers(1, 90)),
            unit=draw(st.sampled_from(["minutes", "hours"])),
            start=T0 + timedelta(minutes=draw(st.integers(-120, 120))),
            **common,
        )
    if kind == "cron":
        return CronTrigger(
            expression=draw(st.sampled_from(CRON_EXPRESSIONS)),
            timezone=draw(st.sampled_from(["UTC", "Europe/Berlin"])),
            **common,
        )
    return DateTrigger(
        run_at=T0 + timedelta(minutes=draw(st.integers(-300, 300))),
        jitter_seconds=common["jitter_seconds"],
    )


policies = st.builds(
    TaskPolicies,
    max_retries=st.integers(0, 3),
    retry_backoff_seconds=st.sampled_from([0.0, 1.0, 30.0]),
    retry_backoff_max_seconds=st.sampled_from([10.0, 600.0]),
    retry_jitter=st.sampled_from([0.0, 0.5]),
    timeout_seconds=st.none() | st.just(120.0),
    overlap=st.sampled_from(["skip", "queue_one", "allow", "cancel_running"]),
    max_concurrent=st.integers(1, 3),
    catchup=st.sampled_from(["run_once", "run_all", "skip"]),
    catchup_limit=st.integers(1, 4),
    misfire_grace_seconds=st.sampled_from([None, 0.0, 60.0, 1800.0]),
)


@st.composite
def definitions(draw: st.DrawFn, name: str = "job") -> TaskDefinition:
    return TaskDefinition(
        name=name, function_name="fn", trigger=draw(triggers()), policies=draw(policies)
    )


#: Seconds a fire arrives after its instant: on time, a little late, past grace, after hours.
LATENESS = st.sampled_from([0, 0, 1, 30, 61, 1801, 4 * 3600, 30 * 3600])
#: Seconds the clock moves between commands.
ADVANCE = st.sampled_from([0, 1, 5, 60, 600, 3600])

#: (MAX_MISSED_SCAN, MAX_LISTED_MISSES) to run with: the real limits, and small ones so
#: that summary skips and the scan cap turn up in short histories too.
LIMITS = st.sampled_from(
    [(MAX_MISSED_SCAN, MAX_LISTED_MISSES), (MAX_MISSED_SCAN, 3), (12, 3), (2, 1)]
)

#: Commands to draw, repeated by weight: mostly fires and outcomes, rarely the end.
ACTIONS = [
    *["fire"] * 8,
    *["finish"] * 4,
    "timeout",
    *["retry_due"] * 2,
    "pause",
    *["resume"] * 2,
    "run_now",
    "recover",
    "update",
    "stale_fire",
    "late_finish",
    "unknown_retry",
    "cancel",
]


_CLOSING = (
    ExecutionSucceeded,
    ExecutionFailed,
    ExecutionTimedOut,
    ExecutionCancelled,
    ExecutionInterrupted,
)


# --- the model --------------------------------------------------------------------------


@dataclass
class History:
    """The live task, everything it emitted, and the facts the invariants need."""

    now: datetime
    state: TaskState = field(default_factory=lambda: TaskState(task_id=TASK))
    stored: list[DomainEvent] = field(default_factory=list)  # as read back from the log
    ids: itertools.count[int] = field(default_factory=itertools.count)
    consumed: list[datetime] = field(default_factory=list)  # a summary adds its ``until``
    fires: int = 0  # nominal times consumed, a summary counting ``count``
    since_definition: int = 0  # ... since the newest TaskScheduled/TaskUpdated
    fifo: list[datetime] = field(default_factory=list)
    scheduled_starts: set[datetime] = field(default_factory=set)
    retries_waiting: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # execution id -> idempotency key
    manual_roots: set[str] = field(default_factory=set)  # manual runs and their retries
    closed: set[str] = field(default_factory=set)
    ended: bool = False
    command: cmd.Command | None = None
    #: single skips in a row within the current decision, with the reason they share
    listed_skips: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        return f"x{next(self.ids)}"

    def apply(self, command: cmd.Command) -> list[DomainEvent]:
        before = self.state
        mark = next(self.ids)
        try:
            events = decide(self.state, command, self.now, self.new_id)
        except InvalidStateError:
            assert self.state == before
            return []
        except ChronologError as exc:  # (f): only chronolog errors, and none expected here
            pytest.fail(f"{command!r} raised {exc!r}")
        except Exception as exc:  # (f)
            pytest.fail(f"{command!r} raised a non-chronolog {type(exc).__name__}: {exc}")
        # The decider is a function: the same inputs give the same events.
        replay_ids = itertools.count(mark + 1)
        again = decide(before, command, self.now, lambda: f"x{next(replay_ids)}")
        assert again == events
        paused = before.lifecycle == "paused" and not isinstance(command, cmd.Resume)
        self.command, self.listed_skips = command, []
        for event in events:
            self.check(event, paused)
            self.state = evolve_task(self.state, event)
            encoded = DEFAULT_CODEC.encode_event(event)
            self.stored.append(
                DEFAULT_CODEC.decode_event(encoded.event_type, encoded.schema_version, encoded.data)
            )
        # (a) folding the log from scratch gives the live state
        assert replay_task(TASK, self.stored) == self.state
        if self.state.is_final:
            self.ended = True
        self.check_state()
        return events

    @property
    def definition(self) -> TaskDefinition:
        assert self.state.definition is not None
        return self.state.definition

    def check(self, event: DomainEvent, paused: bool) -> None:
        state = self.state
        if paused:
            # a paused task runs nothing but manual runs until it is resumed
            assert not isinstance(event, ExecutionQueued | ExecutionSkipped)
            assert not isinstance(event, ExecutionStarted) or event.reason == "manual"
        if self.ended:
            # (e) nothing fires, queues or retries after the task was cancelled or completed
            assert not isinstance(event, ExecutionStarted | ExecutionQueued | RetryScheduled)
            assert not isinstance(event, TaskCancelled | TaskCompleted)
        if isinstance(event, ExecutionStarted | ExecutionSkipped | ExecutionQueued):
            assert event.nominal_time <= self.now  # nothing runs before it is due
        if isinstance(event, ExecutionStarted):
            self.keys[event.execution_id] = event.idempotency_key
            if event.reason != "retry":
                assert event.retry_of is None
            if event.reason == "manual":
                assert event.attempt == 1
                assert event.idempotency_key == f"{TASK}:manual:{event.execution_id}"
                self.manual_roots.add(event.execution_id)
            elif event.reason == "retry":
                # (c) a nominal time runs again only as the retry of a failed execution,
                # and each scheduled retry starts at most once
                assert event.retry_of is not None
                assert self.retries_waiting.pop(event.retry_of) == (
                    event.nominal_time,
                    event.attempt,
                )
                assert isinstance(self.command, cmd.RetryDue)
                assert event.retry_of == self.command.execution_id
                # every attempt shares the key of the run it repeats (manual runs too)
                assert event.idempotency_key == self.keys[event.retry_of]
            elif self.fifo and event.nominal_time == self.fifo[0]:
                # a queued fire starts, in queue order (it was consumed when queued)
                assert event.attempt == 1
                self.fifo.pop(0)
                assert event.nominal_time not in self.scheduled_starts
                self.scheduled_starts.add(event.nominal_time)
            else:
                # the overlap policy held: only "allow" runs beside open executions
                policies = self.definition.policies
                if policies.overlap == "allow":
                    assert len(state.open_executions) < max(policies.max_concurrent, 1)
                else:
                    assert state.open_executions == ()
                # (c) a nominal time never starts twice on schedule
                assert event.attempt == 1
                assert event.idempotency_key == idempotency_key(TASK, event.nominal_time)
                assert event.nominal_time not in self.scheduled_starts
                assert event.nominal_time not in state.queued
                self.scheduled_starts.add(event.nominal_time)
                self.consume(event.nominal_time)
        elif isinstance(event, ExecutionSkipped):
            # (e) fires that fell inside a pause are recorded by the resume, and only then
            assert (event.reason == "paused") == isinstance(self.command, cmd.Resume)
            if event.until is None:
                assert event.count == 1
                # (d) a gap lists at most MAX_LISTED_MISSES misses one by one
                if self.listed_skips and self.listed_skips[-1] != event.reason:
                    self.listed_skips = []
                self.listed_skips.append(event.reason)
                assert len(self.listed_skips) <= task_decider.MAX_LISTED_MISSES
                self.consume(event.nominal_time)
            else:
                # (d) a longer gap is one summary, not preceded by listed misses of its own,
                # that counts exactly the trigger's nominal times in its range
                assert event.reason not in self.listed_skips
                assert event.count > task_decider.MAX_LISTED_MISSES
                assert event.until > event.nominal_time
                assert event.count == self.nominal_times_between(event.nominal_time, event.until)
                self.listed_skips = []
                self.consume(event.nominal_time, until=event.until, count=event.count)
        elif isinstance(event, ExecutionQueued):
            self.consume(event.nominal_time)
            # queue_one keeps one fire waiting; only run_all catch-up queues more
            policies = self.definition.policies
            assert state.open_executions
            assert policies.catchup == "run_all" or (
                policies.overlap == "queue_one" and state.queued == ()
            )
            self.fifo.append(event.nominal_time)
        elif isinstance(event, RetryScheduled):
            assert event.execution_id in self.closed  # the execution it retries has ended
            assert event.execution_id not in self.retries_waiting
            self.retries_waiting[event.execution_id] = (event.nominal_time, event.attempt)
            failed = event.attempt - 1
            delay = retry_delay(event.execution_id, failed, self.definition)
            assert event.retry_at == self.now + delay
            assert event.attempt <= self.definition.policies.max_retries + 1
        elif isinstance(event, NextFireDecided):
            jitter = timedelta(seconds=self.definition.trigger.jitter_seconds)
            assert event.nominal_time <= event.fire_at <= event.nominal_time + jitter
        elif isinstance(event, _CLOSING):
            # an execution ends once; anything after that is only a late result
            assert state.open_execution(event.execution_id) is not None
            self.closed.add(event.execution_id)
        elif isinstance(event, LateResultRecorded):
            assert state.open_execution(event.execution_id) is None
        elif isinstance(event, TaskCancelled):
            self.fifo.clear()
            self.retries_waiting.clear()
        elif isinstance(event, TaskScheduled | TaskUpdated):
            self.since_definition = 0
        if not isinstance(event, ExecutionSkipped):
            self.listed_skips = []

    def consume(self, nominal: datetime, until: datetime | None = None, count: int = 1) -> None:
        # (b) the schedule's nominal times never go backwards nor repeat
        assert not self.consumed or nominal > self.consumed[-1], (self.consumed[-1], nominal)
        self.consumed.append(until or nominal)
        self.fires += count
        self.since_definition += count
        # (d) fires never exceed max_runs; a one-shot definition fires at most once
        trigger = self.definition.trigger
        assert trigger.max_runs is None or self.fires <= trigger.max_runs
        assert not isinstance(trigger, DateTrigger) or self.since_definition <= 1

    def nominal_times_between(self, first: datetime, last: datetime) -> int:
        """How many nominal times the current trigger has from ``first`` to ``last``."""
        trigger = self.definition.trigger
        count, nominal = 1, first
        while True:
            following = next_fire(trigger, nominal, seed=TASK)
            if following is None or following.nominal > last:
                return count
            count, nominal = count + 1, following.nominal

    def check_state(self) -> None:
        state = self.state
        assert state.fires == self.fires
        assert state.last_nominal == (self.consumed[-1] if self.consumed else None)
        assert list(state.queued) == self.fifo
        assert [r.execution_id for r in state.pending_retries] == list(self.retries_waiting)
        if state.is_final:
            assert state.next_nominal is None and state.queued == ()
        if state.lifecycle == "completed":
            assert state.open_executions == () and state.pending_retries == ()
        if state.lifecycle == "active":
            assert state.status == ("running" if state.open_executions else "scheduled")
        if state.lifecycle == "cancelled":
            assert state.open_executions == () and state.pending_retries == ()
        if state.next_nominal is not None:
            assert not self.consumed or state.next_nominal > self.consumed[-1]
            # the timer is told the jittered instant, the same one a replay computes
            jitter = self.definition.trigger.jitter_seconds
            expected = state.next_nominal + jitter_for(TASK, state.next_nominal, jitter)
            assert state.next_fire_at == expected
        for execution in state.open_executions:
            assert execution.execution_id not in self.closed


# --- the property -----------------------------------------------------------------------


def step(data: st.DataObject, h: History) -> None:
    """Draw one command the shell could send now, move the clock, and apply it."""
    h.now += timedelta(seconds=data.draw(ADVANCE))
    action = data.draw(st.sampled_from(ACTIONS))
    s = h.state
    command: cmd.Command
    if action == "fire" and s.next_nominal is not None:
        fire_at = s.next_fire_at or s.next_nominal
        h.now = max(h.now, fire_at + timedelta(seconds=data.draw(LATENESS)))
        command = cmd.Fire(nominal_time=s.next_nominal)
    elif action in ("finish", "timeout") and s.open_executions:
        execution = data.draw(st.sampled_from(s.open_executions))
        if action == "timeout":
            command = cmd.TimeoutDue(execution_id=execution.execution_id)
        else:
            command = cmd.Finish(
                execution_id=execution.execution_id,
                outcome=data.draw(st.sampled_from(["succeeded", "failed"])),
                duration_seconds=1.0,
            )
    elif action == "retry_due" and s.pending_retries:
        retry = data.draw(st.sampled_from(s.pending_retries))
        h.now = max(h.now, retry.retry_at)
        command = cmd.RetryDue(execution_id=retry.execution_id)
    elif action == "late_finish" and h.closed:
        command = cmd.Finish(
            execution_id=data.draw(st.sampled_from(sorted(h.closed))),
            outcome="succeeded",
            duration_seconds=9.0,
        )
    elif action == "stale_fire":
        command = cmd.Fire(nominal_time=h.now - timedelta(minutes=data.draw(st.integers(1, 600))))
    elif action == "unknown_retry":
        # an id with no pending retry: never seen, still running, or already retried
        pending = {r.execution_id for r in s.pending_retries}
        candidates = sorted({"nope", *h.keys} - pending)
        execution_id = data.draw(st.sampled_from(candidates))
        assert h.apply(cmd.RetryDue(execution_id=execution_id)) == []
        return
    elif action == "pause":
        command = cmd.Pause(note=data.draw(st.none() | st.just("note")))
    elif action == "resume":
        command = cmd.Resume()
    elif action == "run_now":
        command = cmd.RunNow()
    elif action == "cancel":
        command = cmd.Cancel()
    elif action == "recover":
        command = cmd.Recover()
    elif action == "update":
        if data.draw(st.booleans()):
            new = data.draw(definitions(name="updated"))
        else:  # the same trigger (a one-shot's run_at included), other policies
            new = TaskDefinition(
                name="updated",
                function_name="fn",
                trigger=h.definition.trigger,
                policies=data.draw(policies),
            )
        command = cmd.Update(definition=new, recurring=not isinstance(new.trigger, DateTrigger))
    else:
        return
    h.apply(command)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    definition=definitions(),
    schedule_offset=st.integers(-600, 600),
    limits=LIMITS,
)
def test_random_histories_keep_the_decider_invariants(
    data: st.DataObject,
    definition: TaskDefinition,
    schedule_offset: int,
    limits: tuple[int, int],
) -> None:
    """Any command sequence keeps replay, ordering, once-only, counting, max_runs and
    cancel rules."""
    scan, listed = limits
    with mock.patch.multiple(task_decider, MAX_MISSED_SCAN=scan, MAX_LISTED_MISSES=listed):
        h = History(now=T0 + timedelta(minutes=schedule_offset))
        h.apply(
            cmd.Schedule(
                definition=definition, recurring=not isinstance(definition.trigger, DateTrigger)
            )
        )
        for _ in range(data.draw(st.integers(0, 60), label="steps")):
            step(data, h)
