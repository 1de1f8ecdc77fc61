"""Cron expressions: parsing (with croniter) and a fast search over wall-clock fields.

croniter 7 parses and expands the fields (ranges, steps, names, ``L``, ``W``, ``#``,
aliases); its own ``get_next`` is far too slow to call per fire, so :class:`CronFields`
turns the expansion into lookup tables ("next allowed value >= i") and searches wall time
itself. Zones and DST are not this module's business: it answers "the first matching wall
time at or after this wall time", with wall times as whole seconds since 1970-01-01 00:00.

Semantics chosen (and documented in the README):

* 5 fields ``minute hour day-of-month month day-of-week``; 6 fields put **seconds first**
  (``second minute hour dom month dow``, as Quartz/Spring and croniter's
  ``second_at_beginning=True``). 7-field (year) expressions are rejected.
* Day of month and day of week: when *both* are restricted (neither is exactly ``*`` or
  ``?``), a day matches if **either** matches (POSIX/Vixie union). There is no Vixie
  "star bug": ``*/2`` counts as restricted.
* ``L`` in day-of-month is the last day; ``15W`` the weekday nearest the 15th without
  leaving the month (a day past the month's end is clamped to the last day first, like
  croniter); ``2#3`` the third Tuesday; ``L5`` the last Friday (croniter's spelling).
* ``5-5`` means 5 (croniter alone reads an equal range as the whole cycle); ranges may
  wrap (``22-2``, ``fri-mon``) but not with a step (croniter mis-phases those).
* ``H``/``R`` hashed and random fields are rejected: a schedule must be reproducible.
"""

from __future__ import annotations

import bisect
import calendar
import re
from datetime import date, timedelta
from functools import lru_cache

from croniter import croniter
from croniter.croniter import CroniterError

_NONE = 99  # "no allowed value at/after (or at/before) this one" in the lookup tables
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_ORDINAL = date(9999, 12, 31).toordinal()
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

#: Satisfiable expressions match within 40 years (5th Monday of February: 28, at most 40
#: across a non-leap century year); 400 years is a full Gregorian cycle, so anything
#: still unmatched after it never matches.
_SEARCH_YEARS = 400

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELD_HELP = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day of month": "1-31, L (last day), 15W (nearest weekday) or ?",
    "month": "1-12 or JAN-DEC",
    "day of week": (
        "0-7 or SUN-SAT (0 and 7 are Sunday), 2#3 (third Tuesday), L5 (last Friday) or ?"
    ),
}
_FIVE = ("minute", "hour", "day of month", "month", "day of week")
_SIX = ("second", *_FIVE)
_HASHED = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_NEAREST = re.compile(r"^(?:(\d+)w|w(\d+))$", re.IGNORECASE)
_RANGE = re.compile(r"^(?P<low>\w+)-(?P<high>\w+)(?:/(?P<step>\d+))?$")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_QUARTZ_LAST = re.compile(r"^(\d|[a-z]{3})l$", re.IGNORECASE)


#: A matching wall time: ``(wall seconds, year, month, day, hour, minute, second)``.
Wall = tuple[int, int, int, int, int, int, int]
DayTable = tuple[tuple[int, ...], tuple[int, ...]]


class CronSyntaxError(ValueError):
    """The expression cannot be parsed or can never match; the message says how to fix it."""


def normalise_expression(expression: str) -> str:
    """Collapse whitespace and expand ``@daily``-style aliases to their 5-field form."""
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


class CronFields:
    """An expression compiled to lookup tables, with a wall-clock search.

    Build with :func:`parse_cron` (cached). Instances are shared between threads; the only
    mutable part is a cache of day tables keyed by month shape, where a race only
    recomputes the same value.
    """

    __slots__ = (
        "_day_counts",
        "_day_tables",
        "_dom",
        "_dom_any",
        "_dom_last",
        "_dom_nearest",
        "_dow",
        "_dow_any",
        "_dow_nth",
        "_every_day",
        "_hour_list",
        "_minute_list",
        "_month_tables",
        "_next_hour",
        "_next_minute",
        "_next_month",
        "_next_second",
        "_prev_hour",
        "_prev_minute",
        "_prev_month",
        "_prev_second",
        "_second_list",
        "expression",
        "fires_per_day",
        "has_seconds",
        "hour_repeats",
    )

    def __init__(
        self,
        *,
        expression: str,
        seconds: frozenset[int],
        minutes: frozenset[int],
        hours: frozenset[int],
        months: frozenset[int],
        dom: frozenset[int],
        dom_last: bool,
        dom_nearest: int,
        dom_any: bool,
        dow: frozenset[int],
        dow_nth: dict[int, frozenset[int]],
        dow_any: bool,
        has_seconds: bool,
        hour_repeats: bool,
    ) -> None:
        self.expression = expression
        self.has_seconds = has_seconds
        #: The hour field is ``*`` or a step: under ``ambiguous="auto"`` the expression
        #: keeps firing through both copies of a repeated hour (no hole in ``*/15``).
        self.hour_repeats = hour_repeats
        self._next_second = _next_table(seconds, 60)
        self._next_minute = _next_table(minutes, 60)
        self._next_hour = _next_table(hours, 24)
        self._next_month = _next_table(months, 13)
        self._dom = dom
        self._dom_last = dom_last
        self._dom_nearest = dom_nearest
        self._dom_any = dom_any
        self._dow = dow
        self._dow_nth = dow_nth
        self._dow_any = dow_any
        self._every_day = dom_any and dow_any
        self._prev_second = _prev_table(seconds, 60)
        self._prev_minute = _prev_table(minutes, 60)
        self._prev_hour = _prev_table(hours, 24)
        self._prev_month = _prev_table(months, 13)
        self._day_tables: dict[int, DayTable] = {}
        self._month_tables: dict[int, DayTable] = {}
        self._day_counts: dict[int, tuple[int, ...]] = {}
        #: Matching wall times in a matching day: hours x minutes x seconds.
        self.fires_per_day = len(hours) * len(minutes) * len(seconds)
        self._hour_list = tuple(sorted(hours))
        self._minute_list = tuple(sorted(minutes))
        self._second_list = tuple(sorted(seconds))

    # --- day matching --------------------------------------------------------------------

    def _day_matches(self, ndays: int, first_weekday: int) -> list[bool]:
        """Which days 1..ndays match, for a month of that length starting on that weekday.

        ``first_weekday`` uses cron numbering (0 = Sunday). A month's matching days depend
        only on these two numbers, so there are at most 28 distinct tables.
        """
        nearest = 0
        if self._dom_nearest:
            target = min(self._dom_nearest, ndays)
            weekday = (first_weekday + target - 1) % 7
            if weekday == 6:  # Saturday: the Friday before, unless that leaves the month
                nearest = target - 1 if target > 1 else target + 2
            elif weekday == 0:  # Sunday: the Monday after, unless that leaves the month
                nearest = target + 1 if target < ndays else target - 2
            else:
                nearest = target
        matches = [False] * (ndays + 1)
        for day in range(1, ndays + 1):
            weekday = (first_weekday + day - 1) % 7
            dom_ok = (
                day in self._dom
                or (self._dom_last and day == ndays)
                or (nearest != 0 and day == nearest)
            )
            if self._dow_nth:
                wanted = self._dow_nth.get(weekday, frozenset())
                # -1 stands for "last": no later same weekday in this month.
                dow_ok = (day - 1) // 7 + 1 in wanted or (-1 in wanted and day + 7 > ndays)
            else:
                dow_ok = weekday in self._dow
            if self._dom_any:
                matches[day] = dow_ok
            elif self._dow_any:
                matches[day] = dom_ok
            else:
                matches[day] = dom_ok or dow_ok
        return matches

    def _day_table(self, ndays: int, first_weekday: int) -> DayTable:
        """``(next, prev)``: the first matching day ``>= i`` / last ``<= i`` (0 = none)."""
        key = ndays * 8 + first_weekday
        table = self._day_tables.get(key)
        if table is None:
            matches = self._day_matches(ndays, first_weekday)
            nxt = [0] * 33
            following = 0
            for day in range(32, 0, -1):
                if day <= ndays and matches[day]:
                    following = day
                nxt[day] = following
            prv = [0] * 33
            preceding = 0
            for day in range(1, 33):
                if day <= ndays and matches[day]:
                    preceding = day
                prv[day] = preceding
            table = (tuple(nxt), tuple(prv))
            self._day_tables[key] = table
        return table

    def fires_from(self, second_of_day: int) -> int:
        """How many of a matching day's wall times are at or after ``second_of_day``
        (0 to 86,400)."""
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self._hour_list, self._minute_list, self._second_list
        later_hours = len(hours) - bisect.bisect_right(hours, hour)
        found = later_hours * len(minutes) * len(seconds)
        if hour in self._hour_list:
            later_minutes = len(minutes) - bisect.bisect_right(minutes, minute)
            found += later_minutes * len(seconds)
            if minute in minutes:
                found += len(seconds) - bisect.bisect_left(seconds, second)
        return found

    def day_matches(self, day: date) -> bool:
        """Whether ``day`` matches the day and month fields."""
        return self.matching_days(day, day + timedelta(days=1)) == 1

    def matching_days(self, first: date, stop: date) -> int:
        """How many dates ``first <= d < stop`` match the day and month fields."""
        count = 0
        year, month = first.year, first.month
        while (year, month) <= (stop.year, stop.month):
            if self._next_month[month] == month:
                ndays = _DAYS_IN_MONTH[month]
                if month == 2 and calendar.isleap(year):
                    ndays = 29
                low = first.day if (year, month) == (first.year, first.month) else 1
                high = stop.day - 1 if (year, month) == (stop.year, stop.month) else ndays
                if high >= low:
                    if self._every_day:
                        count += high - low + 1
                    else:
                        counts = self._day_count_table(
                            ndays, (date(year, month, 1).weekday() + 1) % 7
                        )
                        count += counts[high] - counts[low - 1]
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return count

    def _day_count_table(self, ndays: int, first_weekday: int) -> tuple[int, ...]:
        """Running counts of matching days: entry ``i`` counts days ``1..i``."""
        key = ndays * 8 + first_weekday
        table = self._day_counts.get(key)
        if table is None:
            matches = self._day_matches(ndays, first_weekday)
            running = [0] * (ndays + 1)
            for day in range(1, ndays + 1):
                running[day] = running[day - 1] + matches[day]
            table = tuple(running)
            self._day_counts[key] = table
        return table

    def can_ever_match(self) -> bool:
        """Whether some real date matches: every month shape occurs in a 400-year cycle."""
        if self._every_day:
            return True  # the month table is never empty
        for month in range(1, 13):
            if self._next_month[month] != month:
                continue
            lengths = (28, 29) if month == 2 else (_DAYS_IN_MONTH[month],)
            for ndays in lengths:
                for first_weekday in range(7):
                    if self._day_table(ndays, first_weekday)[0][1]:
                        return True
        return False

    # --- search ----------------------------------------------------------------------------

    def _month_table(self, year: int, month: int) -> DayTable:
        """The day table of one calendar month (cached: the hot path hits few months)."""
        key = year * 16 + month
        table = self._month_tables.get(key)
        if table is None:
            ndays = _DAYS_IN_MONTH[month]
            if month == 2 and calendar.isleap(year):
                ndays = 29
            table = self._day_table(ndays, (date(year, month, 1).weekday() + 1) % 7)
            if len(self._month_tables) >= 512:
                self._month_tables.clear()
            self._month_tables[key] = table
        return table

    def next_wall(self, t: int) -> Wall | None:
        """The first matching wall time ``>= t`` (wall seconds), or ``None`` before year 10000.

        Returns ``(wall, year, month, day, hour, minute, second)``: callers need the fields
        to build datetimes, and have them here for free.

        Classic odometer search: fix the largest field that does not match, reset the
        smaller ones to their minimum, repeat. Overflowing a field (hour 24, day 32,
        month 13) carries into the next larger one through the tables' ``_NONE`` entries.
        """
        days, second_of_day = divmod(t, 86400)
        ordinal = days + _EPOCH_ORDINAL
        if ordinal > _MAX_ORDINAL:
            return None
        if ordinal < 1:
            ordinal, second_of_day = 1, 0
        start = date.fromordinal(ordinal)
        year, month, day = start.year, start.month, start.day
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        next_month = self._next_month
        next_hour = self._next_hour
        next_minute = self._next_minute
        next_second = self._next_second
        every_day = self._every_day
        last_year = min(year + _SEARCH_YEARS, 9999)
        while True:
            wanted = next_month[month]
            if wanted != month:
                if wanted == _NONE:
                    year += 1
                    if year > last_year:
                        return None
                    wanted = next_month[1]
                month, day, hour, minute, second = wanted, 1, 0, 0, 0
            if every_day:
                ndays = _DAYS_IN_MONTH[month]
                if month == 2 and calendar.isleap(year):
                    ndays = 29
                if day > ndays:
                    month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                    continue
            else:
                found = self._month_table(year, month)[0][day]
                if found == 0:
                    month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                    continue
                if found != day:
                    day, hour, minute, second = found, 0, 0, 0
            wanted = next_hour[hour]
            if wanted == _NONE:
                day, hour, minute, second = day + 1, 0, 0, 0
                continue
            if wanted != hour:
                hour, minute, second = wanted, 0, 0
            wanted = next_minute[minute]
            if wanted == _NONE:
                hour, minute, second = hour + 1, 0, 0
                continue
            if wanted != minute:
                minute, second = wanted, 0
            wanted = next_second[second]
            if wanted == _NONE:
                minute, second = minute + 1, 0
                continue
            ordinal = date(year, month, day).toordinal() - _EPOCH_ORDINAL
            wall = ordinal * 86400 + hour * 3600 + minute * 60 + wanted
            return wall, year, month, day, hour, minute, wanted

    def prev_wall(self, t: int) -> Wall | None:
        """The last matching wall time ``<= t``, or ``None`` (the mirror of :meth:`next_wall`).

        Only used to look back for occurrences a ``skip`` policy dropped, so it favours
        plainness over speed.
        """
        days, second_of_day = divmod(t, 86400)
        ordinal = days + _EPOCH_ORDINAL
        if ordinal < 1:
            return None
        if ordinal > _MAX_ORDINAL:
            ordinal, second_of_day = _MAX_ORDINAL, 86399
        start = date.fromordinal(ordinal)
        year, month, day = start.year, start.month, start.day
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        first_year = max(year - _SEARCH_YEARS, 1)
        while True:
            wanted = self._prev_month[month]
            if wanted != month:
                if wanted == _NONE:
                    year -= 1
                    if year < first_year:
                        return None
                    wanted = self._prev_month[12]
                month, day, hour, minute, second = wanted, 31, 23, 59, 59
            found = self._month_table(year, month)[1][min(day, 32)]
            if found == 0:  # nothing left in this month: the end of the one before
                month, day, hour, minute, second = month - 1, 31, 23, 59, 59
                continue
            if found != day:
                day, hour, minute, second = found, 23, 59, 59
            wanted = self._prev_hour[hour]
            if wanted == _NONE:
                day, hour, minute, second = day - 1, 23, 59, 59
                continue
            if wanted != hour:
                hour, minute, second = wanted, 59, 59
            wanted = self._prev_minute[minute]
            if wanted == _NONE:
                if hour == 0:
                    day, hour, minute, second = day - 1, 23, 59, 59
                else:
                    hour, minute, second = hour - 1, 59, 59
                continue
            if wanted != minute:
                minute, second = wanted, 59
            wanted = self._prev_second[second]
            if wanted == _NONE:
                if minute == 0:
                    if hour == 0:
                        day, hour, minute, second = day - 1, 23, 59, 59
                    else:
                        hour, minute, second = hour - 1, 59, 59
                else:
                    minute, second = minute - 1, 59
                continue
            ordinal = date(year, month, day).toordinal() - _EPOCH_ORDINAL
            wall = ordinal * 86400 + hour * 3600 + minute * 60 + wanted
            return wall, year, month, day, hour, minute, wanted


def _prev_table(allowed: frozenset[int], size: int) -> tuple[int, ...]:
    """``table[i]`` = largest allowed value ``<= i``, or ``_NONE``, for ``i`` in 0..size."""
    table = [_NONE] * (size + 1)
    preceding = _NONE
    for value in range(size + 1):
        if value in allowed:
            preceding = value
        table[value] = preceding
    return tuple(table)


def _next_table(allowed: frozenset[int], size: int) -> tuple[int, ...]:
    """``table[i]`` = smallest allowed value ``>= i``, or ``_NONE``, for ``i`` in 0..size."""
    table = [_NONE] * (size + 1)
    following = _NONE
    for value in range(size, -1, -1):
        if value in allowed:
            following = value
        table[value] = following
    return tuple(table)


@lru_cache(maxsize=4096)
def parse_cron(expression: str) -> CronFields:
    """Parse and compile an expression; raise :class:`CronSyntaxError` saying what to fix."""
    text = normalise_expression(expression)
    if not text:
        raise CronSyntaxError("the cron expression is empty: use e.g. '0 9 * * *' or '@daily'")
    fields = text.split(" ")
    if text.startswith("@"):
        raise CronSyntaxError(
            f"unknown cron alias {text!r}: use one of {', '.join(sorted(ALIASES))}"
        )
    if len(fields) not in (5, 6):
        extra = " (a 7th year field is not supported)" if len(fields) == 7 else ""
        raise CronSyntaxError(
            f"cron expression {text!r} has {len(fields)} fields{extra}: use 5 fields "
            "'minute hour day-of-month month day-of-week', or 6 with seconds first"
        )
    names = _SIX if len(fields) == 6 else _FIVE
    sets: dict[str, tuple[frozenset[int], bool, NthMap]] = {}
    for name, field in zip(names, fields, strict=True):
        try:
            sets[name] = _expand_field(name, field)
        except CronSyntaxError as exc:
            raise CronSyntaxError(f"{exc} (in cron expression {text!r})") from None
    dom_text, dow_text = fields[-3], fields[-1]
    # croniter keeps a W day in the plain day list too; W is only allowed alone.
    nearest = _NEAREST.match(dom_text)
    nearest_day = int(nearest.group(1) or nearest.group(2)) if nearest else 0
    dom, dom_last, _ = sets["day of month"]
    dow, _, nth = sets["day of week"]
    compiled = CronFields(
        expression=text,
        seconds=sets["second"][0] if "second" in sets else frozenset({0}),
        minutes=sets["minute"][0],
        hours=sets["hour"][0],
        months=sets["month"][0],
        dom=frozenset() if nearest_day else dom,
        dom_last=dom_last,
        dom_nearest=nearest_day,
        dom_any=dom_text in ("*", "?"),
        dow=dow,
        dow_nth=dict(nth),
        dow_any=dow_text in ("*", "?"),
        has_seconds=len(fields) == 6,
        hour_repeats="*" in fields[-4] or "/" in fields[-4],
    )
    if not compiled.can_ever_match():
        raise CronSyntaxError(
            f"cron expression {text!r} can never fire: no date matches its day-of-month, "
            "month and day-of-week fields together (e.g. 30 February); use 'L' for "
            "'last day of the month'"
        )
    return compiled


NthMap = tuple[tuple[int, frozenset[int]], ...]
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day of month": (1, 31),
    "month": (1, 12),
    "day of week": (0, 6),
}


@lru_cache(maxsize=4096)
def _expand_field(name: str, text: str) -> tuple[frozenset[int], bool, NthMap]:
    """One field's allowed values, whether it has ``L`` (last day), and its ``#``/``L`` days.

    Fields are expanded one at a time, each in an otherwise all-``*`` probe expression:
    croniter's parser is slow (hundreds of microseconds per expression), while real
    schedules reuse a handful of field texts, so this cache makes parsing nearly free.
    Nothing croniter checks spans two fields, except the collapse of a full day-of-month
    list to ``*``, which gives the same set of days.
    """
    normal = _normalise_field(name, text)
    if name == "second":
        probe, index, seconds_first = f"{normal} * * * * *", 5, True
    else:
        parts = ["*"] * 5
        index = _FIVE.index(name)
        parts[index] = normal
        probe, seconds_first = " ".join(parts), False
    try:
        expanded, nth = croniter.expand(probe, second_at_beginning=seconds_first)
    except (CroniterError, ValueError, TypeError, IndexError, KeyError):
        hint = ""
        if name == "day of week" and _QUARTZ_LAST.match(text):
            hint = f" (for 'last <weekday> of the month' write L{text[:-1]})"
        raise CronSyntaxError(
            f"invalid {name} field {text!r}{hint}: allowed are {_FIELD_HELP[name]}, "
            "with lists (1,2), ranges (1-5) and steps (*/15)"
        ) from None
    values: list[int | str] = expanded[index]
    low, high = _RANGES[name]
    allowed = (
        frozenset(range(low, high + 1))
        if values == ["*"]
        else frozenset(v for v in values if isinstance(v, int))
    )
    nth_map: list[tuple[int, frozenset[int]]] = []
    for weekday, which in nth.items():
        nth_map.append((int(weekday), frozenset(-1 if w == "l" else int(w) for w in which)))
    if nth_map and allowed - {weekday for weekday, _ in nth_map}:
        raise CronSyntaxError(
            f"day of week field {text!r} mixes plain weekdays with '#'/'L' weekdays: "
            "write them as separate tasks"
        )
    return allowed, "l" in values, tuple(sorted(nth_map))


def _normalise_field(name: str, field: str) -> str:
    """Reject what croniter would accept with a surprising meaning; keep the rest as is.

    croniter reads an equal range ``5-5`` as the *whole* cycle (every hour!), and
    mis-phases wrap-around ranges with a step (``23-3/2`` gives 23,2); hashed ``H`` and
    random ``R`` values would make a schedule irreproducible.
    """
    items = []
    for item in field.split(","):
        if _HASHED.match(item):
            raise CronSyntaxError(
                f"{name} field {field!r} uses a hashed/random value ({item!r}); chronolog "
                "schedules must be reproducible: write the value explicitly"
            )
        match = _RANGE.match(item)
        if match:
            low, high = _value(name, match["low"]), _value(name, match["high"])
            if low is not None and low == high:
                item = match["low"]  # "5-5" and "5-5/2" both mean just 5
            elif low is not None and high is not None and low > high and match["step"]:
                raise CronSyntaxError(
                    f"{name} field {field!r}: a wrap-around range with a step ({item!r}) is "
                    "ambiguous; split it, e.g. '22-23/2,0-4/2'"
                )
        items.append(item)
    return ",".join(items)


def _value(name: str, token: str) -> int | None:
    """The number a range bound stands for (names included), ``None`` when not plain."""
    token = token.lower()
    if token.isdigit():
        return int(token)
    if name == "month" and token in _MONTH_NAMES:
        return _MONTH_NAMES.index(token) + 1
    if name == "day of week" and token in _DAY_NAMES:
        return _DAY_NAMES.index(token)
    return None


__all__ = [
    "ALIASES",
    "CronFields",
    "CronSyntaxError",
    "Wall",
    "normalise_expression",
    "parse_cron",
]
