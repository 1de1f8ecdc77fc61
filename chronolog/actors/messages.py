"""Messages between the facade, the supervisor and the job actors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from chronolog.actors.timer import Due
from chronolog.domain.commands import Command, Finish
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
    """A command for one task; ``reply`` (if any) is called exactly once."""

    task_id: str
    command: Command
    metadata: EventMetadata | None = None
    reply: Reply | None = None


class TimerFired(msgspec.Struct, frozen=True):
    """Entries the timer found due."""

    due: Sequence[Due]


class ExecutionFinished(msgspec.Struct, frozen=True):
    """The executor's report of a finished function call."""

    task_id: str
    finish: Finish


class ChildFailed(msgspec.Struct, frozen=True):
    """A job actor crashed (reported from its ``on_failure``)."""

    task_id: str
    error: str


class Resync(msgspec.Struct, frozen=True):
    """Reload the task from its stream and repair what a crash may have lost."""

    task_id: str
