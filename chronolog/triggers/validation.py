"""Checking and normalising trigger specs.

Specs can be built directly in Python, where msgspec does not check ``Literal`` fields or
types, so everything is checked here. Each error says what is wrong *and* how to fix it,
and carries the offending field in ``details["field"]``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, get_args

import msgspec

from chronolog.errors import InvalidTriggerError
from chronolog.limits import MAX_INT32, MAX_SECONDS
from chronolog.triggers.cron import CronSyntaxError, parse_cron
from chronolog.triggers.spec import (
    AmbiguousPolicy,
    CronTrigger,
    DateTrigger,
    IntervalTrigger,
    IntervalUnit,
    MonthEndPolicy,
    NonexistentPolicy,
    TriggerSpec,
)
from chronolog.triggers.zones import UTC, UnknownZoneError, get_zone, unknown_zone_message

_KINDS = (DateTrigger, IntervalTrigger, CronTrigger)
_UNIT_DAYS = {
    "seconds": 1 / 86400,
    "minutes": 1 / 1440,
    "hours": 1 / 24,
    "days": 1,
    "weeks": 7,
    "months": 31,
}
_UNITS: tuple[str, ...] = get_args(IntervalUnit)
_NONEXISTENT: tuple[str, ...] = get_args(NonexistentPolicy)
_AMBIGUOUS: tuple[str, ...] = get_args(AmbiguousPolicy)
_MONTH_END: tuple[str, ...] = get_args(MonthEndPolicy)


def _fail(field: str, message: str) -> InvalidTriggerError:
    return InvalidTriggerError(message, details={"field": field})


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _fail(field, f"{field} {value!r} is not one of {', '.join(map(repr, allowed))}")


def _instant(field: str, value: object) -> datetime:
    """An aware datetime, converted to UTC."""
    if not isinstance(value, datetime):
        raise _fail(field, f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _fail(
            field,
            f"{field} {value.isoformat()} is naive (no time zone): pass an aware datetime, "
            f"e.g. {value.isoformat()}+00:00 or datetime(..., tzinfo=ZoneInfo('Europe/Berlin'))",
        )
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def validate(spec: TriggerSpec) -> TriggerSpec:
    """Check a trigger spec and return it normalised, or raise ``InvalidTriggerError``.

    Normalising converts every datetime to UTC and collapses whitespace in cron
    expressions; the result compares equal to a msgspec JSON round trip of itself.
    Checked: the zone is a known IANA name; datetimes are aware; ``end`` is not before
    ``start``; ``max_runs`` is from 1 to ``MAX_INT32``; ``jitter_seconds`` is finite and
    from 0 to ``MAX_SECONDS``; policies and units are known; intervals have a ``start``
    (their anchor) and ``every >= 1``; cron expressions parse and can match some date
    (``0 0 30 2 *`` cannot); a date trigger's ``run_at`` lies within ``start``/``end`` when
    those are given.
    """
    if not isinstance(spec, _KINDS):
        raise InvalidTriggerError(
            f"expected a DateTrigger, IntervalTrigger or CronTrigger, got {type(spec).__name__}"
        )
    changes: dict[str, Any] = {}
    name = spec.timezone
    try:
        get_zone(name)
    except UnknownZoneError:
        raise _fail("timezone", unknown_zone_message(name)) from None
    start = None if spec.start is None else _instant("start", spec.start)
    end = None if spec.end is None else _instant("end", spec.end)
    if start is not None and end is not None and end < start:
        raise _fail(
            "end",
            f"end {end.isoformat()} is before start {start.isoformat()}: "
            "move end later, or drop it to run without an end",
        )
    if start is not spec.start:
        changes["start"] = start
    if end is not spec.end:
        changes["end"] = end
    max_runs = spec.max_runs
    if max_runs is not None and (
        isinstance(max_runs, bool)
        or not isinstance(max_runs, int)
        or not 1 <= max_runs <= MAX_INT32
    ):
        raise _fail(
            "max_runs",
            f"max_runs must be an integer from 1 to {MAX_INT32} (or None for no limit), "
            f"got {max_runs!r}",
        )
    jitter = spec.jitter_seconds
    if (
        isinstance(jitter, bool)
        or not isinstance(jitter, int | float)
        or not math.isfinite(jitter)
        or not 0 <= jitter <= MAX_SECONDS
    ):
        raise _fail(
            "jitter_seconds",
            f"jitter_seconds must be a finite number of seconds from 0 to {MAX_SECONDS} "
            f"(100 years; 0 = no jitter), got {jitter!r}",
        )
    if type(jitter) is not float:
        changes["jitter_seconds"] = float(jitter)
    _choice("nonexistent", spec.nonexistent, _NONEXISTENT)
    _choice("ambiguous", spec.ambiguous, _AMBIGUOUS)

    if isinstance(spec, DateTrigger):
        run_at = _instant("run_at", spec.run_at)
        if (start is not None and run_at < start) or (end is not None and run_at > end):
            raise _fail(
                "run_at",
                f"run_at {run_at.isoformat()} is outside start/end, so the trigger could never "
                "fire: drop start/end (a date trigger fires once, at run_at) or move run_at",
            )
        if run_at is not spec.run_at:
            changes["run_at"] = run_at
    elif isinstance(spec, IntervalTrigger):
        _check_interval(spec, start)
    else:
        expression = spec.expression
        if not isinstance(expression, str):
            raise _fail(
                "expression", f"expression must be a string, got {type(expression).__name__}"
            )
        try:
            parse_cron(expression)
        except CronSyntaxError as exc:
            raise _fail("expression", str(exc)) from None
        normal = " ".join(expression.split())
        if normal != expression:
            changes["expression"] = normal
    # Already-normal specs (the common case: decoded from the log) come back as they are.
    return msgspec.structs.replace(spec, **changes) if changes else spec


def _check_interval(spec: IntervalTrigger, start: datetime | None) -> None:
    _choice("unit", spec.unit, _UNITS)
    _choice("month_end", spec.month_end, _MONTH_END)
    every = spec.every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise _fail(
            "every",
            f"every must be a whole number >= 1, got {every!r}: for a fraction of a unit "
            "use a smaller unit (30 seconds, not 0.5 minutes)",
        )
    if start is None:
        raise _fail(
            "start",
            "an interval trigger needs start, its anchor: fires are start + k * every "
            f"{spec.unit} (pass e.g. start=datetime.now(timezone.utc))",
        )
    # A schedule whose second fire would be past year 9999 is a mistake, not a schedule.
    days = every * _UNIT_DAYS[spec.unit]
    if days > 3_660_000:
        raise _fail("every", f"every={every} {spec.unit} is too large to schedule")
    try:
        _ = start + timedelta(days=days)
    except OverflowError:
        raise _fail("every", f"every={every} {spec.unit} is too large to schedule") from None


__all__ = ["validate"]
