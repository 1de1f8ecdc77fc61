"""The supervisor: starts the job shards, and repairs what fails.

pykka has no supervision of its own, so this actor provides it:

- a job actor that fails unexpectedly (a bug, a stream that cannot be read) is dropped by
  its shard and reported here; the supervisor resynchronises it from its stream after a
  backoff that grows with repeated failures (re-arming its timer entries and recovering
  executions nobody runs);
- a shard whose thread dies is reported from its ``on_failure``; the supervisor starts a
  new one on the same mailbox, so no posted message is lost, and its job actors load
  again from the log as messages reach them.

Routing needs no actor: a task's shard follows from its id (see
:meth:`chronolog.actors.runtime.Runtime.send`), so messages go straight to the shard's
mailbox without a hop through this thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from chronolog.actors.messages import ShardFailed, TaskFailed
from chronolog.actors.shard import JobShard, ShardSlot
from chronolog.actors.timer import WakeDue
from chronolog.domain.task_state import TaskState

if TYPE_CHECKING:
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.supervisor")

#: Timer wake-up names the runtime hands to the supervisor's care.
PASSIVATE_WAKE = "passivate"
RESTART_PREFIX = "restart:"
_MAX_RESTART_DELAY = 60.0


class Supervisor(pykka.ThreadingActor):
    """Parent of the job shards."""

    use_daemon_thread = True

    def __init__(
        self,
        runtime: Runtime,
        slots: Sequence[ShardSlot],
        seeds: Sequence[Sequence[TaskState]] = (),
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.slots = list(slots)
        self.crashes: dict[str, int] = {}
        self.shard_restarts = 0
        # Started here, in the caller's thread, rather than in on_start: when start()
        # returns, every slot has a shard, so no message can be posted to a slot without one.
        for slot in self.slots:
            slot.ref = JobShard.start(
                runtime, slot, seeds[slot.index] if slot.index < len(seeds) else ()
            )

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, TaskFailed):
                self._on_task_failed(message)
            elif isinstance(message, ShardFailed):
                self._on_shard_failed(message)
            elif message == "stats":
                return self._stats()
        finally:
            self.runtime.activity.end()
        return None

    def on_stop(self) -> None:
        refs = [slot.ref for slot in self.slots if slot.ref is not None]
        for ref in refs:
            ref.stop(block=False)
        for ref in refs:
            ref.actor_stopped.wait(10)

    def _stats(self) -> dict[str, int]:
        totals = {"live": 0, "activated": 0, "passivated": 0}
        for slot in self.slots:
            if slot.ref is None:
                continue
            try:
                stats: dict[str, int] = slot.ref.ask("stats", block=True, timeout=10)
            except pykka.ActorDeadError:
                continue
            for key in totals:
                totals[key] += stats[key]
        totals["shards"] = len(self.slots)
        totals["shard_restarts"] = self.shard_restarts
        return totals

    # --- failures --------------------------------------------------------------------------

    def _on_task_failed(self, message: TaskFailed) -> None:
        count = self.crashes.get(message.task_id, 0) + 1
        self.crashes[message.task_id] = count
        delay = min(0.1 * 2 ** (count - 1), _MAX_RESTART_DELAY)
        log.error(
            "job actor failed",
            task_id=message.task_id,
            error=message.error,
            restarts=count,
            delay=delay,
        )
        self.runtime.timer.add(
            self.runtime.clock.now() + timedelta(seconds=delay),
            WakeDue(f"{RESTART_PREFIX}{message.task_id}"),
        )

    def _on_shard_failed(self, message: ShardFailed) -> None:
        slot = self.slots[message.index]
        log.error("job shard died; starting a new one", shard=slot.index, error=message.error)
        self.shard_restarts += 1
        slot.ref = JobShard.start(self.runtime, slot)
        if slot.mailbox.rearm():
            slot.wake()
