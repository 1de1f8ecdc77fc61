"""JSON encoding of events, metadata and envelopes with msgspec.

Encoding is checked by decoding the bytes straight back: an event whose payload would not
read back (a naive datetime, an unserialisable parameter) is rejected *before* anything is
written, so nothing in the log can fail to decode later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from chronolog.clock import AwareDatetime
from chronolog.errors import EventCodecError, UnknownEventTypeError
from chronolog.events.base import DomainEvent, EventMetadata
from chronolog.events.cleanup import CLEANUP_EVENTS
from chronolog.events.envelope import Envelope
from chronolog.events.executions import EXECUTION_EVENTS
from chronolog.events.tasks import TASK_EVENTS
from chronolog.events.upcasting import UPCASTERS, UpcasterRegistry

ALL_EVENT_TYPES: tuple[type[DomainEvent], ...] = TASK_EVENTS + EXECUTION_EVENTS + CLEANUP_EVENTS

#: Event class by the name stored in the log's ``type`` column.
EVENT_TYPES: dict[str, type[DomainEvent]] = {cls.__name__: cls for cls in ALL_EVENT_TYPES}


_NO_METADATA = EventMetadata()


class EncodedEvent(msgspec.Struct, frozen=True):
    """An event ready to be written: its type name, schema version and JSON payload."""

    event_type: str
    schema_version: int
    data: bytes


class EncodedBatch(msgspec.Struct, frozen=True):
    """A batch of events ready to be written, as three parallel lists.

    Parallel lists rather than one object per event: a writer binds them to SQL parameters
    with slice assignments, so a 1,000-event batch costs three list appends per event here
    and no per-event Python work there. (A Struct because its constructor is C: this is
    built once per append, also for single events.)
    """

    event_types: list[str]
    schema_versions: list[int]
    data: list[bytes]

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[EncodedEvent]:
        """The batch as :class:`EncodedEvent` values (for callers that want objects)."""
        for item in zip(self.event_types, self.schema_versions, self.data, strict=True):
            yield EncodedEvent(*item)


class EventCodec:
    """Turns domain events into JSON bytes and back, upcasting old payloads on the way in."""

    def __init__(
        self,
        event_types: dict[str, type[DomainEvent]] | None = None,
        upcasters: UpcasterRegistry = UPCASTERS,
    ) -> None:
        self._types = dict(EVENT_TYPES if event_types is None else event_types)
        self._upcasters = upcasters
        self._encoder = msgspec.json.Encoder()
        self._decoders = {name: msgspec.json.Decoder(cls) for name, cls in self._types.items()}
        self._metadata_decoder = msgspec.json.Decoder(EventMetadata)
        self._envelope_decoder = msgspec.json.Decoder(_WireEnvelope)
        # Most appends carry no metadata: store ``{}`` for it rather than the 81 bytes of
        # spelled-out defaults. It decodes to the same value (every field has a default),
        # also in older chronolog versions, and makes each row a quarter smaller, which the
        # insert, the WAL write and the fsync all pay for.
        self._empty_metadata = b"{}"
        # Per concrete class: (stored name, schema version, decoder proving round trips).
        self._encoding: dict[type, tuple[str, int, msgspec.json.Decoder[Any]]] = {}
        self._custom_encode_event = type(self).encode_event is not EventCodec.encode_event

    # --- events ---------------------------------------------------------------------------

    def encode_event(self, event: DomainEvent) -> EncodedEvent:
        """Encode ``event``, proving it decodes again; raise :class:`EventCodecError` if not."""
        name = type(event).__name__
        decoder = self._decoders.get(name)
        if decoder is None or not isinstance(event, self._types[name]):
            raise UnknownEventTypeError(f"{name} is not a registered domain event type")
        try:
            data = self._encoder.encode(event)
            decoder.decode(data)
        except (msgspec.EncodeError, msgspec.DecodeError, TypeError, ValueError) as exc:
            raise EventCodecError(f"cannot encode {name}: {exc}") from exc
        return EncodedEvent(name, type(event).schema_version, data)

    def encode_batch(self, events: Iterable[DomainEvent]) -> EncodedBatch:
        """Encode every event of a batch, proving each decodes again, or raise for the first
        that does not (:class:`UnknownEventTypeError`, :class:`EventCodecError`).

        The same check as :meth:`encode_event`, per event; only the per-call overhead is
        gone. A subclass that overrides :meth:`encode_event` keeps being called for every
        event.
        """
        types: list[str] = []
        versions: list[int] = []
        datas: list[bytes] = []
        if self._custom_encode_event:
            for event in events:
                enc = self.encode_event(event)
                types.append(enc.event_type)
                versions.append(enc.schema_version)
                datas.append(enc.data)
            return EncodedBatch(types, versions, datas)
        encode = self._encoder.encode
        info_by_class = self._encoding
        for event in events:
            info = info_by_class.get(type(event))
            if info is None:
                info = self._encoding_info(type(event))
            try:
                data = encode(event)
                # The proof that nothing undecodable reaches the log: msgspec does not
                # validate a Struct's fields when it is built, so a naive datetime, a wrong
                # type, a NaN for a float or a value outside a Literal only shows on decode.
                # Decoding in C is also the cheapest such check: a field-by-field check in
                # Python costs as much as the decode.
                info[2].decode(data)
            except (msgspec.EncodeError, msgspec.DecodeError, TypeError, ValueError) as exc:
                raise EventCodecError(f"cannot encode {info[0]}: {exc}") from exc
            types.append(info[0])
            versions.append(info[1])
            datas.append(data)
        return EncodedBatch(types, versions, datas)

    def _encoding_info(self, cls: type) -> tuple[str, int, msgspec.json.Decoder[Any]]:
        name = cls.__name__
        decoder = self._decoders.get(name)
        if decoder is None or not issubclass(cls, self._types[name]):
            raise UnknownEventTypeError(f"{name} is not a registered domain event type")
        info = (name, int(cls.schema_version), decoder)
        self._encoding[cls] = info
        return info

    def decode_event(self, event_type: str, schema_version: int, data: bytes) -> DomainEvent:
        """Decode a stored payload, upcasting it when it was written by an older schema."""
        cls = self._types.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(f"unknown event type {event_type!r} in the log")
        if schema_version > cls.schema_version:
            raise EventCodecError(
                f"{event_type} v{schema_version} was written by a newer chronolog "
                f"(this one knows v{cls.schema_version}); upgrade to read this log",
                details={"event_type": event_type, "schema_version": schema_version},
            )
        try:
            if schema_version == cls.schema_version:
                return self._decoders[event_type].decode(data)
            payload = msgspec.json.decode(data)
            if not isinstance(payload, dict):
                raise EventCodecError(f"{event_type} payload is not a JSON object")
            payload = self._upcasters.upcast(
                event_type, schema_version, cls.schema_version, payload
            )
            payload["type"] = event_type
            return msgspec.convert(payload, cls)
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            LookupError,
            ValueError,
            TypeError,
        ) as exc:
            # An upcaster is code too: whatever it raises is a bad stored payload.
            raise EventCodecError(
                f"bad {event_type} v{schema_version} payload: {exc}",
                details={"event_type": event_type, "schema_version": schema_version},
            ) from exc

    # --- metadata -------------------------------------------------------------------------

    def encode_metadata(self, metadata: EventMetadata | None) -> bytes:
        """Encode metadata (the empty metadata shares one cached encoding, ``{}``)."""
        if metadata is None or metadata == _NO_METADATA:
            return self._empty_metadata
        try:
            return self._encoder.encode(metadata)
        except (msgspec.EncodeError, TypeError) as exc:
            raise EventCodecError(f"cannot encode metadata: {exc}") from exc

    def decode_metadata(self, data: bytes) -> EventMetadata:
        """Decode stored metadata."""
        try:
            return self._metadata_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise EventCodecError(f"bad event metadata: {exc}") from exc

    # --- whole envelopes (exports, HTTP, CLI) ---------------------------------------------

    def encode_envelope(self, envelope: Envelope) -> bytes:
        """Encode an envelope as one JSON object, payload included."""
        wire = _WireEnvelope(
            position=envelope.position,
            stream_id=envelope.stream_id,
            stream_version=envelope.stream_version,
            event_type=envelope.event_type,
            schema_version=type(envelope.event).schema_version,
            recorded_at=envelope.recorded_at,
            data=msgspec.Raw(self._encoder.encode(envelope.event)),
            metadata=envelope.metadata,
        )
        return self._encoder.encode(wire)

    def decode_envelope(self, data: bytes) -> Envelope:
        """Decode an envelope written by :meth:`encode_envelope` (upcasting its payload)."""
        try:
            wire = self._envelope_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise EventCodecError(f"bad envelope: {exc}") from exc
        event = self.decode_event(wire.event_type, wire.schema_version, bytes(wire.data))
        return Envelope(
            position=wire.position,
            stream_id=wire.stream_id,
            stream_version=wire.stream_version,
            event_type=wire.event_type,
            schema_version=wire.schema_version,
            recorded_at=wire.recorded_at,
            event=event,
            metadata=wire.metadata,
        )


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    recorded_at: AwareDatetime
    data: msgspec.Raw
    metadata: EventMetadata = EventMetadata()


DEFAULT_CODEC = EventCodec()
