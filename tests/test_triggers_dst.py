"""Named DST cases, both directions, in several zones: the documented policies, exactly."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from chronolog.triggers import CronTrigger, IntervalTrigger, next_fire, preview


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def locals_of(spec: CronTrigger | IntervalTrigger, after: datetime, count: int) -> list[str]:
    return [f.local.isoformat() for f in preview(spec, after, count)]


class TestSpringForwardCron:
    @pytest.mark.parametrize(
        ("zone", "expression", "after", "expected_local", "note"),
        [
            (
                "Europe/Berlin",
                "30 2 * * *",
                utc(2027, 3, 27, 12),
                "2027-03-28T03:00:00+02:00",
                "02:30 Europe/Berlin does not exist on 2027-03-28: fires at 03:00",
            ),
            (
                "America/New_York",
                "30 2 * * *",
                utc(2027, 3, 13, 12),
                "2027-03-14T03:00:00-04:00",
                "02:30 America/New_York does not exist on 2027-03-14: fires at 03:00",
            ),
            (
                "Australia/Lord_Howe",
                "15 2 * * *",
                utc(2027, 10, 2, 0),
                "2027-10-03T02:30:00+11:00",
                "02:15 Australia/Lord_Howe does not exist on 2027-10-03: fires at 02:30",
            ),
            (
                "America/Sao_Paulo",
                "0 0 * * *",
                utc(2018, 11, 3, 12),
                "2018-11-04T01:00:00-02:00",
                "00:00 America/Sao_Paulo does not exist on 2018-11-04: fires at 01:00",
            ),
            (
                "Pacific/Apia",
                "0 9 * * *",
                utc(2011, 12, 29, 20),
                "2011-12-31T00:00:00+14:00",
                "09:00 Pacific/Apia does not exist on 2011-12-30: fires at 00:00",
            ),
            (
                "Asia/Kathmandu",
                "5 0 * * *",
                utc(1985, 12, 31, 12),
                "1986-01-01T00:15:00+05:45",
                "00:05 Asia/Kathmandu does not exist on 1986-01-01: fires at 00:15",
            ),
        ],
    )
    def test_nonexistent_time_fires_after_the_gap(
        self, zone: str, expression: str, after: datetime, expected_local: str, note: str
    ) -> None:
        """A wall time in the gap fires at the first instant after it, with a note."""
        fire = next_fire(CronTrigger(expression=expression, timezone=zone), after)
        assert fire is not None
        assert fire.local.isoformat() == expected_local
        assert fire.notes == (note,)

    def test_skip_drops_the_day(self) -> None:
        """nonexistent='skip' goes straight to the next day and says what it skipped."""
        spec = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin", nonexistent="skip")
        fire = next_fire(spec, utc(2027, 3, 27, 12))
        assert fire is not None
        assert fire.local.isoformat() == "2027-03-29T02:30:00+02:00"
        assert fire.notes == (
            "02:30 Europe/Berlin does not exist on 2027-03-28: skipped (nonexistent='skip')",
        )
        # The note belongs to the fire, not to the search: the same from after the gap.
        assert next_fire(spec, utc(2027, 3, 28, 12)) == fire

    def test_quarter_hours_merge_into_one_fire_at_the_gap_end(self) -> None:
        """*/15 across the gap: 02:00-02:45 collapse onto 03:00, which fires once."""
        spec = CronTrigger(expression="*/15 * * * *", timezone="Europe/Berlin")
        assert locals_of(spec, utc(2027, 3, 28, 0, 30), 3) == [
            "2027-03-28T01:45:00+01:00",
            "2027-03-28T03:00:00+02:00",
            "2027-03-28T03:15:00+02:00",
        ]

    def test_skip_with_steps_leaves_a_gap(self) -> None:
        """*/15 with skip: nothing in the missing hour, one note for the four skipped times."""
        spec = CronTrigger(expression="*/15 * * * *", timezone="Europe/Berlin", nonexistent="skip")
        fires = preview(spec, utc(2027, 3, 28, 0, 30), 3)
        assert [f.local.isoformat() for f in fires] == [
            "2027-03-28T01:45:00+01:00",
            "2027-03-28T03:00:00+02:00",
            "2027-03-28T03:15:00+02:00",
        ]
        assert fires[1].notes == (
            "02:00-02:45 Europe/Berlin do not exist on 2027-03-28: 4 fires skipped "
            "(nonexistent='skip')",
        )


class TestFallBackCron:
    @pytest.mark.parametrize(
        ("zone", "expression", "after", "policy", "expected"),
        [
            # Europe/Berlin: 03:00 CEST -> 02:00 CET at 01:00 UTC on 2027-10-31.
            ("Europe/Berlin", "30 2 * * *", utc(2027, 10, 30, 12), "auto", ["00:30"]),
            ("Europe/Berlin", "30 2 * * *", utc(2027, 10, 30, 12), "first", ["00:30"]),
            ("Europe/Berlin", "30 2 * * *", utc(2027, 10, 30, 12), "last", ["01:30"]),
            ("Europe/Berlin", "30 2 * * *", utc(2027, 10, 30, 12), "both", ["00:30", "01:30"]),
            # America/New_York: 02:00 EDT -> 01:00 EST at 06:00 UTC on 2027-11-07.
            ("America/New_York", "30 1 * * *", utc(2027, 11, 6, 12), "auto", ["05:30"]),
            ("America/New_York", "30 1 * * *", utc(2027, 11, 6, 12), "last", ["06:30"]),
            ("America/New_York", "30 1 * * *", utc(2027, 11, 6, 12), "both", ["05:30", "06:30"]),
            # Australia/Lord_Howe: 02:00 (+11) -> 01:30 (+10:30) at 15:00 UTC on 2027-04-03.
            ("Australia/Lord_Howe", "45 1 * * *", utc(2027, 4, 3), "auto", ["14:45"]),
            ("Australia/Lord_Howe", "45 1 * * *", utc(2027, 4, 3), "last", ["15:15"]),
            # America/Sao_Paulo: 00:00 (-02) -> 23:00 (-03) at 02:00 UTC on 2019-02-17.
            ("America/Sao_Paulo", "30 23 * * *", utc(2019, 2, 16, 12), "auto", ["01:30"]),
            ("America/Sao_Paulo", "30 23 * * *", utc(2019, 2, 16, 12), "both", ["01:30", "02:30"]),
        ],
    )
    def test_repeated_fixed_time(
        self, zone: str, expression: str, after: datetime, policy: str, expected: list[str]
    ) -> None:
        """A fixed repeated wall time fires at the first copy by default; overrides work."""
        spec = CronTrigger(expression=expression, timezone=zone, ambiguous=policy)  # type: ignore[arg-type]
        fires = [f for f in preview(spec, after, 3) if f.nominal - after < timedelta(hours=20)]
        assert [f"{f.nominal:%H:%M}" for f in fires] == expected
        assert all(f.notes for f in fires)

    def test_first_copy_note_text(self) -> None:
        """The note names the wall time, zone, date and which copy fired."""
        spec = CronTrigger(expression="30 1 * * *", timezone="America/New_York")
        fire = next_fire(spec, utc(2027, 11, 6, 12))
        assert fire is not None
        assert fire.notes == (
            "01:30 America/New_York happens twice on 2027-11-07: fires once, at the first "
            "(UTC-04:00)",
        )

    @pytest.mark.parametrize(
        ("zone", "after", "hours"),
        [
            ("Europe/Berlin", utc(2027, 10, 30, 23), 4),
            ("America/New_York", utc(2027, 11, 7, 4), 4),
            ("Australia/Lord_Howe", utc(2027, 4, 3, 13), 4),
        ],
    )
    def test_star_hour_has_no_hole(self, zone: str, after: datetime, hours: int) -> None:
        """*/15 keeps firing every 15 real minutes through both copies of the repeated hour."""
        spec = CronTrigger(expression="*/15 * * * *", timezone=zone)
        fires = preview(spec, after, hours * 4)
        gaps = {b.nominal - a.nominal for a, b in itertools.pairwise(fires)}
        assert gaps == {timedelta(minutes=15)}
        assert sum(1 for f in fires if f.notes) > 0

    def test_stepped_hour_fires_through_both_copies(self) -> None:
        """0 */1: a step in the hour field also counts as periodic under auto."""
        spec = CronTrigger(expression="0 */1 * * *", timezone="America/New_York")
        assert locals_of(spec, utc(2027, 11, 7, 4, 30), 4) == [
            "2027-11-07T01:00:00-04:00",
            "2027-11-07T01:00:00-05:00",
            "2027-11-07T02:00:00-05:00",
            "2027-11-07T03:00:00-05:00",
        ]

    def test_first_policy_on_star_hour_leaves_the_hole(self) -> None:
        """ambiguous='first' overrides auto: the second pass is skipped."""
        spec = CronTrigger(expression="*/30 * * * *", timezone="Europe/Berlin", ambiguous="first")
        assert [f"{f.nominal:%H:%M}" for f in preview(spec, utc(2027, 10, 30, 23, 45), 4)] == [
            "00:00",
            "00:30",
            "02:00",
            "02:30",
        ]

    def test_last_policy_from_inside_the_first_pass(self) -> None:
        """From inside the first pass, 'last' fires the second copies, even of earlier times."""
        spec = CronTrigger(expression="*/20 * * * *", timezone="Europe/Berlin", ambiguous="last")
        after = utc(2027, 10, 31, 0, 50)  # 02:50 CEST, first pass
        assert [f"{f.nominal:%H:%M}" for f in preview(spec, after, 4)] == [
            "01:00",
            "01:20",
            "01:40",
            "02:00",
        ]


class TestIntervalsAcrossDst:
    def test_daily_keeps_wall_time_and_shifts_into_the_gap(self) -> None:
        """Daily at 02:30 Berlin: 03:00 on the spring-forward day, 02:30 again after."""
        start = datetime(2027, 3, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
        spec = IntervalTrigger(every=1, unit="days", start=start, timezone="Europe/Berlin")
        fires = preview(spec, start - timedelta(seconds=1), 5)
        assert [f.local.isoformat() for f in fires] == [
            "2027-03-25T02:30:00+01:00",
            "2027-03-26T02:30:00+01:00",
            "2027-03-27T02:30:00+01:00",
            "2027-03-28T03:00:00+02:00",
            "2027-03-29T02:30:00+02:00",
        ]
        assert [bool(f.notes) for f in fires] == [False, False, False, True, False]

    def test_daily_skip(self) -> None:
        """nonexistent='skip' drops the spring-forward day."""
        start = datetime(2027, 3, 27, 1, 30, tzinfo=UTC)
        spec = IntervalTrigger(
            every=1, unit="days", start=start, timezone="Europe/Berlin", nonexistent="skip"
        )
        assert locals_of(spec, start - timedelta(seconds=1), 2) == [
            "2027-03-27T02:30:00+01:00",
            "2027-03-29T02:30:00+02:00",
        ]

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            ("auto", ["05:30"]),
            ("first", ["05:30"]),
            ("last", ["06:30"]),
            ("both", ["05:30", "06:30"]),
        ],
    )
    def test_daily_repeated_hour(self, policy: str, expected: list[str]) -> None:
        """Daily at 01:30 New York on the fall-back day follows the ambiguous policy."""
        start = datetime(2027, 11, 6, 5, 30, tzinfo=UTC)  # 01:30 EDT
        spec = IntervalTrigger(
            every=1,
            unit="days",
            start=start,
            timezone="America/New_York",
            ambiguous=policy,  # type: ignore[arg-type]
        )
        fires = preview(spec, start, 3)
        on_the_day = [f"{f.nominal:%H:%M}" for f in fires if f.nominal.date() == start.date()]
        on_the_day += [f"{f.nominal:%H:%M}" for f in fires if f.local.day == 7]
        assert on_the_day == expected

    def test_weekly_keeps_wall_time(self) -> None:
        """Weekly Monday 09:00 New York stays 09:00 local across the March change."""
        start = datetime(2027, 3, 8, 14, tzinfo=UTC)  # Monday 09:00 EST
        spec = IntervalTrigger(every=1, unit="weeks", start=start, timezone="America/New_York")
        fires = preview(spec, start - timedelta(seconds=1), 3)
        assert [f.local.strftime("%Y-%m-%d %H:%M %z") for f in fires] == [
            "2027-03-08 09:00 -0500",
            "2027-03-15 09:00 -0400",
            "2027-03-22 09:00 -0400",
        ]

    def test_hours_are_elapsed_time(self) -> None:
        """Every hour across the spring gap: four real hours, local 00, 01, 03, 04."""
        start = datetime(2027, 3, 27, 23, tzinfo=UTC)  # 00:00 CET
        spec = IntervalTrigger(every=1, unit="hours", start=start, timezone="Europe/Berlin")
        fires = preview(spec, start - timedelta(seconds=1), 4)
        assert [f"{f.local:%H}" for f in fires] == ["00", "01", "03", "04"]
        assert all(not f.notes for f in fires)

    def test_minutes_are_elapsed_time_through_fall_back(self) -> None:
        """Every 30 minutes through the repeated hour: evenly spaced in real time."""
        start = datetime(2027, 10, 30, 23, tzinfo=UTC)
        spec = IntervalTrigger(every=30, unit="minutes", start=start, timezone="Europe/Berlin")
        fires = preview(spec, start, 6)
        assert {b.nominal - a.nominal for a, b in itertools.pairwise(fires)} == {
            timedelta(minutes=30)
        }
        assert [f"{f.local:%H:%M}" for f in fires] == [
            "01:30",
            "02:00",
            "02:30",
            "02:00",
            "02:30",
            "03:00",
        ]
