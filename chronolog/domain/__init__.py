"""Pure domain logic: entity states rebuilt from their streams, and the rules that decide.

Nothing here does I/O, starts threads or reads a clock: ``evolve`` folds one event into a
state, so replaying a stream is ``functools.reduce(evolve, events, initial)``.
"""

from chronolog.domain.task_state import (
    OpenExecution,
    PendingRetry,
    TaskLifecycle,
    TaskState,
    TaskStatus,
    evolve_task,
    replay_task,
)

__all__ = [
    "OpenExecution",
    "PendingRetry",
    "TaskLifecycle",
    "TaskState",
    "TaskStatus",
    "evolve_task",
    "replay_task",
]
