"""Interval triggers: every N seconds/minutes/hours (elapsed) or days/weeks/months (wall clock).

Every fire is computed from the anchor (``start``), never from the previous fire, so
nothing drifts: the k-th fire is ``start + k * step`` for elapsed units, and "the anchor's
wall-clock time on the anchor's date + k steps" for calendar units. ``k = 0`` is ``start``
itself (an instant the caller chose, so no wall-time rule applies to it).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from chronolog.triggers.dst import FoldChoice, ResolvedFire, resolve_wall

Found = tuple[datetime, tuple[str, ...]]

#: Enough steps for the sparsest schedule: 29 February with ``month_end="skip"`` every
#: 12 months fires at least once per 8 years; 5000 steps is a wide margin.
_MAX_STEPS = 5000


def add_months(day: date, months: int) -> tuple[date, bool]:
    """``day`` moved by whole months, clamped to the month's end; and whether it clamped."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last)), day.day > last


class ElapsedIntervalPlan:
    """Every N seconds, minutes or hours of elapsed time: DST changes nothing."""

    __slots__ = ("_start", "_step")

    def __init__(self, start: datetime, step: timedelta) -> None:
        self._start = start
        self._step = step

    @property
    def step(self) -> timedelta:
        """The time between two fires."""
        return self._step

    def next_after(self, after: datetime) -> Found | None:
        """The first ``start + k * step`` strictly after ``after``."""
        if after < self._start:
            return self._start, ()
        k = (after - self._start) // self._step + 1
        return self._start + k * self._step, ()

    def steps_through(self, fire: datetime, through: datetime) -> int:
        """How many fires follow the fire ``fire`` up to ``through`` (inclusive): 0 when
        ``fire`` is not one of this plan's instants."""
        if fire < self._start or through <= fire or (fire - self._start) % self._step:
            return 0
        return (through - fire) // self._step


class CalendarIntervalPlan:
    """Every N days, weeks or months at the anchor's wall-clock time in the task's zone."""

    __slots__ = (
        "_anchor_date",
        "_anchor_time",
        "_fold",
        "_may_skip",
        "_months",
        "_nonexistent",
        "_skip_month_end",
        "_start",
        "_step",
        "_zone",
        "_zone_name",
    )

    def __init__(
        self,
        *,
        start: datetime,
        zone: ZoneInfo,
        zone_name: str,
        unit: str,
        every: int,
        nonexistent: str,
        ambiguous: str,
        month_end: str,
    ) -> None:
        anchor = start.astimezone(zone)
        self._start = start
        self._anchor_date = anchor.date()
        self._anchor_time = anchor.time().replace(fold=0)  # a wall time, not an instant
        self._zone = zone
        self._zone_name = zone_name
        self._months = unit == "months"
        self._step = every * (7 if unit == "weeks" else 1)  # days, or months
        self._nonexistent = nonexistent
        # A fixed wall time fires once in a repeated hour unless told otherwise.
        self._fold: FoldChoice = (
            "last" if ambiguous == "last" else "both" if ambiguous == "both" else "first"
        )
        self._skip_month_end = month_end == "skip"
        self._may_skip = self._skip_month_end or nonexistent == "skip"

    def _date_for(self, k: int) -> tuple[date | None, str | None]:
        """The k-th date (``None`` when ``month_end="skip"`` drops it) and its note."""
        if not self._months:
            return self._anchor_date + timedelta(days=k * self._step), None
        target, clamped = add_months(self._anchor_date, k * self._step)
        if not clamped:
            return target, None
        missing = f"day {self._anchor_date.day} does not exist in {target:%Y-%m}"
        if self._skip_month_end:
            return None, f"{missing}: skipped (month_end='skip')"
        return target, f"{missing}: fires on {target:%Y-%m-%d}, the last day of the month"

    def next_after(self, after: datetime) -> Found | None:
        """The first fire strictly after ``after``."""
        if after < self._start:
            return self._start, ()
        local = after.astimezone(self._zone)
        if self._months:
            elapsed = (local.year - self._anchor_date.year) * 12 + (
                local.month - self._anchor_date.month
            )
        else:
            elapsed = (local.date() - self._anchor_date).days
        # Start one step early: DST can move a fire across `after` by a few hours.
        first_k = max(1, elapsed // self._step - 1)
        for k in range(first_k, first_k + _MAX_STEPS):
            fires, day_note, _ = self._fires_for(k)
            for index, (instant, notes) in enumerate(fires):
                if instant > after:
                    extra = (day_note,) if day_note else ()
                    if index == 0 and self._may_skip:
                        extra = (*self._skipped_before(k), *extra)
                    return instant, (*extra, *notes)
        return None

    def _fires_for(self, k: int) -> tuple[list[ResolvedFire], str | None, str | None]:
        """The k-th step's fires, its month-end note, and why it was skipped (if it was)."""
        day, day_note = self._date_for(k)
        if day is None:
            return [], None, day_note
        wall = datetime.combine(day, self._anchor_time)
        fires, skip_note = resolve_wall(
            self._zone, self._zone_name, wall, self._nonexistent, self._fold
        )
        return fires, day_note, skip_note

    def _skipped_before(self, k: int) -> list[str]:
        """Notes for the steps just before ``k`` that a ``skip`` policy dropped.

        Looking back from the fire (rather than collecting while searching forward) makes
        a fire's notes the same whatever instant the caller searched from.
        """
        notes: list[str] = []
        for previous in range(k - 1, max(0, k - _MAX_STEPS), -1):
            fires, _, skipped = self._fires_for(previous)
            if fires or skipped is None:
                break
            notes.append(skipped)
        return notes[::-1]


__all__ = ["CalendarIntervalPlan", "ElapsedIntervalPlan", "add_months"]
