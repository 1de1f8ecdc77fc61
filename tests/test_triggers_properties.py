"""Properties every trigger keeps, whatever its kind, zone, policies and limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from chronolog.triggers import (
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    TriggerSpec,
    next_fire,
    preview,
    validate,
)

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia"]
EXPRESSIONS = [
    "*/15 * * * *",
    "30 2 * * *",
    "0 1,2,3 * * *",
    "0 0 L * *",
    "0 9 * * mon-fri",
    "*/20 30 1,2 * * *",
    "0 0 29 2 *",
    "@hourly",
    "0 */2 * * 6#2",
]

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
common = {
    "timezone": st.sampled_from(ZONES),
    "max_runs": st.none() | st.integers(1, 30),
    "jitter_seconds": st.sampled_from([0.0, 0.0, 1.5, 30.0, 3600.0]),
    "nonexistent": st.sampled_from(["shift_forward", "skip"]),
    "ambiguous": st.sampled_from(["auto", "first", "last", "both"]),
}


@st.composite
def specs(draw: st.DrawFn) -> TriggerSpec:
    start = draw(instants)
    options: dict[str, Any] = {name: draw(strategy) for name, strategy in common.items()}
    if draw(st.booleans()):
        options["end"] = start + timedelta(days=draw(st.integers(0, 400)))
    kind = draw(st.sampled_from(["cron", "cron", "interval", "interval", "date"]))
    if kind == "cron":
        if draw(st.booleans()):
            options["start"] = start
        return CronTrigger(expression=draw(st.sampled_from(EXPRESSIONS)), **options)
    if kind == "interval":
        return IntervalTrigger(
            every=draw(st.integers(1, 90)),
            unit=draw(st.sampled_from(["minutes", "hours", "days", "weeks", "months"])),
            start=start,
            month_end=draw(st.sampled_from(["clamp", "skip"])),
            **options,
        )
    options.pop("end", None)
    return DateTrigger(run_at=start, **options)


class TestProperties:
    @settings(max_examples=150, deadline=None)
    @given(spec=specs(), after=instants, runs=st.integers(0, 5), seed=st.text(max_size=8))
    def test_preview_invariants(
        self, spec: TriggerSpec, after: datetime, runs: int, seed: str
    ) -> None:
        """Increasing, within start/end, run limit held, after `after`, jitter in bounds."""
        fires = preview(spec, after, 25, seed=seed, runs_so_far=runs)
        if spec.max_runs is not None:
            assert len(fires) <= max(0, spec.max_runs - runs)
        nominals = [f.nominal for f in fires]
        assert nominals == sorted(set(nominals))
        for fire in fires:
            assert fire.nominal > after
            assert fire.nominal.tzinfo is UTC
            if spec.start is not None:
                assert fire.nominal >= spec.start
            if spec.end is not None:
                assert fire.nominal <= spec.end
            assert fire.nominal <= fire.at <= fire.nominal + timedelta(seconds=spec.jitter_seconds)
            assert fire.local.astimezone(UTC) == fire.nominal
            assert str(fire.local.tzinfo) == spec.timezone

    @settings(max_examples=100, deadline=None)
    @given(spec=specs(), after=instants, seed=st.text(max_size=8))
    def test_deterministic_and_consistent(
        self, spec: TriggerSpec, after: datetime, seed: str
    ) -> None:
        """Same inputs, same fires; asking from just before a fire, or between two, finds it."""
        first = preview(spec, after, 8, seed=seed)
        assert preview(spec, after, 8, seed=seed) == first
        decoded = msgspec.json.decode(msgspec.json.encode(validate(spec)), type=TriggerSpec)
        assert preview(decoded, after, 8, seed=seed) == first
        for index, fire in enumerate(first):
            assert next_fire(spec, fire.nominal - timedelta(microseconds=1), seed=seed) == fire
            if index:
                between = first[index - 1].nominal + (fire.nominal - first[index - 1].nominal) / 2
                found = next_fire(spec, between, seed=seed)
                assert found is not None and found.nominal == fire.nominal

    @settings(max_examples=50, deadline=None)
    @given(
        nominal=instants, seeds=st.lists(st.text(max_size=6), min_size=2, max_size=2, unique=True)
    )
    def test_jitter_is_per_task(self, nominal: datetime, seeds: list[str]) -> None:
        """Jitter depends on the seed (the task id): two tasks rarely land on the same instant."""
        spec = DateTrigger(run_at=nominal, jitter_seconds=3600.0)
        before = nominal - timedelta(seconds=1)
        a = next_fire(spec, before, seed=seeds[0])
        b = next_fire(spec, before, seed=seeds[1])
        assert a is not None and b is not None
        assert a.nominal == b.nominal == nominal
        assert a.at != b.at  # 3.6e9 microsecond buckets: a collision would be a hash bug

    def test_max_runs_counts_runs_so_far(self) -> None:
        """max_runs=3 with 2 runs done leaves exactly one fire."""
        spec = CronTrigger(expression="* * * * *", max_runs=3)
        after = datetime(2027, 1, 1, tzinfo=UTC)
        assert len(preview(spec, after, 10, runs_so_far=2)) == 1
        assert next_fire(spec, after, runs_so_far=3) is None

    def test_end_is_inclusive(self) -> None:
        """A fire exactly at `end` happens; the one after does not."""
        end = datetime(2027, 1, 1, 0, 3, tzinfo=UTC)
        spec = CronTrigger(expression="* * * * *", end=end)
        fires = preview(spec, datetime(2027, 1, 1, tzinfo=UTC), 10)
        assert [f.nominal for f in fires][-1] == end and len(fires) == 3

    def test_cron_start_is_inclusive(self) -> None:
        """A cron fire exactly at `start` happens; none before it."""
        start = datetime(2027, 1, 1, 6, tzinfo=UTC)
        spec = CronTrigger(expression="0 * * * *", start=start)
        fire = next_fire(spec, datetime(2020, 1, 1, tzinfo=UTC))
        assert fire is not None and fire.nominal == start

    def test_far_future_has_no_fire(self) -> None:
        """Fires past year 9999 do not exist: None, not an exception."""
        spec = CronTrigger(expression="0 0 29 2 *", timezone="America/New_York")
        assert next_fire(spec, datetime(9996, 3, 1, tzinfo=UTC)) is None
