"""The task fold: replays agree with live folds, counters agree with the stream, and the
status users see follows the life cycle."""

from __future__ import annotations

import functools
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog.domain import TaskState, evolve_task, replay_task
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
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.store import NO_STREAM, EventStore, InMemoryEventStore, SQLiteEventStore
from chronolog.testing import strategies as cst
from chronolog.triggers.spec import IntervalTrigger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_stream_numbers = itertools.count()

_OUTCOME_OF = {
    ExecutionSucceeded: "succeeded",
    ExecutionFailed: "failed",
    ExecutionTimedOut: "timed_out",
    ExecutionCancelled: "cancelled",
    ExecutionInterrupted: "interrupted",
}


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """One store per backend for the whole module; each example writes its own stream."""
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    data_dir = tempfile.mkdtemp(prefix="chronolog-fold-")
    # Durability is tested elsewhere; here the file only has to be real.
    sqlite = SQLiteEventStore(data_dir, synchronous="OFF")
    yield sqlite
    sqlite.close()
    shutil.rmtree(data_dir, ignore_errors=True)


def _fold(events: list[DomainEvent], task_id: str) -> TaskState:
    return functools.reduce(evolve_task, events, TaskState(task_id=task_id))


_store_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestReplay:
    @_store_settings
    @given(stream=cst.task_streams(), data=st.data())
    def test_replay_from_store_equals_live_fold(
        self, store: EventStore, stream: list[DomainEvent], data: st.DataObject
    ) -> None:
        """Appending a stream in any chunks while folding each event gives the state that
        replaying the stored stream gives, from events or from envelopes."""
        task_id = stream[0].task_id  # type: ignore[attr-defined]
        stream_id = f"task-{next(_stream_numbers)}"
        live = TaskState(task_id=task_id)
        live_envelopes = TaskState(task_id=task_id)
        rest = list(stream)
        while rest:
            size = data.draw(st.integers(min_value=1, max_value=len(rest)), label="chunk")
            chunk, rest = rest[:size], rest[size:]
            stored = store.append(stream_id, chunk, expected_version=live.version)
            for event, envelope in zip(chunk, stored, strict=True):
                live = evolve_task(live, event)
                live_envelopes = evolve_task(live_envelopes, envelope)
        replayed = replay_task(task_id, store.read_stream(stream_id))
        assert replayed == live
        assert live_envelopes == live
        assert replayed.version == len(stream) == store.stream_version(stream_id)

    @_store_settings
    @given(stream=cst.task_streams())
    def test_replaying_any_prefix_equals_folding_it(
        self, store: EventStore, stream: list[DomainEvent]
    ) -> None:
        """For every k, replaying the first k stored events equals folding the first k."""
        task_id = stream[0].task_id  # type: ignore[attr-defined]
        stream_id = f"task-{next(_stream_numbers)}"
        store.append(stream_id, stream, expected_version=NO_STREAM)
        for k in range(len(stream) + 1):
            prefix = store.read_stream(stream_id, to_version=k) if k else []
            assert replay_task(task_id, prefix) == _fold(stream[:k], task_id)


def _count(stream: list[DomainEvent], *types: type[DomainEvent]) -> int:
    return sum(isinstance(e, types) for e in stream)


def _consumed_nominals(events: list[DomainEvent]) -> list[datetime]:
    """Nominal times the schedule used up: skipped (the last of a summary), queued, or
    started by a fire."""
    return [
        (e.until or e.nominal_time) if isinstance(e, ExecutionSkipped) else e.nominal_time
        for e in events
        if isinstance(e, ExecutionSkipped | ExecutionQueued)
        or (isinstance(e, ExecutionStarted) and e.reason in ("schedule", "catch_up"))
    ]


#: Events that announce the next fire, and the (nominal, fire_at) they announce.
_ANNOUNCED: dict[type[DomainEvent], Callable[[Any], tuple[datetime | None, datetime | None]]] = {
    TaskScheduled: lambda e: (e.first_fire, e.first_fire),
    TaskUpdated: lambda e: (e.next_fire, e.next_fire),
    TaskResumed: lambda e: (e.next_fire, e.next_fire),
    NextFireDecided: lambda e: (e.nominal_time, e.fire_at),
}


class TestInvariants:
    @settings(max_examples=200)
    @given(cst.task_streams())
    def test_counters_agree_with_the_stream(self, stream: list[DomainEvent]) -> None:
        """Runs, outcomes, open executions, fires, retries and queue agree with the events."""
        state = replay_task("t", stream)
        starts = [e for e in stream if isinstance(e, ExecutionStarted)]
        succeeded = _count(stream, ExecutionSucceeded)
        failed = _count(stream, ExecutionFailed, ExecutionTimedOut, ExecutionInterrupted)
        cancelled = _count(stream, ExecutionCancelled)

        assert state.version == len(stream)
        assert state.runs == len(starts)
        assert (state.successes, state.failures) == (succeeded, failed)
        # Every start ends in exactly one of: success, failure, cancellation, still open.
        assert state.runs == state.successes + state.failures + cancelled + len(
            state.open_executions
        )
        open_ids = [e.execution_id for e in state.open_executions]
        assert len(open_ids) == len(set(open_ids))

        queued_times = {e.nominal_time for e in stream if isinstance(e, ExecutionQueued)}
        consumed = [s for s in starts if s.reason in ("schedule", "catch_up")]
        fresh = [s for s in consumed if s.nominal_time not in queued_times]
        skipped = sum(e.count for e in stream if isinstance(e, ExecutionSkipped))
        assert state.fires == skipped + len(queued_times) + len(fresh), (
            "every nominal time is counted once: skipped (a summary by its count), queued, "
            "or started unqueued"
        )
        nominals = _consumed_nominals(stream)
        assert state.last_nominal == (max(nominals) if nominals else None)

        if state.lifecycle == "cancelled":
            assert state.pending_retries == ()
        else:
            retried = {s.retry_of for s in starts if s.reason == "retry"}
            waiting = [
                e.execution_id
                for e in stream
                if isinstance(e, RetryScheduled) and e.execution_id not in retried
            ]
            assert [r.execution_id for r in state.pending_retries] == waiting
        if state.is_final:
            assert state.queued == ()
        else:
            started = {s.nominal_time for s in consumed}
            assert set(state.queued) == queued_times - started

    @settings(max_examples=200)
    @given(cst.task_streams())
    def test_status_follows_the_last_lifecycle_event(self, stream: list[DomainEvent]) -> None:
        """Lifecycle, status, next fire, pause note and last outcome follow the newest event
        of their kind."""
        state = replay_task("t", stream)
        lifecycle_events = {
            TaskScheduled: "active",
            TaskResumed: "active",
            TaskPaused: "paused",
            TaskCancelled: "cancelled",
            TaskCompleted: "completed",
        }
        last_life = [e for e in stream if type(e) in lifecycle_events][-1]
        assert state.lifecycle == lifecycle_events[type(last_life)]
        expected_status = {
            "active": "running" if state.open_executions else "scheduled",
            "paused": "paused",
            "cancelled": "cancelled",
            "completed": "failed"
            if state.last_outcome in ("failed", "timed_out", "interrupted")
            else "completed",
        }[state.lifecycle]
        assert state.status == expected_status
        assert state.exists

        outcomes = [e for e in stream if type(e) in _OUTCOME_OF or isinstance(e, ExecutionSkipped)]
        if outcomes:
            last = outcomes[-1]
            assert state.last_outcome == (
                "skipped" if isinstance(last, ExecutionSkipped) else _OUTCOME_OF[type(last)]
            )
        else:
            assert state.last_outcome is None

        if state.is_final:
            assert (state.next_nominal, state.next_fire_at) == (None, None)
        else:
            # The newest announced fire stays pending until a fire consumes it (a start,
            # skip or queue of that nominal time or a later one).
            announced = [i for i, e in enumerate(stream) if type(e) in _ANNOUNCED]
            i = announced[-1]
            nominal, fire_at = _ANNOUNCED[type(stream[i])](stream[i])
            consumed_later = nominal is not None and any(
                t >= nominal for t in _consumed_nominals(stream[i + 1 :])
            )
            if consumed_later:
                assert (state.next_nominal, state.next_fire_at) == (None, None)
            else:
                assert (state.next_nominal, state.next_fire_at) == (nominal, fire_at)

        if isinstance(last_life, TaskPaused):
            assert state.pause_note == last_life.note
        elif isinstance(last_life, TaskResumed):
            assert state.pause_note is None

    @settings(max_examples=100)
    @given(cst.task_streams(), st.data())
    def test_late_results_and_duplicate_outcomes_change_nothing(
        self, stream: list[DomainEvent], data: st.DataObject
    ) -> None:
        """A late result or a second outcome for a closed execution only bumps the version."""
        state = replay_task("t", stream)
        closed = [
            e.execution_id  # type: ignore[attr-defined]
            for e in stream
            if type(e) in _OUTCOME_OF and state.open_execution(e.execution_id) is None  # type: ignore[attr-defined]
        ]
        execution_id = data.draw(st.sampled_from(closed) if closed else st.just("never-opened"))
        extra = data.draw(
            st.sampled_from([*_OUTCOME_OF, LateResultRecorded]).flatmap(
                lambda cls: cst.events(
                    cls, task_id=st.just("t"), execution_id=st.just(execution_id)
                )
            )
        )
        after = evolve_task(state, extra)
        assert after.version == state.version + 1
        assert msgspec.structs.replace(after, version=state.version) == state

    def test_open_execution_is_found_by_id(self) -> None:
        """``open_execution`` finds an open execution by id and nothing once it closed."""
        started = _started("x1")
        state = replay_task("t", [_scheduled(), started])
        found = state.open_execution("x1")
        assert found is not None and found.nominal_time == started.nominal_time
        assert found.attempt == 1 and found.reason == "schedule"
        assert state.open_execution("x2") is None
        closed = evolve_task(
            state, ExecutionSucceeded(task_id="t", execution_id="x1", duration_seconds=1)
        )
        assert closed.open_execution("x1") is None


# --- table tests ------------------------------------------------------------------------


def _scheduled(first_fire: datetime | None = T0) -> TaskScheduled:
    definition = TaskDefinition(
        name="n",
        function_name="f",
        trigger=IntervalTrigger(every=1, unit="hours", start=T0),
    )
    return TaskScheduled(task_id="t", definition=definition, recurring=True, first_fire=first_fire)


def _started(
    execution_id: str = "x1",
    minutes: int = 0,
    reason: str = "schedule",
    attempt: int = 1,
    retry_of: str | None = None,
) -> ExecutionStarted:
    nominal = T0 + timedelta(minutes=minutes)
    key = f"t:manual:{execution_id}" if reason == "manual" else f"t:{nominal.isoformat()}"
    return ExecutionStarted(
        task_id="t",
        execution_id=execution_id,
        nominal_time=nominal,
        attempt=attempt,
        reason=reason,  # type: ignore[arg-type]
        idempotency_key=key,
        retry_of=retry_of,
    )


def _retry(execution_id: str = "x1", minutes: int = 0, attempt: int = 2) -> RetryScheduled:
    nominal = T0 + timedelta(minutes=minutes)
    return RetryScheduled(
        task_id="t", execution_id=execution_id, nominal_time=nominal, attempt=attempt, retry_at=T0
    )


def _succeeded(execution_id: str = "x1") -> ExecutionSucceeded:
    return ExecutionSucceeded(task_id="t", execution_id=execution_id, duration_seconds=0.5)


def _failed(execution_id: str = "x1") -> ExecutionFailed:
    return ExecutionFailed(
        task_id="t", execution_id=execution_id, error_type="E", message="m", duration_seconds=1
    )


_PAUSED = TaskPaused(task_id="t", note="maintenance")
_RESUMED = TaskResumed(task_id="t", next_fire=T0 + timedelta(hours=5))
_CANCELLED = TaskCancelled(task_id="t")
_COMPLETED = TaskCompleted(task_id="t", reason="max_runs")
_SKIPPED = ExecutionSkipped(task_id="t", nominal_time=T0, reason="misfire", policy="skip")

_TIMED_OUT = ExecutionTimedOut(
    task_id="t", execution_id="x1", timeout_seconds=1, duration_seconds=1
)
_INTERRUPTED = ExecutionInterrupted(task_id="t", execution_id="x1")
_CUT = ExecutionCancelled(task_id="t", execution_id="x1", reason="overlap")

STATUS_TABLE: list[tuple[str, list[DomainEvent], str]] = [
    ("nothing yet", [], "new"),
    ("scheduled", [_scheduled()], "scheduled"),
    ("never fires", [_scheduled(None)], "scheduled"),
    ("running", [_scheduled(), _started()], "running"),
    ("ran and succeeded", [_scheduled(), _started(), _succeeded()], "scheduled"),
    ("ran and failed, recurring", [_scheduled(), _started(), _failed()], "scheduled"),
    ("one of two running", [_scheduled(), _started(), _started("x2", 1), _succeeded()], "running"),
    ("paused", [_scheduled(), _PAUSED], "paused"),
    ("paused while running", [_scheduled(), _started(), _PAUSED], "paused"),
    ("resumed", [_scheduled(), _PAUSED, _RESUMED], "scheduled"),
    ("resumed while running", [_scheduled(), _started(), _PAUSED, _RESUMED], "running"),
    ("cancelled", [_scheduled(), _CANCELLED], "cancelled"),
    ("cancelled while paused", [_scheduled(), _PAUSED, _CANCELLED], "cancelled"),
    ("cancelled while running", [_scheduled(), _started(), _CANCELLED], "cancelled"),
    ("done after success", [_scheduled(), _started(), _succeeded(), _COMPLETED], "completed"),
    ("done after failure", [_scheduled(), _started(), _failed(), _COMPLETED], "failed"),
    ("done after time-out", [_scheduled(), _started(), _TIMED_OUT, _COMPLETED], "failed"),
    ("done after interruption", [_scheduled(), _started(), _INTERRUPTED, _COMPLETED], "failed"),
    ("done after run cancelled", [_scheduled(), _started(), _CUT, _COMPLETED], "completed"),
    ("done after a skip", [_scheduled(), _started(), _failed(), _SKIPPED, _COMPLETED], "completed"),
    ("done without a run", [_scheduled(), _COMPLETED], "completed"),
]  # fmt: skip


class TestStatusTable:
    @pytest.mark.parametrize(
        ("events", "status"),
        [pytest.param(events, status, id=name) for name, events, status in STATUS_TABLE],
    )
    def test_status_after_events(self, events: list[DomainEvent], status: str) -> None:
        """The status users see after each typical sequence of events."""
        assert replay_task("t", events).status == status

    def test_final_states_are_final(self) -> None:
        """Completed and cancelled tasks are final and have no next fire; others are not."""
        cases: list[tuple[list[DomainEvent], bool]] = [
            ([_scheduled()], False),
            ([_scheduled(), _PAUSED], False),
            ([_scheduled(), _CANCELLED], True),
            ([_scheduled(), _COMPLETED], True),
        ]
        for events, final in cases:
            state = replay_task("t", events)
            assert state.is_final is final
            if final:
                assert state.next_nominal is None and state.next_fire_at is None

    def test_unscheduled_task_does_not_exist(self) -> None:
        """A task with no ``TaskScheduled`` does not exist; one with it does."""
        assert not replay_task("t", []).exists
        assert replay_task("t", [_scheduled()]).exists

    def test_cancel_drops_queue_and_retries_but_keeps_open_runs(self) -> None:
        """Cancelling clears queued fires and pending retries; running executions stay open
        until their outcome arrives."""
        retry = RetryScheduled(
            task_id="t", execution_id="x1", nominal_time=T0, attempt=2, retry_at=T0
        )
        queued = ExecutionQueued(task_id="t", nominal_time=T0 + timedelta(minutes=5))
        state = replay_task(
            "t", [_scheduled(), _started(), _failed(), retry, _started("x2", 1), queued]
        )
        assert len(state.pending_retries) == 1 and len(state.queued) == 1
        cancelled = evolve_task(state, _CANCELLED)
        assert (cancelled.pending_retries, cancelled.queued) == ((), ())
        assert [e.execution_id for e in cancelled.open_executions] == ["x2"]

    def test_retry_start_consumes_its_pending_retry_but_not_a_fire(self) -> None:
        """A retry starts as a new execution; it removes the pending retry of the failed
        execution it names in ``retry_of``, and does not count as a fire."""
        before = replay_task("t", [_scheduled(), _started(), _failed(), _retry("x1")])
        assert [(r.execution_id, r.nominal_time, r.attempt) for r in before.pending_retries] == [
            ("x1", T0, 2)
        ]
        for other in ("x9", None):
            unrelated = evolve_task(before, _started("x2", reason="retry", retry_of=other))
            assert unrelated.pending_retries == before.pending_retries
        after = evolve_task(before, _started("x2", reason="retry", attempt=2, retry_of="x1"))
        assert after.pending_retries == ()
        assert (after.fires, after.runs) == (before.fires, before.runs + 1)
        assert after.last_nominal == before.last_nominal
        assert after.status == "running"

    def test_twin_retries_are_consumed_one_by_one(self) -> None:
        """Two pending retries of one nominal time and attempt: each start removes only the
        retry of the execution it repeats."""
        state = replay_task(
            "t",
            [
                _scheduled(),
                _started("x1", reason="manual"),
                _started("x2", reason="manual"),
                _failed("x1"),
                _failed("x2"),
                _retry("x1"),
                _retry("x2"),
            ],
        )
        assert [r.execution_id for r in state.pending_retries] == ["x1", "x2"]
        state = evolve_task(state, _started("x3", reason="retry", attempt=2, retry_of="x2"))
        assert [r.execution_id for r in state.pending_retries] == ["x1"]
        state = evolve_task(state, _started("x4", reason="retry", attempt=2, retry_of="x2"))
        assert [r.execution_id for r in state.pending_retries] == ["x1"]
        state = evolve_task(state, _started("x5", reason="retry", attempt=2, retry_of="x1"))
        assert state.pending_retries == ()

    def test_retry_of_round_trips_through_the_codec(self) -> None:
        """``retry_of`` is stored and read back, so a replay consumes the same retry."""
        event = _started("x2", reason="retry", attempt=2, retry_of="x1")
        encoded = DEFAULT_CODEC.encode_event(event)
        decoded = DEFAULT_CODEC.decode_event(
            encoded.event_type, encoded.schema_version, encoded.data
        )
        assert decoded == event

    def test_a_summary_skip_round_trips_and_counts_its_whole_range(self) -> None:
        """An ExecutionSkipped with ``count`` and ``until`` survives the codec; the fold adds
        ``count`` to fires, moves last_nominal to ``until`` and clears a pending fire in it."""
        summary = ExecutionSkipped(
            task_id="t",
            nominal_time=T0 + timedelta(minutes=10),
            until=T0 + timedelta(minutes=59),
            count=50,
            reason="misfire",
            policy="catchup=run_once",
        )
        encoded = DEFAULT_CODEC.encode_event(summary)
        decoded = DEFAULT_CODEC.decode_event(
            encoded.event_type, encoded.schema_version, encoded.data
        )
        assert decoded == summary
        assert isinstance(decoded, ExecutionSkipped)
        assert (decoded.count, decoded.until) == (50, T0 + timedelta(minutes=59))

        pending = T0 + timedelta(minutes=30)
        announced = NextFireDecided(task_id="t", nominal_time=pending, fire_at=pending)
        listed = [
            ExecutionSkipped(
                task_id="t",
                nominal_time=T0 + timedelta(minutes=k),
                reason="misfire",
                policy="catchup=run_once",
            )
            for k in range(10)
        ]
        before: list[DomainEvent] = [_scheduled(), announced, *listed]
        state = replay_task("t", [*before, decoded])
        assert state.fires == 60
        assert state.last_nominal == T0 + timedelta(minutes=59)
        assert (state.next_nominal, state.next_fire_at) == (None, None)
        assert state.last_outcome == "skipped"
        assert state == replay_task("t", [*before, summary])

    def test_a_plain_skip_defaults_to_a_count_of_one(self) -> None:
        """An ExecutionSkipped without ``count``/``until`` (as older logs hold) counts once."""
        assert (_SKIPPED.count, _SKIPPED.until) == (1, None)
        state = evolve_task(replay_task("t", [_scheduled()]), _SKIPPED)
        assert (state.fires, state.last_nominal) == (1, T0)

    def test_a_fire_consumes_the_announced_next_time(self) -> None:
        """Starting, skipping or queueing the pending nominal time clears it until the next
        ``NextFireDecided``; a manual run does not."""
        later = T0 + timedelta(hours=1)
        announced = NextFireDecided(task_id="t", nominal_time=later, fire_at=later)
        state = replay_task("t", [_scheduled()])
        assert state.next_nominal == T0
        assert evolve_task(state, _started(reason="manual")).next_nominal == T0
        fired = evolve_task(state, _started())
        assert (fired.next_nominal, fired.next_fire_at) == (None, None)
        fired = evolve_task(fired, announced)
        assert fired.next_nominal == later
        skipped = evolve_task(
            fired,
            ExecutionSkipped(task_id="t", nominal_time=later, reason="overlap", policy="skip"),
        )
        assert (skipped.next_nominal, skipped.fires) == (None, 2)

    def test_queued_fire_counts_once(self) -> None:
        """A fire that was queued counts when queued, not again when it starts."""
        queued_at = T0 + timedelta(minutes=5)
        state = replay_task(
            "t",
            [
                _scheduled(),
                _started(),
                ExecutionQueued(task_id="t", nominal_time=queued_at),
                _succeeded(),
                _started("x2", 5),
            ],
        )
        assert state.fires == 2
        assert state.queued == ()
        assert state.last_nominal == queued_at
