"""The trigger engine agrees with an independent brute-force oracle (tests/_trigger_oracle.py).

Start instants are biased toward each zone's real DST transitions (and Apia's lost day, Sao
Paulo's midnight gaps, Lord Howe's half-hour shifts, Kathmandu's 15-minute jump), so the
gap and repeated-hour rules are exercised on most examples, not by luck.
"""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import _trigger_oracle as oracle
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chronolog.errors import InvalidTriggerError
from chronolog.triggers import (
    CronTrigger,
    Fire,
    IntervalTrigger,
    next_fire,
    preview,
    validate,
)

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "Africa/Casablanca",
    "UTC",
]
FIRST_YEAR, LAST_YEAR = 1984, 2032


@functools.cache
def _transitions(zone: str) -> tuple[datetime, ...]:
    return tuple(oracle.transitions(zone, FIRST_YEAR, LAST_YEAR))


@st.composite
def zone_and_instant(draw: st.DrawFn, near: timedelta = timedelta(days=2)) -> tuple[str, datetime]:
    """A zone and an instant, usually within ``near`` before (or shortly after) a transition."""
    zone = draw(st.sampled_from(ZONES))
    moments = _transitions(zone)
    if moments and draw(st.integers(0, 9)) < 8:
        base = draw(st.sampled_from(moments))
        seconds = draw(st.integers(-int(near.total_seconds()), 3 * 3600))
    else:
        base = datetime(FIRST_YEAR + 1, 1, 1, tzinfo=UTC)
        seconds = draw(st.integers(0, (LAST_YEAR - FIRST_YEAR - 2) * 366 * 86400))
    instant = base + timedelta(seconds=seconds)
    if draw(st.booleans()):
        instant += timedelta(microseconds=draw(st.integers(0, 999_999)))
    return zone, instant


MINUTES = ["*", "*/15", "0", "30", "0,30", "15-45/15", "*/7", "59", "10-20", "5/20", "45"]
HOURS = ["*", "*/2", "1", "2", "3", "0-3", "1,2,3", "23", "*/3", "2-4", "0", "12", "22-2", "0/6"]
DOMS = ["*"] * 8 + ["?", "L", "15W", "1W", "31W", "1", "1-15", "*/2", "31", "29", "L,15", "28-31"]
MONTHS = ["*"] * 8 + ["1-6", "*/2", "mar,oct", "2", "11", "oct-mar", "3-4,10-11", "jan-jan"]
DOWS = ["*"] * 8 + ["?", "1-5", "mon-fri", "0", "sun", "6#2", "0#1", "L0", "L5", "sat,sun"]
DOWS += ["fri-mon", "7", "1#5", "5-7"]
ALIASES = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"]


@st.composite
def five_field(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(ALIASES))
    fields = [
        draw(st.sampled_from(MINUTES)),
        draw(st.sampled_from(HOURS)),
        draw(st.sampled_from(DOMS)),
        draw(st.sampled_from(MONTHS)),
        draw(st.sampled_from(DOWS)),
    ]
    return " ".join(fields)


@st.composite
def six_field(draw: st.DrawFn) -> str:
    fields = [
        draw(st.sampled_from(["0", "*/15", "30", "0,30", "*/20", "5-10", "*", "59"])),
        draw(st.sampled_from(["*", "*/5", "0", "30", "0-10", "59"])),
        draw(st.sampled_from(["*", "*/2", "1,2,3", "2", "0-3", "1"])),
        "*",
        "*",
        draw(st.sampled_from(["*", "*", "*", "1-5"])),
    ]
    return " ".join(fields)


POLICIES = st.tuples(
    st.sampled_from(["shift_forward", "shift_forward", "skip"]),
    st.sampled_from(["auto", "auto", "first", "last", "both"]),
)


def _valid(spec: CronTrigger) -> CronTrigger:
    try:
        validate(spec)
    except InvalidTriggerError:
        assume(False)  # e.g. "31" in February only: rejected at validation, not here
    return spec


def _walk(spec: CronTrigger, after: datetime, until: datetime, limit: int) -> list[Fire]:
    fires: list[Fire] = []
    cursor = after
    while len(fires) <= limit:
        fire = next_fire(spec, cursor)
        if fire is None or fire.nominal > until:
            break
        fires.append(fire)
        cursor = fire.nominal
    return fires


def _compare(spec: CronTrigger, after: datetime, until: datetime, margin: timedelta) -> None:
    expected = oracle.cron_fires(
        spec.expression,
        spec.timezone,
        after,
        until,
        nonexistent=spec.nonexistent,
        ambiguous=spec.ambiguous,
        margin=margin,
    )
    got = _walk(spec, after, until, len(expected) + 1)
    assert [f.nominal for f in got] == [e.instant for e in expected]
    if spec.nonexistent == "shift_forward":  # skip notes ride on the next fire instead
        assert [bool(f.notes) for f in got] == [e.ruled for e in expected]
    for fire in got:
        # Not `local == nominal`: PEP 495 makes fold=1 times unequal across zones.
        assert fire.local.astimezone(UTC) == fire.nominal
        assert str(fire.local.tzinfo) == spec.timezone
        assert fire.nominal.tzinfo is UTC


class TestCronAgainstOracle:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=five_field(), where=zone_and_instant(), policies=POLICIES)
    def test_five_field_matches_minute_walk(
        self, expression: str, where: tuple[str, datetime], policies: tuple[str, str]
    ) -> None:
        """Every fire in a 3-day window equals the oracle's minute-by-minute walk."""
        zone, after = where
        spec = _valid(
            CronTrigger(
                expression=expression,
                timezone=zone,
                nonexistent=policies[0],  # type: ignore[arg-type]
                ambiguous=policies[1],  # type: ignore[arg-type]
            )
        )
        _compare(spec, after, after + timedelta(days=3), timedelta(hours=3))

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        expression=six_field(),
        where=zone_and_instant(near=timedelta(hours=1)),
        policies=POLICIES,
    )
    def test_six_field_matches_second_walk(
        self, expression: str, where: tuple[str, datetime], policies: tuple[str, str]
    ) -> None:
        """6-field expressions (seconds first) match a second-by-second walk over 40 minutes."""
        zone, after = where
        spec = _valid(
            CronTrigger(
                expression=expression,
                timezone=zone,
                nonexistent=policies[0],  # type: ignore[arg-type]
                ambiguous=policies[1],  # type: ignore[arg-type]
            )
        )
        _compare(spec, after, after + timedelta(minutes=40), timedelta(hours=1, minutes=30))

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=five_field(), where=zone_and_instant(near=timedelta(days=400)))
    def test_first_fire_far_away_matches(
        self, expression: str, where: tuple[str, datetime]
    ) -> None:
        """Sparse expressions: the first fire (found by production) has no oracle fire before it.

        The oracle walks only the last two days before production's answer, plus the first
        three days after ``after``; together with the exact check above that pins it down.
        """
        zone, after = where
        spec = _valid(CronTrigger(expression=expression, timezone=zone))
        fire = next_fire(spec, after)
        assert fire is not None
        window_start = max(after, fire.nominal - timedelta(days=2))
        near = oracle.cron_fires(spec.expression, zone, window_start, fire.nominal)
        assert near and near[0].instant == fire.nominal
        if fire.nominal - after > timedelta(days=3):
            assert oracle.cron_fires(spec.expression, zone, after, after + timedelta(days=3)) == []


DAY_SHIFTS = [1, 2, 3, 7, 14, 28, 29, 30, 31, 61, 92]


@st.composite
def calendar_interval(draw: st.DrawFn) -> tuple[IntervalTrigger, int]:
    zone, moment = draw(zone_and_instant(near=timedelta(minutes=90)))
    # Anchor a few days/weeks/months before a transition, at about its wall time, so a
    # later step lands in the gap or the repeated hour.
    start = moment - timedelta(days=draw(st.sampled_from(DAY_SHIFTS)))
    if draw(st.integers(0, 3)) == 0:  # month-end anchors (28th-31st), at any wall time
        year, month = draw(st.integers(2026, 2030)), draw(st.integers(1, 12))
        day = draw(st.integers(28, calendar.monthrange(year, month)[1]))
        wall = datetime(year, month, day, draw(st.integers(0, 23)), draw(st.integers(0, 59)))
        start = wall.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    start = start.replace(second=0, microsecond=0)
    unit = draw(st.sampled_from(["days", "weeks", "months"]))
    spec = IntervalTrigger(
        every=draw(st.integers(1, 3)),
        unit=unit,  # type: ignore[arg-type]
        start=start,
        timezone=zone,
        nonexistent=draw(st.sampled_from(["shift_forward", "skip"])),
        ambiguous=draw(st.sampled_from(["auto", "first", "last", "both"])),
        month_end=draw(st.sampled_from(["clamp", "skip"])),
    )
    return spec, draw(st.integers(2, 6))


class TestIntervalsAgainstOracle:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=calendar_interval())
    def test_calendar_interval_matches_oracle(self, case: tuple[IntervalTrigger, int]) -> None:
        """days/weeks/months: the first fires equal the oracle's anchored wall-clock walk."""
        spec, count = case
        assert spec.start is not None
        expected = oracle.calendar_interval_fires(
            spec.start,
            spec.timezone,
            spec.every,
            spec.unit,
            count,
            nonexistent=spec.nonexistent,
            ambiguous=spec.ambiguous,
            month_end=spec.month_end,
        )
        got = preview(spec, spec.start - timedelta(seconds=1), count)
        assert [f.nominal for f in got] == [e.instant for e in expected]
        if spec.nonexistent == "shift_forward" and spec.month_end == "clamp":
            assert [bool(f.notes) for f in got] == [e.ruled for e in expected]
