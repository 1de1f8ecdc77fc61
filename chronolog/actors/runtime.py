"""The runtime: wires the store, the timer, the executor, the shards and the supervisor.

It owns start-up (recovery from the log), the paths by which parts talk to each other
(every message to a job actor is posted to the mailbox of the shard its task id maps
to), and an orderly stop.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import msgspec
import pykka
import structlog

from chronolog.actors.activity import ActivityCounter
from chronolog.actors.executor import (
    STOP_CANCEL_WAIT,
    ExecutionBackend,
    ExecutionRequest,
    Executor,
    FinishCallback,
)
from chronolog.actors.housekeeper import Housekeeper
from chronolog.actors.messages import (
    CommandOutcome,
    Passivate,
    Reply,
    Resync,
    ShardMessage,
    TaskCommand,
)
from chronolog.actors.recovery import (
    FoldedStreams,
    Snapshotter,
    fold_log,
    load_snapshot,
    task_state,
)
from chronolog.actors.shard import ShardSlot, stopped_before
from chronolog.actors.supervisor import PASSIVATE_WAKE, RESTART_PREFIX, Supervisor
from chronolog.actors.timer import (
    Due,
    FireDue,
    RedoDue,
    ReleaseDue,
    RetryDue,
    TimeoutDue,
    Timer,
    WakeDue,
)
from chronolog.actors.tuning import HOST_PROCESS, Tuning
from chronolog.clock import Clock, SystemClock
from chronolog.domain import commands as cmd
from chronolog.domain.cleanup_state import CleanupState
from chronolog.domain.commands import Command, Finish, Recover
from chronolog.domain.task_state import TaskState
from chronolog.errors import ServiceUnavailableError
from chronolog.events import EventMetadata
from chronolog.functions import FunctionRegistry
from chronolog.settings import Settings
from chronolog.store import EventStore
from chronolog.store.snapshots import SnapshotFile

log = structlog.get_logger("chronolog.runtime")

#: A command of the scheduler's own whose append failed is sent again after this many
#: seconds, doubling with each failure up to :data:`REDO_MAX` (see ``Runtime.redo_later``).
REDO_FIRST = 0.5
REDO_MAX = 30.0


class Runtime:
    """Everything that runs. Created stopped; :meth:`start` recovers and starts the actors."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        registry: FunctionRegistry,
        *,
        clock: Clock | None = None,
        fire_timers: bool = True,
        executor_factory: Callable[[FinishCallback], ExecutionBackend] | None = None,
        tuning: Tuning = HOST_PROCESS,
        snapshots: SnapshotFile | None = None,
        snapshot_options: dict[str, Any] | None = None,
    ) -> None:
        """``executor_factory(on_finish)`` makes the executor (default: an
        :class:`Executor` running functions in this process). ``tuning``: the shards' round
        size, and their number when ``settings.job_shards`` leaves it to the engine (see
        :mod:`chronolog.actors.tuning`). ``snapshots``: the state snapshot
        file that start-up folds from and a :class:`Snapshotter` keeps fresh (None: start
        folds the whole log); ``snapshot_options``: that snapshotter's keyword arguments."""
        self.settings = settings
        self.tuning = tuning
        self.snapshots = snapshots
        self._snapshot_options = snapshot_options or {}
        self._snapshotter: Snapshotter | None = None
        #: The log position the last start's fold began after (0: the whole log).
        self.recovered_from = 0
        self.fire_timers = fire_timers
        self.store = store
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.activity = ActivityCounter()
        self.timer = Timer(
            self.clock, self._on_timer, timedelta(seconds=settings.fire_lead_seconds)
        )
        self.executor: ExecutionBackend = (executor_factory or self._local_executor)(
            self._on_finish
        )
        wanted = tuning.job_shards if settings.job_shards is None else settings.job_shards
        shards = min(wanted, settings.max_live_actors)
        capacity = max(settings.max_live_actors // shards, 1)
        self._slots = [ShardSlot(index, capacity) for index in range(shards)]
        self._supervisor: pykka.ActorRef[Supervisor] | None = None
        self.housekeeper: Housekeeper | None = None
        self._started = False
        self._stopping = False
        self._stopped = False  # the shards are gone: what reaches a mailbox now is answered here
        #: Set by a stop once its wait for work in flight is over: shards handle no more
        #: rounds (what they hold is answered ``unavailable`` and left to recovery).
        self.closing = False
        #: Set by a stop before the executor shuts down: shards drop fires and retries due
        #: and answer a run asked for now ``unavailable``; outcomes are still recorded.
        self.runs_closed = False
        self._lock = threading.Lock()
        self.recovered_tasks = 0

    @property
    def shard_count(self) -> int:
        """How many job shards run."""
        return len(self._slots)

    def _local_executor(self, on_finish: FinishCallback) -> Executor:
        return Executor(
            self.registry,
            on_finish,
            threads=self.settings.executor_threads,
            max_result_bytes=self.settings.max_result_bytes,
        )

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Recover every task from the log, then start the supervisor and the timer."""
        started = time.perf_counter()
        open_tasks, cleanups, states = self._recover()
        self._supervisor = Supervisor.start(self, self._slots, self._seeds(states))
        self.housekeeper = Housekeeper(self, cleanups)
        self.timer.add(
            self.clock.now() + timedelta(seconds=self.settings.actor_idle_seconds / 2),
            WakeDue(PASSIVATE_WAKE),
        )
        self._started = True
        for task_id in open_tasks:
            self._command(task_id, Recover())
        if self.fire_timers:
            self.timer.start()
        if self._snapshotter is not None:
            self._snapshotter.start()
        (log.info if self.fire_timers else log.debug)(
            "scheduler started",
            tasks=self.recovered_tasks,
            interrupted_tasks=len(open_tasks),
            folded_after_position=self.recovered_from,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _recover(self) -> tuple[list[str], dict[str, CleanupState], list[TaskState]]:
        """Fold every stream (from the state snapshots, when there are any), arm the timer
        and hand the snapshotter what was folded (:meth:`start` starts it).

        Returns the tasks whose executions were cut off, the cleanup registrations, and
        every task's state.
        """
        folded = FoldedStreams()
        if self.snapshots is not None:
            folded = load_snapshot(self.snapshots, self.store)
        from_snapshot = folded.position
        touched: set[str] = set()
        anchor = fold_log(self.store, folded, touched)
        states, cleanups = folded.tasks, folded.cleanups
        open_tasks: list[str] = []
        for state in states.values():
            self.sync_timer(state)
            if state.open_executions:
                open_tasks.append(state.task_id)
        self.recovered_tasks = len(states)
        self.recovered_from = from_snapshot
        if self.snapshots is not None:
            self._snapshotter = Snapshotter(self.snapshots, self.store, **self._snapshot_options)
            self._snapshotter.seed(folded, touched, anchor)
        return open_tasks, cleanups, list(states.values())

    def task_state(self, task_id: str) -> TaskState:
        """A task's current state, from its saved state and its stream's later events."""
        return task_state(self.store, self.snapshots, task_id)

    def _seeds(self, states: list[TaskState]) -> list[list[TaskState]]:
        """Per shard, the states of the active tasks due soonest, as many as it hosts.

        Recovery has folded them anyway; handing them over spares the first fires after a
        restart from reading their streams again.
        """
        seeds: list[list[TaskState]] = [[] for _ in self._slots]
        due = [
            (s.next_fire_at or s.next_nominal, i)
            for i, s in enumerate(states)
            if s.lifecycle == "active" and s.next_nominal is not None
        ]
        capacity = self._slots[0].capacity
        for _, i in heapq.nsmallest(capacity * len(self._slots), due):
            state = states[i]
            shard = seeds[self._slot_of(state.task_id).index]
            if len(shard) < capacity:
                shard.append(state)
        return seeds

    def stop(self, *, wait_for_executions: float | None = None) -> None:
        """Stop the timer, let running executions finish (up to the wait, by default
        ``stop_grace_seconds``; then they are asked to stop), stop the actors."""
        if wait_for_executions is None:
            wait_for_executions = self.settings.stop_grace_seconds
        with self._lock:
            if not self._started or self._stopping:
                return
            self._stopping = True
        # Runs committed ahead of their instant begin at it (at most the fire lead away);
        # the wait is bounded, so under a fake clock they are simply left for recovery.
        self.timer.release_only()
        self.executor.wait_released(self.settings.fire_lead_seconds + 0.25)
        self.timer.stop()
        # From here no run starts: a fire still queued in a shard would be recorded as
        # started and never run (then interrupted at the next start). Left unhandled, the
        # next start's catch-up and retry timers deal with it as with any stop.
        self.runs_closed = True
        self.executor.shutdown(wait=True, timeout=wait_for_executions)
        if self.housekeeper is not None:
            self.housekeeper.stop()
        # The outcomes reported meanwhile (also by runs that ended once asked to stop) are
        # appended before the shards stop; a grace of 0 still leaves them that second.
        self.activity.wait_idle(timeout=wait_for_executions + STOP_CANCEL_WAIT)
        # Past that wait, shards still busy (a backlog of catch-ups, say) end their round and
        # leave the rest, as a crash would: no append may follow the store's closing.
        self.closing = True
        if self._supervisor is not None:
            self._supervisor.stop(block=True, timeout=30)
        if self._snapshotter is not None:
            self._snapshotter.stop()
        self._started = False
        self._stopped = True
        self._answer_unhandled()

    def _answer_unhandled(self) -> None:
        """Answer the messages left in the mailboxes of the stopped shards: a command sent
        as the scheduler stopped would otherwise wait for its reply timeout."""
        for slot in self._slots:
            for message in slot.mailbox.take():
                try:
                    if isinstance(message, TaskCommand) and message.reply is not None:
                        message.reply(CommandOutcome(error=stopped_before(message)))
                finally:
                    self.activity.end()

    @property
    def running(self) -> bool:
        """Started and not stopping."""
        return self._started and not self._stopping

    # --- messaging -------------------------------------------------------------------------

    def send(
        self,
        task_id: str,
        command: Command,
        *,
        metadata: EventMetadata | None = None,
        reply: Reply | None = None,
        new_task: bool = False,
    ) -> None:
        """Deliver ``command`` to the task's job actor; ``reply`` gets the outcome.

        ``new_task``: the caller just made this id up, so there is no stream to load yet.
        """
        if self._supervisor is None or self._stopping:
            raise ServiceUnavailableError("the scheduler is not running")
        self._post(
            TaskCommand(
                task_id=task_id,
                command=command,
                metadata=metadata,
                reply=reply,
                new_task=new_task,
            )
        )

    def _slot_of(self, task_id: str) -> ShardSlot:
        return self._slots[hash(task_id) % len(self._slots)]

    def _post(self, message: ShardMessage, slot: ShardSlot | None = None) -> None:
        """Queue a message for a shard, counting it as work in flight."""
        if slot is None:
            assert not isinstance(message, Passivate)
            slot = self._slot_of(message.task_id)
        self.activity.begin()
        if slot.mailbox.post(message):
            slot.wake()
        # A sender that passed send()'s check as stop() ran: the shards may have stopped
        # before this post, and stop() answers only what it found queued.
        if self._stopped:
            self._answer_unhandled()

    def supervisor_tell(self, message: object) -> None:
        """Send a message to the supervisor, counting it as work in flight."""
        if self._supervisor is None:
            return
        self.activity.begin()
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            self.activity.end()

    def submit_execution(self, request: ExecutionRequest) -> None:
        """Run a function (its ``ExecutionStarted`` is already durable), at once or, when
        it was committed ahead of its fire instant, when the timer reaches that instant."""
        release_at = request.release_at
        if release_at is None or release_at <= self.clock.now():
            self.executor.submit(request)
            return
        self.executor.hold(request)
        self.timer.add(release_at, ReleaseDue(request.task_id, request.execution_id))

    def sync_timer(self, state: TaskState) -> None:
        """Make the timer's entries for this task match its state."""
        if state.lifecycle == "active":
            fire = None
            if state.next_nominal is not None:
                fire = (state.next_nominal, state.next_fire_at or state.next_nominal)
            retries = [(r.execution_id, r.retry_at) for r in state.pending_retries]
            self.timer.sync_task(state.task_id, fire, retries)
        else:
            self.timer.sync_task(state.task_id, None, ())

    def supervisor_stats(self) -> dict[str, int]:
        """Job actor counts (live, activated, passivated) and shard figures."""
        if self._supervisor is None:
            return {}
        stats: dict[str, int] = self._supervisor.ask("stats", block=True, timeout=10)
        return stats

    def _on_timer(self, batch: Sequence[Due]) -> None:
        for due in batch:
            try:
                self._on_due(due)
            except Exception:
                # Whatever went wrong with one entry (a bug, an executor already shut
                # down), the timer's thread lives on for every other task. The task is
                # resynchronised from its stream: that re-arms its entries and recovers an
                # execution that was held for this release and never began.
                task_id = getattr(due, "task_id", None)
                log.exception("a due timer entry could not be handed over", task_id=task_id)
                if task_id is not None:
                    with contextlib.suppress(Exception):
                        self._post(Resync(task_id))

    def _on_due(self, due: Due) -> None:
        """Hand one due entry to whoever acts on it."""
        if isinstance(due, FireDue):
            self._command(due.task_id, cmd.Fire(nominal_time=due.nominal_time))
        elif isinstance(due, RetryDue):
            self._command(due.task_id, cmd.RetryDue(execution_id=due.execution_id))
        elif isinstance(due, TimeoutDue):
            self._command(due.task_id, cmd.TimeoutDue(execution_id=due.execution_id))
        elif isinstance(due, ReleaseDue):
            self.executor.release(due.execution_id)
        elif isinstance(due, RedoDue):
            self._post(due.message)
        elif due.name == PASSIVATE_WAKE:
            idle = self.settings.actor_idle_seconds
            for slot in self._slots:
                self._post(Passivate(idle), slot)
            self.timer.add(self.clock.now() + timedelta(seconds=idle / 2), due)
        elif due.name.startswith(RESTART_PREFIX):
            self._post(Resync(due.name[len(RESTART_PREFIX) :]))

    def redo_later(self, message: TaskCommand | Resync) -> float:
        """Send ``message`` again after a pause: its events could not be appended (a full
        disk) and nobody waits for an answer that would say so, so dropping it would lose
        a fire, a retry, a timeout or a run's outcome until the next start. The pause
        doubles with each try, from :data:`REDO_FIRST` to :data:`REDO_MAX` seconds; the
        command is decided again then (a fire that has waited past its misfire grace is
        recorded as missed). Returns the pause."""
        redo = message.redo + 1
        delay: float = min(REDO_FIRST * 2.0 ** min(redo - 1, 16), REDO_MAX)
        again = msgspec.structs.replace(message, redo=redo)
        self.timer.add(self.clock.now() + timedelta(seconds=delay), RedoDue(message.task_id, again))
        return delay

    def _command(self, task_id: str, command: Command) -> None:
        self._post(TaskCommand(task_id=task_id, command=command))

    def _on_finish(self, task_id: str, finish: Finish) -> None:
        self._command(task_id, finish)

    # --- tests ---------------------------------------------------------------------------

    def settle(self, timeout: float = 10.0, *, executions: bool = True) -> bool:
        """Wait until everything due by now was dispatched and all resulting work is done.

        For fake-clock tests: after ``clock.advance(...)``, ``settle()`` returns once the
        system has reacted fully, without sleeping for a guessed amount of time. With
        ``executions=False`` running functions are not waited for (a test that holds one
        open on purpose).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.timer.is_caught_up(self.clock.now()):
                time.sleep(0.001)
                continue
            if not self.activity.wait_idle(max(deadline - time.monotonic(), 0.0)):
                return False
            if executions and not self.executor.wait_idle(max(deadline - time.monotonic(), 0.0)):
                return False
            # A finishing execution posts its report before it stops counting as running,
            # and the timer counts as busy while it hands entries over: so "no messages"
            # checked last means the system is quiet.
            if self.activity.count == 0 and self.timer.is_caught_up(self.clock.now()):
                return True
        return False
