"""The event store contract every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from chronolog.errors import ChronologError, ConcurrencyError, ValidationError
from chronolog.events import DomainEvent, Envelope, EventMetadata

#: ``expected_version`` meaning "the stream must not exist yet".
NO_STREAM = 0

#: ``expected_version`` meaning "append whatever the stream's version is".
ANY_VERSION = None


class AppendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One stream's part of :meth:`EventStore.append_many`."""

    stream_id: str
    events: Sequence[DomainEvent]
    expected_version: int | None = ANY_VERSION
    metadata: EventMetadata | None = None


#: What :meth:`EventStore.append_many` answers for one request.
AppendOutcome = list[Envelope] | ChronologError


@runtime_checkable
class EventStore(Protocol):
    """An append-only log of domain events, grouped into streams.

    Every event has a *position* in the whole log (gapless, increasing, the same order for
    every reader) and a *version* in its stream (1, 2, 3, …).
    """

    def append(
        self,
        stream_id: str,
        events: Sequence[DomainEvent],
        expected_version: int | None = ANY_VERSION,
        *,
        metadata: EventMetadata | None = None,
    ) -> list[Envelope]:
        """Append ``events`` to ``stream_id`` atomically and return them as stored.

        ``expected_version`` is the stream version the caller last saw (``NO_STREAM`` for a
        new stream, ``ANY_VERSION`` to skip the check). On a mismatch a
        :class:`~chronolog.errors.ConcurrencyError` is raised and nothing is written; an
        event that cannot be encoded raises :class:`~chronolog.errors.EventCodecError` and
        nothing of the batch is written.
        """
        ...

    def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Append several streams' batches together, with one durable commit for all.

        Each request is judged on its own, exactly as :meth:`append` would judge it in this
        order: the answer for a request is its envelopes, or the error that refused it (a
        :class:`~chronolog.errors.ConcurrencyError`, an undecodable event, a bad stream id)
        and then nothing of that request was written. Requests for the same stream apply
        one after the other. A storage failure refuses every request of the call.
        """
        ...

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[Envelope]:
        """Events of one stream with ``from_version <= version <= to_version``, oldest first."""
        ...

    def read_all(self, from_position: int = 1, limit: int | None = None) -> list[Envelope]:
        """Events of the whole log with ``position >= from_position``, in position order."""
        ...

    def last_position(self) -> int:
        """The position of the newest event (0 for an empty log)."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """The version of the newest event in ``stream_id`` (0 when it has none)."""
        ...

    def wait_for_events(
        self,
        after_position: int,
        timeout: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """Block until the log holds an event after ``after_position`` or ``timeout`` passes,
        or, given ``until``, as soon as ``until()`` is true (checked at the start, on each
        append and on each :meth:`wake_waiters`).

        Returns whether such an event exists. Wakes on the append itself, without polling,
        when the writer is in this process.
        """
        ...

    def wake_waiters(self) -> None:
        """Make every :meth:`wait_for_events` check its ``until`` now (call it after making
        one true)."""
        ...

    def close(self) -> None:
        """Release files and threads; further calls raise ``StoreClosedError``."""
        ...


def check_stream_id(stream_id: str) -> None:
    """Reject stream ids that could not be told apart or stored cleanly."""
    if not isinstance(stream_id, str) or not stream_id or len(stream_id) > 200:
        raise ValidationError(
            f"stream id must be a non-empty string of at most 200 characters, got {stream_id!r}"
        )
    # Three ``in`` tests rather than a generator: this runs for every append.
    if "\x00" in stream_id or "\n" in stream_id or "\r" in stream_id:
        raise ValidationError(f"stream id {stream_id!r} contains a control character")


def check_expected_version(stream_id: str, expected: int | None, actual: int) -> None:
    """Raise :class:`ConcurrencyError` unless ``expected`` matches ``actual``."""
    if expected is not None and expected != actual:
        raise ConcurrencyError(stream_id, expected, actual)


def check_range(from_version: int, limit: int | None) -> None:
    """Validate read bounds shared by every backend."""
    if from_version < 0:
        raise ValidationError(f"lower bound must be >= 0, got {from_version}")
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must be >= 0, got {limit}")
