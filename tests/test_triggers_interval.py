"""Interval triggers: anchoring, month-end clamping and skipping, elapsed steps, dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chronolog.triggers import DateTrigger, IntervalTrigger, next_fire, preview

BERLIN = ZoneInfo("Europe/Berlin")


def monthly(start: datetime, every: int = 1, month_end: str = "clamp") -> IntervalTrigger:
    return IntervalTrigger(
        every=every,
        unit="months",
        start=start,
        timezone="Europe/Berlin",
        month_end=month_end,  # type: ignore[arg-type]
    )


def dates(spec: IntervalTrigger, count: int) -> list[str]:
    assert spec.start is not None
    return [f"{f.local:%Y-%m-%d %H:%M}" for f in preview(spec, spec.start, count - 1)]


class TestMonthEnd:
    def test_clamps_over_a_leap_year_and_returns_to_the_31st(self) -> None:
        """Anchored on Jan 31: Feb 29 2028, then Mar 31 again (anchored, not chained)."""
        spec = monthly(datetime(2028, 1, 31, 10, tzinfo=BERLIN))
        assert dates(spec, 7) == [
            "2028-02-29 10:00",
            "2028-03-31 10:00",
            "2028-04-30 10:00",
            "2028-05-31 10:00",
            "2028-06-30 10:00",
            "2028-07-31 10:00",
        ]

    def test_clamp_note(self) -> None:
        """The clamped fire says which day did not exist and where it went."""
        spec = monthly(datetime(2028, 1, 31, 10, tzinfo=BERLIN))
        fire = next_fire(spec, datetime(2028, 2, 1, tzinfo=UTC))
        assert fire is not None
        assert fire.notes == (
            "day 31 does not exist in 2028-02: fires on 2028-02-29, the last day of the month",
        )

    def test_skip_fires_only_in_months_with_a_31st(self) -> None:
        """month_end='skip' leaves out Feb, Apr, Jun, Sep, Nov."""
        spec = monthly(datetime(2028, 1, 31, 10, tzinfo=BERLIN), month_end="skip")
        assert [d[:10] for d in dates(spec, 7)] == [
            "2028-03-31",
            "2028-05-31",
            "2028-07-31",
            "2028-08-31",
            "2028-10-31",
            "2028-12-31",
        ]

    def test_skip_note_names_every_skipped_month(self) -> None:
        """The fire after skipped months lists them, whatever instant the search began at."""
        spec = monthly(datetime(2028, 1, 31, 10, tzinfo=BERLIN), month_end="skip")
        fire = next_fire(spec, datetime(2028, 2, 15, tzinfo=UTC))
        assert fire is not None and f"{fire.local:%m-%d}" == "03-31"
        assert fire.notes == ("day 31 does not exist in 2028-02: skipped (month_end='skip')",)
        assert next_fire(spec, datetime(2028, 1, 31, 9, 30, tzinfo=UTC)) == fire

    def test_leap_day_yearly_clamps_to_the_28th(self) -> None:
        """Every 12 months from Feb 29: Feb 28 in common years, Feb 29 in leap years."""
        spec = monthly(datetime(2028, 2, 29, 8, tzinfo=BERLIN), every=12)
        assert [d[:10] for d in dates(spec, 5)] == [
            "2029-02-28",
            "2030-02-28",
            "2031-02-28",
            "2032-02-29",
        ]

    def test_leap_day_yearly_skip(self) -> None:
        """With skip, a Feb 29 anchor fires only in leap years (2100 is not one)."""
        spec = monthly(datetime(2096, 2, 29, 8, tzinfo=BERLIN), every=12, month_end="skip")
        assert [d[:10] for d in dates(spec, 3)] == ["2104-02-29", "2108-02-29"]

    def test_thirtieth_in_february_clamps(self) -> None:
        """Anchored on the 30th: Feb 28 in a common year, then the 30th."""
        spec = monthly(datetime(2027, 1, 30, 10, tzinfo=BERLIN))
        assert [d[:10] for d in dates(spec, 3)] == ["2027-02-28", "2027-03-30"]

    def test_quarterly(self) -> None:
        """every=3 months counts from the anchor's month."""
        spec = monthly(datetime(2027, 11, 30, 10, tzinfo=BERLIN), every=3)
        assert [d[:10] for d in dates(spec, 4)] == ["2028-02-29", "2028-05-30", "2028-08-30"]


class TestAnchoring:
    def test_first_fire_is_start(self) -> None:
        """The anchor itself is the first fire, whenever `after` is before it."""
        start = datetime(2027, 5, 5, 5, 5, 5, 5, tzinfo=UTC)
        spec = IntervalTrigger(every=7, unit="minutes", start=start)
        fire = next_fire(spec, datetime(2000, 1, 1, tzinfo=UTC))
        assert fire is not None and fire.nominal == start

    @settings(max_examples=60, deadline=None)
    @given(
        every=st.integers(1, 10_000),
        unit=st.sampled_from(["minutes", "hours"]),
        microseconds=st.integers(0, 999_999),
        k=st.integers(0, 2_000_000),
        into=st.floats(0, 1, exclude_max=True),
    )
    def test_elapsed_fire_is_start_plus_k_steps(
        self, every: int, unit: str, microseconds: int, k: int, into: float
    ) -> None:
        """The fire after any instant is exactly start + k*step: no drift, microseconds kept."""
        start = datetime(2001, 2, 3, 4, 5, 6, microseconds, tzinfo=UTC)
        step = timedelta(**{unit: every})
        assume((k + 2) * step < datetime(9999, 1, 1, tzinfo=UTC) - start)
        spec = IntervalTrigger(every=every, unit=unit, start=start)  # type: ignore[arg-type]
        inside = timedelta(microseconds=int(into * (step // timedelta(microseconds=1))))
        after = start + k * step + inside  # strictly before the (k+1)-th fire
        fire = next_fire(spec, after)
        assert fire is not None
        assert fire.nominal == start + (k + 1) * step

    def test_days_not_chained_from_previous_fire(self) -> None:
        """A shifted fire (03:00 after the gap) does not move the following fires."""
        start = datetime(2027, 3, 26, 2, 30, tzinfo=BERLIN)
        spec = IntervalTrigger(every=2, unit="days", start=start, timezone="Europe/Berlin")
        assert dates(spec, 4) == ["2027-03-28 03:00", "2027-03-30 02:30", "2027-04-01 02:30"]

    def test_anchor_wall_time_is_in_the_task_zone(self) -> None:
        """start given in UTC: the wall time kept is the one in the task's zone."""
        start = datetime(2027, 1, 10, 8, tzinfo=UTC)  # 09:00 in Berlin (winter)
        spec = IntervalTrigger(every=1, unit="weeks", start=start, timezone="Europe/Berlin")
        fires = preview(spec, datetime(2027, 6, 1, tzinfo=UTC), 1)
        assert f"{fires[0].local:%a %H:%M}" == "Sun 09:00"
        assert fires[0].nominal.hour == 7


class TestDate:
    def test_fires_once(self) -> None:
        """A date trigger fires at run_at and then never again."""
        run_at = datetime(2027, 1, 1, 12, tzinfo=BERLIN)
        spec = DateTrigger(run_at=run_at, timezone="Europe/Berlin")
        first = next_fire(spec, datetime(2026, 1, 1, tzinfo=UTC))
        assert first is not None and first.nominal == run_at and first.nominal.tzinfo is UTC
        assert next_fire(spec, first.nominal) is None

    def test_already_passed(self) -> None:
        """A run_at in the past gives no fire."""
        spec = DateTrigger(run_at=datetime(2020, 1, 1, tzinfo=UTC))
        assert next_fire(spec, datetime(2021, 1, 1, tzinfo=UTC)) is None

    @pytest.mark.parametrize("runs", [1, 2])
    def test_max_runs_reached(self, runs: int) -> None:
        """runs_so_far >= max_runs: no fire."""
        spec = DateTrigger(run_at=datetime(2030, 1, 1, tzinfo=UTC), max_runs=1)
        assert next_fire(spec, datetime(2021, 1, 1, tzinfo=UTC), runs_so_far=runs) is None


class TestSecondsUnit:
    def test_seconds_are_elapsed_time_anchored_at_start(self) -> None:
        """Every 10 seconds from the start, through a DST change, never drifting."""
        from datetime import UTC, datetime, timedelta

        from chronolog.triggers import IntervalTrigger, next_fire, preview, validate

        start = datetime(2026, 3, 29, 0, 59, 50, tzinfo=UTC)  # Berlin springs forward at 01:00 UTC
        spec = validate(
            IntervalTrigger(every=10, unit="seconds", start=start, timezone="Europe/Berlin")
        )
        fires = preview(spec, start - timedelta(microseconds=1), 4)
        assert [f.nominal for f in fires] == [start + timedelta(seconds=10 * k) for k in range(4)]
        late = next_fire(spec, start + timedelta(days=3, seconds=5))
        assert late is not None and late.nominal == start + timedelta(days=3, seconds=10)
