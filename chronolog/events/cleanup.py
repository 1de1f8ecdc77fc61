"""Domain events in a cleanup registration's stream (``cleanup-<id>``)."""

from __future__ import annotations

from chronolog.events.base import DomainEvent
from chronolog.housekeeping.model import CleanupFileRecord, CleanupRules, CleanupSummary


class CleanupRegistered(DomainEvent, frozen=True, kw_only=True):
    """A directory and its retention rules were registered (or re-registered: an update).

    ``task_id`` is the chronolog task that runs the cleanup on ``schedule`` (a cron
    expression; None means the default daily schedule).
    """

    registration_id: str
    directory: str
    rules: CleanupRules
    priority: int = 100
    schedule: str | None = None
    description: str = ""
    module_id: str | None = None
    task_id: str | None = None


class CleanupUnregistered(DomainEvent, frozen=True, kw_only=True):
    """The registration was removed; its files are no longer cleaned."""

    registration_id: str


class CleanupRunStarted(DomainEvent, frozen=True, kw_only=True):
    """A cleanup run began over one registration."""

    registration_id: str
    run_id: str
    dry_run: bool
    resume_after: str | None = None


class CleanupRunCompleted(DomainEvent, frozen=True, kw_only=True):
    """A cleanup run finished; ``files`` is bounded (``files_truncated`` says when cut)."""

    registration_id: str
    run_id: str
    dry_run: bool
    summary: CleanupSummary
    files: tuple[CleanupFileRecord, ...] = ()
    files_truncated: bool = False
    resume_after: str | None = None
    errors: tuple[str, ...] = ()
    writers_unchecked: int = 0


class CleanupRunFailed(DomainEvent, frozen=True, kw_only=True):
    """A cleanup run could not proceed at all (directory gone, unsafe, busy)."""

    registration_id: str
    run_id: str
    error_type: str
    message: str


CLEANUP_EVENTS: tuple[type[DomainEvent], ...] = (
    CleanupRegistered,
    CleanupUnregistered,
    CleanupRunStarted,
    CleanupRunCompleted,
    CleanupRunFailed,
)
