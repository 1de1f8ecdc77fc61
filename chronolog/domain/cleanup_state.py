"""A cleanup registration's state, folded from its stream (``cleanup-<id>``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import msgspec
from msgspec.structs import replace

from chronolog.events import (
    CleanupRegistered,
    CleanupRunCompleted,
    CleanupUnregistered,
    DomainEvent,
    Envelope,
)
from chronolog.housekeeping.model import CleanupRules


class CleanupState(msgspec.Struct, frozen=True, kw_only=True):
    """What the Housekeeper knows about one registration.

    ``resume_after`` is the cursor left by the last run that a budget stopped; the next
    run continues from it.
    """

    registration_id: str
    directory: str = ""
    rules: CleanupRules = CleanupRules()
    priority: int = 100
    schedule: str | None = None
    description: str = ""
    module_id: str | None = None
    task_id: str | None = None
    active: bool = False
    exists: bool = False
    resume_after: str | None = None
    runs: int = 0
    version: int = 0


@functools.singledispatch
def _apply(event: DomainEvent, state: CleanupState) -> CleanupState:
    return state


@_apply.register
def _(event: CleanupRegistered, state: CleanupState) -> CleanupState:
    return replace(
        state,
        directory=event.directory,
        rules=event.rules,
        priority=event.priority,
        schedule=event.schedule,
        description=event.description,
        module_id=event.module_id,
        task_id=event.task_id,
        active=True,
        exists=True,
    )


@_apply.register
def _(event: CleanupUnregistered, state: CleanupState) -> CleanupState:
    return replace(state, active=False)


@_apply.register
def _(event: CleanupRunCompleted, state: CleanupState) -> CleanupState:
    if event.dry_run:
        return state  # a dry run removes nothing, so it must not move the cursor either
    return replace(state, resume_after=event.resume_after, runs=state.runs + 1)


def evolve_cleanup(state: CleanupState, item: Envelope | DomainEvent) -> CleanupState:
    """Fold one event (or envelope) of the registration's stream into its state."""
    if isinstance(item, Envelope):
        return replace(_apply(item.event, state), version=item.stream_version)
    return replace(_apply(item, state), version=state.version + 1)


def replay_cleanup(registration_id: str, events: Iterable[Envelope | DomainEvent]) -> CleanupState:
    """Rebuild a registration from its stream."""
    return functools.reduce(evolve_cleanup, events, CleanupState(registration_id=registration_id))
