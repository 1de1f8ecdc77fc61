"""The trigger engine's entry points: next fire, preview, and rule warnings.

A spec is validated and compiled once into a plan; plans answer "first nominal instant
strictly after X". This module adds what every kind shares: ``start``,
``end``, ``max_runs``, jitter and the local wall time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import msgspec

from chronolog.errors import ValidationError
from chronolog.triggers.cron import parse_cron
from chronolog.triggers.cron_schedule import CronPlan
from chronolog.triggers.fire import Fire, jitter_for
from chronolog.triggers.interval import CalendarIntervalPlan, ElapsedIntervalPlan, add_months
from chronolog.triggers.spec import DateTrigger, IntervalTrigger, TriggerSpec
from chronolog.triggers.validation import validate
from chronolog.triggers.zones import UTC, fixed_offset, get_zone, transitions_in_year

_ONE_MICROSECOND = timedelta(microseconds=1)
#: Below this many runs, rule_applications simply walks every fire.
_WALK_LIMIT = 10_000

Found = tuple[datetime, tuple[str, ...]]


class _Plan(Protocol):
    def next_after(self, after: datetime) -> Found | None: ...


# The compiled forms are msgspec structs with gc=False: one exists per distinct spec (one
# per task for one-shots), they hold no cycles, and leaving them out of the cyclic
# collector keeps its full passes short.
class _DatePlan(msgspec.Struct, frozen=True, gc=False):
    run_at: datetime

    def next_after(self, after: datetime) -> Found | None:
        return (self.run_at, ()) if self.run_at > after else None


class _Compiled(msgspec.Struct, frozen=True, gc=False):
    plan: _Plan
    kind: str  # "date", "elapsed", "calendar" or "cron"
    zone_name: str
    zone: ZoneInfo
    start: datetime | None
    end: datetime | None
    max_runs: int | None
    jitter: float


def _compiled_as(spec: TriggerSpec, plan: _Plan, kind: str) -> _Compiled:
    return _Compiled(
        plan=plan,
        kind=kind,
        zone_name=spec.timezone,
        zone=get_zone(spec.timezone),
        start=spec.start,
        end=spec.end,
        max_runs=spec.max_runs,
        jitter=spec.jitter_seconds,
    )


#: Units that are elapsed time (DST changes nothing); the others keep wall-clock time.
_ELAPSED_UNITS = ("seconds", "minutes", "hours")


def _build(spec: TriggerSpec) -> _Compiled:
    """Build the plan for a spec that :func:`validate` returned."""
    zone = get_zone(spec.timezone)
    if isinstance(spec, DateTrigger):
        return _compiled_as(spec, _DatePlan(spec.run_at), "date")
    if isinstance(spec, IntervalTrigger):
        assert spec.start is not None  # validate() requires the anchor
        if spec.unit in _ELAPSED_UNITS:
            step = timedelta(**{spec.unit: spec.every})
            return _compiled_as(spec, ElapsedIntervalPlan(spec.start, step), "elapsed")
        plan = CalendarIntervalPlan(
            start=spec.start,
            zone=zone,
            zone_name=spec.timezone,
            unit=spec.unit,
            every=spec.every,
            nonexistent=spec.nonexistent,
            ambiguous=spec.ambiguous,
            month_end=spec.month_end,
        )
        return _compiled_as(spec, plan, "calendar")
    cron = CronPlan(
        parse_cron(spec.expression),
        zone,
        spec.timezone,
        fixed_offset(spec.timezone),
        spec.nonexistent,
        spec.ambiguous,
        spec.start,
    )
    return _compiled_as(spec, cron, "cron")


#: :func:`_build`, cached by value.
_compile = lru_cache(maxsize=16_384)(_build)


# Every new spec object is validated, even when an equal one was compiled before: the value
# cache alone would let IntervalTrigger(every=True) through on the heels of every=1 (they
# compare equal). The scheduler asks again and again with the *same* object, so an
# identity cache in front keeps validation off the hot path. Entries keep their spec
# alive, so an id is never reused while its entry exists.
_by_identity: dict[int, tuple[TriggerSpec, _Compiled]] = {}
_IDENTITY_CACHE_SIZE = 65_536


@lru_cache(maxsize=16_384)
def _validated_and_compiled(spec: TriggerSpec, _types: tuple[type, ...]) -> _Compiled:
    # Keyed by the spec as given (frozen, so hashable by value) plus its field types, since
    # ``True == 1`` and ``1.0 == 1`` must not let an invalid spec hit a valid entry. Equal
    # specs built anew (thousands of tasks sharing one cron expression) skip validation.
    return _compile(validate(spec))


def _compiled(spec: TriggerSpec) -> _Compiled:
    if type(spec) is DateTrigger:
        # A one-shot's spec is unique to its task and asked about twice or so: caching it
        # gains nothing, and 10,000 cached one-shots would add milliseconds to every full
        # pass of the host's cyclic GC (the caches' entries are traversed each time).
        return _build(validate(spec))
    hit = _by_identity.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    try:
        types = tuple(type(getattr(spec, name)) for name in spec.__struct_fields__)
        compiled = _validated_and_compiled(spec, types)
    except (TypeError, AttributeError):  # not a hashable spec: let validate say why
        compiled = _compile(validate(spec))
    if len(_by_identity) >= _IDENTITY_CACHE_SIZE:
        _by_identity.clear()
    _by_identity[id(spec)] = (spec, compiled)
    return compiled


def clear_caches() -> None:
    """Forget compiled specs and parsed expressions (benchmarks measure cold starts)."""
    _by_identity.clear()
    _validated_and_compiled.cache_clear()
    _compile.cache_clear()
    parse_cron.cache_clear()
    get_zone.cache_clear()
    fixed_offset.cache_clear()


#: The compiled form of a spec, as :func:`compiled_plan` gives it.
Compiled = _Compiled


def compiled_plan(spec: TriggerSpec) -> _Compiled:
    """The validated, compiled form of ``spec`` (cached): its plan and the bounds every
    kind shares. Raises ``InvalidTriggerError`` for an invalid spec."""
    return _compiled(spec)


def _check_after(after: datetime) -> None:
    if not isinstance(after, datetime) or after.tzinfo is None or after.utcoffset() is None:
        raise ValidationError(
            f"after must be an aware datetime (e.g. datetime.now(timezone.utc)), got {after!r}"
        )


def _next(compiled: _Compiled, after: datetime, seed: str, runs_so_far: int) -> Fire | None:
    if compiled.max_runs is not None and runs_so_far >= compiled.max_runs:
        return None
    if compiled.start is not None and after < compiled.start:
        after = compiled.start - _ONE_MICROSECOND  # fires may be at start itself
    try:
        found = compiled.plan.next_after(after)
        if found is None:
            return None
        nominal, notes = found
        if compiled.end is not None and nominal > compiled.end:
            return None
        at = nominal + jitter_for(seed, nominal, compiled.jitter) if compiled.jitter else nominal
        return Fire(nominal=nominal, at=at, local=nominal.astimezone(compiled.zone), notes=notes)
    except (OverflowError, ValueError):
        # The next fire would fall after year 9999: there is none.
        return None


def next_fire(
    spec: TriggerSpec, after: datetime, *, seed: str = "", runs_so_far: int = 0
) -> Fire | None:
    """The first fire whose nominal instant is strictly after ``after``.

    ``None`` when the trigger is exhausted: past ``end``, ``runs_so_far >= max_runs``, or a
    date trigger whose ``run_at`` is not after ``after``. Fires are never before ``start``.
    ``seed`` (the task id) fixes the jitter, so asking again, or replaying, gives the same
    ``at``. Raises ``InvalidTriggerError`` for an invalid spec (see :func:`validate`).

    >>> from datetime import datetime, timezone
    >>> from chronolog.triggers import CronTrigger
    >>> spec = CronTrigger(expression="30 2 * * *", timezone="Europe/Berlin")
    >>> fire = next_fire(spec, datetime(2027, 3, 27, 12, tzinfo=timezone.utc))
    >>> fire.local.isoformat()
    '2027-03-28T03:00:00+02:00'
    >>> fire.notes
    ('02:30 Europe/Berlin does not exist on 2027-03-28: fires at 03:00',)
    """
    compiled = _compiled(spec)
    _check_after(after)
    return _next(compiled, after, seed, runs_so_far)


def preview(
    spec: TriggerSpec, after: datetime, count: int, *, seed: str = "", runs_so_far: int = 0
) -> list[Fire]:
    """The next ``count`` fires after ``after`` (fewer when the trigger runs out)."""
    compiled = _compiled(spec)
    _check_after(after)
    fires: list[Fire] = []
    while len(fires) < count:
        fire = _next(compiled, after, seed, runs_so_far + len(fires))
        if fire is None:
            break
        fires.append(fire)
        after = fire.nominal
    return fires


def rule_applications(
    spec: TriggerSpec, after: datetime, *, months: int = 12, seed: str = ""
) -> list[Fire]:
    """The fires in the next ``months`` months whose ``notes`` are non-empty.

    For warnings at scheduling time ("this task will run at 03:00 instead of 02:30 on
    28 March"). Cron triggers without a small ``max_runs`` are only evaluated around the
    zone's DST transitions, so a minutely expression costs no more than a daily one.
    """
    compiled = _compiled(spec)
    _check_after(after)
    if compiled.kind in ("date", "elapsed"):
        return []  # instants and elapsed steps never meet a wall-clock rule
    start_utc = after.astimezone(UTC)
    day, _ = add_months(start_utc.date(), months)
    horizon = datetime.combine(day, start_utc.timetz())
    if compiled.kind == "calendar" or (
        compiled.max_runs is not None and compiled.max_runs <= _WALK_LIMIT
    ):
        return _walk_noted(compiled, after, horizon, seed)
    noted: dict[datetime, Fire] = {}
    for year in range(start_utc.year, horizon.year + 1):
        for instant, before, later in transitions_in_year(compiled.zone_name, year):
            at = datetime.fromtimestamp(instant, UTC)
            width = timedelta(seconds=abs(later - before) + 1)
            if at + width <= after or at - width > horizon:
                continue
            cursor = max(after, at - width)
            while True:
                fire = _next(compiled, cursor, seed, 0)
                if fire is None or fire.nominal > horizon:
                    break
                if fire.notes:
                    noted[fire.nominal] = fire
                if fire.nominal > at + width:
                    break  # the first fire after the window is included: it carries skip notes
                cursor = fire.nominal
    return [noted[key] for key in sorted(noted)]


def _walk_noted(compiled: _Compiled, after: datetime, horizon: datetime, seed: str) -> list[Fire]:
    """Walk every fire up to ``horizon`` (and ``max_runs``), keeping those with notes."""
    out: list[Fire] = []
    runs = 0
    while True:
        fire = _next(compiled, after, seed, runs)
        if fire is None or fire.nominal > horizon:
            return out
        if fire.notes:
            out.append(fire)
        after = fire.nominal
        runs += 1


__all__ = ["clear_caches", "next_fire", "preview", "rule_applications"]
