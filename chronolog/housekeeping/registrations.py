"""What the Housekeeper's callers share with it: registrations, run outcomes, the ids of a
registration and of its task, and the built-in task function that runs one.

They live apart from the Housekeeper actor so that using them costs no import of the actor
runtime: a host whose scheduler runs in a child process (``engine = "process"``) registers
the function and receives outcomes, but only the child runs the Housekeeper.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from chronolog.errors import ChronologError
from chronolog.events import Cause
from chronolog.housekeeping.model import CleanupRules
from chronolog.housekeeping.report import CleanupReport

if TYPE_CHECKING:
    from chronolog.actors.housekeeper import Housekeeper

#: The registered name of the function that runs one cleanup registration.
CLEANUP_FUNCTION = "chronolog.cleanup"


def registration_id_for(directory: str, pattern: str) -> str:
    """The id of a registration: the same directory and pattern always get the same id."""
    digest = hashlib.sha256(f"{directory}\x00{pattern}".encode()).hexdigest()
    return digest[:20]


#: What the ids of the registrations' tasks begin with: the Housekeeper's namespace.
CLEANUP_TASK_PREFIX = "cleanup-"


def cleanup_task_id(registration_id: str) -> str:
    """The id of the task that runs a registration on its schedule."""
    return f"{CLEANUP_TASK_PREFIX}{registration_id}"


def is_cleanup_task(task_id: str) -> bool:
    """Whether ``task_id`` is (or would be) one of the Housekeeper's tasks."""
    return task_id.startswith(CLEANUP_TASK_PREFIX)


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """A request to register (or re-register) a directory."""

    directory: str
    rules: CleanupRules
    priority: int = 100
    schedule: str | None = None
    description: str = ""
    module_id: str | None = None
    timezone: str = "UTC"
    cause: Cause = Cause()


class RunOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One registration's run: its report, or why it could not run."""

    registration_id: str
    run_id: str
    report: CleanupReport | None = None
    error_code: str | None = None
    error: str | None = None


class CleanupRunError(ChronologError):
    """A scheduled cleanup could not run (its directory vanished, became unsafe, was busy)."""

    code = "cleanup_failed"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, details={"cause": code})


def make_cleanup_function(get_housekeeper: Callable[[], Housekeeper]) -> Callable[..., Any]:
    """The built-in task function that runs one registration and returns its summary."""

    def run_registered_cleanup(registration_id: str) -> dict[str, Any]:
        """Run a registered cleanup (the task behind each Housekeeper registration)."""
        future: concurrent.futures.Future[list[RunOutcome]] = concurrent.futures.Future()
        get_housekeeper().run([registration_id], False, future.set_result)
        outcome = future.result()[0]
        if outcome.report is None:
            raise CleanupRunError(outcome.error or "cleanup failed", code=outcome.error_code)
        summary: dict[str, Any] = msgspec.structs.asdict(outcome.report.summary)
        summary["run_id"] = outcome.run_id
        return summary

    return run_registered_cleanup
