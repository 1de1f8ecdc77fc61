"""Trigger specifications: the data that says when a task fires.

Specs are frozen msgspec Structs so they can live inside domain events unchanged: a task's
trigger is stored in its ``TaskScheduled`` event and decoded back into the same spec on
replay. All instants are aware UTC; ``timezone`` is the IANA zone in which wall-clock rules
(days/weeks/months intervals, cron fields, DST policies) are applied.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from chronolog.clock import AwareDatetime

IntervalUnit = Literal["seconds", "minutes", "hours", "days", "weeks", "months"]

#: What happens to a wall time that does not exist (the clock jumps over it).
NonexistentPolicy = Literal["shift_forward", "skip"]

#: What happens to a wall time that happens twice (the clock falls back over it).
#: ``auto``: fire once at the first occurrence for fixed hours; a cron expression whose hour
#: field is ``*`` or a step keeps firing through both copies of the repeated hour.
AmbiguousPolicy = Literal["auto", "first", "last", "both"]

#: What happens to a monthly anchor on a day the month lacks (the 31st, 29 February).
MonthEndPolicy = Literal["clamp", "skip"]


class _TriggerBase(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag_field="kind"):
    """Options every trigger kind shares."""

    timezone: str = "UTC"
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    max_runs: int | None = None
    jitter_seconds: float = 0.0
    nonexistent: NonexistentPolicy = "shift_forward"
    ambiguous: AmbiguousPolicy = "auto"


class DateTrigger(_TriggerBase, frozen=True, kw_only=True, tag="date"):
    """Fire once, at ``run_at``."""

    run_at: AwareDatetime


class IntervalTrigger(_TriggerBase, frozen=True, kw_only=True, tag="interval"):
    """Fire every ``every`` ``unit`` from ``start`` (the anchor; required for intervals).

    Seconds, minutes and hours are elapsed time; days, weeks and months keep the anchor's wall-clock
    time in ``timezone``. The k-th fire is computed from the anchor, never from the previous
    fire, so nothing drifts.
    """

    every: int
    unit: IntervalUnit
    month_end: MonthEndPolicy = "clamp"


class CronTrigger(_TriggerBase, frozen=True, kw_only=True, tag="cron"):
    """Fire when a 5- or 6-field cron expression (or an ``@daily``-style alias) matches."""

    expression: str


TriggerSpec = DateTrigger | IntervalTrigger | CronTrigger

__all__ = [
    "AmbiguousPolicy",
    "CronTrigger",
    "DateTrigger",
    "IntervalTrigger",
    "IntervalUnit",
    "MonthEndPolicy",
    "NonexistentPolicy",
    "TriggerSpec",
]
