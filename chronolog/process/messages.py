"""The messages of the control channel between the host and its scheduler process.

Facade calls do not travel here: each event loop of the host has a connection of its own
for them, whose frames are plain tuples (``(token, method, args, kwargs)`` one way,
``(token, result)`` the other), the cheapest thing to pickle.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chronolog.actors.executor import ExecutionRequest
from chronolog.domain.commands import Finish
from chronolog.result import ErrorInfo


class FunctionInfo(msgspec.Struct, frozen=True):
    """A function the host registered, as the scheduler process needs to know it."""

    name: str
    module_id: str | None
    description: str
    #: Its parameters without a default, and every one it takes (None: ``**kwargs``), so
    #: that schedules are checked against them here as in the host.
    required: list[str] = []
    allowed: list[str] | None = None


# --- host to scheduler process -------------------------------------------------------------


class Start(msgspec.Struct, frozen=True):
    """The first message: how to run, and the host's functions so far."""

    settings: dict[str, Any]
    functions: list[FunctionInfo]
    projections_path: str | None


class Connect(msgspec.Struct, frozen=True):
    """A new facade connection; its socket rides along as ancillary data."""


class Finished(msgspec.Struct, frozen=True):
    """A host function ran to its end; the run no longer counts as running."""

    task_id: str
    finish: Finish


class Forgotten(msgspec.Struct, frozen=True):
    """The host dropped that execution without a report (cancelled before it began, or
    stopping)."""

    execution_id: str


class Ask(msgspec.Struct, frozen=True):
    """A question the host waits for: ``register`` (more functions) or ``settle``."""

    number: int
    question: str
    argument: Any


class Stop(msgspec.Struct, frozen=True):
    """Stop in order: let running executions end, close the log, exit."""


# --- scheduler process to host -------------------------------------------------------------


class Ready(msgspec.Struct, frozen=True):
    """Started: recovery is done and calls are answered."""

    pid: int


class Failed(msgspec.Struct, frozen=True):
    """Could not start (bad settings, a locked data directory, ...)."""

    error: ErrorInfo


class Run(msgspec.Struct, frozen=True):
    """Run a host function now (its ``ExecutionStarted`` is durable)."""

    request: ExecutionRequest


class Cancel(msgspec.Struct, frozen=True):
    """Signal a running execution to stop."""

    execution_id: str


class Answer(msgspec.Struct, frozen=True):
    """The answer to an :class:`Ask` (an ``ErrorInfo`` when it failed)."""

    number: int
    value: Any


class Stopped(msgspec.Struct, frozen=True):
    """Stopped in order; the process exits next."""
