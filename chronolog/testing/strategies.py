"""Hypothesis strategies for chronolog's domain events, envelopes and task streams.

Importing this module needs ``hypothesis`` (a test dependency, not a runtime one)::

    from hypothesis import given
    from chronolog.testing import strategies as cst

    @given(cst.domain_events())
    def test_my_projection_accepts_any_event(event): ...

    @given(cst.task_streams())
    def test_my_read_model_matches_the_fold(events): ...

Two kinds of strategy live here:

* :func:`events` (and :func:`domain_events`, :func:`envelopes`) produce *any valid value*:
  every field takes any value the codec accepts (aware datetimes with microseconds,
  arbitrary JSON parameters and results, every trigger kind, any unicode text). They are
  derived from the event classes' msgspec type information, so an event type added later
  is covered without touching this module, and a field type this module cannot generate
  fails loudly instead of being skipped.
* :func:`task_streams` produces *plausible* histories of one task: scheduled first, then
  fires, executions and their outcomes, retries, pauses and resumes, maybe cancelled or
  completed, in an order the scheduler could have written. Use it for folds, replays and
  read models, which may assume the scheduler's own rules.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from chronolog.events import (
    ALL_EVENT_TYPES,
    Cause,
    DomainEvent,
    Envelope,
    EventMetadata,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionQueued,
    ExecutionReason,
    ExecutionSkipped,
    ExecutionStarted,
    ExecutionSucceeded,
    ExecutionTimedOut,
    LateResultRecorded,
    NextFireDecided,
    RetryScheduled,
    TaskCancelled,
    TaskCompleted,
    TaskDefinition,
    TaskPaused,
    TaskResumed,
    TaskScheduled,
    TaskUpdated,
)
from chronolog.triggers.spec import TriggerSpec

__all__ = [
    "aware_datetimes",
    "causes",
    "domain_events",
    "envelopes",
    "event_metadata",
    "events",
    "json_values",
    "stream_ids",
    "task_definitions",
    "task_streams",
    "texts",
    "trigger_specs",
]

E = TypeVar("E", bound=DomainEvent)
S = TypeVar("S", bound=msgspec.Struct)

_MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
_MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

# --- values -------------------------------------------------------------------------------


def texts(*, min_size: int = 0, max_size: int | None = None) -> SearchStrategy[str]:
    """Any unicode text that UTF-8 can carry (every code point except lone surrogates)."""
    return st.text(st.characters(exclude_categories=["Cs"]), min_size=min_size, max_size=max_size)


def aware_datetimes(
    min_value: datetime = _MIN_INSTANT, max_value: datetime = _MAX_INSTANT
) -> SearchStrategy[datetime]:
    """Aware UTC datetimes (microseconds included) between two aware bounds."""
    return st.datetimes(
        min_value=min_value.astimezone(UTC).replace(tzinfo=None),
        max_value=max_value.astimezone(UTC).replace(tzinfo=None),
        timezones=st.just(UTC),
    )


def _finite_floats() -> SearchStrategy[float]:
    return st.floats(allow_nan=False, allow_infinity=False)


def json_values(*, max_leaves: int = 12) -> SearchStrategy[Any]:
    """Any value that survives a JSON round trip unchanged: null, booleans, integers of any
    size, finite floats, text, and lists and string-keyed objects of those."""
    scalars: SearchStrategy[Any] = (
        st.none() | st.booleans() | st.integers() | _finite_floats() | texts(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(texts(max_size=10), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def stream_ids() -> SearchStrategy[str]:
    """Stream ids every store accepts: 1-200 characters, no NUL, CR or LF."""
    return st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r\n"),
        min_size=1,
        max_size=200,
    )


# --- generic strategies from msgspec type information -------------------------------------


def _from_type_info(info: mi.Type) -> SearchStrategy[Any]:
    """A strategy for every value of ``info`` that the JSON codec round-trips unchanged."""
    if isinstance(info, mi.AnyType):
        return json_values()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else (None if info.gt is None else info.gt + 1)
        high = info.le if info.le is not None else (None if info.lt is None else info.lt - 1)
        return st.integers(min_value=low, max_value=high)
    if isinstance(info, mi.FloatType):
        low_f = info.ge if info.ge is not None else info.gt
        high_f = info.le if info.le is not None else info.lt
        return st.floats(
            min_value=low_f,
            max_value=high_f,
            exclude_min=info.gt is not None,
            exclude_max=info.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return st.from_regex(info.pattern, fullmatch=True)
        return texts(min_size=info.min_length or 0, max_size=info.max_length)
    if isinstance(info, mi.DateTimeType):
        # Naive-allowed fields get aware values too: always valid, never ambiguous.
        return aware_datetimes()
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([_from_type_info(t) for t in info.types])
    if isinstance(info, mi.StructType):
        return _structs(info.cls)
    if isinstance(info, mi.DictType):
        return st.dictionaries(
            _from_type_info(info.key_type),
            _from_type_info(info.value_type),
            min_size=info.min_length or 0,
            max_size=min(info.max_length or 4, 4),
        )
    if isinstance(info, mi.VarTupleType):
        return st.lists(
            _from_type_info(info.item_type),
            min_size=info.min_length or 0,
            max_size=min(info.max_length or 4, 4),
        ).map(tuple)
    if isinstance(info, mi.ListType):
        return st.lists(
            _from_type_info(info.item_type),
            min_size=info.min_length or 0,
            max_size=min(info.max_length or 4, 4),
        )
    if isinstance(info, mi.TupleType):
        return st.tuples(*(_from_type_info(t) for t in info.item_types))
    raise TypeError(f"no strategy for msgspec type {info!r}; add one to chronolog.testing")


@functools.cache
def _field_strategies(cls: type[msgspec.Struct]) -> dict[str, SearchStrategy[Any]]:
    # Cached: Hypothesis validates a strategy tree on first use, which costs far more than
    # drawing from it, and task_streams builds a strategy per drawn event.
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return {f.name: _from_type_info(f.type) for f in info.fields}


@functools.cache
def _plain_structs(cls: type[msgspec.Struct]) -> SearchStrategy[Any]:
    return st.builds(cls, **_field_strategies(cls))


def _structs(
    cls: type[S], overrides: dict[str, SearchStrategy[Any]] | None = None
) -> SearchStrategy[S]:
    if not overrides:
        return cast(SearchStrategy[S], _plain_structs(cls))
    fields = _field_strategies(cls)
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return st.builds(cls, **{**fields, **overrides})


# --- domain events ------------------------------------------------------------------------


def events(event_type: type[E], **overrides: SearchStrategy[Any]) -> SearchStrategy[E]:
    """Any valid instance of ``event_type``; ``overrides`` fix strategies for named fields.

    ``events(ExecutionSucceeded, task_id=st.just("t1"))`` gives successes of task ``t1``
    with any execution id, result and duration.
    """
    return _structs(event_type, overrides)


def domain_events(
    types: tuple[type[DomainEvent], ...] = ALL_EVENT_TYPES,
) -> SearchStrategy[DomainEvent]:
    """Any valid event of any of ``types`` (every registered type by default)."""
    return _one_of_events(types)


@functools.cache
def _one_of_events(types: tuple[type[DomainEvent], ...]) -> SearchStrategy[DomainEvent]:
    return st.one_of([events(cls) for cls in types])


def causes() -> SearchStrategy[Cause]:
    """Any cause: every kind, with or without an id."""
    return _structs(Cause)


def event_metadata() -> SearchStrategy[EventMetadata]:
    """Any event metadata (correlation, causation, cause)."""
    return _structs(EventMetadata)


def trigger_specs() -> SearchStrategy[TriggerSpec]:
    """Any trigger of every kind (date, interval, cron) with any option values."""
    return cast(SearchStrategy[TriggerSpec], _from_type_info(mi.type_info(TriggerSpec)))


def task_definitions() -> SearchStrategy[TaskDefinition]:
    """Any task definition: any name, function, JSON parameters, trigger and policies."""
    return _structs(TaskDefinition)


@st.composite
def envelopes(draw: st.DrawFn, event: SearchStrategy[DomainEvent] | None = None) -> Envelope:
    """Any envelope around an event from ``event`` (any event by default), stored with the
    event class's current schema version."""
    chosen = draw(event if event is not None else domain_events())
    return Envelope(
        position=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        stream_id=draw(stream_ids()),
        stream_version=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        event_type=type(chosen).__name__,
        schema_version=type(chosen).schema_version,
        recorded_at=draw(aware_datetimes()),
        event=chosen,
        metadata=draw(event_metadata()),
    )


# --- plausible task streams ---------------------------------------------------------------

_STREAM_START = datetime(2000, 1, 1, tzinfo=UTC)
_STREAM_END = datetime(9000, 1, 1, tzinfo=UTC)

#: The event that closes an open execution, by the generator's name for it.
_OUTCOMES: dict[str, type[DomainEvent]] = {
    "succeed": ExecutionSucceeded,
    "fail": ExecutionFailed,
    "time_out": ExecutionTimedOut,
    "cancel": ExecutionCancelled,
    "interrupt": ExecutionInterrupted,
}
#: Outcomes after which the decider may schedule a retry.
_RETRYABLE = ("fail", "time_out", "interrupt")
#: Outcomes after which the function's thread may still report (a late result).
_MAY_REPORT_LATE = ("time_out", "cancel", "interrupt")


class _Model:
    """What the generator remembers to keep a stream plausible (what the decider knows)."""

    def __init__(self, task_id: str, now: datetime, pending: datetime | None) -> None:
        self.task_id = task_id
        self.now = now
        self.lifecycle = "active"
        self.pending = pending  # the announced next nominal time, until a fire uses it
        self.open: dict[str, tuple[datetime, int]] = {}
        self.retries: list[tuple[str, datetime, int]] = []  # (failed id, nominal, attempt)
        self.queued: list[datetime] = []
        self.late_candidates: list[str] = []
        self.executions = 0

    @property
    def final(self) -> bool:
        return self.lifecycle in ("cancelled", "completed")

    def tick(self, draw: st.DrawFn) -> datetime:
        """Move the model's clock forward (by 1 µs up to a day) and return it."""
        step = draw(st.integers(min_value=1, max_value=86_400_000_000))
        self.now = min(self.now + timedelta(microseconds=step), _STREAM_END)
        return self.now

    def fire_time(self, draw: st.DrawFn) -> datetime:
        """The nominal time a fire uses: the announced one if any, else a later instant.
        The clock moves to it: a later fire's instant must come after it (it once stayed
        behind an announced first fire, so the next tick could give the same instant)."""
        nominal, self.pending = self.pending, None
        if nominal is not None and nominal > self.now:
            self.now = nominal
            return nominal
        return self.tick(draw)

    def start(
        self,
        nominal: datetime,
        reason: ExecutionReason,
        attempt: int = 1,
        retry_of: str | None = None,
    ) -> ExecutionStarted:
        self.executions += 1
        execution_id = f"{self.task_id}/x{self.executions}"
        self.open[execution_id] = (nominal, attempt)
        if reason == "manual":
            key = f"{self.task_id}:manual:{execution_id}"
        else:
            key = f"{self.task_id}:{nominal.isoformat()}"
        return ExecutionStarted(
            task_id=self.task_id,
            execution_id=execution_id,
            nominal_time=nominal,
            attempt=attempt,
            reason=reason,
            idempotency_key=key,
            retry_of=retry_of,
        )


def _draw_event(draw: st.DrawFn, event_type: type[E], **fixed: Any) -> E:
    """An ``event_type`` with the ``fixed`` field values and any values for the others.

    Drawing field by field from the cached strategies is much cheaper than building a new
    ``st.builds`` per event, which Hypothesis would validate afresh each time.
    """
    values = {
        name: fixed[name] if name in fixed else draw(strategy)
        for name, strategy in _field_strategies(event_type).items()
    }
    return event_type(**values)


def _choices(m: _Model) -> list[str]:
    """What the scheduler could do next, each repeated by how often it happens."""
    choices: list[str] = []
    if m.open:
        choices += ["close"] * 5
    if m.late_candidates:
        choices.append("late_result")
    if m.final:
        return choices
    choices += ["next_fire"] * 2 + ["start_manual", "update", "cancel"]
    if m.lifecycle == "paused":
        return [*choices, "resume", "resume"]
    choices += ["fire"] * 3 + ["skip", "pause"]
    if m.open:
        choices.append("queue")
    if m.queued and not m.open:
        choices += ["start_queued"] * 3
    if m.retries:
        choices += ["start_retry"] * 2
    if not (m.open or m.retries or m.queued):
        choices.append("complete")
    return choices


def _step(draw: st.DrawFn, m: _Model) -> list[DomainEvent]:
    """The events of one plausible decision (empty when nothing can follow)."""
    choices = _choices(m)
    if not choices:
        return []
    action = draw(st.sampled_from(choices))
    tid = m.task_id

    if action == "close":
        execution_id = draw(st.sampled_from(sorted(m.open)))
        kind = draw(st.sampled_from(list(_OUTCOMES)))
        nominal, attempt = m.open.pop(execution_id)
        out: list[DomainEvent] = [
            _draw_event(draw, _OUTCOMES[kind], task_id=tid, execution_id=execution_id)
        ]
        if kind in _MAY_REPORT_LATE:
            m.late_candidates.append(execution_id)
        if kind in _RETRYABLE and m.lifecycle != "cancelled" and draw(st.booleans()):
            m.retries.append((execution_id, nominal, attempt + 1))
            out.append(
                RetryScheduled(
                    task_id=tid,
                    execution_id=execution_id,
                    nominal_time=nominal,
                    attempt=attempt + 1,
                    retry_at=m.tick(draw),
                )
            )
        return out
    if action == "late_result":
        index = draw(st.integers(0, len(m.late_candidates) - 1))
        execution_id = m.late_candidates.pop(index)
        return [_draw_event(draw, LateResultRecorded, task_id=tid, execution_id=execution_id)]
    if action == "next_fire":
        m.pending = nominal = m.tick(draw)
        fire_at = nominal + timedelta(microseconds=draw(st.integers(0, 10_000_000)))
        return [
            _draw_event(draw, NextFireDecided, task_id=tid, nominal_time=nominal, fire_at=fire_at)
        ]
    if action == "fire":
        reason: ExecutionReason = draw(st.sampled_from(["schedule", "catch_up"]))
        return [m.start(m.fire_time(draw), reason)]
    if action == "skip":
        nominal = m.fire_time(draw)
        if draw(st.integers(0, 4)):
            return [
                _draw_event(
                    draw, ExecutionSkipped, task_id=tid, nominal_time=nominal, count=1, until=None
                )
            ]
        # The summary of a long gap: ``count`` nominal times from ``nominal`` to ``until``.
        until = max(m.tick(draw), nominal + timedelta(microseconds=1))
        m.now = until
        count = draw(st.integers(min_value=2, max_value=1_000_000))
        return [
            _draw_event(
                draw, ExecutionSkipped, task_id=tid, nominal_time=nominal, count=count, until=until
            )
        ]
    if action == "queue":
        m.queued.append(m.fire_time(draw))
        return [ExecutionQueued(task_id=tid, nominal_time=m.queued[-1])]
    if action == "start_queued":
        return [m.start(m.queued.pop(0), "schedule")]
    if action == "start_retry":
        failed, nominal, attempt = m.retries.pop(draw(st.integers(0, len(m.retries) - 1)))
        return [m.start(nominal, "retry", attempt, retry_of=failed)]
    if action == "start_manual":
        return [m.start(m.tick(draw), "manual")]
    if action in ("update", "resume"):
        m.pending = m.tick(draw) if draw(st.booleans()) else None
        if action == "update":
            return [_draw_event(draw, TaskUpdated, task_id=tid, next_fire=m.pending)]
        m.lifecycle = "active"
        return [_draw_event(draw, TaskResumed, task_id=tid, next_fire=m.pending)]
    if action == "pause":
        m.lifecycle = "paused"
        return [_draw_event(draw, TaskPaused, task_id=tid)]
    if action == "cancel":
        # The decider cancels running executions first, in the same decision.
        out = [
            _draw_event(draw, ExecutionCancelled, task_id=tid, execution_id=execution_id)
            for execution_id in sorted(m.open)
        ]
        m.late_candidates += sorted(m.open)
        m.open.clear()
        m.retries.clear()
        m.queued.clear()
        m.lifecycle = "cancelled"
        return [*out, _draw_event(draw, TaskCancelled, task_id=tid)]
    assert action == "complete"
    m.lifecycle = "completed"
    return [_draw_event(draw, TaskCompleted, task_id=tid)]


@st.composite
def task_streams(
    draw: st.DrawFn,
    task_id: SearchStrategy[str] | None = None,
    max_events: int = 40,
) -> list[DomainEvent]:
    """A plausible history of one task, oldest first, every event carrying one ``task_id``.

    It follows the task decider's rules: ``TaskScheduled`` first; fires use the announced
    next nominal time (``NextFireDecided``) and start, skip or queue it; outcomes close
    open executions exactly once, and a failure, time-out or interruption may schedule a
    retry, which starts later as a new execution with the next attempt and ``retry_of``
    naming the failed one; a skip is one nominal time or (now and then) the summary of a
    long gap, ``count`` nominal times up to ``until``; queued fires start
    when nothing runs; pauses stop fires and retries until resumed; cancelling cancels
    running executions first; completion comes only when nothing runs, waits or is queued.
    After cancellation or completion only late results follow. Nominal times are distinct.
    At most about ``max_events`` events are generated.
    """
    tid = draw(task_id if task_id is not None else texts(min_size=1, max_size=30))
    first = draw(aware_datetimes(_STREAM_START, _STREAM_START + timedelta(days=3650)))
    first_fire = first if draw(st.booleans()) else None
    model = _Model(tid, first - timedelta(microseconds=1), first_fire)
    stream: list[DomainEvent] = [
        _draw_event(draw, TaskScheduled, task_id=tid, first_fire=first_fire)
    ]
    target = draw(st.integers(min_value=0, max_value=max(0, max_events - 1)))
    while len(stream) <= target:
        step = _step(draw, model)
        if not step:
            break
        stream.extend(step)
    return stream
