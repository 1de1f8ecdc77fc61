"""The actor runtime on a fake clock: timer, job actors, executor, supervisor, recovery."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from chronolog.actors import executor as executor_module
from chronolog.actors import loop_watch
from chronolog.actors.executor import ExecutionContext
from chronolog.actors.messages import CommandOutcome, TaskCommand
from chronolog.actors.runtime import Runtime
from chronolog.actors.tuning import HOST_PROCESS
from chronolog.domain import commands as cmd
from chronolog.errors import EventCodecError, StorageError
from chronolog.events import (
    EventMetadata,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    LateResultRecorded,
    RetryScheduled,
    TaskDefinition,
    TaskPolicies,
)
from chronolog.functions import FunctionRegistry
from chronolog.settings import Settings
from chronolog.store import InMemoryEventStore, SQLiteEventStore
from chronolog.testing import FakeClock
from chronolog.triggers import CronTrigger, DateTrigger, IntervalTrigger

TEN_S = timedelta(seconds=10)
#: The default fire lead (seconds).
LEAD = Settings().fire_lead_seconds


class Harness:
    """A runtime on a fake clock with helpers to command tasks and read their history."""

    def __init__(
        self,
        clock: FakeClock,
        store: Any = None,
        round_size: int = HOST_PROCESS.round_size,
        **settings: Any,
    ) -> None:
        self.clock = clock
        self.store = store or InMemoryEventStore(clock=clock)
        self.registry = FunctionRegistry()
        self.calls: list[tuple[str, Any]] = []
        self.release = threading.Event()
        self.registry.register("record", self._record)
        self.registry.register("fail", self._fail)
        self.registry.register("block", self._block)
        self.registry.register("arecord", self._arecord)
        self.registry.register("patient", self._patient)
        self.runtime = Runtime(
            Settings(**settings),
            self.store,
            self.registry,
            clock=clock,
            tuning=dataclasses.replace(HOST_PROCESS, round_size=round_size),
        )

    def _record(self, tag: str = "", context: Any = None) -> str:
        self.calls.append((tag, context.idempotency_key if context else None))
        return tag

    def _fail(self) -> None:
        raise RuntimeError("boom")

    def _block(self) -> str:
        self.release.wait(10)
        return "late"

    def _patient(self, context: Any) -> str:
        """Waits for its cancellation signal (a long job that checks it), up to 10 s."""
        return "signalled" if context.cancelled.wait(10) else "never signalled"

    async def _arecord(self, tag: str = "") -> str:
        await asyncio.sleep(0)
        self.calls.append((tag, "async"))
        return tag

    def command(self, task_id: str, command: cmd.Command) -> CommandOutcome:
        future: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
        self.runtime.send(task_id, command, reply=future.set_result)
        return future.result(10)

    def schedule(
        self, task_id: str, function: str, trigger: Any, *, settle: bool = True, **policies: Any
    ) -> CommandOutcome:
        definition = TaskDefinition(
            name=task_id, function_name=function, trigger=trigger, policies=TaskPolicies(**policies)
        )
        outcome = self.command(task_id, cmd.Schedule(definition=definition, recurring=True))
        assert outcome.error is None, outcome.error
        assert self.runtime.settle(10, executions=settle)
        return outcome

    def advance(self, seconds: float, *, executions: bool = True) -> None:
        self.clock.advance(seconds)
        assert self.runtime.settle(10, executions=executions), "runtime did not settle"

    def events(self, task_id: str, kind: type | None = None) -> list[Any]:
        events = [e.event for e in self.store.read_stream(f"task-{task_id}")]
        return [e for e in events if kind is None or isinstance(e, kind)]


@pytest.fixture
def harness(clock: FakeClock) -> Iterator[Harness]:
    h = Harness(clock)
    h.runtime.start()
    yield h
    h.release.set()
    h.runtime.stop(wait_for_executions=2)


class TestTimer:
    def test_fires_exactly_when_due_and_not_before(self, harness: Harness) -> None:
        """Nothing runs a second before the fire time; advancing to it runs it once."""
        start = harness.clock.now() + timedelta(minutes=5)
        harness.schedule("t", "record", IntervalTrigger(every=5, unit="minutes", start=start))
        harness.advance(299)
        assert harness.calls == []
        harness.advance(1)
        assert len(harness.calls) == 1

    def test_interval_runs_every_period_without_drift(self, harness: Harness) -> None:
        """Ten periods give ten runs with nominal times exactly one period apart."""
        start = harness.clock.now() + timedelta(minutes=1)
        harness.schedule("t", "record", IntervalTrigger(every=1, unit="minutes", start=start))
        for _ in range(10):
            harness.advance(60)
        started = harness.events("t", ExecutionStarted)
        nominals = [e.nominal_time for e in started]
        assert nominals == [start + timedelta(minutes=i) for i in range(10)]

    def test_wall_clock_jump_forward_fires_what_became_due(self, harness: Harness) -> None:
        """A wall-clock step (suspend/resume, NTP) is noticed and due fires run."""
        start = harness.clock.now() + timedelta(minutes=1)
        harness.schedule("t", "record", DateTrigger(run_at=start))
        harness.clock.jump(120)
        assert harness.runtime.settle(10)
        assert len(harness.calls) == 1

    def test_an_entry_that_cannot_be_handed_over_leaves_the_timer_running(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A due entry whose hand-over raises (a bug) is logged; the timer goes on with
        every other task, and the task is resynchronised from its stream, which arms its
        fire again: it runs once, a moment late."""
        runtime = harness.runtime
        real_command = runtime._command
        failed: list[str] = []

        def command(task_id: str, command: cmd.Command) -> None:
            if isinstance(command, cmd.Fire) and task_id == "a" and not failed:
                failed.append(task_id)
                raise RuntimeError("a bug in handing over a fire")
            real_command(task_id, command)

        monkeypatch.setattr(runtime, "_command", command)
        at = harness.clock.now() + timedelta(minutes=1)
        harness.schedule("a", "record", DateTrigger(run_at=at))
        harness.schedule("b", "record", DateTrigger(run_at=at + timedelta(seconds=5)))
        harness.advance(60)
        assert failed == ["a"]
        harness.advance(5)
        assert [e.nominal_time for e in harness.events("a", ExecutionStarted)] == [at]
        assert len(harness.events("b", ExecutionSucceeded)) == 1
        assert len(harness.calls) == 2

    def test_cron_task_runs_on_cron_instants(self, harness: Harness) -> None:
        """A cron task fires at each matching minute, including the one it was scheduled at."""
        harness.schedule("c", "record", CronTrigger(expression="*/15 * * * *", timezone="UTC"))
        for _ in range(4):
            harness.advance(15 * 60)
        minutes = [e.nominal_time.minute for e in harness.events("c", ExecutionStarted)]
        assert minutes == [0, 15, 30, 45, 0]


class TestExecutions:
    def test_function_gets_context_with_idempotency_key(self, harness: Harness) -> None:
        """The context carries ``task_id:nominal_time``."""
        run_at = harness.clock.now() + timedelta(seconds=10)
        harness.schedule("t", "record", DateTrigger(run_at=run_at))
        harness.advance(10)
        assert harness.calls == [("", f"t:{run_at.isoformat()}")]
        assert len(harness.events("t", ExecutionSucceeded)) == 1

    def test_async_functions_run_on_the_loop(self, harness: Harness) -> None:
        """Coroutine functions are awaited and their result stored."""
        harness.schedule("a", "arecord", DateTrigger(run_at=harness.clock.now()))
        harness.advance(1)
        assert harness.calls == [("", "async")]
        assert harness.events("a", ExecutionSucceeded)[0].result == ""

    def test_failure_is_retried_with_backoff_then_gives_up(self, harness: Harness) -> None:
        """Two retries after the first failure, at growing delays, then the task fails."""
        harness.schedule(
            "f",
            "fail",
            DateTrigger(run_at=harness.clock.now()),
            max_retries=2,
            retry_backoff_seconds=10,
            retry_jitter=0,
        )
        harness.advance(1)
        for _ in range(4):
            harness.advance(30)
        failed = harness.events("f", ExecutionFailed)
        retries = harness.events("f", RetryScheduled)
        assert len(failed) == 3
        assert [r.attempt for r in retries] == [2, 3]
        started = harness.events("f", ExecutionStarted)
        assert [s.attempt for s in started] == [1, 2, 3]
        assert len({s.idempotency_key for s in started}) == 1
        assert failed[0].error_type == "RuntimeError"

    def test_thread_timeout_marks_timed_out_and_keeps_late_result(self, harness: Harness) -> None:
        """A thread past its timeout is timed out; its late result is recorded apart."""
        harness.schedule(
            "b", "block", DateTrigger(run_at=harness.clock.now()), settle=False, timeout_seconds=5
        )
        harness.advance(5, executions=False)
        assert harness.events("b", ExecutionTimedOut)
        assert not harness.events("b", LateResultRecorded)
        harness.release.set()
        assert harness.runtime.settle(10)
        late = harness.events("b", LateResultRecorded)
        assert len(late) == 1 and late[0].succeeded
        assert not harness.events("b", ExecutionSucceeded)

    def test_runs_that_ignore_their_timeout_do_not_take_every_worker(
        self, clock: FakeClock
    ) -> None:
        """A function that ignores its cancellation signal keeps its thread after its
        timeout. Each such run gets a stand-in worker (at most the pool's size of them), so
        other runs still begin; once the stuck functions return, the pool is its size again.
        Before, two stuck runs on two threads kept every other synchronous run waiting."""

        # Threads of earlier tests' executors may still be ending: only new ones count.
        earlier = {t for t in threading.enumerate() if t.name.startswith("chronolog-exec-")}

        def exec_threads() -> int:
            return sum(
                t.name.startswith("chronolog-exec-") and t not in earlier
                for t in threading.enumerate()
            )

        h = Harness(clock, executor_threads=2)
        h.runtime.start()
        try:
            assert exec_threads() == 2
            now = DateTrigger(run_at=clock.now())
            for task_id in ("b1", "b2"):
                h.schedule(task_id, "block", now, settle=False, timeout_seconds=5)
            h.advance(5, executions=False)
            assert h.events("b1", ExecutionTimedOut) and h.events("b2", ExecutionTimedOut)
            h.schedule("r", "record", DateTrigger(run_at=clock.now()), settle=False)
            h.advance(1, executions=False)
            # Well within the 10 s the stuck functions wait before they return by themselves.
            deadline = time.monotonic() + 3
            while not h.events("r", ExecutionSucceeded) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert h.events("r", ExecutionSucceeded)
            assert exec_threads() == 4
            # Two more stuck runs on the two stand-ins: the cap, said in a warning.
            for task_id in ("b3", "b4"):
                h.schedule(
                    task_id,
                    "block",
                    DateTrigger(run_at=clock.now()),
                    settle=False,
                    timeout_seconds=5,
                )
            with structlog.testing.capture_logs() as logs:
                h.advance(5, executions=False)
            assert h.events("b3", ExecutionTimedOut) and h.events("b4", ExecutionTimedOut)
            assert exec_threads() == 4
            assert any("every executor thread is held" in line["event"] for line in logs)
            h.release.set()
            assert h.runtime.settle(10)
            assert len(h.events("b1", LateResultRecorded)) == 1
            deadline = time.monotonic() + 10
            while exec_threads() > 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert exec_threads() == 2
        finally:
            h.release.set()
            h.runtime.stop(wait_for_executions=2)

    def test_runs_waiting_for_a_busy_pool_are_reported(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Long functions without a timeout can take every worker thread: a run that then
        waits for one (here past 0.2 s) logs a warning saying so and what to change;
        nothing else would say why runs start late."""
        monkeypatch.setattr(executor_module, "QUEUE_WAIT_WARNING", 0.2)
        h = Harness(clock, executor_threads=1)
        h.runtime.start()
        try:
            with structlog.testing.capture_logs() as logs:
                h.schedule("b", "block", DateTrigger(run_at=clock.now()), settle=False)
                h.schedule("r", "record", DateTrigger(run_at=clock.now()), settle=False)
                h.advance(1, executions=False)
                time.sleep(0.4)
                assert not h.events("r", ExecutionSucceeded)
                h.release.set()
                assert h.runtime.settle(10)
            assert h.events("r", ExecutionSucceeded)
        finally:
            h.release.set()
            h.runtime.stop(wait_for_executions=2)
        [warning] = [line for line in logs if "wait for a free executor thread" in line["event"]]
        assert warning["waited_seconds"] >= 0.2 and warning["threads"] == 1

    def test_a_coroutine_that_blocks_the_loop_is_reported_with_its_line(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Blocking code in an ``async def`` holds the loop every coroutine run shares (no
        other runs, no timeout can cancel it): a warning names the blocking line and the
        run, and a second line says when the loop runs again."""
        monkeypatch.setattr(loop_watch, "WATCH_INTERVAL", 0.05)
        monkeypatch.setattr(loop_watch, "STALL_SECONDS", 0.3)

        async def blocker() -> None:
            time.sleep(1.0)  # the mistake: a blocking call inside a coroutine

        h = Harness(clock)
        h.registry.register("blocker", blocker)
        h.runtime.start()
        try:
            with structlog.testing.capture_logs() as logs:
                h.schedule("x", "blocker", DateTrigger(run_at=clock.now()), settle=False)
                h.advance(1)  # settles once the run has ended
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not any(
                    "runs again" in line["event"] for line in logs
                ):
                    time.sleep(0.01)
        finally:
            h.runtime.stop(wait_for_executions=2)
        [warning] = [line for line in logs if "holds the executor's event loop" in line["event"]]
        assert "test_runtime.py" in warning["at"][0] and "in blocker" in warning["at"][0]
        [execution] = h.events("x", ExecutionStarted)
        assert warning["runs"] == [f"x/{execution.execution_id}"]
        [again] = [line for line in logs if "runs again" in line["event"]]
        assert again["held_seconds"] >= 0.5

    def test_a_timed_out_thread_is_signalled_through_its_context(self, harness: Harness) -> None:
        """The timeout sets ``context.cancelled``: a function waiting on it stops at once."""
        harness.schedule(
            "p", "patient", DateTrigger(run_at=harness.clock.now()), settle=False, timeout_seconds=5
        )
        harness.advance(5, executions=False)
        assert harness.events("p", ExecutionTimedOut)
        assert harness.runtime.settle(5)  # no release needed: the signal ended the wait
        late = harness.events("p", LateResultRecorded)
        assert len(late) == 1 and late[0].result == "signalled"


class _NoStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _holds_itself() -> list[Any]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


def _raises(error: BaseException) -> Callable[[], None]:
    def function() -> None:
        raise error

    return function


async def _async_surrogate() -> str:
    return "\udcff"


#: A function's odd outcome → the event that records it, the field, and what it holds.
_ODD_OUTCOMES: dict[str, tuple[Callable[[], Any], type, str, str]] = {
    "a lone surrogate": (lambda: "x\ud800", ExecutionSucceeded, "result", "'x\\ud800'"),
    "one from a coroutine": (_async_surrogate, ExecutionSucceeded, "result", "'\\udcff'"),
    "a list holding itself": (_holds_itself, ExecutionSucceeded, "result", "[[...]]"),
    "a repr that raises": (_NoRepr, ExecutionSucceeded, "result", "<repr() raised RuntimeError>"),
    # JSON has no NaN or infinity: msgspec writes null, which would read as None.
    "a NaN": (lambda: float("nan"), ExecutionSucceeded, "result", "nan"),
    "an infinity in a dict": (
        lambda: {"ratio": float("-inf"), "none": None},
        ExecutionSucceeded,
        "result",
        "{'ratio': -inf, 'none': None}",
    ),
    "a surrogate message": (
        _raises(ValueError("bad \udcff")),
        ExecutionFailed,
        "message",
        "bad \\udcff",
    ),
    "a str that raises": (
        _raises(_NoStr()),
        ExecutionFailed,
        "message",
        "<str() raised RuntimeError>",
    ),
}


class TestOddOutcomes:
    @pytest.mark.parametrize("case", sorted(_ODD_OUTCOMES))
    def test_any_outcome_is_stored_and_the_worker_lives_on(
        self, tmp_path: Any, clock: FakeClock, case: str
    ) -> None:
        """Whatever a function returns or raises, its execution ends with what the log can
        store (a repr, escapes for lone surrogates, a placeholder for a ``__str__`` that
        raises), and the executor's one worker thread lives on to run the next task.
        These used to kill the worker and leave the execution running for ever."""
        function, kind, field, stored = _ODD_OUTCOMES[case]
        store = SQLiteEventStore(tmp_path, clock=clock)
        harness = Harness(clock, store, executor_threads=1)
        harness.registry.register("odd", function)
        harness.runtime.start()
        try:
            harness.schedule("odd", "odd", DateTrigger(run_at=clock.now()))
            harness.advance(1)
            [event] = harness.events("odd", kind)
            assert getattr(event, field) == stored
            if kind is ExecutionSucceeded:
                assert event.result_is_repr
            harness.schedule("next", "record", DateTrigger(run_at=clock.now()))
            harness.advance(1)
            assert len(harness.events("next", ExecutionSucceeded)) == 1
        finally:
            harness.runtime.stop(wait_for_executions=2)
            store.close()


def test_a_run_timed_out_while_it_waited_for_a_thread_never_begins(clock: FakeClock) -> None:
    """Its timeout counts from its instant: a run still waiting for a worker when it
    expires is recorded timed out, and its function must not run afterwards (it did, once
    the thread was free, as a late result; with retries that made two runs)."""
    h = Harness(clock, executor_threads=1)
    h.runtime.start()
    try:
        h.schedule("hog", "block", DateTrigger(run_at=clock.now()), settle=False)
        h.advance(0.5, executions=False)  # the one worker is taken
        h.schedule(
            "late", "record", DateTrigger(run_at=clock.now()), settle=False, timeout_seconds=1
        )
        h.advance(0.5, executions=False)  # due: waits for the worker
        h.advance(1.5, executions=False)  # past its timeout while it waits
        assert len(h.events("late", ExecutionTimedOut)) == 1
        h.release.set()
        assert h.runtime.settle(10)
        assert h.calls == []  # "record" never ran
        assert h.events("late", LateResultRecorded) == []
        assert len(h.events("hog", ExecutionSucceeded)) == 1
    finally:
        h.runtime.stop(wait_for_executions=2)


def test_an_async_run_timed_out_before_its_loop_got_to_it_never_begins(
    clock: FakeClock,
) -> None:
    """The same for a coroutine function whose loop is held (by another task's blocking
    call): once the loop is free, the timed-out run does not start."""
    h = Harness(clock)
    loop_free = threading.Event()

    async def holds_the_loop() -> None:
        loop_free.wait(10)  # blocks the executor's event loop on purpose

    h.registry.register("holds", holds_the_loop)
    h.runtime.start()
    try:
        h.schedule("hog", "holds", DateTrigger(run_at=clock.now()), settle=False)
        h.advance(0.5, executions=False)
        h.schedule(
            "late", "arecord", DateTrigger(run_at=clock.now()), settle=False, timeout_seconds=1
        )
        h.advance(0.5, executions=False)
        h.advance(1.5, executions=False)
        assert len(h.events("late", ExecutionTimedOut)) == 1
        loop_free.set()
        assert h.runtime.settle(10)
        assert h.calls == []
        assert h.events("late", LateResultRecorded) == []
    finally:
        loop_free.set()
        h.runtime.stop(wait_for_executions=2)


def _hides_a_coroutine() -> Any:
    async def inner() -> int:
        return 1

    return inner()


def test_a_plain_function_that_returns_a_coroutine_fails_clearly(
    tmp_path: Any, clock: FakeClock
) -> None:
    """A wrapper that hides an ``async def`` from registration makes the run return a
    coroutine nothing awaits: the run fails saying so (and the coroutine is closed, so
    Python does not warn that it was never awaited)."""
    store = SQLiteEventStore(tmp_path, clock=clock)
    harness = Harness(clock, store)
    harness.registry.register("hides", _hides_a_coroutine)
    harness.runtime.start()
    try:
        harness.schedule("h", "hides", DateTrigger(run_at=clock.now()))
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "coroutine .* was never awaited", RuntimeWarning)
            harness.advance(1)
            gc.collect()
        [failed] = harness.events("h", ExecutionFailed)
        assert failed.error_type == "TypeError"
        assert failed.message.startswith("the function returned a coroutine")
    finally:
        harness.runtime.stop(wait_for_executions=2)
        store.close()


class FillingStore(InMemoryEventStore):
    """A log whose appends fail while ``full`` is set, as SQLite's do on a full disk."""

    full = False
    error: StorageError = StorageError("append failed: database or disk is full")
    refused = 0

    def append_many(self, requests: Any) -> Any:
        if self.full:
            self.refused += 1
            raise self.error
        return super().append_many(requests)


class TestAppendFailures:
    """A command of the scheduler's own (a fire, a run's outcome) whose events the log
    cannot take is sent again after a pause, not dropped: nobody else would notice."""

    def test_a_fire_the_log_refused_runs_once_it_takes_it(self, clock: FakeClock) -> None:
        store = FillingStore(clock=clock)
        h = Harness(clock, store)
        h.runtime.start()
        try:
            h.schedule("t", "record", DateTrigger(run_at=clock.now() + TEN_S))
            store.full = True
            h.advance(10)  # the fire's append fails: tried again 0.5 s later
            h.advance(0.5)  # and fails again: tried again 1 s later
            assert h.calls == [] and h.events("t", ExecutionStarted) == []
            store.full = False
            h.advance(1)
            assert [tag for tag, _ in h.calls] == [""]
            assert len(h.events("t", ExecutionSucceeded)) == 1
        finally:
            h.runtime.stop()

    def test_an_append_that_cannot_pass_is_not_tried_again(self, clock: FakeClock) -> None:
        """Events the log can never take (they cannot be encoded) are not retried for ever."""
        store = FillingStore(clock=clock)
        store.error = EventCodecError("cannot encode the event")
        h = Harness(clock, store)
        h.runtime.start()
        try:
            h.schedule("t", "record", DateTrigger(run_at=clock.now() + TEN_S))
            store.full = True
            h.advance(10)
            for _ in range(4):
                h.advance(30)
            assert store.refused == 1
        finally:
            h.runtime.stop()

    def test_a_fire_refused_past_its_grace_follows_the_catch_up_policy(
        self, clock: FakeClock
    ) -> None:
        store = FillingStore(clock=clock)
        h = Harness(clock, store)
        h.runtime.start()
        try:
            trigger = IntervalTrigger(every=1, unit="minutes", start=clock.now() + TEN_S)
            h.schedule("t", "record", trigger, misfire_grace_seconds=2, catchup="skip")
            store.full = True
            for step in (10, 0.5, 1, 2):  # tries 0.5, 1, 2 and 4 s apart
                h.advance(step)
            store.full = False
            h.advance(4)  # 7.5 s late: beyond the grace
            assert h.calls == []
            [skipped] = h.events("t", ExecutionSkipped)
            assert (skipped.reason, skipped.policy) == ("misfire", "catchup=skip")
            h.advance(52.5)  # the schedule goes on: the next fire, at 70 s, runs
            assert len(h.calls) == 1
        finally:
            h.runtime.stop()

    def test_an_outcome_the_log_refused_is_recorded_later(self, clock: FakeClock) -> None:
        """Dropped, the run would stay ``running`` until the next start, then be recorded
        ``interrupted`` and perhaps run again although it succeeded."""
        store = FillingStore(clock=clock)
        h = Harness(clock, store)
        h.runtime.start()
        try:
            h.schedule("t", "block", DateTrigger(run_at=clock.now()), settle=False)
            h.advance(1, executions=False)
            assert len(h.events("t", ExecutionStarted)) == 1
            store.full = True
            h.release.set()
            assert h.runtime.settle(10)
            assert h.events("t", ExecutionSucceeded) == []
            store.full = False
            h.advance(1)
            [succeeded] = h.events("t", ExecutionSucceeded)
            assert succeeded.result == "late"
            assert h.events("t", ExecutionInterrupted) == []
        finally:
            h.runtime.stop()


class TestFireLead:
    """A fire is committed ``fire_lead_seconds`` ahead; its function runs at the instant."""

    def test_the_run_is_durable_ahead_and_begins_at_its_instant(self, harness: Harness) -> None:
        harness.schedule("d", "record", DateTrigger(run_at=harness.clock.now() + TEN_S))
        harness.advance(10 - LEAD - 0.01)
        assert harness.events("d", ExecutionStarted) == []
        harness.advance(0.01)  # the default lead ahead: committed, held back
        assert len(harness.events("d", ExecutionStarted)) == 1
        assert harness.calls == []
        harness.advance(LEAD - 0.001)
        assert harness.calls == []
        harness.advance(0.001)
        assert len(harness.calls) == 1
        assert len(harness.events("d", ExecutionSucceeded)) == 1

    def test_fires_close_together_are_handed_over_by_one_wake_up(self, harness: Harness) -> None:
        """The timer hands over the fires due within a tenth of the lead after the one it
        woke for; each run still begins at its own instant."""
        first = harness.clock.now() + TEN_S
        harness.schedule("a", "record", DateTrigger(run_at=first))
        harness.schedule("b", "record", DateTrigger(run_at=first + timedelta(seconds=LEAD / 20)))
        harness.schedule("c", "record", DateTrigger(run_at=first + timedelta(seconds=LEAD / 5)))
        harness.advance(10 - LEAD)
        assert len(harness.events("a", ExecutionStarted)) == 1
        assert len(harness.events("b", ExecutionStarted)) == 1
        assert harness.events("c", ExecutionStarted) == []
        assert harness.calls == []
        harness.advance(LEAD)
        assert len(harness.calls) == 1  # a's instant: b waits for its own
        harness.advance(LEAD / 20)
        assert len(harness.calls) == 2
        harness.advance(LEAD)
        assert len(harness.calls) == 3

    def test_without_a_lead_the_fire_is_committed_at_its_instant(self, clock: FakeClock) -> None:
        h = Harness(clock, fire_lead_seconds=0)
        h.runtime.start()
        try:
            h.schedule("d", "record", DateTrigger(run_at=clock.now() + TEN_S))
            h.advance(9.999)
            assert h.events("d", ExecutionStarted) == []
            h.advance(0.001)
            assert len(h.events("d", ExecutionStarted)) == 1 and len(h.calls) == 1
        finally:
            h.runtime.stop()

    def test_a_run_cancelled_before_its_instant_never_begins(self, harness: Harness) -> None:
        harness.schedule("d", "record", DateTrigger(run_at=harness.clock.now() + TEN_S))
        harness.advance(10 - LEAD / 2)
        assert len(harness.events("d", ExecutionStarted)) == 1
        outcome = harness.command("d", cmd.Cancel())
        assert outcome.error is None
        harness.advance(1)
        assert harness.calls == []
        assert len(harness.events("d", ExecutionCancelled)) == 1
        assert harness.runtime.executor.running == 0

    def test_the_timeout_counts_from_the_instant_not_the_commit(self, harness: Harness) -> None:
        harness.schedule(
            "b", "block", DateTrigger(run_at=harness.clock.now() + TEN_S), timeout_seconds=5
        )
        harness.advance(10 - LEAD, executions=False)  # committed ahead
        harness.advance(LEAD, executions=False)  # released
        harness.advance(4.99, executions=False)
        assert harness.events("b", ExecutionTimedOut) == []
        harness.advance(0.01, executions=False)
        assert len(harness.events("b", ExecutionTimedOut)) == 1

    def test_a_stop_inside_the_lead_leaves_the_run_to_recovery(
        self, tmp_path: Any, clock: FakeClock
    ) -> None:
        """Under a fake clock the instant never comes: the stop does not hang, the run does
        not begin early, and the next start records it interrupted and retries it."""
        store = SQLiteEventStore(tmp_path, clock=clock)
        first = Harness(clock, store)
        first.runtime.start()
        first.schedule(
            "d",
            "record",
            DateTrigger(run_at=clock.now() + TEN_S),
            max_retries=1,
            retry_backoff_seconds=1,
        )
        first.advance(10 - LEAD / 2)
        assert len(first.events("d", ExecutionStarted)) == 1
        first.runtime.stop()
        assert first.calls == []
        store.close()

        store = SQLiteEventStore(tmp_path, clock=clock)
        second = Harness(clock, store)
        second.runtime.start()
        try:
            assert second.runtime.settle(10)
            second.advance(5)
            assert len(second.events("d", ExecutionInterrupted)) == 1
            assert [s.attempt for s in second.events("d", ExecutionStarted)] == [1, 2]
            assert len(second.calls) == 1
        finally:
            second.runtime.stop()
            store.close()


class TestRecovery:
    def test_fires_still_queued_at_a_stop_are_left_to_the_next_start(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once a stop has closed the executor, a fire still waiting in a shard is not
        recorded as started (it could not run: the next start would call it interrupted
        and count an attempt); it stays due, for the next start's catch-up. Every run the
        log calls started has its outcome."""
        from chronolog.actors.shard import JobShard

        h = Harness(clock, round_size=1)
        h.runtime.start()
        try:
            due = clock.now() + timedelta(minutes=1)
            for i in range(30):
                h.schedule(f"t{i}", "record", DateTrigger(run_at=due))
            slow_round = JobShard._run_round

            def run_round(shard: JobShard, *args: Any) -> Any:
                time.sleep(0.02)
                return slow_round(shard, *args)

            monkeypatch.setattr(JobShard, "_run_round", run_round)
            clock.advance(60)
            time.sleep(0.1)  # the timer hands the fires over; a few rounds run
            started = time.monotonic()
            h.runtime.stop(wait_for_executions=0)
            took = time.monotonic() - started
        finally:
            h.runtime.stop(wait_for_executions=0)
        assert took < 3
        runs = {e.execution_id for i in range(30) for e in h.events(f"t{i}", ExecutionStarted)}
        ended = {
            e.execution_id
            for i in range(30)
            for e in h.events(f"t{i}")
            if isinstance(e, ExecutionSucceeded)
        }
        assert runs == ended
        assert len(runs) == len(h.calls) < 30

    def test_a_stop_leaves_a_backlog_to_recovery_and_appends_nothing_after(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Shards still busy when a stop's wait for work in flight is over (a backlog of
        catch-ups after a long outage, say) end their round and answer the rest
        ``unavailable``: the stop returns within its waits, every caller has an answer, and
        nothing is appended once it has returned (the store closes then). A stop used to
        wait 10 s per shard, return while they worked on, and have them append to a closed
        store."""
        from chronolog.actors.shard import JobShard

        h = Harness(clock, round_size=1)
        h.runtime.start()
        try:
            ids = [f"t{i}" for i in range(40)]
            for task_id in ids:
                start = clock.now() + timedelta(hours=1)
                h.schedule(task_id, "record", IntervalTrigger(every=1, unit="hours", start=start))
            slow_round = JobShard._run_round

            def run_round(shard: JobShard, *args: Any) -> Any:
                time.sleep(0.05)
                return slow_round(shard, *args)

            monkeypatch.setattr(JobShard, "_run_round", run_round)
            answers: list[concurrent.futures.Future[CommandOutcome]] = []
            for round_ in range(10):
                for task_id in ids:
                    future: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
                    command = cmd.Pause() if round_ % 2 == 0 else cmd.Resume()
                    h.runtime.send(task_id, command, reply=future.set_result)
                    answers.append(future)
            started = time.monotonic()
            h.runtime.stop(wait_for_executions=0)
            took = time.monotonic() - started
            position = h.store.last_position()
            outcomes = [f.result(5) for f in answers]
            time.sleep(0.3)
            assert h.store.last_position() == position
        finally:
            h.runtime.stop(wait_for_executions=0)
        # 400 rounds of 50 ms were queued: 20 s. The stop waits 1 s for work in flight.
        assert took < 5
        errors = [o.error for o in outcomes if o.error is not None]
        assert errors and all(e.code == "unavailable" for e in errors)
        assert len(errors) < len(outcomes)

    def test_restart_marks_running_executions_interrupted_and_retries(
        self, tmp_path: Any, clock: FakeClock
    ) -> None:
        """A run cut off by a stop is interrupted on restart and retried per policy."""
        store = SQLiteEventStore(tmp_path, clock=clock)
        first = Harness(clock, store)
        first.runtime.start()
        first.schedule(
            "b",
            "block",
            DateTrigger(run_at=clock.now()),
            settle=False,
            max_retries=1,
            retry_backoff_seconds=1,
        )
        first.advance(1, executions=False)
        assert first.events("b", ExecutionStarted)
        # Simulate a crash: stop the actors without letting the execution finish.
        first.runtime.timer.stop()
        store.close()
        first.release.set()

        store = SQLiteEventStore(tmp_path, clock=clock)
        second = Harness(clock, store)
        second.release.set()
        second.runtime.start()
        try:
            assert second.runtime.settle(10)
            second.advance(5)
            assert len(second.events("b", ExecutionInterrupted)) == 1
            retry = second.events("b", RetryScheduled)
            assert retry and retry[0].attempt == 2
            assert [s.attempt for s in second.events("b", ExecutionStarted)] == [1, 2]
        finally:
            second.runtime.stop()
            store.close()

    @pytest.mark.parametrize("grace", [0.0, 0.2])
    def test_a_stop_asks_the_runs_still_going_after_its_grace_to_stop(
        self, tmp_path: Any, clock: FakeClock, grace: float
    ) -> None:
        """``stop_grace_seconds`` is how long a stop waits for running executions. Then a
        coroutine is cancelled (its ``finally`` runs before the loop stops) and a thread
        sees ``context.cancelled``: a run that ends records its outcome; one that did not
        is interrupted at the next start and retried per policy. (A stop used to wait
        10 s, then leave threads running and coroutines stopped mid-flight.)"""
        store = SQLiteEventStore(tmp_path, clock=clock)
        first = Harness(clock, store, stop_grace_seconds=grace)
        cleaned_up = threading.Event()

        async def sleeper() -> None:
            try:
                await asyncio.sleep(60)
            finally:
                cleaned_up.set()

        first.registry.register("sleeper", sleeper)
        first.runtime.start()
        now = DateTrigger(run_at=clock.now())
        first.schedule("a", "sleeper", now, settle=False, max_retries=1, retry_backoff_seconds=1)
        first.schedule("p", "patient", now, settle=False)
        first.advance(1, executions=False)
        deadline = time.monotonic() + 10
        while first.runtime.executor.running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.runtime.executor.running == 2
        began = time.monotonic()
        first.runtime.stop()
        assert time.monotonic() - began < 5
        assert cleaned_up.is_set()
        assert [e.result for e in first.events("p", ExecutionSucceeded)] == ["signalled"]
        assert not first.events("a", ExecutionSucceeded)
        store.close()

        store = SQLiteEventStore(tmp_path, clock=clock)
        second = Harness(clock, store)
        second.registry.register("sleeper", sleeper)
        second.runtime.start()
        try:
            assert second.runtime.settle(10, executions=False)
            assert len(second.events("a", ExecutionInterrupted)) == 1
            second.advance(5, executions=False)
            assert [s.attempt for s in second.events("a", ExecutionStarted)] == [1, 2]
        finally:
            second.runtime.stop(wait_for_executions=0)
            store.close()

    def test_a_stop_begins_no_queued_run_in_place_of_a_stuck_one(self, clock: FakeClock) -> None:
        """A stop asks every run to stop, a queued one too: when the stuck run's worker
        (or any other) comes free, the queued run does not begin. It is left to recovery,
        like every run a stop finds queued."""
        h = Harness(clock, executor_threads=1, stop_grace_seconds=0.1)
        h.runtime.start()
        try:
            now = DateTrigger(run_at=clock.now())
            h.schedule("b", "block", now, settle=False)
            h.schedule("r", "record", now, settle=False)
            h.advance(1, executions=False)
            deadline = time.monotonic() + 10
            while h.runtime.executor.running < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            h.runtime.stop()
            time.sleep(0.2)
            assert h.calls == []
            assert not h.events("r", ExecutionSucceeded)
        finally:
            h.release.set()

    def test_timer_is_rebuilt_from_the_log(self, tmp_path: Any, clock: FakeClock) -> None:
        """Tasks scheduled before a restart fire after it, at their instants."""
        store = SQLiteEventStore(tmp_path, clock=clock)
        first = Harness(clock, store)
        first.runtime.start()
        run_at = clock.now() + timedelta(minutes=10)
        first.schedule("d", "record", DateTrigger(run_at=run_at))
        first.runtime.stop()
        store.close()

        store = SQLiteEventStore(tmp_path, clock=clock)
        second = Harness(clock, store)
        second.runtime.start()
        try:
            assert second.runtime.timer.next_due() == run_at
            second.advance(600)
            assert len(second.calls) == 1
        finally:
            second.runtime.stop()
            store.close()


class TestSupervisor:
    def test_live_actors_stay_under_the_cap(self, clock: FakeClock) -> None:
        """With a cap of 5, commanding 30 tasks never keeps more than 5 actors alive."""
        h = Harness(clock, max_live_actors=5)
        h.runtime.start()
        try:
            for i in range(30):
                h.schedule(f"t{i}", "record", DateTrigger(run_at=clock.now() + timedelta(hours=1)))
            stats = h.runtime.supervisor_stats()
            assert stats["live"] <= 5
            assert stats["activated"] >= 30
            h.advance(3600)
            assert len(h.calls) == 30
        finally:
            h.runtime.stop()

    def test_spawning_many_actors_does_not_leak_file_descriptors(
        self, tmp_path: Any, clock: FakeClock
    ) -> None:
        """Hundreds of short-lived job actors on a SQLite log leave the open-file count flat."""
        store = SQLiteEventStore(tmp_path, clock=clock)
        h = Harness(clock, store, max_live_actors=4)
        h.runtime.start()
        try:
            before = len(os.listdir("/proc/self/fd"))
            for i in range(300):
                h.schedule(f"t{i}", "record", DateTrigger(run_at=clock.now() + timedelta(days=1)))
            assert h.runtime.supervisor_stats()["activated"] >= 300
            assert len(os.listdir("/proc/self/fd")) - before < 40
        finally:
            h.runtime.stop()
            store.close()

    def test_a_command_sent_as_the_runtime_stops_is_answered(self, clock: FakeClock) -> None:
        """A send that passed the running check while stop() ran posts to a shard that is
        gone: the runtime answers it ``unavailable`` at once instead of leaving the caller
        to its reply timeout. Here stop() runs, whole, between the check and the post."""
        h = Harness(clock)
        h.runtime.start()
        slot_of = h.runtime._slot_of
        stopped = []

        def stop_first(task_id: str) -> Any:
            if not stopped:
                stopped.append(True)
                h.runtime.stop()
            return slot_of(task_id)

        h.runtime._slot_of = stop_first  # type: ignore[method-assign]
        definition = TaskDefinition(
            name="late", function_name="record", trigger=DateTrigger(run_at=clock.now())
        )
        answer: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
        h.runtime.send(
            "late", cmd.Schedule(definition=definition, recurring=False), reply=answer.set_result
        )
        outcome = answer.result(5)
        assert outcome.error is not None and outcome.error.code == "unavailable"
        assert "stopped" in outcome.error.message
        assert h.runtime.activity.count == 0
        assert h.events("late") == []

    def test_idle_actors_are_passivated(self, clock: FakeClock) -> None:
        """An actor idle longer than the idle time is stopped; its task still fires later."""
        h = Harness(clock, actor_idle_seconds=10)
        h.runtime.start()
        try:
            h.schedule("t", "record", DateTrigger(run_at=clock.now() + timedelta(minutes=5)))
            assert h.runtime.supervisor_stats()["live"] == 1
            h.advance(30)
            assert h.runtime.supervisor_stats()["live"] == 0
            h.advance(300)
            assert len(h.calls) == 1
        finally:
            h.runtime.stop()


class CountingStore(InMemoryEventStore):
    """An in-memory log that counts commits and can refuse to read chosen streams."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.commits = 0
        self.sizes: list[int] = []  # requests per append_many call
        self.unreadable: dict[str, int] = {}

    def append_many(self, requests: Any) -> Any:
        self.commits += 1
        self.sizes.append(len(requests))
        return super().append_many(requests)

    def read_stream(self, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        left = self.unreadable.get(stream_id, 0)
        if left:
            self.unreadable[stream_id] = left - 1
            raise OSError(f"cannot read {stream_id}")
        return super().read_stream(stream_id, *args, **kwargs)


def later(clock: FakeClock, hours: int = 1) -> DateTrigger:
    return DateTrigger(run_at=clock.now() + timedelta(hours=hours))


def definition(task_id: str, trigger: Any) -> TaskDefinition:
    return TaskDefinition(name=task_id, function_name="record", trigger=trigger)


def post_schedules(
    h: Harness, clock: FakeClock, count: int
) -> list[concurrent.futures.Future[CommandOutcome]]:
    """Post ``count`` schedules of tasks ``t0``, ``t1``, ... at once; their outcomes."""
    futures = []
    for i in range(count):
        future: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
        command = cmd.Schedule(definition=definition(f"t{i}", later(clock)), recurring=False)
        h.runtime.send(f"t{i}", command, reply=future.set_result)
        futures.append(future)
    return futures


class TestShards:
    def test_a_burst_of_commands_shares_commits(self, clock: FakeClock) -> None:
        """500 schedules posted at once are appended in far fewer commits than tasks."""
        store = CountingStore(clock)
        h = Harness(clock, store)
        h.runtime.start()
        try:
            outcomes = [f.result(10) for f in post_schedules(h, clock, 500)]
            assert all(o.error is None and o.envelopes for o in outcomes)
            assert store.commits < 100
            assert len({e.stream_id for e in store.read_all()}) == 500
            h.advance(3600)
            assert len(h.calls) == 500
        finally:
            h.runtime.stop()

    def test_a_round_decides_at_most_round_size_commands(self, clock: FakeClock) -> None:
        """With rounds of 7, 200 schedules posted at once are appended at most 7 at a time
        (full rounds while a backlog waits), and every one of them is appended."""
        store = CountingStore(clock)
        h = Harness(clock, store, round_size=7)
        h.runtime.start()
        try:
            assert all(f.result(10).error is None for f in post_schedules(h, clock, 200))
            assert max(store.sizes) == 7
            assert sum(store.sizes) == 200
        finally:
            h.runtime.stop()

    def test_a_round_size_below_one_is_refused(self, clock: FakeClock) -> None:
        with pytest.raises(ValueError, match="round_size"):
            Harness(clock, round_size=0)

    def test_commands_for_one_task_are_decided_in_posting_order(self, clock: FakeClock) -> None:
        """Schedule, pause, resume and cancel posted back to back apply in that order."""
        h = Harness(clock)
        h.runtime.start()
        try:
            commands: list[cmd.Command] = [
                cmd.Schedule(definition=definition("t", later(clock)), recurring=False),
                cmd.Pause(note="one"),
                cmd.Resume(),
                cmd.Pause(note="two"),
                cmd.Resume(),
                cmd.Cancel(),
            ]
            futures = []
            for command in commands:
                future: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
                h.runtime.send("t", command, reply=future.set_result)
                futures.append(future)
            outcomes = [f.result(10) for f in futures]
            assert [o.error for o in outcomes] == [None] * 6
            kinds = [type(e).__name__ for e in h.events("t")]
            assert [k for k in kinds if k.startswith("Task")] == [
                "TaskScheduled",
                "TaskPaused",
                "TaskResumed",
                "TaskPaused",
                "TaskResumed",
                "TaskCancelled",
            ]
            assert [o.state.lifecycle for o in outcomes if o.state] == [
                "active",
                "paused",
                "active",
                "paused",
                "active",
                "cancelled",
            ]
        finally:
            h.runtime.stop()

    def test_a_task_that_cannot_load_answers_unavailable_and_is_restarted(
        self, clock: FakeClock
    ) -> None:
        """A stream read failure fails that command only; the task is resynced later."""
        store = CountingStore(clock)
        h = Harness(clock, store)
        h.runtime.start()
        try:
            h.schedule("good", "record", later(clock))
            h.schedule("flaky", "record", later(clock))
            h.runtime.stop()
            h = Harness(clock, store, max_live_actors=1, job_shards=1)
            h.runtime.start()
            store.unreadable["task-flaky"] = 2  # the command's load, then the first resync
            outcome = h.command("flaky", cmd.Pause(note="x"))
            assert outcome.error is not None and outcome.error.code == "unavailable"
            assert h.command("good", cmd.Pause(note="y")).error is None
            assert h.runtime.settle(10)  # the supervisor has heard of the failure
            h.advance(1)  # the first restart fails to read again; the second one succeeds
            assert store.unreadable["task-flaky"] == 0
            assert h.command("flaky", cmd.Pause(note="x")).error is None
            h.advance(3600)
            assert h.calls == []  # both are paused: nothing fired
        finally:
            h.runtime.stop()

    def test_a_dead_shard_is_replaced_and_loses_no_message(
        self, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A shard thread killed by a bug is restarted on its mailbox; no fire is lost."""
        from chronolog.actors.shard import JobShard

        h = Harness(clock, job_shards=1)
        h.runtime.start()
        try:
            start = clock.now() + timedelta(minutes=1)
            h.schedule("t", "record", IntervalTrigger(every=1, unit="minutes", start=start))
            original = JobShard._passivate_idle
            crashes: list[int] = []

            def crash_once(self: JobShard, idle_seconds: float) -> None:
                if not crashes:
                    crashes.append(1)
                    raise RuntimeError("bug in the shard")
                original(self, idle_seconds)

            monkeypatch.setattr(JobShard, "_passivate_idle", crash_once)
            for _ in range(3):
                h.advance(60)
                h.advance(1)  # a fire lost with the shard is re-armed 0.1 s later
            assert crashes == [1]
            assert h.runtime.supervisor_stats()["shard_restarts"] == 1
            nominals = [e.nominal_time for e in h.events("t", ExecutionStarted)]
            assert nominals == [start + timedelta(minutes=i) for i in range(3)]
        finally:
            h.runtime.stop()

    def test_a_wrong_new_task_hint_is_caught_by_the_append(self, clock: FakeClock) -> None:
        """A command claiming a new id for an existing task is decided against the log."""
        store = InMemoryEventStore(clock=clock)
        h = Harness(clock, store)
        h.runtime.start()
        first = definition("t", later(clock, hours=2))
        h.command("t", cmd.Schedule(definition=first, recurring=False))
        h.schedule("u", "record", later(clock, hours=1))  # due sooner: the one kept loaded
        h.runtime.stop()
        h = Harness(clock, store, max_live_actors=1, job_shards=1)
        h.runtime.start()
        try:
            before = len(h.events("t"))
            future: concurrent.futures.Future[CommandOutcome] = concurrent.futures.Future()
            again = cmd.Schedule(definition=first, recurring=False)
            h.runtime.send("t", again, reply=future.set_result, new_task=True)
            outcome = future.result(10)
            assert outcome.error is None and outcome.envelopes == ()  # the same spec: no-op
            assert len(h.events("t")) == before
        finally:
            h.runtime.stop()


def shard_message(task_id: str, kind: str, tag: int) -> TaskCommand:
    """A task command of one of three kinds: a fire, a run's outcome, a facade command."""
    command: cmd.Command
    if kind == "fire":
        command = cmd.Fire(nominal_time=datetime(2027, 1, 1, tzinfo=UTC))
    elif kind == "finish":
        command = cmd.Finish(execution_id=str(tag), outcome="succeeded", duration_seconds=0.0)
    else:
        command = cmd.RunNow()
    return TaskCommand(
        task_id=task_id, command=command, metadata=EventMetadata(correlation_id=str(tag))
    )


@given(
    arrivals=st.lists(
        st.lists(
            st.tuples(st.sampled_from("abcdef"), st.sampled_from(["fire", "finish", "run"])),
            max_size=20,
        ),
        max_size=6,
    ),
    limit=st.integers(min_value=1, max_value=8),
    retry_every=st.integers(min_value=0, max_value=4),
)
def test_rounds_keep_each_tasks_order_and_hold_a_task_once(
    arrivals: list[list[tuple[str, str]]], limit: int, retry_every: int
) -> None:
    """However messages arrive between rounds, and whichever a round gives back, the
    rounds never reorder a task's messages, hold a task twice, or lose a message."""
    from chronolog.actors.shard import _Backlog

    backlog = _Backlog()
    sent: list[TaskCommand] = []
    done: list[TaskCommand] = []
    retried: list[TaskCommand] = []
    chunks = [
        [shard_message(t, kind, 100 * a + i) for i, (t, kind) in enumerate(chunk)]
        for a, chunk in enumerate(arrivals)
    ]
    rounds = 0
    while chunks or backlog:
        if chunks:
            for message in chunks.pop(0):
                sent.append(message)
                backlog.add(message)
        if not backlog:
            continue
        batch = backlog.next_round(limit)
        assert batch and len(batch) <= limit
        assert len({m.task_id for m in batch}) == len(batch)
        rounds += 1
        # A round gives its last message back (a conflict), each message once at most.
        given_back = [
            m for m in batch[-1:] if retry_every and rounds % retry_every == 0 and m not in retried
        ]
        retried.extend(given_back)
        done.extend(m for m in batch if m not in given_back)
        backlog.retry(list(given_back))
    assert sorted(map(id, done)) == sorted(map(id, sent))
    for task in {m.task_id for m in sent}:
        assert [m for m in done if m.task_id == task] == [m for m in sent if m.task_id == task]


def test_rounds_take_fires_before_the_outcomes_of_other_tasks() -> None:
    """Outcomes of finished runs wait behind fires and commands, but a task's own fire
    never overtakes its outcome."""
    from chronolog.actors.shard import _Backlog

    backlog = _Backlog()
    finish_a, finish_b, finish_c = (shard_message(t, "finish", i) for i, t in enumerate("abc"))
    fire_d, fire_a, run_e = (
        shard_message("d", "fire", 3),
        shard_message("a", "fire", 4),
        (shard_message("e", "run", 5)),
    )
    for message in (finish_a, finish_b, finish_c, fire_d, fire_a, run_e):
        backlog.add(message)
    assert backlog.next_round(3) == [fire_d, run_e, finish_a]
    assert backlog.next_round(3) == [finish_b, finish_c, fire_a]
    assert not backlog


def test_a_flood_of_fires_leaves_a_quarter_of_each_round_to_outcomes() -> None:
    from chronolog.actors.shard import _Backlog

    backlog = _Backlog()
    fires = [shard_message(f"fire-{i}", "fire", i) for i in range(20)]
    finishes = [shard_message(f"done-{i}", "finish", i) for i in range(20)]
    for message in finishes + fires:
        backlog.add(message)
    assert backlog.next_round(8) == fires[:6] + finishes[:2]


class TestCancellationSignal:
    """``ExecutionContext.cancelled`` is made on first use, and never misses a cancel."""

    @staticmethod
    def context() -> ExecutionContext:
        return ExecutionContext(
            task_id="t",
            execution_id="e",
            idempotency_key="t:0",
            attempt=1,
            nominal_time=datetime(2027, 1, 1, tzinfo=UTC),
        )

    def test_cancel_before_the_signal_is_asked_for(self) -> None:
        context = self.context()
        assert not context.is_cancelled
        context.cancel()
        assert context.is_cancelled and context.cancelled.is_set()

    def test_cancel_after_the_signal_is_asked_for(self) -> None:
        context = self.context()
        signal = context.cancelled
        assert not signal.is_set() and context.cancelled is signal
        context.cancel()
        assert signal.is_set() and context.is_cancelled

    def test_a_cancel_racing_the_first_look_is_never_lost(self) -> None:
        """Threads ask for the signal while another cancels: every one sees it set."""
        for _ in range(200):
            assert race_first_looks_against_a_cancel(self.context(), lookers=4) == [True] * 4


def race_first_looks_against_a_cancel(context: ExecutionContext, lookers: int) -> list[bool]:
    """Start ``lookers`` threads waiting on ``context.cancelled`` and one cancelling it, all
    at once; what each looker's wait returned."""
    start = threading.Barrier(lookers + 1)
    seen: list[bool] = []

    def look() -> None:
        start.wait()
        seen.append(context.cancelled.wait(5))

    def cancel() -> None:
        start.wait()
        context.cancel()

    threads = [threading.Thread(target=look) for _ in range(lookers)]
    threads.append(threading.Thread(target=cancel))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen
