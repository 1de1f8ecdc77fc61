"""A cron expression in a time zone: the next fire *instant*, with DST policies applied.

:class:`~chronolog.triggers.cron.CronFields` finds matching wall times; this module maps
them to instants. The only subtle part is order: in UTC, a repeated hour is traversed
twice, so the instants are

    normal walls before it < first copies (in wall order) < second copies < walls after it.

Walking wall time forward from ``after`` therefore gives instants in order, except when
``after`` itself lies in the first pass through a repeated hour: then the second copies
of wall times *earlier* than ``after``'s wall time are still to come. That case is
handled on its own (:meth:`CronPlan._from_first_pass`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from chronolog.triggers.cron import CronFields, Wall
from chronolog.triggers.dst import (
    FoldChoice,
    fold_note,
    fold_window,
    gap_end,
    gap_note,
    skipped_gap_note,
)
from chronolog.triggers.zones import EPOCH_NAIVE, EPOCH_UTC, ONE_SECOND, transitions_in_year

Found = tuple[datetime, tuple[str, ...]]

#: A gap holds at most a day of wall times (Samoa, 2011): 1,440 minutes, 86,400 seconds
#: for a 6-field expression. The look-back stops there.
_MAX_SKIPPED = 86_400

_EPOCH_ORDINAL = EPOCH_NAIVE.toordinal()


@dataclass(frozen=True, slots=True)
class QuietSpan:
    """Wall times that no UTC offset change comes near, so that every matching one is a
    fire at ``wall - offset``: ``count`` fires from the wall second ``start_wall``
    (inclusive) to ``stop_wall`` (exclusive)."""

    start_wall: int
    stop_wall: int
    offset: int
    count: int


class CronPlan:
    """Next-fire computation for one cron spec (fields + zone + DST policies)."""

    __slots__ = (
        "_auto",
        "_fields",
        "_fixed",
        "_fold",
        "_not_before",
        "_skip_gaps",
        "_zone",
        "_zone_name",
    )

    def __init__(
        self,
        fields: CronFields,
        zone: ZoneInfo,
        zone_name: str,
        fixed_offset: int | None,
        nonexistent: str,
        ambiguous: str,
        start: datetime | None = None,
    ) -> None:
        self._fields = fields
        # Skipped occurrences before `start` are not this task's business.
        self._not_before = None if start is None else (start - EPOCH_UTC) // ONE_SECOND
        self._zone = zone
        self._zone_name = zone_name
        self._fixed = fixed_offset
        self._skip_gaps = nonexistent == "skip"
        self._auto = ambiguous == "auto"
        if ambiguous == "auto":
            # Fixed hours fire once; "*" or stepped hours are periodic, and a periodic
            # schedule should not have an hour-long hole when the clock falls back.
            self._fold: FoldChoice = "both" if fields.hour_repeats else "first"
        elif ambiguous == "last":
            self._fold = "last"
        elif ambiguous == "both":
            self._fold = "both"
        else:
            self._fold = "first"

    def next_after(self, after: datetime) -> Found | None:
        """The first fire instant strictly after ``after`` (aware), with its notes."""
        found = self._next_after(after)
        if found is None or not self._skip_gaps or self._fixed is not None:
            return found
        skipped = self._skipped_before(found[0])
        if not skipped:
            return found
        note = skipped_gap_note(self._zone_name, [_naive(w) for w in skipped])
        return found[0], (note, *found[1])

    def quiet_span(self, after: datetime, through: datetime) -> QuietSpan | None:
        """The fires after ``after`` and at or before ``through``, counted from the fields
        (whole days: ``matching_days`` x ``fires_per_day``; the days at either end: the
        wall times in their part), up to the first local day that an offset change
        touches; ``None`` when there is none, or ``after``'s own day is touched.

        DST policies and notes only ever apply on days an offset change touches, which
        are left to a fire-by-fire walk.
        """
        zone = self._zone
        after_day = after.astimezone(zone).date()
        offset = _seconds(after.astimezone(zone).utcoffset())
        stop_wall = (through - EPOCH_UTC) // ONE_SECOND + offset + 1
        if self._fixed is None:
            touched = self._first_touched_day(after, through, after_day)
            if touched <= after_day:
                return None
            if touched != date.max:
                stop_wall = min(stop_wall, _wall(touched))
        start_wall = (after - EPOCH_UTC) // ONE_SECOND + offset + 1
        if start_wall >= stop_wall:
            return None
        count = self._count_walls(start_wall, stop_wall)
        if count == 0:
            return None
        return QuietSpan(start_wall, stop_wall, offset, count)

    def _count_walls(self, start: int, stop: int) -> int:
        """Matching wall times ``start <= wall < stop``."""
        fields = self._fields
        first_day, first_second = _day(start), start % 86_400
        last_day, last_second = _day(stop), stop % 86_400
        if first_day == last_day:
            if not fields.day_matches(first_day):
                return 0
            return fields.fires_from(first_second) - fields.fires_from(last_second)
        count = 0
        if fields.day_matches(first_day):
            count += fields.fires_from(first_second)
        whole_from = first_day + timedelta(days=1)
        if whole_from < last_day:
            count += fields.matching_days(whole_from, last_day) * fields.fires_per_day
        if last_second and fields.day_matches(last_day):
            count += fields.fires_per_day - fields.fires_from(last_second)
        return count

    def _first_touched_day(self, after: datetime, through: datetime, first_day: date) -> date:
        """The first local day from ``first_day`` on that an offset change touches (the
        local dates of its instant before and after the change), or ``date.max``."""
        for year in range(max(after.year - 1, 1), min(through.year + 1, 9999) + 1):
            for instant, before, later in transitions_in_year(self._zone_name, year):
                touched = sorted(_day(instant + offset) for offset in (before, later))
                if touched[-1] >= first_day:
                    return max(touched[0], first_day)
        return date.max

    def first_fires(self, span: QuietSpan, limit: int) -> list[datetime]:
        """The first ``limit`` fires of ``span``, in order."""
        found: list[datetime] = []
        t = span.start_wall
        while len(found) < limit:
            wall = self._fields.next_wall(t)
            if wall is None or wall[0] >= span.stop_wall:
                break
            found.append(EPOCH_UTC + timedelta(seconds=wall[0] - span.offset))
            t = wall[0] + 1
        return found

    def last_fires(self, span: QuietSpan, limit: int) -> list[datetime]:
        """The last ``limit`` fires of ``span``, in order."""
        found: list[datetime] = []
        t = span.stop_wall - 1
        while len(found) < limit:
            wall = self._fields.prev_wall(t)
            if wall is None or wall[0] < span.start_wall:
                break
            found.append(EPOCH_UTC + timedelta(seconds=wall[0] - span.offset))
            t = wall[0] - 1
        return found[::-1]

    def _skipped_before(self, fire: datetime) -> list[int]:
        """Matching wall times dropped by ``skip`` between the previous fire and ``fire``.

        Found by looking *back* from the fire, so a fire's notes do not depend on the
        instant the caller happened to search from.
        """
        instant = (fire - EPOCH_UTC) // ONE_SECOND
        skipped: list[int] = []
        t = instant + _seconds(fire.astimezone(self._zone).utcoffset()) - 1
        while len(skipped) < _MAX_SKIPPED:
            found = self._fields.prev_wall(t)
            if found is None:
                break
            off0, off1 = self._offsets(found)
            if off0 >= off1:  # this one happens: it is (or was) a fire, so stop here
                break
            if self._not_before is not None and found[0] - off0 < self._not_before:
                break
            skipped.append(found[0])
            t = found[0] - 1
        return skipped[::-1]

    def _next_after(self, after: datetime) -> Found | None:
        # Fires are whole seconds, so "> after" is "> floor(after)".
        a = (after - EPOCH_UTC) // ONE_SECOND
        if self._fixed is not None:
            found = self._fields.next_wall(a + self._fixed + 1)
            if found is None:
                return None
            return EPOCH_UTC + timedelta(seconds=found[0] - self._fixed), ()
        local = (EPOCH_UTC + timedelta(seconds=a)).astimezone(self._zone)
        off_a = _seconds(local.utcoffset())
        la = a + off_a
        if local.fold == 0:
            off1 = _seconds(local.replace(fold=1).utcoffset())
            if off1 < off_a:  # `after` is in the first pass of a repeated hour
                return self._from_first_pass(a, la, off_a, off1)
        return self._scan(a, la + 1)

    def _offsets(self, found: Wall) -> tuple[int, int]:
        """Offsets of a wall time with fold=0 and fold=1 (see ``zones.wall_offsets``)."""
        _, year, month, day, hour, minute, second = found
        zone = self._zone
        # Positional construction is several times cheaper than datetime.replace(...).
        off0 = datetime(year, month, day, hour, minute, second, 0, zone).utcoffset()
        off1 = datetime(year, month, day, hour, minute, second, 0, zone, fold=1).utcoffset()
        return _seconds(off0), _seconds(off1)

    def _scan(self, a: int, t: int) -> Found | None:
        """Walk matching wall times from ``t`` (inclusive) to the first instant ``> a``."""
        while True:
            found = self._fields.next_wall(t)
            if found is None:
                return None
            wall = found[0]
            off0, off1 = self._offsets(found)
            if off0 == off1:
                return self._found(wall - off0)
            if off0 < off1:  # spring-forward gap: this wall time never happens
                if self._skip_gaps:
                    t = wall + 1  # next_after() notes it on the fire that follows
                    continue
                instant = gap_end(self._zone, wall, off0, off1)
                note = gap_note(self._zone_name, _naive(wall), _naive(instant + off1))
                return self._found(instant, note)
            # Repeated hour. Copies at or before `after` were already handled.
            if self._fold != "last" and wall - off0 > a:
                return self._found(wall - off0, self._fold_note(wall, 0, off0))
            if self._fold != "first" and wall - off1 > a:
                return self._found(wall - off1, self._fold_note(wall, 1, off1))
            t = wall + 1

    def _from_first_pass(self, a: int, la: int, off0: int, off1: int) -> Found | None:
        """``after`` is in the first pass of a repeated hour (wall ``la``, offset ``off0``)."""
        start, end = fold_window(self._zone, la, off0, off1)
        if self._fold != "last":
            found = self._fields.next_wall(la + 1)
            if found is not None and found[0] < end:
                wall = found[0]
                return self._found(wall - off0, self._fold_note(wall, 0, off0))
        if self._fold != "first":
            # Second copies of the whole window come next, even those before `la`.
            found = self._fields.next_wall(start)
            if found is not None and found[0] < end:
                wall = found[0]
                return self._found(wall - off1, self._fold_note(wall, 1, off1))
        return self._scan(a, end)

    def _fold_note(self, wall: int, copy: int, offset: int) -> str:
        why = " (the hour field repeats)" if self._auto and self._fold == "both" else ""
        return fold_note(self._zone_name, _naive(wall), self._fold, copy, offset, why)

    def _found(self, instant: int, *notes: str) -> Found:
        return EPOCH_UTC + timedelta(seconds=instant), notes


def _seconds(offset: timedelta | None) -> int:
    assert offset is not None  # ZoneInfo answers for every aware datetime
    return offset // ONE_SECOND


def _naive(wall: int) -> datetime:
    return EPOCH_NAIVE + timedelta(seconds=wall)


def _wall(day: date) -> int:
    """Wall seconds (since 1970-01-01 00:00, naive) of ``day``'s midnight."""
    return (day.toordinal() - _EPOCH_ORDINAL) * 86_400


def _day(wall: int) -> date:
    """The date of a wall time in seconds."""
    return date.fromordinal(wall // 86_400 + _EPOCH_ORDINAL)


__all__ = ["CronPlan", "QuietSpan"]
