"""A realistic synthetic event log, for benchmarks, demos and projection tests.

The simulation fires many tasks on their own intervals against one simulated clock, so
consecutive log positions belong to different streams the way they do in a live
scheduler: creations, fires, outcomes (with retries, time-outs, late results,
interruptions and skips), pauses, updates, completions, cancellations, and a few cleanup
registrations with their runs. It is deterministic for a given seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chronolog.events import (
    SCHEDULER,
    Cause,
    CleanupRegistered,
    CleanupRunCompleted,
    CleanupRunFailed,
    CleanupRunStarted,
    CleanupUnregistered,
    DomainEvent,
    EventMetadata,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
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
from chronolog.housekeeping.model import CleanupFileRecord, CleanupRules, CleanupSummary
from chronolog.triggers.spec import CronTrigger, DateTrigger, IntervalTrigger, TriggerSpec

START = datetime(2024, 1, 1, tzinfo=UTC)
_FUNCTIONS = ("reports.build", "mail.send_digest", "sync.pull", "cache.warm", "db.vacuum")
_MODULES = ("billing", "mail", "sync", None)
_ZONES = ("UTC", "Europe/Berlin", "America/New_York")
_ERRORS = ("ValueError", "ConnectionError", "KeyError")
_HOST = EventMetadata(caused_by=Cause(kind="host"), correlation_id="synthetic")
_SCHEDULER = EventMetadata(caused_by=SCHEDULER)


@dataclass(frozen=True)
class Append:
    """One call to ``EventStore.append``: events for one stream, with their metadata."""

    stream_id: str
    events: Sequence[DomainEvent]
    metadata: EventMetadata | None = None


@dataclass
class _Task:
    task_id: str
    index: int
    every: timedelta
    recurring: bool
    executions: int = 0
    paused: bool = False
    done: bool = False
    #: (execution_id, nominal_time, attempt) of the execution now running.
    running: tuple[str, datetime, int] | None = None
    #: (nominal_time, attempt) of the retry waiting to start.
    retry: tuple[datetime, int] | None = None

    @property
    def stream(self) -> str:
        return f"task-{self.task_id}"


class _Simulation:
    """A heap of (instant, action, entity) driven one action at a time."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.heap: list[tuple[datetime, int, str, str]] = []
        self.seq = 0
        self.tasks: dict[str, _Task] = {}
        self.runs = 0

    def at(self, when: datetime, action: str, key: str) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, action, key))

    def step(self) -> Iterator[Append]:
        now, _, action, key = heapq.heappop(self.heap)
        if action in ("register", "clean"):
            yield from self.cleanup(now, action, key)
            return
        task = self.tasks[key]
        if task.done:
            return
        handler = {
            "create": self.create,
            "fire": self.fire,
            "retry": self.start_retry,
            "finish": self.finish,
            "pause": self.pause,
            "resume": self.resume,
            "update": self.update,
            "cancel": self.cancel,
        }[action]
        yield from handler(now, task)

    # --- task life cycle --------------------------------------------------------------------

    def definition(self, task: _Task) -> TaskDefinition:
        rng = self.rng
        zone = rng.choice(_ZONES)
        trigger: TriggerSpec
        if not task.recurring:
            trigger = DateTrigger(run_at=START + timedelta(minutes=task.index), timezone=zone)
        elif rng.random() < 0.5:
            minutes = int(task.every.total_seconds() // 60)
            trigger = IntervalTrigger(every=minutes, unit="minutes", start=START, timezone=zone)
        else:
            trigger = CronTrigger(expression=f"*/{rng.randint(2, 30)} * * * *", timezone=zone)
        return TaskDefinition(
            name=f"task {task.index}",
            function_name=rng.choice(_FUNCTIONS),
            module_id=rng.choice(_MODULES),
            parameters={"n": task.index, "tag": rng.choice(("a", "b", "c"))},
            trigger=trigger,
        )

    def create(self, now: datetime, task: _Task) -> Iterator[Append]:
        first = now + task.every
        scheduled = TaskScheduled(
            task_id=task.task_id,
            definition=self.definition(task),
            recurring=task.recurring,
            first_fire=first,
        )
        yield Append(task.stream, [scheduled], _HOST)
        self.at(first, "fire", task.task_id)

    def fire(self, now: datetime, task: _Task) -> Iterator[Append]:
        if task.paused:
            return
        rng = self.rng
        if task.running is not None or rng.random() < 0.02:
            reason: SkipReason = "overlap" if task.running is not None else "misfire"
            skipped = ExecutionSkipped(
                task_id=task.task_id, nominal_time=now, reason=reason, policy="skip"
            )
            yield Append(task.stream, [skipped], _SCHEDULER)
        else:
            yield self.start(now, task, now, 1, "schedule")
        if not task.recurring:
            return
        nxt = now + task.every
        decided = NextFireDecided(task_id=task.task_id, nominal_time=nxt, fire_at=nxt)
        yield Append(task.stream, [decided], _SCHEDULER)
        self.at(nxt, "fire", task.task_id)
        roll = rng.random()
        if roll < 0.003:
            self.at(now + timedelta(seconds=30), "pause", task.task_id)
        elif roll < 0.005:
            self.at(now + timedelta(seconds=20), "update", task.task_id)
        elif roll < 0.006:
            self.at(now + timedelta(seconds=40), "cancel", task.task_id)

    def start(
        self, now: datetime, task: _Task, nominal: datetime, attempt: int, reason: ExecutionReason
    ) -> Append:
        task.executions += 1
        execution_id = f"{task.task_id}-x{task.executions}"
        task.running = (execution_id, nominal, attempt)
        self.at(now + timedelta(seconds=self.rng.randint(1, 50)), "finish", task.task_id)
        started = ExecutionStarted(
            task_id=task.task_id,
            execution_id=execution_id,
            nominal_time=nominal,
            attempt=attempt,
            reason=reason,
            idempotency_key=f"{task.task_id}:{nominal.isoformat()}",
        )
        return Append(task.stream, [started], _SCHEDULER)

    def start_retry(self, now: datetime, task: _Task) -> Iterator[Append]:
        if task.retry is not None and task.running is None:
            nominal, attempt = task.retry
            task.retry = None
            yield self.start(now, task, nominal, attempt, "retry")

    def finish(self, now: datetime, task: _Task) -> Iterator[Append]:
        if task.running is None:
            return
        execution_id, nominal, attempt = task.running
        task.running = None
        rng, tid = self.rng, task.task_id
        duration = round(rng.uniform(0.01, 40.0), 3)
        roll = rng.random()
        events: list[DomainEvent]
        if roll < 0.85:
            result = {"rows": rng.randint(0, 1000)}
            events = [
                ExecutionSucceeded(
                    task_id=tid, execution_id=execution_id, result=result, duration_seconds=duration
                )
            ]
        elif roll < 0.95:
            events = [
                ExecutionFailed(
                    task_id=tid,
                    execution_id=execution_id,
                    error_type=rng.choice(_ERRORS),
                    message="upstream said no",
                    traceback="Traceback (most recent call last): ...",
                    duration_seconds=duration,
                )
            ]
            if attempt < 3:
                retry_at = now + timedelta(seconds=2**attempt)
                events.append(
                    RetryScheduled(
                        task_id=tid,
                        execution_id=execution_id,
                        nominal_time=nominal,
                        attempt=attempt + 1,
                        retry_at=retry_at,
                    )
                )
                task.retry = (nominal, attempt + 1)
                self.at(retry_at, "retry", tid)
        elif roll < 0.97:
            events = [
                ExecutionTimedOut(
                    task_id=tid,
                    execution_id=execution_id,
                    timeout_seconds=30.0,
                    duration_seconds=30,
                )
            ]
            if rng.random() < 0.5:
                late = LateResultRecorded(
                    task_id=tid,
                    execution_id=execution_id,
                    succeeded=True,
                    result=1,
                    duration_seconds=duration + 30.0,
                )
                events.append(late)
        elif roll < 0.99:
            events = [ExecutionCancelled(task_id=tid, execution_id=execution_id, reason="shutdown")]
        else:
            events = [ExecutionInterrupted(task_id=tid, execution_id=execution_id)]
        yield Append(task.stream, events, _SCHEDULER)
        if not task.recurring and task.retry is None:
            task.done = True
            yield Append(task.stream, [TaskCompleted(task_id=tid, reason="one_shot")], _SCHEDULER)

    def pause(self, now: datetime, task: _Task) -> Iterator[Append]:
        task.paused = True
        paused = TaskPaused(
            task_id=task.task_id, note="maintenance window", paused_by=Cause(kind="agent", id="ops")
        )
        yield Append(task.stream, [paused], _HOST)
        self.at(now + timedelta(minutes=self.rng.randint(5, 120)), "resume", task.task_id)

    def resume(self, now: datetime, task: _Task) -> Iterator[Append]:
        task.paused = False
        nxt = now + task.every
        yield Append(task.stream, [TaskResumed(task_id=task.task_id, next_fire=nxt)], _HOST)
        self.at(nxt, "fire", task.task_id)

    def update(self, now: datetime, task: _Task) -> Iterator[Append]:
        updated = TaskUpdated(
            task_id=task.task_id,
            definition=self.definition(task),
            recurring=True,
            next_fire=now + task.every,
        )
        yield Append(task.stream, [updated], _HOST)

    def cancel(self, now: datetime, task: _Task) -> Iterator[Append]:
        task.done = True
        yield Append(task.stream, [TaskCancelled(task_id=task.task_id, note="obsolete")], _HOST)

    # --- cleanup ----------------------------------------------------------------------------

    def cleanup(self, now: datetime, action: str, reg: str) -> Iterator[Append]:
        rng, stream = self.rng, f"cleanup-{reg}"
        if action == "register":
            registered = CleanupRegistered(
                registration_id=reg,
                directory=f"/var/lib/app/{reg}",
                rules=CleanupRules(pattern="*.log", retention_days=7.0, max_files=100),
                module_id=rng.choice(_MODULES),
                description="old logs",
            )
            yield Append(stream, [registered], EventMetadata(caused_by=Cause(kind="module")))
            self.at(now + timedelta(hours=1), "clean", reg)
            return
        self.runs += 1
        run_id = f"{reg}-r{self.runs}"
        dry = rng.random() < 0.2
        yield Append(stream, [CleanupRunStarted(registration_id=reg, run_id=run_id, dry_run=dry)])
        if rng.random() < 0.1:
            failed = CleanupRunFailed(
                registration_id=reg,
                run_id=run_id,
                error_type="UnsafePathError",
                message="directory vanished",
            )
            yield Append(stream, [failed])
        else:
            files = tuple(
                CleanupFileRecord(
                    path=f"app.{k}.log",
                    size=1000 * (k + 1),
                    age_seconds=86400.0 * (8 + k),
                    reasons=("age",),
                    outcome="would_remove" if dry else "removed",
                )
                for k in range(rng.randint(0, 4))
            )
            summary = CleanupSummary(
                files_examined=10,
                files_matched=len(files),
                files_selected=len(files),
                files_removed=0 if dry else len(files),
                bytes_freed=0 if dry else sum(f.size for f in files),
                duration_seconds=0.5,
            )
            completed = CleanupRunCompleted(
                registration_id=reg, run_id=run_id, dry_run=dry, summary=summary, files=files
            )
            yield Append(stream, [completed])
        if rng.random() < 0.02:
            yield Append(stream, [CleanupUnregistered(registration_id=reg)])
        else:
            self.at(now + timedelta(hours=1), "clean", reg)


def synthetic_log(
    *, events: int, tasks: int = 1_000, cleanups: int = 5, seed: int = 0
) -> Iterator[Append]:
    """Yield appends until exactly ``events`` events have been produced (or nothing is left).

    ``tasks`` tasks are created over the first simulated hour, each firing every 1 to 30
    minutes; about one in ten is a one-shot that completes after its run. ``cleanups``
    registrations run hourly.
    """
    sim = _Simulation(seed)
    for i in range(tasks):
        task = _Task(
            task_id=f"t{i:07d}",
            index=i,
            every=timedelta(minutes=sim.rng.randint(1, 30)),
            recurring=sim.rng.random() >= 0.1,
        )
        sim.tasks[task.task_id] = task
        sim.at(START + timedelta(seconds=sim.rng.randint(0, 3600)), "create", task.task_id)
    for i in range(cleanups):
        sim.at(START + timedelta(seconds=sim.rng.randint(0, 3600)), "register", f"c{i:04d}")
    produced = 0
    while sim.heap and produced < events:
        for append in sim.step():
            take = min(len(append.events), events - produced)
            if take <= 0:
                return
            yield Append(append.stream_id, append.events[:take], append.metadata)
            produced += take
