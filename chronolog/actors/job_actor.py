"""The job actor: hosts one task's decider, appends its decisions, then acts on them.

The order matters: events are appended (durably) *before* any side effect, so an
execution's ``ExecutionStarted`` is in the log before its function is called. The state
is only a cache of the task's stream; on a version conflict (another incarnation of this
actor wrote meanwhile) it is reloaded and the command decided again.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from chronolog.actors.executor import ExecutionRequest
from chronolog.actors.messages import ChildFailed, CommandOutcome, Resync, TaskCommand
from chronolog.domain.commands import Recover
from chronolog.domain.task_decider import decide
from chronolog.domain.task_state import TaskState, evolve_task, replay_task
from chronolog.errors import ChronologError, ConcurrencyError, StorageError
from chronolog.events import (
    Envelope,
    ExecutionCancelled,
    ExecutionStarted,
    ExecutionTimedOut,
)

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.job")

_MAX_CONFLICT_RETRIES = 5


def task_stream(task_id: str) -> str:
    """The stream id of a task."""
    return f"task-{task_id}"


def new_execution_id() -> str:
    """A fresh, unique execution id."""
    return uuid.uuid4().hex


class JobActor(pykka.ThreadingActor):
    """One task, alive while it is due soon, running or being commanded."""

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, task_id: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.task_id = task_id
        self.stream_id = task_stream(task_id)
        self.state = TaskState(task_id=task_id)

    def on_start(self) -> None:
        self.state = replay_task(self.task_id, self.runtime.store.read_stream(self.stream_id))

    def on_receive(self, message: Any) -> None:
        if isinstance(message, TaskCommand):
            try:
                self._handle(message)
            finally:
                self.runtime.activity.end()
        elif isinstance(message, Resync):
            try:
                self._resync()
            finally:
                self.runtime.activity.end()

    def _resync(self) -> None:
        """After a crash: reload, re-arm the timer, and recover executions nobody runs."""
        self.on_start()
        orphaned = [
            e
            for e in self.state.open_executions
            if not self.runtime.executor.is_running(e.execution_id)
        ]
        if orphaned:
            self._handle(TaskCommand(task_id=self.task_id, command=Recover()))
        else:
            self.runtime.sync_timer(self.state)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.runtime.supervisor_tell(ChildFailed(self.task_id, repr(exception_value)))

    # --- deciding -------------------------------------------------------------------------

    def _handle(self, message: TaskCommand) -> None:
        outcome = self._decide_and_append(message)
        if message.reply is not None:
            message.reply(outcome)

    def _decide_and_append(self, message: TaskCommand) -> CommandOutcome:
        for _ in range(_MAX_CONFLICT_RETRIES):
            now = self.runtime.clock.now()
            try:
                events = decide(self.state, message.command, now, new_execution_id)
            except ChronologError as exc:
                return CommandOutcome(state=self.state, error=exc)
            if not events:
                return CommandOutcome(state=self.state)
            try:
                envelopes = self.runtime.store.append(
                    self.stream_id, events, self.state.version, metadata=message.metadata
                )
            except ConcurrencyError:
                self.on_start()  # another incarnation wrote: reload and decide again
                continue
            except ChronologError as exc:
                log.error("append failed", task_id=self.task_id, error=str(exc))
                return CommandOutcome(state=self.state, error=exc)
            for envelope in envelopes:
                self.state = evolve_task(self.state, envelope)
            self._act_on(envelopes)
            return CommandOutcome(state=self.state, envelopes=tuple(envelopes))
        return CommandOutcome(
            state=self.state,
            error=StorageError(
                f"task {self.task_id!r} kept changing under this command; try again"
            ),
        )

    # --- acting ---------------------------------------------------------------------------

    def _act_on(self, envelopes: list[Envelope]) -> None:
        runtime = self.runtime
        definition = self.state.definition
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, ExecutionStarted) and definition is not None:
                if self.state.open_execution(event.execution_id) is None:
                    continue  # started and already ended within this same decision
                log.debug(
                    "execution started",
                    task_id=self.task_id,
                    execution_id=event.execution_id,
                    nominal_time=event.nominal_time.isoformat(),
                    attempt=event.attempt,
                    reason=event.reason,
                    position=envelope.position,
                )
                timeout = definition.policies.timeout_seconds
                if timeout is not None:
                    runtime.timer.add_timeout(
                        self.task_id,
                        event.execution_id,
                        envelope.recorded_at + timedelta(seconds=timeout),
                    )
                runtime.submit_execution(
                    ExecutionRequest(
                        task_id=self.task_id,
                        execution_id=event.execution_id,
                        function_name=definition.function_name,
                        parameters=definition.parameters,
                        nominal_time=event.nominal_time,
                        attempt=event.attempt,
                        idempotency_key=event.idempotency_key,
                    )
                )
            elif isinstance(event, ExecutionCancelled | ExecutionTimedOut):
                runtime.executor.cancel(event.execution_id)
        runtime.sync_timer(self.state)
