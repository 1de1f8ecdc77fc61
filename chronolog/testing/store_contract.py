"""The event store contract as an importable test suite.

Every :class:`~chronolog.store.EventStore` backend subclasses :class:`EventStoreContract`
in its own tests and implements :meth:`~EventStoreContract.create_store`; pytest then runs
every case below against it::

    class TestMyStore(EventStoreContract):
        def create_store(self) -> EventStore:
            return MyStore(...)

The cases follow the usual persistence test kits: bounded replays, empty and unknown
streams, optimistic concurrency, atomic multi-event writes, rejected unencodable events,
gapless positions, and concurrent appenders.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime

import pytest

from chronolog.errors import ConcurrencyError, EventCodecError, StoreClosedError, ValidationError
from chronolog.events import (
    Cause,
    DomainEvent,
    EventMetadata,
    NextFireDecided,
    TaskCompleted,
    TaskDefinition,
    TaskScheduled,
)
from chronolog.store.base import NO_STREAM, AppendRequest, EventStore
from chronolog.triggers.spec import DateTrigger

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def numbered(n: int, task_id: str = "t") -> list[DomainEvent]:
    """``n`` distinct small events, told apart by their nominal time (minute ``i``)."""
    return [
        NextFireDecided(
            task_id=task_id,
            nominal_time=_T0.replace(minute=i % 60, hour=(i // 60) % 24),
            fire_at=_T0,
        )
        for i in range(n)
    ]


def unencodable() -> DomainEvent:
    """An event whose parameters cannot be encoded as JSON."""
    definition = TaskDefinition(
        name="bad",
        function_name="f",
        parameters={"handle": object()},
        trigger=DateTrigger(run_at=_T0),
    )
    return TaskScheduled(task_id="bad", definition=definition, recurring=False, first_fire=_T0)


class EventStoreContract(ABC):
    """Behaviour every event store must have. Subclass and implement :meth:`create_store`."""

    store: EventStore

    @abstractmethod
    def create_store(self) -> EventStore:
        """Return a new, empty store (called before each test)."""

    def setup_method(self) -> None:
        self.store = self.create_store()

    def teardown_method(self) -> None:
        self.store.close()

    def _versions(self, stream: str, **bounds: int | None) -> list[int]:
        return [e.stream_version for e in self.store.read_stream(stream, **bounds)]  # type: ignore[arg-type]

    # --- bounded replays ------------------------------------------------------------------

    def test_replay_all(self) -> None:
        """Reading a stream without bounds returns every event in version order."""
        events = numbered(5)
        self.store.append("s", events, NO_STREAM)
        stored = self.store.read_stream("s")
        assert [e.event for e in stored] == events
        assert [e.stream_version for e in stored] == [1, 2, 3, 4, 5]

    def test_replay_with_lower_bound(self) -> None:
        """``from_version`` skips the events before it."""
        self.store.append("s", numbered(5))
        assert self._versions("s", from_version=3) == [3, 4, 5]

    def test_replay_with_upper_bound(self) -> None:
        """``to_version`` is inclusive."""
        self.store.append("s", numbered(5))
        assert self._versions("s", to_version=2) == [1, 2]

    def test_replay_with_limit(self) -> None:
        """``limit`` caps the number of events returned, oldest first."""
        self.store.append("s", numbered(5))
        assert self._versions("s", limit=3) == [1, 2, 3]

    def test_replay_with_lower_and_upper(self) -> None:
        """Both bounds together select the closed range."""
        self.store.append("s", numbered(6))
        assert self._versions("s", from_version=2, to_version=4) == [2, 3, 4]

    def test_replay_with_lower_upper_and_limit(self) -> None:
        """The limit applies inside the bounded range."""
        self.store.append("s", numbered(8))
        assert self._versions("s", from_version=2, to_version=7, limit=3) == [2, 3, 4]

    def test_lower_equal_upper_gives_exactly_one(self) -> None:
        """Equal bounds select exactly that version."""
        self.store.append("s", numbered(4))
        assert self._versions("s", from_version=3, to_version=3) == [3]

    def test_limit_one(self) -> None:
        """Limit 1 gives only the first event in range."""
        self.store.append("s", numbered(4))
        assert self._versions("s", from_version=2, limit=1) == [2]

    def test_limit_zero_gives_nothing(self) -> None:
        """Limit 0 is a valid request for nothing."""
        self.store.append("s", numbered(4))
        assert self.store.read_stream("s", limit=0) == []
        assert self.store.read_all(limit=0) == []

    def test_lower_above_upper_gives_nothing(self) -> None:
        """An empty range is not an error."""
        self.store.append("s", numbered(4))
        assert self.store.read_stream("s", from_version=3, to_version=2) == []

    def test_lower_beyond_end_gives_nothing(self) -> None:
        """A lower bound past the newest version returns nothing."""
        self.store.append("s", numbered(2))
        assert self.store.read_stream("s", from_version=9) == []

    def test_unknown_stream_gives_nothing(self) -> None:
        """A stream that was never written reads as empty at version 0."""
        assert self.store.read_stream("never") == []
        assert self.store.stream_version("never") == 0

    def test_negative_bounds_are_rejected(self) -> None:
        """Negative bounds and limits are caller errors."""
        with pytest.raises(ValidationError):
            self.store.read_stream("s", from_version=-1)
        with pytest.raises(ValidationError):
            self.store.read_stream("s", limit=-1)
        with pytest.raises(ValidationError):
            self.store.read_all(-1)

    # --- the whole log ---------------------------------------------------------------------

    def test_read_all_bounds_and_limits(self) -> None:
        """``read_all`` starts at ``from_position`` (inclusive) and honours ``limit``."""
        self.store.append("a", numbered(3, "a"))
        self.store.append("b", numbered(3, "b"))
        assert [e.position for e in self.store.read_all()] == [1, 2, 3, 4, 5, 6]
        assert [e.position for e in self.store.read_all(4)] == [4, 5, 6]
        assert [e.position for e in self.store.read_all(2, limit=2)] == [2, 3]
        assert self.store.read_all(7) == []

    def test_positions_are_gapless_and_increasing(self) -> None:
        """Positions count 1, 2, 3 … across streams, including after a rejected append."""
        self.store.append("a", numbered(2, "a"), NO_STREAM)
        with pytest.raises(ConcurrencyError):
            self.store.append("a", numbered(1, "a"), NO_STREAM)
        self.store.append("b", numbered(3, "b"))
        positions = [e.position for e in self.store.read_all()]
        assert positions == list(range(1, 6))
        assert self.store.last_position() == 5

    def test_append_returns_stored_envelopes(self) -> None:
        """The envelopes returned by ``append`` equal what readers later see."""
        meta = EventMetadata(
            correlation_id="c1", causation_id="k1", caused_by=Cause(kind="agent", id="bot")
        )
        returned = self.store.append("s", numbered(2), metadata=meta)
        assert returned == self.store.read_stream("s")
        assert all(e.metadata == meta for e in returned)
        assert all(e.recorded_at.tzinfo is not None for e in returned)

    def test_empty_log(self) -> None:
        """A new store has position 0 and reads nothing."""
        assert self.store.last_position() == 0
        assert self.store.read_all() == []

    # --- concurrency and atomicity ---------------------------------------------------------

    def test_expected_version_must_match(self) -> None:
        """Appending with a stale expected version raises and writes nothing."""
        self.store.append("s", numbered(2), NO_STREAM)
        with pytest.raises(ConcurrencyError) as raised:
            self.store.append("s", numbered(3), expected_version=1)
        assert raised.value.actual == 2
        assert self.store.stream_version("s") == 2
        assert self.store.last_position() == 2

    def test_new_stream_expectation(self) -> None:
        """``NO_STREAM`` succeeds once and conflicts after the stream exists."""
        self.store.append("s", numbered(1), NO_STREAM)
        with pytest.raises(ConcurrencyError):
            self.store.append("s", numbered(1), NO_STREAM)
        self.store.append("s", numbered(1), expected_version=1)
        assert self.store.stream_version("s") == 2

    def test_multi_event_append_is_all_or_nothing(self) -> None:
        """A rejected multi-event batch leaves no trace of any of its events."""
        self.store.append("s", numbered(1))
        with pytest.raises(ConcurrencyError):
            self.store.append("s", numbered(4), expected_version=0)
        assert self._versions("s") == [1]

    def test_unencodable_event_rejects_its_whole_batch(self) -> None:
        """An event that cannot be encoded is refused, and nothing of its batch is written."""
        good = numbered(2)
        with pytest.raises(EventCodecError):
            self.store.append("s", [good[0], unencodable(), good[1]])
        assert self.store.read_stream("s") == []
        assert self.store.last_position() == 0

    def test_naive_datetime_is_rejected(self) -> None:
        """An instant without a zone could never be read back unambiguously: refused."""
        bad = NextFireDecided(task_id="t", nominal_time=datetime(2026, 1, 1), fire_at=_T0)
        with pytest.raises(EventCodecError):
            self.store.append("s", [bad])
        assert self.store.last_position() == 0

    def test_invalid_stream_id_is_rejected(self) -> None:
        """Empty stream ids are caller errors."""
        with pytest.raises(ValidationError):
            self.store.append("", numbered(1))

    def test_sixteen_threads_lose_nothing_and_keep_stream_order(self) -> None:
        """Concurrent appenders: events land once, streams keep order, positions stay gapless."""
        per_thread = 40
        errors: list[BaseException] = []

        def append_many(k: int) -> None:
            try:
                for i in range(per_thread):
                    stream = f"w{k % 4}"
                    event = TaskCompleted(task_id=f"{k}:{i}", reason="one_shot")
                    self.store.append(stream, [event])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=append_many, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        everything = self.store.read_all()
        assert [e.position for e in everything] == list(range(1, 16 * per_thread + 1))
        for s in range(4):
            stream = self.store.read_stream(f"w{s}")
            assert [e.stream_version for e in stream] == list(range(1, len(stream) + 1))
            for k in range(s, 16, 4):
                mine = [e.event.task_id for e in stream if e.event.task_id.startswith(f"{k}:")]  # type: ignore[attr-defined]
                assert mine == [f"{k}:{i}" for i in range(per_thread)]

    # --- several streams in one call ------------------------------------------------------

    def test_append_many_judges_each_request_on_its_own(self) -> None:
        """One refused request (conflict, unencodable, bad id) leaves the others written."""
        self.store.append("b", numbered(2, "b"))
        answers = self.store.append_many(
            [
                AppendRequest(stream_id="a", events=numbered(2, "a"), expected_version=NO_STREAM),
                AppendRequest(stream_id="b", events=numbered(1, "b"), expected_version=NO_STREAM),
                AppendRequest(stream_id="c", events=[numbered(1, "c")[0], unencodable()]),
                AppendRequest(stream_id="", events=numbered(1, "d")),
                AppendRequest(stream_id="a", events=numbered(1, "a"), expected_version=2),
            ]
        )
        assert isinstance(answers[1], ConcurrencyError)
        assert isinstance(answers[2], EventCodecError)
        assert isinstance(answers[3], ValidationError)
        first, last = answers[0], answers[4]
        assert isinstance(first, list) and isinstance(last, list)
        assert [e.stream_version for e in first + last] == [1, 2, 3]
        assert self.store.read_stream("c") == []
        assert len(self.store.read_stream("b")) == 2
        everything = self.store.read_all()
        assert [e.position for e in everything] == [1, 2, 3, 4, 5]
        assert everything[2:] == first + last

    def test_append_many_mixes_large_and_small_requests(self) -> None:
        """Large and small requests in one call keep their order: positions are gapless in
        request order, versions count per stream, and the log reads back as returned."""
        sizes = [300, 1, 17, 0, 64, 2]
        answers = self.store.append_many(
            [
                AppendRequest(stream_id=f"s{k % 2}", events=numbered(size, f"r{k}"))
                for k, size in enumerate(sizes)
            ]
        )
        returned = [e for answer in answers if isinstance(answer, list) for e in answer]
        assert [e.position for e in returned] == list(range(1, sum(sizes) + 1))
        assert self.store.read_all() == returned
        evens = [e.stream_version for e in returned if e.stream_id == "s0"]
        assert evens == list(range(1, 300 + 17 + 64 + 1))
        assert self.store.stream_version("s1") == 1 + 0 + 2

    def test_append_many_from_many_threads_keeps_streams_whole(self) -> None:
        """Concurrent multi-stream calls interleave whole requests, never parts of them."""
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(10):
                    self.store.append_many(
                        [
                            AppendRequest(stream_id=f"s{j}", events=numbered(3, f"{k}:{i}"))
                            for j in range(4)
                        ]
                    )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for j in range(4):
            stream = self.store.read_stream(f"s{j}")
            assert len(stream) == 8 * 10 * 3
            owners = [e.event.task_id for e in stream]  # type: ignore[attr-defined]
            assert all(len(set(owners[i : i + 3])) == 1 for i in range(0, len(owners), 3))
        assert [e.position for e in self.store.read_all()] == list(range(1, 8 * 10 * 4 * 3 + 1))

    # --- waiting and closing ---------------------------------------------------------------

    def test_wait_for_events_wakes_on_append(self) -> None:
        """A waiting reader is woken by an append, and times out when nothing comes."""
        assert self.store.wait_for_events(0, timeout=0.01) is False
        woke: list[bool] = []
        waiter = threading.Thread(
            target=lambda: woke.append(self.store.wait_for_events(0, timeout=10))
        )
        waiter.start()
        self.store.append("s", numbered(1))
        waiter.join(10)
        assert woke == [True]

    def test_wait_for_events_ends_when_its_until_holds(self) -> None:
        """``until`` ends a wait without an append: true at the start, it returns at once;
        made true later, :meth:`wake_waiters` makes the waiter see it. Either way the
        answer is still whether an event came."""
        assert self.store.wait_for_events(0, timeout=10, until=lambda: True) is False
        asked = threading.Event()
        woke: list[bool] = []
        waiter = threading.Thread(
            target=lambda: woke.append(self.store.wait_for_events(0, 10, until=asked.is_set))
        )
        waiter.start()
        waiter.join(0.05)
        assert waiter.is_alive()  # nothing appended, nothing asked: still waiting
        asked.set()
        self.store.wake_waiters()
        waiter.join(5)
        assert woke == [False]
        self.store.append("s", numbered(1))
        assert self.store.wait_for_events(0, timeout=10, until=lambda: True) is True

    def test_closed_store_refuses_calls(self) -> None:
        """After ``close`` every call raises ``StoreClosedError``."""
        self.store.close()
        with pytest.raises(StoreClosedError):
            self.store.append("s", numbered(1))
        with pytest.raises(StoreClosedError):
            self.store.last_position()
