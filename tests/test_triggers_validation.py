"""validate(): every bad spec is rejected with a message saying what is wrong and how to fix it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from chronolog.errors import InvalidTriggerError, ValidationError
from chronolog.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    TriggerSpec,
    next_fire,
    validate,
)

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def interval(**kw: Any) -> IntervalTrigger:
    return IntervalTrigger(**{"every": 5, "unit": "minutes", "start": T0, **kw})


class TestRejects:
    @pytest.mark.parametrize(
        ("spec", "field", "words"),
        [
            (
                CronTrigger(expression="0 9 * * *", timezone="Europe/Berln"),
                "timezone",
                ["Europe/Berlin", "IANA"],
            ),
            (
                CronTrigger(expression="0 9 * * *", timezone="Mars/Olympus"),
                "timezone",
                ["unknown time zone"],
            ),
            (CronTrigger(expression="0 0 30 2 *"), "expression", ["never fire", "'L'"]),
            (CronTrigger(expression="0 0 31 4,6,9,11 *"), "expression", ["never fire"]),
            (CronTrigger(expression="0 24 * * *"), "expression", ["hour", "0-23"]),
            (CronTrigger(expression="0 9 * *"), "expression", ["4 fields", "6 with seconds first"]),
            (CronTrigger(expression="0 0 9 * * * 2027"), "expression", ["year field"]),
            (CronTrigger(expression="0 9 * * 5L"), "expression", ["L5"]),
            (CronTrigger(expression="H 9 * * *"), "expression", ["reproducible"]),
            (CronTrigger(expression="@fortnightly"), "expression", ["@daily"]),
            (CronTrigger(expression="0 23-3/2 * * *"), "expression", ["split it"]),
            (interval(every=0), "every", [">= 1"]),
            (interval(every=-5), "every", [">= 1"]),
            (interval(unit="fortnights"), "unit", ["'minutes'", "'months'"]),
            (interval(start=None), "start", ["anchor"]),
            (interval(start=datetime(2027, 1, 1)), "start", ["naive", "tzinfo"]),
            (interval(end=T0 - timedelta(days=1)), "end", ["before start"]),
            (interval(max_runs=0), "max_runs", ["from 1 to"]),
            (interval(max_runs=2**31), "max_runs", ["from 1 to 2147483647"]),
            (interval(jitter_seconds=-1.0), "jitter_seconds", ["from 0 to"]),
            (interval(jitter_seconds=float("nan")), "jitter_seconds", ["finite"]),
            (interval(jitter_seconds=1e18), "jitter_seconds", ["100 years"]),
            (interval(nonexistent="later"), "nonexistent", ["'shift_forward'", "'skip'"]),
            (interval(ambiguous="middle"), "ambiguous", ["'auto'", "'both'"]),
            (interval(month_end="wrap"), "month_end", ["'clamp'"]),
            (interval(every=10**12), "every", ["too large"]),
            (DateTrigger(run_at=datetime(2027, 1, 1)), "run_at", ["naive"]),
            (DateTrigger(run_at=T0, end=T0 - timedelta(hours=1)), "run_at", ["outside start/end"]),
            (
                DateTrigger(run_at=T0, start=T0 + timedelta(hours=1)),
                "run_at",
                ["outside start/end"],
            ),
        ],
    )
    def test_invalid_spec(self, spec: TriggerSpec, field: str, words: list[str]) -> None:
        """The error names the field and says how to fix it."""
        with pytest.raises(InvalidTriggerError) as info:
            validate(spec)
        assert info.value.details.get("field") == field
        assert info.value.code == "invalid_trigger"
        for word in words:
            assert word in info.value.message

    def test_next_fire_rejects_invalid_specs_too(self) -> None:
        """next_fire validates: an invalid spec raises instead of producing fires."""
        with pytest.raises(InvalidTriggerError):
            next_fire(CronTrigger(expression="0 0 30 2 *"), T0)

    def test_equal_but_invalid_spec_is_not_served_from_cache(self) -> None:
        """every=True equals every=1, yet is rejected even after every=1 was compiled."""
        assert next_fire(interval(every=1), T0) is not None
        with pytest.raises(InvalidTriggerError, match="every"):
            next_fire(interval(every=True), T0)

    def test_not_a_spec(self) -> None:
        """Anything that is not a trigger spec is rejected with its type named."""
        with pytest.raises(InvalidTriggerError, match="dict"):
            validate({"kind": "cron"})  # type: ignore[arg-type]

    def test_naive_after(self) -> None:
        """next_fire needs an aware `after`."""
        with pytest.raises(ValidationError, match="aware"):
            next_fire(interval(), datetime(2027, 1, 1))


class TestNormalises:
    def test_datetimes_become_utc(self) -> None:
        """Aware datetimes in any zone are converted to the same instant in UTC."""
        berlin = ZoneInfo("Europe/Berlin")
        spec = validate(interval(start=datetime(2027, 7, 1, 12, tzinfo=berlin)))
        assert spec.start == datetime(2027, 7, 1, 10, tzinfo=UTC)
        assert spec.start is not None and spec.start.tzinfo is UTC

    def test_expression_whitespace(self) -> None:
        """Cron whitespace is collapsed; aliases stay as written."""
        spaced = validate(CronTrigger(expression="  0   9 * *  mon "))
        alias = validate(CronTrigger(expression="@daily"))
        assert isinstance(spaced, CronTrigger) and spaced.expression == "0 9 * * mon"
        assert isinstance(alias, CronTrigger) and alias.expression == "@daily"

    @pytest.mark.parametrize(
        "spec",
        [
            CronTrigger(expression="*/5 9-17 * * mon-fri", timezone="Europe/Berlin", max_runs=3),
            CronTrigger(expression="0 30 2 L * *", ambiguous="both", jitter_seconds=2.5),
            interval(unit="months", every=2, month_end="skip", end=T0 + timedelta(days=400)),
            DateTrigger(run_at=datetime(2027, 3, 28, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))),
        ],
    )
    def test_json_round_trip(self, spec: TriggerSpec) -> None:
        """A validated spec survives msgspec JSON encode/decode unchanged."""
        normal = validate(spec)
        decoded = msgspec.json.decode(msgspec.json.encode(normal), type=TriggerSpec)
        assert decoded == normal
        assert type(decoded) is type(normal)
        assert validate(decoded) == normal


class TestCompileCaches:
    def test_one_shots_stay_out_of_the_caches_and_are_validated_each_time(self) -> None:
        """Recurring specs are compiled once; a one-shot's spec (unique to its task) is not
        kept: thousands of cached one-shots would only lengthen every full GC pass."""
        from chronolog.triggers import engine

        engine.clear_caches()
        for day in range(100):
            spec = DateTrigger(run_at=T0 + timedelta(days=day))
            assert next_fire(spec, T0 - timedelta(days=1)) is not None
            assert next_fire(spec, T0 - timedelta(days=1)) is not None
        assert engine._compile.cache_info().currsize == 0
        assert not engine._by_identity
        cron = CronTrigger(expression="0 9 * * *")
        for _ in range(3):
            next_fire(cron, T0)
        assert engine._compile.cache_info().currsize == 1
        assert engine._compile.cache_info().misses == 1
        bad = DateTrigger(run_at=T0, jitter_seconds=-1)
        for _ in range(2):  # rejected every time, not once and then served from a cache
            with pytest.raises(InvalidTriggerError):
                next_fire(bad, T0 - timedelta(days=1))
