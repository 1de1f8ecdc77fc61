"""Cron syntax and semantics: fields, names, L/W/#, aliases, seconds, dom OR dow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chronolog.triggers import CronTrigger, preview

AFTER = datetime(2027, 1, 1, tzinfo=UTC)  # a Friday


def fires(expression: str, count: int = 4, after: datetime = AFTER) -> list[str]:
    spec = CronTrigger(expression=expression)
    return [f"{f.nominal:%Y-%m-%d %H:%M:%S}" for f in preview(spec, after, count)]


class TestFields:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("*/20 * * * *", ["2027-01-01 00:20:00", "2027-01-01 00:40:00", "2027-01-01 01:00:00"]),
            ("5/20 3 * * *", ["2027-01-01 03:05:00", "2027-01-01 03:25:00", "2027-01-01 03:45:00"]),
            ("0 22-2 * * *", ["2027-01-01 01:00:00", "2027-01-01 02:00:00", "2027-01-01 22:00:00"]),
            ("0 5-5 * * *", ["2027-01-01 05:00:00", "2027-01-02 05:00:00", "2027-01-03 05:00:00"]),
            (
                "0 0 1 jan,jul *",
                ["2027-07-01 00:00:00", "2028-01-01 00:00:00", "2028-07-01 00:00:00"],
            ),
            (
                "0 9 * * SAT-SUN",
                ["2027-01-02 09:00:00", "2027-01-03 09:00:00", "2027-01-09 09:00:00"],
            ),
            ("0 9 * * 7", ["2027-01-03 09:00:00", "2027-01-10 09:00:00", "2027-01-17 09:00:00"]),
        ],
    )
    def test_plain_fields(self, expression: str, expected: list[str]) -> None:
        """Lists, ranges (also wrapping), steps, names and 7-as-Sunday mean what cron means."""
        assert fires(expression, len(expected)) == expected

    def test_strictly_after(self) -> None:
        """A fire exactly at `after` is not returned again."""
        assert fires("0 0 * * *", 1) == ["2027-01-02 00:00:00"]

    def test_six_fields_put_seconds_first(self) -> None:
        """6 fields: second minute hour dom month dow."""
        assert fires("*/20 30 1 * * *", 4) == [
            "2027-01-01 01:30:00",
            "2027-01-01 01:30:20",
            "2027-01-01 01:30:40",
            "2027-01-02 01:30:00",
        ]


class TestSpecialDays:
    def test_last_day_of_month(self) -> None:
        """L: Jan 31, Feb 28, Mar 31, Apr 30."""
        assert [d[:10] for d in fires("0 0 L * *")] == [
            "2027-01-31",
            "2027-02-28",
            "2027-03-31",
            "2027-04-30",
        ]

    def test_nearest_weekday(self) -> None:
        """15W: the weekday nearest the 15th (Fri 14 May 2027, Mon 16 Aug 2027)."""
        got = [d[:10] for d in fires("0 0 15W * *", 12)]
        assert "2027-05-14" in got and "2027-08-16" in got and "2027-01-15" in got

    def test_nearest_weekday_stays_in_month(self) -> None:
        """1W on a Saturday 1st goes forward to Monday the 3rd, not back into last month."""
        got = [d[:10] for d in fires("0 0 1W * *", 12)]
        assert "2027-05-03" in got  # 1 May 2027 is a Saturday

    def test_nth_weekday(self) -> None:
        """2#3: the third Tuesday."""
        assert [d[:10] for d in fires("0 0 * * 2#3", 3)] == [
            "2027-01-19",
            "2027-02-16",
            "2027-03-16",
        ]

    def test_fifth_weekday_skips_months_without_one(self) -> None:
        """1#5: only months with five Mondays."""
        assert [d[:10] for d in fires("0 0 * * 1#5", 3)] == [
            "2027-03-29",
            "2027-05-31",
            "2027-08-30",
        ]

    def test_last_weekday(self) -> None:
        """L5: the last Friday of the month."""
        assert [d[:10] for d in fires("0 0 * * L5", 3)] == [
            "2027-01-29",
            "2027-02-26",
            "2027-03-26",
        ]

    def test_dom_or_dow_when_both_restricted(self) -> None:
        """'0 0 13 * 5': the 13th OR any Friday (POSIX union)."""
        assert [d[:10] for d in fires("0 0 13 * 5", 5)] == [
            "2027-01-08",
            "2027-01-13",
            "2027-01-15",
            "2027-01-22",
            "2027-01-29",
        ]

    def test_dom_star_step_counts_as_restricted(self) -> None:
        """'*/10' in day-of-month is restricted (no Vixie star bug): union with Mondays."""
        assert [d[:10] for d in fires("0 0 */10 * 1", 4)] == [
            "2027-01-04",
            "2027-01-11",
            "2027-01-18",
            "2027-01-21",
        ]

    def test_question_mark_is_any(self) -> None:
        """'?' in day-of-month leaves day-of-week alone in charge."""
        assert [d[:10] for d in fires("0 0 ? * 1", 2)] == ["2027-01-04", "2027-01-11"]

    def test_leap_day(self) -> None:
        """29 February waits for the next leap year."""
        assert fires("0 0 29 2 *", 2) == ["2028-02-29 00:00:00", "2032-02-29 00:00:00"]


class TestAliases:
    @pytest.mark.parametrize(
        ("alias", "first"),
        [
            ("@yearly", "2028-01-01 00:00:00"),
            ("@annually", "2028-01-01 00:00:00"),
            ("@monthly", "2027-02-01 00:00:00"),
            ("@weekly", "2027-01-03 00:00:00"),
            ("@daily", "2027-01-02 00:00:00"),
            ("@midnight", "2027-01-02 00:00:00"),
            ("@hourly", "2027-01-01 01:00:00"),
            ("@DAILY", "2027-01-02 00:00:00"),
        ],
    )
    def test_alias(self, alias: str, first: str) -> None:
        """Each alias means its standard 5-field expression."""
        assert fires(alias, 1) == [first]
