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

Between rounds the shard takes what arrived meanwhile, and the outcomes of finished runs
wait in a line of their own (:class:`_Backlog`): under a burst, fires due now and callers'
commands go first, so a fire is not committed behind thousands of outcomes that nobody
waits for (10,000 one-shots in 2 s queued up to 150 ms that way, longer than the fire
lead), while a quarter of each round keeps outcomes moving.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeGuard

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
from chronolog.domain.commands import Command, Finish, Fire, Recover, RetryDue, RunNow
from chronolog.domain.task_state import TaskState
from chronolog.errors import (
    ChronologError,
    ConcurrencyError,
    EventCodecError,
    ReadOnlyStoreError,
    ServiceUnavailableError,
    StorageError,
    StoreClosedError,
)
from chronolog.gil import let_others_run
from chronolog.store import AppendOutcome, AppendRequest

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.shard")

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
        self._open = {}
        backlog = _Backlog()
        try:
            self._take_mail(backlog)
            conflicts: dict[int, int] = {}
            while backlog:
                if self.runtime.closing:
                    self._leave()
                    break
                batch = backlog.next_round(self.runtime.tuning.round_size)
                backlog.retry(self._run_round(batch, conflicts))
                let_others_run()  # a round is milliseconds of Python: the host's loop next
                if backlog:
                    # A backlog: what arrived meanwhile joins it (fires due now get ahead
                    # of the run outcomes still waiting).
                    self._take_mail(backlog)
        finally:
            # Only reached with open messages when this shard is crashing: answer them so
            # no caller waits forever, and have their tasks resynced from the log (a fire
            # taken from the timer but never appended is re-armed that way).
            for message in list(self._open.values()):
                self._job_failed(message, "the job shard crashed")

    def _leave(self) -> None:
        """The scheduler is stopping: answer what this drain still holds, unhandled. Fires
        and outcomes left so are the log's to recover (a fire is caught up, a run whose
        outcome was not appended is interrupted and retried per policy)."""
        left = list(self._open.values())
        for message in left:
            self._done(message, CommandOutcome(error=stopped_before(message)))
        if left:
            log.info("a job shard left work undone as the scheduler stopped", messages=len(left))

    def _take_mail(self, backlog: _Backlog) -> None:
        """Move the mailbox's messages into ``backlog`` (passivation is done at once)."""
        messages = self.slot.mailbox.take()
        # All of them open before any is handled: if handling one crashes the shard, the
        # others are answered (and resynced) too, not lost with the taken list.
        self._open.update((id(m), m) for m in messages)
        for message in messages:
            if isinstance(message, Passivate):
                self._passivate_idle(message.idle_seconds)
                self._done(message)
            else:
                backlog.add(message)

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
            if self.runtime.runs_closed and _starts_a_run(message):
                caller = isinstance(message.command, RunNow)
                self._done(
                    message, CommandOutcome(error=stopped_before(message)) if caller else None
                )
                continue
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
                has_caller = isinstance(message, TaskCommand) and message.reply is not None
                if has_caller or not _may_pass(answer):
                    log.error("append failed", task_id=job.task_id, error=str(answer))
                else:  # the scheduler's own: nobody would learn of it, so it is sent again
                    log.error(
                        "append failed; the command is sent again later",
                        task_id=job.task_id,
                        error=str(answer),
                        retry_in_seconds=self.runtime.redo_later(message),
                        tries=message.redo + 1,
                    )
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


class _Backlog:
    """Task messages waiting for a round, in two lines: *urgent* (fires, commands, timers)
    and *routine* (the outcomes of finished runs, which nobody waits for). Rounds take
    from the urgent line first, so under a burst the fires due now are not queued behind
    thousands of outcomes to record. Each task's messages keep their order: once a task
    has a message in the routine line, its later ones follow it there.
    """

    def __init__(self) -> None:
        self._urgent: list[TaskCommand | Resync] = []
        self._routine: list[TaskCommand | Resync] = []
        self._in_routine: dict[str, int] = {}  # task id -> its messages in the routine line
        self._last_routine: set[int] = set()  # ids of the last round's routine messages

    def __bool__(self) -> bool:
        return bool(self._urgent or self._routine)

    def add(self, message: TaskCommand | Resync) -> None:
        """Queue ``message`` behind the task's earlier ones."""
        task_id = message.task_id
        if task_id in self._in_routine or (
            isinstance(message, TaskCommand) and isinstance(message.command, Finish)
        ):
            self._in_routine[task_id] = self._in_routine.get(task_id, 0) + 1
            self._routine.append(message)
        else:
            self._urgent.append(message)

    def retry(self, messages: list[ShardMessage]) -> None:
        """Put messages the last round gave back at the front of the line each came from,
        ahead of their task's other messages."""
        for message in reversed(messages):
            assert isinstance(message, TaskCommand | Resync)
            if id(message) in self._last_routine:
                task_id = message.task_id
                self._in_routine[task_id] = self._in_routine.get(task_id, 0) + 1
                self._routine.insert(0, message)
            else:
                self._urgent.insert(0, message)

    def next_round(self, limit: int) -> list[TaskCommand | Resync]:
        """The first message of each task, at most ``limit`` of them: urgent ones first,
        but a quarter of the round is kept for routine ones while any wait, so outcomes
        are recorded even under a flood of fires (a run still open in the state would
        make its task's next fire look like an overlap)."""
        seen: set[str] = set()
        self._last_routine = set()
        reserved = limit // 4 if self._routine else 0
        batch = _one_per_task(self._urgent, limit - reserved, seen)
        _remove_taken(self._urgent, batch)
        if len(batch) < limit and self._routine:
            # A task's urgent messages all came before its routine ones: while any of
            # them waits, its routine ones do too.
            seen.update(m.task_id for m in self._urgent)
            more = _one_per_task(self._routine, limit - len(batch), seen)
            self._last_routine = {id(m) for m in more}
            if more:
                _remove_taken(self._routine, more)
                for message in more:
                    left = self._in_routine[message.task_id] - 1
                    if left:
                        self._in_routine[message.task_id] = left
                    else:
                        del self._in_routine[message.task_id]
                batch += more
        return batch


def _remove_taken(line: list[TaskCommand | Resync], taken: list[TaskCommand | Resync]) -> None:
    """Remove the messages ``taken`` from ``line``, in place (usually its first ones: a
    backlog of tasks with one message each is taken from the front)."""
    count = len(taken)
    if all(a is b for a, b in zip(line, taken, strict=False)):
        del line[:count]
    elif taken:
        ids = {id(m) for m in taken}
        line[:] = [m for m in line if id(m) not in ids]


def _one_per_task(
    messages: list[TaskCommand | Resync], limit: int, seen: set[str]
) -> list[TaskCommand | Resync]:
    """The first message of each task not in ``seen`` (added to it), at most ``limit``."""
    batch: list[TaskCommand | Resync] = []
    for message in messages:
        if len(batch) >= limit:
            break
        if message.task_id not in seen:
            seen.add(message.task_id)
            batch.append(message)
    return batch


def _may_pass(error: ChronologError) -> bool:
    """Whether an append that failed with ``error`` may succeed if tried again later (a
    full disk, a busy file), unlike events that cannot be encoded or a closed store."""
    return isinstance(error, StorageError) and not isinstance(
        error, EventCodecError | StoreClosedError | ReadOnlyStoreError
    )


def _starts_a_run(message: ShardMessage) -> TypeGuard[TaskCommand]:
    """Whether ``message`` is a fire, a retry due or a run asked for now."""
    return isinstance(message, TaskCommand) and isinstance(
        message.command, Fire | RetryDue | RunNow
    )


def stopped_before(message: ShardMessage) -> ServiceUnavailableError:
    """The answer to a message the scheduler stopped before handling."""
    task_id = message.task_id if isinstance(message, TaskCommand | Resync) else "?"
    return ServiceUnavailableError(
        "the scheduler stopped before it handled this command", details={"task_id": task_id}
    )


def _unavailable(message: ShardMessage) -> ServiceUnavailableError:
    task_id = message.task_id if isinstance(message, TaskCommand | Resync) else "?"
    return ServiceUnavailableError(
        f"task {task_id!r} could not be loaded; try again", details={"task_id": task_id}
    )
