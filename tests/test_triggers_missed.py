"""Missed fires: counted by arithmetic for elapsed intervals, walked for the rest, and in
either case the same as asking ``next_fire`` one fire at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronolog.triggers import CronTrigger, IntervalTrigger, TriggerSpec, next_fire
from chronolog.triggers.missed import Missed, missed_since

T0 = datetime(2030, 3, 30, 23, 0, tzinfo=UTC)  # Europe's DST change is a day later
SEED = "task-1"


def oracle(
    spec: TriggerSpec, first: datetime, now: datetime, runs_so_far: int, limit: int
) -> tuple[list[datetime], bool]:
    """The missed nominal times one ``next_fire`` at a time, as the decider once listed
    them, and whether ``limit`` more than the first stopped the walk."""
    due = [first]
    while True:
        upcoming = next_fire(spec, due[-1], seed=SEED, runs_so_far=runs_so_far + len(due))
        if upcoming is None or upcoming.at > now:
            return due, False
        if len(due) > limit:
            return due, True
        due.append(upcoming.nominal)


def assert_same(found: Missed, due: list[datetime], head: int, tail: int) -> None:
    assert found.count == len(due)
    assert list(found.head) == due[:head]
    assert list(found.tail) == due[-tail:]
    assert found.between(0, min(head, len(due))) == due[:head]
    assert found.at(len(due) - 1) == due[-1]


@st.composite
def elapsed_intervals(draw: st.DrawFn) -> IntervalTrigger:
    every = draw(st.integers(1, 90))
    unit = draw(st.sampled_from(["seconds", "minutes", "hours"]))
    start = T0 + timedelta(seconds=draw(st.integers(-86_400, 86_400)))
    end = None
    if draw(st.booleans()):
        end = start + timedelta(seconds=draw(st.integers(0, 3 * 86_400)))
    return IntervalTrigger(
        every=every,
        unit=unit,
        start=start,
        end=end,
        max_runs=draw(st.none() | st.integers(1, 5_000)),
        jitter_seconds=draw(st.sampled_from([0.0, 0.0, 0.5, 7.0, 900.0])),
    )


@settings(max_examples=300, deadline=None)
@given(
    spec=elapsed_intervals(),
    steps_in=st.integers(0, 400),
    off_grid=st.booleans(),
    gap_steps=st.floats(0, 4_000),
    runs_so_far=st.integers(0, 3),
    head=st.integers(1, 12),
    tail=st.integers(1, 6),
)
def test_an_elapsed_interval_is_counted_as_the_walk_would(
    spec: IntervalTrigger,
    steps_in: int,
    off_grid: bool,
    gap_steps: float,
    runs_so_far: int,
    head: int,
    tail: int,
) -> None:
    """Whatever the interval, its bounds, its jitter and the gap: the same count, first
    and last times as the one-by-one walk (also from a time off the interval's grid,
    where the walk does it all)."""
    assert spec.start is not None
    step = timedelta(**{spec.unit: spec.every})
    first = spec.start + steps_in * step + (timedelta(seconds=0.5) if off_grid else timedelta(0))
    now = first + gap_steps * step
    limit = 1_000_000
    due, _ = oracle(spec, first, now, runs_so_far, limit)
    found = missed_since(
        spec,
        first,
        now,
        seed=SEED,
        runs_so_far=runs_so_far,
        keep_head=head,
        keep_tail=tail,
        walk_limit=limit,
    )
    assert not found.exhausted
    assert_same(found, due, head, tail)


#: Cron expressions and the longest gap (days) the oracle walks for each in a test.
CRONS: list[tuple[str, float]] = [
    ("* * * * *", 2),
    ("*/20 * * * *", 20),
    ("0,30 1-3 * * *", 60),
    ("30 2 * * *", 120),
    ("0 */5 * * 1-5", 90),
    ("15 0 * * *", 120),
    ("45 23 * * 0,6", 120),
    ("0 9 L * *", 400),
    ("0 9 15W * *", 400),
    ("0 9 * * 1#2", 400),
    ("0 12 1 * 5", 400),
    ("0 0 29 2 *", 3_000),
    ("*/30 59 1 * * *", 60),
    ("* * * * * *", 0.05),
    ("*/5 * 3-5 * * *", 1),
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=250, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    zone=st.sampled_from(ZONES),
    nonexistent=st.sampled_from(["shift_forward", "skip"]),
    ambiguous=st.sampled_from(["auto", "first", "last", "both"]),
    start_hours=st.integers(0, 2 * 365 * 24),
    # a fraction of the longest gap, or whole seconds: then ``now`` can be a fire itself
    gap=st.floats(0, 1) | st.integers(0, 10**7),
    jitter=st.sampled_from([0.0, 0.0, 30.0, 7_200.0]),
    runs_so_far=st.integers(0, 2),
    max_runs=st.none() | st.integers(1, 400),
    head=st.integers(1, 12),
    tail=st.integers(1, 6),
)
def test_a_cron_is_counted_as_the_walk_would(
    cron: tuple[str, float],
    zone: str,
    nonexistent: str,
    ambiguous: str,
    start_hours: int,
    gap: float | int,
    jitter: float,
    runs_so_far: int,
    max_runs: int | None,
    head: int,
    tail: int,
) -> None:
    """Whatever the expression, the zone (DST changes of an hour, of half an hour, none),
    the DST policies, the jitter and the gap: the same count, first and last times as
    the one-by-one walk, whose quiet days are now counted from the fields."""
    expression, longest_days = cron
    spec = CronTrigger(
        expression=expression,
        timezone=zone,
        nonexistent=nonexistent,  # type: ignore[arg-type]
        ambiguous=ambiguous,  # type: ignore[arg-type]
        jitter_seconds=jitter,
        max_runs=None if max_runs is None else max_runs + runs_so_far,
    )
    fire = next_fire(spec, T0 + timedelta(hours=start_hours), seed=SEED)
    assert fire is not None
    if isinstance(gap, int):
        now = fire.at + timedelta(seconds=gap % int(longest_days * 86_400 + 1))
    else:
        now = fire.at + timedelta(days=gap * longest_days)
    due, _ = oracle(spec, fire.nominal, now, runs_so_far, 10**7)
    found = missed_since(
        spec,
        fire.nominal,
        now,
        seed=SEED,
        runs_so_far=runs_so_far,
        keep_head=head,
        keep_tail=tail,
        walk_limit=10**7,
    )
    assert not found.exhausted
    assert_same(found, due, head, tail)


@settings(max_examples=100, deadline=None)
@given(
    expression=st.sampled_from(["* * * * *", "*/7 * * * *", "30 2 * * *", "0 */5 * * 1-5"]),
    zone=st.sampled_from(["UTC", "Europe/Berlin"]),
    gap_minutes=st.integers(0, 3_000),
    limit=st.integers(1, 60),
    head=st.integers(1, 12),
    tail=st.integers(1, 6),
)
def test_a_walk_stops_at_its_limit(
    expression: str, zone: str, gap_minutes: int, limit: int, head: int, tail: int
) -> None:
    """Past ``limit`` walked fires the count stops, ``exhausted``; what was counted is
    the start of what the full walk finds."""
    spec = CronTrigger(expression=expression, timezone=zone)
    fire = next_fire(spec, T0, seed=SEED)
    assert fire is not None
    now = fire.at + timedelta(minutes=gap_minutes)
    due, _ = oracle(spec, fire.nominal, now, 0, 10**7)
    found = missed_since(
        spec,
        fire.nominal,
        now,
        seed=SEED,
        runs_so_far=0,
        keep_head=head,
        keep_tail=tail,
        walk_limit=limit,
    )
    if not found.exhausted:
        assert_same(found, due, head, tail)
        return
    assert limit < found.count < len(due)
    assert_same(found, due[: found.count], head, tail)


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("* * * * * *", timedelta(seconds=100)),
        ("* * * * * *", timedelta(seconds=100.5)),
        ("*/5 * * * * *", timedelta(seconds=99)),
        ("*/5 * * * * *", timedelta(days=2, seconds=-1)),
        ("* * * * *", timedelta(days=3)),
        ("* * * * *", timedelta(days=3, seconds=-1)),
        ("0 0 * * *", timedelta(days=40)),
    ],
)
def test_a_fire_at_now_itself_is_due(expression: str, gap: timedelta) -> None:
    """Counted from the fields, a fire exactly at ``now`` is missed too, and one a second
    after it is not."""
    spec = CronTrigger(expression=expression)
    first = datetime(2030, 1, 1, tzinfo=UTC)
    due, _ = oracle(spec, first, first + gap, 0, 10**7)
    found = missed_since(
        spec, first, first + gap, seed=SEED, runs_so_far=0, keep_head=3, keep_tail=3, walk_limit=5
    )
    assert not found.exhausted
    assert_same(found, due, 3, 3)


def test_fifty_years_of_a_secondly_task_are_counted_at_once() -> None:
    """1.6 billion missed seconds: counted exactly, without a walk."""
    spec = IntervalTrigger(every=1, unit="seconds", start=T0)
    now = T0 + timedelta(days=50 * 365, seconds=0.25)
    found = missed_since(
        spec, T0, now, seed=SEED, runs_so_far=0, keep_head=3, keep_tail=2, walk_limit=10
    )
    seconds = 50 * 365 * 86_400
    assert (found.count, found.exhausted) == (seconds + 1, False)
    assert found.head == (T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))
    assert found.tail == (T0 + timedelta(seconds=seconds - 1), T0 + timedelta(seconds=seconds))


def test_a_time_that_was_not_kept_is_refused() -> None:
    """Only the first and last kept times can be asked for, not the middle of a gap."""
    found = Missed(count=100, head=(T0,), tail=(T0 + timedelta(minutes=99),), exhausted=False)
    assert found.at(99) == T0 + timedelta(minutes=99)
    with pytest.raises(IndexError):
        found.at(50)
    with pytest.raises(IndexError):
        found.at(100)
