"""The envelope: a domain event together with its place in the log."""

from __future__ import annotations

import msgspec

from chronolog.clock import AwareDatetime
from chronolog.events.base import DomainEvent, EventMetadata


class Envelope(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One record of the log as readers see it.

    ``position`` is the event's place in the whole log (gapless, increasing); ``stream_id``
    and ``stream_version`` its place in its entity's stream. ``schema_version`` is the
    version the payload was *stored* with; ``event`` has already been upcast to the current
    version.
    """

    position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    recorded_at: AwareDatetime
    event: DomainEvent
    metadata: EventMetadata = EventMetadata()
