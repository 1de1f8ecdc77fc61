"""The base class of every domain event and the metadata that travels with it."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

#: Who caused an event: host code, a host module, an AI agent, the HTTP API, the command
#: line, or the scheduler itself (timers, retries, recovery).
CauseKind = Literal["host", "module", "agent", "http", "cli", "scheduler"]


# gc=False here and on the other value types of the log and the domain (envelopes,
# definitions, triggers, task states): they are immutable trees that never form reference
# cycles, so reference counting frees them, and leaving them out of the cyclic collector
# keeps its full collections (which stop every thread) short on a heap of 100,000 tasks.
class DomainEvent(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag_field="type"):
    """An immutable fact in the log.

    Subclasses are tagged with their class name (the ``type`` column of the log) and carry
    a ``schema_version``; a stored payload with an older version is upcast on read.
    """

    schema_version: ClassVar[int] = 1

    @property
    def event_type(self) -> str:
        """The name stored in the log's ``type`` column."""
        return type(self).__name__


class Cause(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Who asked for a change: a kind and, where known, an identifier (module id, agent name)."""

    kind: CauseKind = "host"
    id: str | None = None


SCHEDULER = Cause(kind="scheduler")


class EventMetadata(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What links an event to the request that caused it.

    ``correlation_id`` is shared by every event one request produced (and by what those
    events later caused); ``causation_id`` names the event or request that directly caused
    this one.
    """

    correlation_id: str | None = None
    causation_id: str | None = None
    caused_by: Cause = Cause()
