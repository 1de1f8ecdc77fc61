"""The job actor: one task's state, its decider, and what it does once a decision is durable.

A job actor is *virtual* (as in Orleans or Akka cluster sharding): it is an object hosted
by a :class:`~chronolog.actors.shard.JobShard`, which delivers its messages one at a time
and in order, and it exists only while its task is being commanded, fired or run. Its
state is a cache of the task's stream, so dropping it (passivation) loses nothing; the
next message loads it again.

The order of work matters: the shard appends the decided events (durably) *before*
:meth:`JobActor.act_on` runs, so an execution's ``ExecutionStarted`` is in the log before
its function is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from chronolog.actors.executor import ExecutionRequest
from chronolog.domain.commands import Command, RunNow
from chronolog.domain.task_decider import decide
from chronolog.domain.task_state import TaskState, evolve_task
from chronolog.events import (
    DomainEvent,
    Envelope,
    ExecutionCancelled,
    ExecutionStarted,
    ExecutionTimedOut,
)
from chronolog.ids import new_id

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime


#: What every task's stream id starts with.
TASK_STREAM_PREFIX = "task-"


def task_stream(task_id: str) -> str:
    """The stream id of a task."""
    return TASK_STREAM_PREFIX + task_id


class JobActor(msgspec.Struct, gc=False):
    """One task: decides commands against its state and acts on what was appended.

    A msgspec struct kept out of the cyclic GC (a shard holds up to its share of
    ``max_live_actors`` of them); the runtime is passed to the methods that need it rather
    than held, so no reference cycle runs through an actor.
    """

    task_id: str
    stream_id: str
    state: TaskState
    last_used: float = 0.0

    @classmethod
    def empty(cls, task_id: str) -> JobActor:
        """The actor of a task with no events yet (or not loaded yet)."""
        return cls(task_id, task_stream(task_id), TaskState(task_id=task_id))

    def reload(self, runtime: Runtime) -> None:
        """Replace the cached state by a fresh fold of the task's stream (from its saved
        state, when the runtime keeps state snapshots)."""
        self.state = runtime.task_state(self.task_id)

    def orphaned_executions(self, runtime: Runtime) -> bool:
        """Whether the log says an execution is open that nobody in this process runs."""
        executor = runtime.executor
        return any(not executor.is_running(e.execution_id) for e in self.state.open_executions)

    def decide(self, runtime: Runtime, command: Command) -> list[DomainEvent]:
        """The events ``command`` leads to now (raises ``ChronologError`` to refuse it)."""
        definition = self.state.definition
        if isinstance(command, RunNow) and definition is not None and not self.state.is_final:
            # A run asked for now of a function nobody registered could only fail: refused
            # with ``unknown_function``, as ``schedule_event`` refuses it, writing nothing.
            runtime.registry.get(definition.function_name)
        return decide(self.state, command, runtime.clock.now(), new_id)

    def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Fold events that are now in the log into the cached state."""
        state = self.state
        for envelope in envelopes:
            state = evolve_task(state, envelope)
        self.state = state

    def act_on(
        self,
        runtime: Runtime,
        envelopes: Sequence[Envelope],
        release_at: datetime | None = None,
    ) -> None:
        """Start, cancel and re-arm what the appended events ask for.

        ``release_at``: the instant of the fire these events answer; a scheduled run that
        was committed ahead of it is held back until then.
        """
        definition = self.state.definition
        for envelope in envelopes:
            event = envelope.event
            if isinstance(event, ExecutionStarted) and definition is not None:
                if self.state.open_execution(event.execution_id) is None:
                    continue  # started and already ended within this same decision
                # Only a scheduled run waits for its instant; retries and manual runs go now.
                release = release_at if event.reason == "schedule" else None
                begins = envelope.recorded_at
                if release is not None and release > begins:
                    begins = release
                timeout = definition.policies.timeout_seconds
                if timeout is not None:
                    runtime.timer.add_timeout(
                        self.task_id, event.execution_id, begins + timedelta(seconds=timeout)
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
                        release_at=release,
                    )
                )
            elif isinstance(event, ExecutionCancelled | ExecutionTimedOut):
                runtime.executor.cancel(event.execution_id)
        runtime.sync_timer(self.state)
