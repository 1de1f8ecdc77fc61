"""The supervisor: routes every message to its task's job actor, spawning and passivating.

Job actors are *virtual* (as in Orleans or Akka sharding): one exists while its task is
being commanded, fired or run, and is stopped after idling or when the live-actor cap is
reached (least recently used first). Its state lives in the log, so stopping it loses
nothing. All messages for a task pass through here, in order, so a stopped actor never
receives a message after its stop; a fresh incarnation simply reloads the stream.

pykka has no supervision of its own: a job actor reports its crash from ``on_failure``;
the supervisor forgets it and respawns it with a backoff that grows with repeated
crashes, resynchronising its timer entries and recovering executions nobody runs.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from chronolog.actors.job_actor import JobActor
from chronolog.actors.messages import (
    ChildFailed,
    CommandOutcome,
    ExecutionFinished,
    Resync,
    TaskCommand,
    TimerFired,
)
from chronolog.actors.timer import FireDue, RetryDue, TimeoutDue, WakeDue
from chronolog.domain import commands as cmd
from chronolog.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.supervisor")

PASSIVATE_WAKE = "passivate"
_RESTART_PREFIX = "restart:"
_MAX_RESTART_DELAY = 60.0


class Supervisor(pykka.ThreadingActor):
    """Parent of every job actor."""

    use_daemon_thread = True

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.children: OrderedDict[str, pykka.ActorRef[JobActor]] = OrderedDict()
        self.last_used: dict[str, float] = {}
        self.crashes: dict[str, int] = {}
        self.spawned = 0
        self.passivated = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TaskCommand):
            self._route(message)  # the job actor ends this unit of activity
            return None
        if isinstance(message, Resync):
            self._resync(message.task_id)  # likewise
            return None
        try:
            if isinstance(message, TimerFired):
                self._on_timer(message)
            elif isinstance(message, ExecutionFinished):
                self._forward(message.task_id, message.finish)
            elif isinstance(message, ChildFailed):
                self._on_child_failed(message)
            elif message == "stats":
                return {
                    "live": len(self.children),
                    "spawned": self.spawned,
                    "passivated": self.passivated,
                }
        finally:
            self.runtime.activity.end()
        return None

    def on_stop(self) -> None:
        for ref in list(self.children.values()):
            ref.stop(block=False)
        for ref in list(self.children.values()):
            ref.actor_stopped.wait(10)
        self.children.clear()

    # --- routing ---------------------------------------------------------------------------

    def _forward(self, task_id: str, command: cmd.Command) -> None:
        self.runtime.activity.begin()
        self._route(TaskCommand(task_id=task_id, command=command))

    def _route(self, message: TaskCommand) -> None:
        try:
            self._child(message.task_id).tell(message)
        except (pykka.ActorDeadError, RuntimeError) as exc:
            # The job actor died while starting (its stream could not be read, say). The
            # supervisor must survive it: answer the caller, count the failure, retry later.
            self.runtime.activity.end()
            if message.reply is not None:
                message.reply(
                    CommandOutcome(
                        error=ServiceUnavailableError(
                            f"task {message.task_id!r} could not be loaded; try again",
                            details={"task_id": message.task_id},
                        )
                    )
                )
            self._on_child_failed(ChildFailed(message.task_id, repr(exc)))

    def _child(self, task_id: str) -> pykka.ActorRef[JobActor]:
        ref = self.children.get(task_id)
        if ref is not None and ref.is_alive():
            self.children.move_to_end(task_id)
        else:
            while len(self.children) >= self.runtime.settings.max_live_actors:
                self._passivate(self._eviction_victim())
            ref = JobActor.start(self.runtime, task_id)
            self.children[task_id] = ref
            self.spawned += 1
        self.last_used[task_id] = self.runtime.clock.monotonic()
        return ref

    def _eviction_victim(self) -> str:
        """The least recently used child with nothing running; the oldest if all are busy.

        An actor whose execution is running would only be spawned again when the outcome
        comes back, so it is the worst one to stop.
        """
        executor = self.runtime.executor
        for scanned, task_id in enumerate(self.children):
            if not executor.is_task_running(task_id):
                return task_id
            if scanned >= 256:
                break
        return next(iter(self.children))

    def _passivate(self, task_id: str) -> None:
        ref = self.children.pop(task_id, None)
        self.last_used.pop(task_id, None)
        if ref is not None:
            ref.stop(block=False)
            self.passivated += 1

    # --- timer -----------------------------------------------------------------------------

    def _on_timer(self, message: TimerFired) -> None:
        for due in message.due:
            if isinstance(due, FireDue):
                self._forward(due.task_id, cmd.Fire(nominal_time=due.nominal_time))
            elif isinstance(due, RetryDue):
                self._forward(due.task_id, cmd.RetryDue(execution_id=due.execution_id))
            elif isinstance(due, TimeoutDue):
                self._forward(due.task_id, cmd.TimeoutDue(execution_id=due.execution_id))
            elif due.name == PASSIVATE_WAKE:
                self._passivate_idle()
            elif due.name.startswith(_RESTART_PREFIX):
                self._restart(due.name[len(_RESTART_PREFIX) :])

    def _passivate_idle(self) -> None:
        idle_for = self.runtime.settings.actor_idle_seconds
        now = self.runtime.clock.monotonic()
        executor = self.runtime.executor
        idle = [
            task_id
            for task_id, used in self.last_used.items()
            if now - used >= idle_for and not executor.is_task_running(task_id)
        ]
        for task_id in idle:
            self._passivate(task_id)
        self.runtime.timer.add(
            self.runtime.clock.now() + timedelta(seconds=idle_for / 2), WakeDue(PASSIVATE_WAKE)
        )

    # --- failures --------------------------------------------------------------------------

    def _on_child_failed(self, message: ChildFailed) -> None:
        self.children.pop(message.task_id, None)
        self.last_used.pop(message.task_id, None)
        count = self.crashes.get(message.task_id, 0) + 1
        self.crashes[message.task_id] = count
        delay = min(0.1 * 2 ** (count - 1), _MAX_RESTART_DELAY)
        log.error(
            "job actor crashed",
            task_id=message.task_id,
            error=message.error,
            restarts=count,
            delay=delay,
        )
        self.runtime.timer.add(
            self.runtime.clock.now() + timedelta(seconds=delay),
            WakeDue(f"{_RESTART_PREFIX}{message.task_id}"),
        )

    def _restart(self, task_id: str) -> None:
        self.runtime.activity.begin()
        self._resync(task_id)

    def _resync(self, task_id: str) -> None:
        try:
            self._child(task_id).tell(Resync(task_id))
        except pykka.ActorDeadError as exc:
            self.runtime.activity.end()
            self._on_child_failed(ChildFailed(task_id, repr(exc)))
