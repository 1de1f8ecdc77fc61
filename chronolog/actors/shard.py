"""Job shards: the threads that host job actors and turn their decisions into log appends.

A task's messages always go to the same shard (chosen by its id), which handles them one
at a time and in the order they were posted, so each job actor sees a serial mailbox just
as if it had a thread of its own. What a shard adds is batching: it takes every message
waiting in its mailbox at once, lets each job actor decide, and appends all the decisions
with one :meth:`~chronolog.store.EventStore.append_many` call, one durable commit for
hundreds of tasks. A burst of due fires or of ``schedule_event`` calls thus costs one
fsync per batch instead of one per task, and no thread is started or stopped per task.

Within a batch each task has at most one command in flight (a *round*); a task's second
command waits for the next round, so it is decided against the state the first one left.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from chronolog.actors.job_actor import JobActor
from chronolog.actors.messages import (
    CommandOutcome,
    Drain,
    Passivate,
    Resync,
    ShardFailed,
    ShardMessage,
    TaskCommand,
    TaskFailed,
)
from chronolog.domain.commands import Command, Fire, Recover
from chronolog.domain.task_state import TaskState
from chronolog.errors import (
    ChronologError,
    ConcurrencyError,
    ServiceUnavailableError,
    StorageError,
)
from chronolog.store import AppendOutcome, AppendRequest

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.shard")

#: Most task commands decided and appended together (bounds the wait of the first one).
ROUND_SIZE = 64
_MAX_CONFLICT_RETRIES = 5
#: How many least-recently-used job actors are looked at to find one that is not running.
_EVICTION_SCAN = 256


class Mailbox:
    """A shard's queue of messages, kept apart from the shard so it survives a restart.

    Posting tells the shard only when it is not already due to look (``post`` returns
    whether the caller must send a :class:`Drain`): a burst of posts wakes it once.
    """

    def __init__(self) -> None:
        self._items: list[ShardMessage] = []
        self._lock = threading.Lock()
        self._armed = False

    def post(self, message: ShardMessage) -> bool:
        """Queue ``message``; True when the shard must be woken."""
        with self._lock:
            self._items.append(message)
            if self._armed:
                return False
            self._armed = True
            return True

    def take(self) -> list[ShardMessage]:
        """Everything queued, oldest first; posts from now on wake the shard again."""
        with self._lock:
            items, self._items = self._items, []
            self._armed = False
            return items

    def rearm(self) -> bool:
        """After a shard restart: True when messages wait (the new shard must be woken)."""
        with self._lock:
            self._armed = bool(self._items)
            return self._armed


class ShardSlot:
    """One shard's mailbox and its current actor (replaced when the shard restarts)."""

    def __init__(self, index: int, capacity: int) -> None:
        self.index = index
        self.capacity = capacity
        self.mailbox = Mailbox()
        self.ref: pykka.ActorRef[JobShard] | None = None

    def wake(self) -> None:
        """Tell the shard to drain its mailbox (a dead shard is woken by its restart)."""
        ref = self.ref
        if ref is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell(Drain())


class JobShard(pykka.ThreadingActor):
    """Hosts the job actors of the tasks routed to one slot, at most ``capacity`` at once."""

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, slot: ShardSlot, seeds: Sequence[TaskState] = ()) -> None:
        super().__init__()
        self.runtime = runtime
        self.slot = slot
        self.jobs: OrderedDict[str, JobActor] = OrderedDict()
        for state in seeds[: slot.capacity]:
            job = JobActor.empty(state.task_id)
            job.state = state
            self.jobs[state.task_id] = job
        self.activated = 0
        self.passivated = 0
        # The messages of the drain in progress that have not been answered yet.
        self._open: dict[int, ShardMessage] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Drain):
            self._drain()
        elif message == "stats":
            return {
                "live": len(self.jobs),
                "activated": self.activated,
                "passivated": self.passivated,
            }
        return None

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.runtime.supervisor_tell(ShardFailed(self.slot.index, repr(exception_value)))

    # --- draining ------------------------------------------------------------------------

    def _drain(self) -> None:
        messages = self.slot.mailbox.take()
        self._open = {id(m): m for m in messages}
        try:
            pending: list[ShardMessage] = []
            for message in messages:
                if isinstance(message, Passivate):
                    self._passivate_idle(message.idle_seconds)
                    self._done(message)
                else:
                    pending.append(message)
            conflicts: dict[int, int] = {}
            while pending:
                batch, pending = _one_per_task(pending, ROUND_SIZE)
                pending = self._run_round(batch, conflicts) + pending
        finally:
            # Only reached with open messages when this shard is crashing: answer them so
            # no caller waits forever, and have their tasks resynced from the log (a fire
            # taken from the timer but never appended is re-armed that way).
            for message in list(self._open.values()):
                self._job_failed(message, "the job shard crashed")

    def _done(self, message: ShardMessage, outcome: CommandOutcome | None = None) -> None:
        if self._open.pop(id(message), None) is None:
            return
        try:
            if isinstance(message, TaskCommand) and message.reply is not None:
                message.reply(outcome or CommandOutcome())
        finally:
            self.runtime.activity.end()

    def _run_round(
        self, batch: list[TaskCommand | Resync], conflicts: dict[int, int]
    ) -> list[ShardMessage]:
        """Decide each message, append every decision in one call, act; return retries."""
        requests: list[AppendRequest] = []
        waiting: list[tuple[TaskCommand | Resync, JobActor, datetime | None]] = []
        for message in batch:
            try:
                fresh = isinstance(message, TaskCommand) and message.new_task
                job = self._job(message.task_id, fresh=fresh and id(message) not in conflicts)
                command = self._command_for(message, job)
            except Exception as exc:
                self._job_failed(message, exc)
                continue
            if command is None:
                self._done(message)
                continue
            try:
                events = job.decide(self.runtime, command)
            except ChronologError as exc:
                self._done(message, CommandOutcome(state=job.state, error=exc))
                continue
            except Exception as exc:
                self._job_failed(message, exc)
                continue
            if not events:
                self._done(message, CommandOutcome(state=job.state))
                continue
            metadata = message.metadata if isinstance(message, TaskCommand) else None
            requests.append(
                AppendRequest(
                    stream_id=job.stream_id,
                    events=events,
                    expected_version=job.state.version,
                    metadata=metadata,
                )
            )
            # A fire arrives ahead of its instant (the fire lead): its run waits for it.
            release_at = None
            if isinstance(command, Fire):
                release_at = job.state.next_fire_at or command.nominal_time
            waiting.append((message, job, release_at))
        if not requests:
            return []
        answers: Sequence[AppendOutcome]
        try:
            answers = self.runtime.store.append_many(requests)
        except ChronologError as exc:
            answers = [exc] * len(requests)
        retries: list[ShardMessage] = []
        for (message, job, release_at), answer in zip(waiting, answers, strict=True):
            if isinstance(answer, ConcurrencyError):
                # Another writer got there first (a second process on a copied log, say):
                # reload and decide again, a bounded number of times.
                tries = conflicts.get(id(message), 0) + 1
                conflicts[id(message)] = tries
                self.jobs.pop(job.task_id, None)
                if tries < _MAX_CONFLICT_RETRIES:
                    retries.append(message)
                else:
                    error = StorageError(
                        f"task {job.task_id!r} kept changing under this command; try again"
                    )
                    self._done(message, CommandOutcome(error=error))
            elif isinstance(answer, ChronologError):
                log.error("append failed", task_id=job.task_id, error=str(answer))
                self._done(message, CommandOutcome(state=job.state, error=answer))
            else:
                try:
                    job.apply(answer)
                    job.act_on(self.runtime, answer, release_at)
                except Exception as exc:
                    self._job_failed(message, exc)
                    continue
                self._done(message, CommandOutcome(state=job.state, envelopes=tuple(answer)))
        return retries

    def _command_for(self, message: TaskCommand | Resync, job: JobActor) -> Command | None:
        if isinstance(message, TaskCommand):
            return message.command
        # Resync, after a crash: reload, re-arm the timer, recover executions nobody runs.
        job.reload(self.runtime)
        if job.orphaned_executions(self.runtime):
            return Recover()
        self.runtime.sync_timer(job.state)
        return None

    def _job_failed(self, message: ShardMessage, error: Exception | str) -> None:
        self._done(message, CommandOutcome(error=_unavailable(message)))
        if isinstance(message, TaskCommand | Resync):
            self.jobs.pop(message.task_id, None)
            self.runtime.supervisor_tell(TaskFailed(message.task_id, repr(error)))

    # --- the job actors ------------------------------------------------------------------

    def _job(self, task_id: str, *, fresh: bool = False) -> JobActor:
        """The task's job actor, activated (its stream loaded) if it is not live.

        ``fresh``: the id was just made up, so the stream is known to be empty.
        """
        job = self.jobs.get(task_id)
        if job is None:
            while len(self.jobs) >= self.slot.capacity:
                self._passivate(self._eviction_victim())
            job = JobActor.empty(task_id)
            if not fresh:
                job.reload(self.runtime)
            self.jobs[task_id] = job
            self.activated += 1
        else:
            self.jobs.move_to_end(task_id)
        job.last_used = self.runtime.clock.monotonic()
        return job

    def _eviction_victim(self) -> str:
        """The least recently used job actor with nothing running; the oldest if all are busy.

        One whose execution is running would be loaded again when the outcome comes back,
        so it is the worst one to drop.
        """
        executor = self.runtime.executor
        for scanned, task_id in enumerate(self.jobs):
            if not executor.is_task_running(task_id):
                return task_id
            if scanned >= _EVICTION_SCAN:
                break
        return next(iter(self.jobs))

    def _passivate(self, task_id: str) -> None:
        if self.jobs.pop(task_id, None) is not None:
            self.passivated += 1

    def _passivate_idle(self, idle_seconds: float) -> None:
        now = self.runtime.clock.monotonic()
        executor = self.runtime.executor
        idle = [
            task_id
            for task_id, job in self.jobs.items()
            if now - job.last_used >= idle_seconds and not executor.is_task_running(task_id)
        ]
        for task_id in idle:
            self._passivate(task_id)


def _one_per_task(
    messages: list[ShardMessage], limit: int
) -> tuple[list[TaskCommand | Resync], list[ShardMessage]]:
    """Split off a round: the first message of each task, at most ``limit`` of them.

    Scans only as far as it must, so a long backlog is split in linear time overall.
    """
    batch: list[TaskCommand | Resync] = []
    deferred: list[ShardMessage] = []
    seen: set[str] = set()
    for index, message in enumerate(messages):
        if len(batch) >= limit:
            return batch, deferred + messages[index:]
        if isinstance(message, TaskCommand | Resync) and message.task_id not in seen:
            seen.add(message.task_id)
            batch.append(message)
        else:
            deferred.append(message)
    return batch, deferred


def _unavailable(message: ShardMessage) -> ServiceUnavailableError:
    task_id = message.task_id if isinstance(message, TaskCommand | Resync) else "?"
    return ServiceUnavailableError(
        f"task {task_id!r} could not be loaded; try again", details={"task_id": task_id}
    )
