"""Messages between the facade, the supervisor, the shards and the job actors."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from chronolog.domain.commands import Command
from chronolog.domain.task_state import TaskState
from chronolog.errors import ChronologError
from chronolog.events import Envelope, EventMetadata


class CommandOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a job actor answers: the task's state after the command and what it appended,
    or the error that stopped it (then nothing was appended)."""

    state: TaskState | None = None
    envelopes: tuple[Envelope, ...] = ()
    error: ChronologError | None = None

    @property
    def last_position(self) -> int:
        """The log position of the last appended event (0 when none was appended)."""
        return self.envelopes[-1].position if self.envelopes else 0


Reply = Callable[[CommandOutcome], object]


class TaskCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A command for one task; ``reply`` (if any) is called exactly once.

    ``new_task`` says the sender made the task id up just now (a fresh random id), so there
    is no stream to load. It is only a hint: the append still expects an empty stream, and
    a conflict reloads and decides again.
    """

    task_id: str
    command: Command
    metadata: EventMetadata | None = None
    reply: Reply | None = None
    new_task: bool = False
    #: How many times the scheduler already sent this command again because its events
    #: could not be appended (only commands nobody waits for are sent again).
    redo: int = 0


class Resync(msgspec.Struct, frozen=True):
    """Reload the task from its stream and repair what a crash may have lost."""

    task_id: str
    redo: int = 0


class Passivate(msgspec.Struct, frozen=True):
    """Drop the job actors that have been idle for ``idle_seconds`` (none that run)."""

    idle_seconds: float


#: What a shard's mailbox holds.
ShardMessage = TaskCommand | Resync | Passivate


class Drain(msgspec.Struct, frozen=True):
    """Tells a shard that its mailbox has messages."""


class TaskFailed(msgspec.Struct, frozen=True):
    """A job actor failed unexpectedly (a bug, or its stream could not be read)."""

    task_id: str
    error: str


class ShardFailed(msgspec.Struct, frozen=True):
    """A shard's thread died; its job actors are gone, its mailbox is kept."""

    index: int
    error: str
