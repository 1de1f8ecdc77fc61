"""An in-memory event store with the same contract as the SQLite one, for tests."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence

from chronolog.clock import Clock, SystemClock
from chronolog.errors import ChronologError, StoreClosedError, ValidationError
from chronolog.events import (
    DEFAULT_CODEC,
    DomainEvent,
    EncodedEvent,
    Envelope,
    EventCodec,
    EventMetadata,
)
from chronolog.store.base import (
    ANY_VERSION,
    AppendOutcome,
    AppendRequest,
    check_expected_version,
    check_range,
    check_stream_id,
)


class InMemoryEventStore:
    """Keeps envelopes in lists. Events are still encoded on append, so a batch the SQLite
    store would reject is rejected here too."""

    def __init__(self, *, clock: Clock | None = None, codec: EventCodec = DEFAULT_CODEC) -> None:
        self._clock: Clock = clock or SystemClock()
        self._codec = codec
        self._log: list[Envelope] = []
        self._streams: dict[str, list[Envelope]] = {}
        self._cond = threading.Condition()
        self._closed = False

    def append(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        metadata: EventMetadata | None = None,
    ) -> list[Envelope]:
        """Append atomically; see :meth:`chronolog.store.EventStore.append`."""
        self._check_open()
        encoded = self._encode(stream_id, events, expected_version, metadata)
        with self._cond:
            return self._append_locked(stream_id, events, encoded, expected_version, metadata)

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Append in one step; see :meth:`chronolog.store.EventStore.append_many`."""
        self._check_open()
        encoded: list[list[EncodedEvent] | ChronologError] = []
        for r in requests:
            try:
                encoded.append(self._encode(r.stream_id, r.events, r.expected_version, r.metadata))
            except ChronologError as exc:
                encoded.append(exc)
        answers: list[AppendOutcome] = []
        with self._cond:
            self._check_open()
            for r, enc in zip(requests, encoded, strict=True):
                if isinstance(enc, ChronologError):
                    answers.append(enc)
                    continue
                try:
                    answers.append(
                        self._append_locked(
                            r.stream_id, r.events, enc, r.expected_version, r.metadata
                        )
                    )
                except ChronologError as exc:
                    answers.append(exc)
        return answers

    def _encode(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None,
        metadata: EventMetadata | None,
    ) -> list[EncodedEvent]:
        """Validate a request and encode it: what SQLite would refuse is refused here."""
        check_stream_id(stream_id)
        if expected_version is not None and expected_version < 0:
            raise ValidationError(f"expected_version must be >= 0 or None, got {expected_version}")
        self._codec.encode_metadata(metadata)
        return [self._codec.encode_event(event) for event in events]

    def _append_locked(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        encoded: list[EncodedEvent],
        expected_version: int | None,
        metadata: EventMetadata | None,
    ) -> list[Envelope]:
        self._check_open()
        stream = self._streams.get(stream_id, [])
        check_expected_version(stream_id, expected_version, len(stream))
        recorded_at = self._clock.now()
        envelopes = [
            Envelope(
                position=len(self._log) + i + 1,
                stream_id=stream_id,
                stream_version=len(stream) + i + 1,
                event_type=enc.event_type,
                schema_version=enc.schema_version,
                recorded_at=recorded_at,
                event=event,
                metadata=metadata or EventMetadata(),
            )
            for i, (event, enc) in enumerate(zip(events, encoded, strict=True))
        ]
        if envelopes:
            self._log.extend(envelopes)
            self._streams[stream_id] = stream + envelopes
            self._cond.notify_all()
        return envelopes

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[Envelope]:
        """Events of one stream in version order."""
        self._check_open()
        check_range(from_version, limit)
        with self._cond:
            stream = self._streams.get(stream_id, [])
            start = max(from_version, 1) - 1
            stop = len(stream) if to_version is None else max(min(to_version, len(stream)), start)
            selected = stream[start:stop]
        return selected if limit is None else selected[:limit]

    def read_all(self, from_position: int = 1, limit: int | None = None) -> list[Envelope]:
        """Events of the whole log in position order."""
        self._check_open()
        check_range(from_position, limit)
        with self._cond:
            start = bisect_left(self._log, from_position, key=lambda e: e.position)
            stop = len(self._log) if limit is None else start + limit
            return self._log[start:stop]

    def last_position(self) -> int:
        """The newest position (0 when empty)."""
        self._check_open()
        return len(self._log)

    def stream_version(self, stream_id: str) -> int:
        """The newest version of ``stream_id`` (0 when it has none)."""
        self._check_open()
        return len(self._streams.get(stream_id, ()))

    def wait_for_events(
        self,
        after_position: int,
        timeout: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """Block until an event beyond ``after_position`` exists, ``until()`` is true or
        ``timeout`` passes; see the protocol."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._closed
                    or len(self._log) > after_position
                    or (until is not None and until())
                ),
                timeout,
            )
            return len(self._log) > after_position

    def wake_waiters(self) -> None:
        """Make waiters check their ``until``."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Mark the store closed and wake waiters."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the event store is closed")
