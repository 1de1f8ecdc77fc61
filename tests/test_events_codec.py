"""The JSON codec: every event and envelope round-trips, bad input raises typed errors, and
old payloads are upcast on read — including ones sitting in a real SQLite log."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chronolog.errors import EventCodecError, UnknownEventTypeError
from chronolog.events import (
    ALL_EVENT_TYPES,
    DEFAULT_CODEC,
    EVENT_TYPES,
    UPCASTERS,
    Cause,
    DomainEvent,
    EncodedEvent,
    Envelope,
    EventCodec,
    EventMetadata,
    ExecutionSucceeded,
    NextFireDecided,
    TaskCompleted,
    TaskPaused,
    TaskScheduled,
    UpcasterRegistry,
)
from chronolog.store import SQLiteEventStore
from chronolog.store.sqlite import DB_FILENAME
from chronolog.testing import strategies as cst

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAMES = [cls.__name__ for cls in ALL_EVENT_TYPES]


def _round_trip(event: DomainEvent, codec: EventCodec = DEFAULT_CODEC) -> DomainEvent:
    encoded = codec.encode_event(event)
    return codec.decode_event(encoded.event_type, encoded.schema_version, encoded.data)


class TestEventRoundTrip:
    @pytest.mark.parametrize("event_type", ALL_EVENT_TYPES, ids=_NAMES)
    @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_any_valid_event_survives_encode_decode(
        self, event_type: type[DomainEvent], data: st.DataObject
    ) -> None:
        """Every event type, with any valid field values, decodes to an equal event of the
        same class, labelled with its class name and current schema version."""
        event = data.draw(cst.events(event_type))
        encoded = DEFAULT_CODEC.encode_event(event)
        assert (encoded.event_type, encoded.schema_version) == (
            event_type.__name__,
            event_type.schema_version,
        )
        decoded = DEFAULT_CODEC.decode_event(
            encoded.event_type, encoded.schema_version, encoded.data
        )
        assert type(decoded) is event_type
        assert decoded == event
        assert DEFAULT_CODEC.encode_event(decoded).data == encoded.data

    def test_every_registered_type_is_covered(self) -> None:
        """The round trip above runs for exactly the registered event types."""
        assert set(_NAMES) == set(EVENT_TYPES)
        assert len(_NAMES) == len(set(_NAMES))

    @given(cst.task_definitions())
    def test_microseconds_and_unicode_are_kept(self, definition: Any) -> None:
        """Datetimes keep their microseconds and text keeps every code point."""
        at = datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=UTC)
        event = TaskScheduled(
            task_id="t\u00e9\U0001f600\x00", definition=definition, recurring=True, first_fire=at
        )
        decoded = _round_trip(event)
        assert isinstance(decoded, TaskScheduled)
        assert decoded.first_fire == at and decoded.first_fire.microsecond == 999_999
        assert decoded.task_id == "t\u00e9\U0001f600\x00"
        assert decoded.definition == definition

    @given(cst.event_metadata())
    def test_any_metadata_survives_encode_decode(self, metadata: Any) -> None:
        """Metadata decodes to what was encoded."""
        assert DEFAULT_CODEC.decode_metadata(DEFAULT_CODEC.encode_metadata(metadata)) == metadata


class TestEnvelopeRoundTrip:
    @given(cst.envelopes())
    def test_any_envelope_survives_encode_decode(self, envelope: Envelope) -> None:
        """Position, stream, versions, type, payload and metadata survive an envelope round
        trip."""
        decoded = DEFAULT_CODEC.decode_envelope(DEFAULT_CODEC.encode_envelope(envelope))
        assert decoded == envelope

    def test_recorded_at_decodes_as_an_aware_datetime(self) -> None:
        """An envelope's ``recorded_at`` comes back as the same aware datetime."""
        at = datetime(2026, 1, 1, 12, 0, 0, 123_456, tzinfo=UTC)
        envelope = Envelope(
            position=1,
            stream_id="task-t",
            stream_version=1,
            event_type="TaskPaused",
            schema_version=2,
            recorded_at=at,
            event=TaskPaused(task_id="t"),
        )
        decoded = DEFAULT_CODEC.decode_envelope(DEFAULT_CODEC.encode_envelope(envelope))
        assert decoded.recorded_at == at
        assert decoded == envelope

    @pytest.mark.parametrize("data", [b"", b"[]", b"{}", b'{"position": "x"}', b"\xff"])
    def test_bad_envelope_raises_codec_error(self, data: bytes) -> None:
        """Malformed envelope bytes raise ``EventCodecError``."""
        with pytest.raises(EventCodecError):
            DEFAULT_CODEC.decode_envelope(data)


class TestDecodingErrors:
    def test_unknown_event_type_raises_typed_error(self) -> None:
        """A type name the codec does not know raises ``UnknownEventTypeError``."""
        with pytest.raises(UnknownEventTypeError, match="TaskExploded") as raised:
            DEFAULT_CODEC.decode_event("TaskExploded", 1, b'{"task_id": "t"}')
        assert raised.value.code == "unknown_event_type"
        assert isinstance(raised.value, EventCodecError)

    def test_unregistered_event_class_cannot_be_encoded(self) -> None:
        """Encoding an event class outside the registry raises ``UnknownEventTypeError``."""

        class Rogue(DomainEvent, frozen=True, kw_only=True):
            task_id: str

        with pytest.raises(UnknownEventTypeError):
            DEFAULT_CODEC.encode_event(Rogue(task_id="t"))

    @pytest.mark.parametrize(
        ("event_type", "version", "data"),
        [
            ("TaskCompleted", 1, b"not json"),
            ("TaskCompleted", 1, b'{"task_id": "t"}'),
            ("TaskCompleted", 1, b'{"task_id": 5, "reason": "one_shot"}'),
            ("TaskCompleted", 1, b'{"task_id": "t", "reason": "bored"}'),
            ("TaskCompleted", 1, b'{"type":"TaskCancelled","task_id":"t","reason":"one_shot"}'),
            ("NextFireDecided", 1, b'{"task_id":"t","nominal_time":"2026-01-01T00:00:00",'
             b'"fire_at":"2026-01-01T00:00:00Z"}'),
            ("ExecutionSucceeded", 1, b'{"task_id":"t","execution_id":"e",'
             b'"duration_seconds":null}'),
            ("TaskPaused", 1, b"[1, 2]"),
            ("TaskPaused", 1, b'{"task_id": "t", "reason": 7}'),
            ("TaskPaused", 1, b'{"task_id": "t", "paused_by": "host"}'),
            ("TaskPaused", 2, b'{"task_id": "t", "note": 7}'),
        ],
    )  # fmt: skip
    def test_bad_payload_raises_codec_error(
        self, event_type: str, version: int, data: bytes
    ) -> None:
        """Payloads that are not JSON, miss fields, have wrong types, a naive datetime or
        another event's tag raise ``EventCodecError`` naming the type."""
        with pytest.raises(EventCodecError, match=event_type) as raised:
            DEFAULT_CODEC.decode_event(event_type, version, data)
        assert raised.value.code == "codec_error"

    @settings(max_examples=300)
    @given(
        event_type=st.sampled_from(_NAMES),
        version=st.integers(min_value=0, max_value=3),
        data=st.binary(max_size=64)
        | cst.json_values().map(msgspec.json.encode)
        | cst.domain_events().map(msgspec.json.encode),
    )
    def test_any_bytes_decode_or_raise_codec_error(
        self, event_type: str, version: int, data: bytes
    ) -> None:
        """Whatever is stored, decoding returns an event of the named type or raises
        ``EventCodecError``; no other exception escapes."""
        try:
            event = DEFAULT_CODEC.decode_event(event_type, version, data)
        except EventCodecError:
            return
        assert type(event).__name__ == event_type

    def test_bad_metadata_raises_codec_error(self) -> None:
        """Metadata that does not decode raises ``EventCodecError``."""
        with pytest.raises(EventCodecError):
            DEFAULT_CODEC.decode_metadata(b'{"caused_by": {"kind": "martian"}}')


def _insert_raw(
    data_dir: Path, position: int, stream: str, version: int, event_type: str, data: bytes
) -> None:
    """Write one row straight into the log file, as an older chronolog would have."""
    with sqlite3.connect(data_dir / DB_FILENAME) as conn:
        conn.execute(
            "INSERT INTO events (position, stream_id, stream_version, type, schema_version,"
            " recorded_at, data, metadata) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            (position, stream, version, event_type, 1_767_225_600_000_000, data, b"{}"),
        )
    conn.close()


class TestUpcasting:
    @given(task_id=cst.texts(), reason=st.none() | cst.texts())
    def test_task_paused_v1_is_upcast(self, task_id: str, reason: str | None) -> None:
        """A version-1 ``TaskPaused`` payload's ``reason`` becomes ``note``, paused by host."""
        data = msgspec.json.encode({"type": "TaskPaused", "task_id": task_id, "reason": reason})
        event = DEFAULT_CODEC.decode_event("TaskPaused", 1, data)
        assert event == TaskPaused(task_id=task_id, note=reason, paused_by=Cause(kind="host"))

    def test_v1_row_in_the_sqlite_file_is_upcast_on_read(self, tmp_path: Path) -> None:
        """A version-1 ``TaskPaused`` row inserted with raw SQL reads back through the store
        as a version-2 event, keeps its stored schema version on the envelope, and the stream
        continues after it."""
        with SQLiteEventStore(tmp_path) as store:
            store.append("task-t", [TaskPaused(task_id="t", note="first")])
        _insert_raw(
            tmp_path, 2, "task-t", 2, "TaskPaused",
            b'{"type":"TaskPaused","task_id":"t","reason":"disk full"}',
        )  # fmt: skip
        expected = TaskPaused(task_id="t", note="disk full", paused_by=Cause(kind="host"))
        with SQLiteEventStore(tmp_path) as store:
            stored = store.read_stream("task-t")
            assert [(e.schema_version, e.event) for e in stored] == [
                (2, TaskPaused(task_id="t", note="first")),
                (1, expected),
            ]
            assert stored[1].recorded_at == _EPOCH + timedelta(microseconds=1_767_225_600_000_000)
            assert store.read_all(2)[0].event == expected
            appended = store.append("task-t", [TaskPaused(task_id="t")], expected_version=2)
            assert (appended[0].position, appended[0].stream_version) == (3, 3)
        with SQLiteEventStore(tmp_path, read_only=True) as reader:
            assert reader.read_stream("task-t", from_version=2, to_version=2)[0].event == expected

    def test_missing_upcaster_in_the_store_raises_typed_error(self, tmp_path: Path) -> None:
        """A store whose codec lacks the v1 step fails to read the old row with
        ``EventCodecError`` naming the missing step."""
        with SQLiteEventStore(tmp_path):
            pass
        _insert_raw(
            tmp_path, 1, "task-t", 1, "TaskPaused",
            b'{"type":"TaskPaused","task_id":"t","reason":"old"}',
        )  # fmt: skip
        codec = EventCodec(upcasters=UpcasterRegistry())
        with (
            SQLiteEventStore(tmp_path, read_only=True, codec=codec) as reader,
            pytest.raises(EventCodecError, match=r"no upcaster for TaskPaused v1 -> v2") as raised,
        ):
            reader.read_all()
        assert raised.value.details == {"event_type": "TaskPaused", "schema_version": 1}

    def test_version_below_every_step_raises_typed_error(self) -> None:
        """A schema version no step starts from (v0) raises ``EventCodecError``."""
        with pytest.raises(EventCodecError, match="v0 -> v1"):
            DEFAULT_CODEC.decode_event("TaskPaused", 0, b'{"task_id": "t"}')

    def test_steps_chain_in_order_and_a_gap_breaks_the_chain(self) -> None:
        """Upcasters run v1→v2→v3 in order; without the middle step, decoding fails."""

        class Renamed(DomainEvent, frozen=True, kw_only=True):
            schema_version = 3
            task_id: str
            at: datetime
            history: tuple[str, ...]

        full = UpcasterRegistry()

        @full.register("Renamed", from_version=1)
        def _one_to_two(payload: dict[str, Any]) -> dict[str, Any]:
            return {"task_id": payload["id"], "at": payload["at"], "history": ["v2"]}

        @full.register("Renamed", from_version=2)
        def _two_to_three(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "history": [*payload["history"], "v3"]}

        gap = UpcasterRegistry()
        gap.register("Renamed", from_version=1)(_one_to_two)
        v1 = b'{"id": "t", "at": "2026-01-01T00:00:00.000001Z"}'
        at = datetime(2026, 1, 1, microsecond=1, tzinfo=UTC)

        codec = EventCodec({"Renamed": Renamed}, upcasters=full)
        assert codec.decode_event("Renamed", 1, v1) == Renamed(
            task_id="t", at=at, history=("v2", "v3")
        )
        v2 = b'{"task_id": "t", "at": "2026-01-01T00:00:00.000001Z", "history": ["x"]}'
        assert codec.decode_event("Renamed", 2, v2) == Renamed(
            task_id="t", at=at, history=("x", "v3")
        )
        with pytest.raises(EventCodecError, match="v2 -> v3"):
            EventCodec({"Renamed": Renamed}, upcasters=gap).decode_event("Renamed", 1, v1)

    def test_default_registry_upgrades_task_paused_only(self) -> None:
        """The shipped registry knows the TaskPaused v1 step (the example users copy)."""
        lifted = UPCASTERS.upcast("TaskPaused", 1, 2, {"task_id": "t", "reason": "r"})
        assert lifted == {"task_id": "t", "note": "r", "paused_by": {"kind": "host", "id": None}}
        with pytest.raises(LookupError):
            UPCASTERS.upcast("TaskCompleted", 1, 2, {})


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _undecodable_events() -> list[DomainEvent]:
    """Events msgspec encodes without complaint but could never decode again."""
    return [
        NextFireDecided(task_id="t", nominal_time=datetime(2026, 1, 1), fire_at=_T0),
        ExecutionSucceeded(task_id="t", execution_id="e", duration_seconds=float("nan")),
        TaskCompleted(task_id=5, reason="one_shot"),  # type: ignore[arg-type]
        TaskCompleted(task_id="t", reason="bored"),  # type: ignore[arg-type]
        NextFireDecided(task_id="t", nominal_time=_T0, fire_at=_T0, notes=(1,)),  # type: ignore[arg-type]
    ]


class TestEncodeBatch:
    @settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(cst.domain_events(), max_size=8))
    def test_batch_encoding_equals_encoding_one_by_one(self, events: list[DomainEvent]) -> None:
        """``encode_batch`` gives, in order, exactly what ``encode_event`` gives per event."""
        batch = DEFAULT_CODEC.encode_batch(events)
        assert len(batch) == len(events)
        assert list(batch) == [DEFAULT_CODEC.encode_event(event) for event in events]

    @pytest.mark.parametrize("bad", _undecodable_events(), ids=lambda e: type(e).__name__)
    def test_undecodable_event_is_refused_in_a_batch(self, bad: DomainEvent) -> None:
        """A naive datetime, a NaN duration, a wrong field type or a value outside a
        ``Literal`` encodes fine but would not decode: refused, alone or inside a batch."""
        good = TaskCompleted(task_id="t", reason="one_shot")
        with pytest.raises(EventCodecError):
            DEFAULT_CODEC.encode_event(bad)
        with pytest.raises(EventCodecError):
            DEFAULT_CODEC.encode_batch([good, bad, good])

    def test_unknown_class_is_refused_in_a_batch(self) -> None:
        """An unregistered event class raises ``UnknownEventTypeError`` from a batch too."""

        class Rogue(DomainEvent, frozen=True, kw_only=True):
            task_id: str

        with pytest.raises(UnknownEventTypeError):
            DEFAULT_CODEC.encode_batch(
                [TaskCompleted(task_id="t", reason="one_shot"), Rogue(task_id="t")]
            )

    def test_an_overridden_encode_event_is_still_called(self) -> None:
        """A codec subclass that overrides ``encode_event`` sees every event of a batch."""
        seen: list[DomainEvent] = []

        class Spy(EventCodec):
            def encode_event(self, event: DomainEvent) -> EncodedEvent:
                seen.append(event)
                return super().encode_event(event)

        events = [TaskCompleted(task_id=str(i), reason="one_shot") for i in range(3)]
        assert list(Spy().encode_batch(events)) == [DEFAULT_CODEC.encode_event(e) for e in events]
        assert seen == events


class TestMetadataEncoding:
    def test_empty_metadata_is_stored_as_an_empty_object(self) -> None:
        """No metadata and default metadata are both stored as ``{}``, which decodes to the
        defaults."""
        assert DEFAULT_CODEC.encode_metadata(None) == b"{}"
        assert DEFAULT_CODEC.encode_metadata(EventMetadata()) == b"{}"
        assert DEFAULT_CODEC.decode_metadata(b"{}") == EventMetadata()

    def test_spelled_out_defaults_written_before_still_decode(self) -> None:
        """Rows written when the defaults were spelled out read back as the same value."""
        old = msgspec.json.encode(EventMetadata())
        assert old != b"{}"
        assert DEFAULT_CODEC.decode_metadata(old) == EventMetadata()

    def test_other_metadata_keeps_every_field(self) -> None:
        """Metadata that differs from the defaults is encoded in full."""
        meta = EventMetadata(correlation_id="c", caused_by=Cause(kind="agent", id="a"))
        assert DEFAULT_CODEC.decode_metadata(DEFAULT_CODEC.encode_metadata(meta)) == meta
