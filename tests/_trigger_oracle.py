"""A brute-force, independent model of trigger schedules, for property tests.

It shares no code with ``chronolog.triggers``: its own cron parser and field matcher,
and its own reading of the DST rules. Where production searches wall-clock fields and
maps wall times back to instants, the oracle walks *real* time forward (UTC minutes, or
seconds for 6-field expressions), converts each instant to the zone with ``zoneinfo``, and
applies the rules literally:

* a wall time is *repeated* when the walk sees it twice; which copies fire is the policy;
* a wall time is *nonexistent* when the walk jumps over it; under ``shift_forward`` a
  matching jumped-over wall time fires at the first instant after the jump.

Slow by design; keep windows to a few days of minutes or a few hours of seconds.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _number(token: str, names: list[str] | None, first: int) -> int:
    token = token.lower()
    if names and token in names:
        return names.index(token) + first
    return int(token)


def _values(text: str, low: int, high: int, names: list[str] | None = None) -> set[int]:
    """Expand one plain cron field: ``*``, ``?``, lists, ranges (may wrap), steps."""
    first = 1 if names is _MONTHS else 0
    out: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            a, b = low, high
        elif "-" in base:
            a_text, b_text = base.split("-")
            a, b = _number(a_text, names, first), _number(b_text, names, first)
        else:
            a = _number(base, names, first)
            b = high if step_text else a
        if a <= b:
            out.update(range(a, b + 1, step))
        elif step == 1:  # wrap-around range, e.g. 22-2 or fri-mon
            out.update(range(a, high + 1))
            out.update(range(low, b + 1))
        else:
            raise NotImplementedError(f"wrap-around range with a step: {item!r}")
    return out


@dataclass
class OracleCron:
    text: str
    seconds: set[int]
    minutes: set[int]
    hours: set[int]
    months: set[int]
    hour_text: str
    dom_any: bool
    dow_any: bool
    dom: set[int] = field(default_factory=set)
    dom_last: bool = False
    dom_nearest: int = 0
    dow: set[int] = field(default_factory=set)
    dow_nth: dict[int, set[int]] = field(default_factory=dict)  # weekday -> {1..5, -1=last}
    has_seconds: bool = False

    def day_matches(self, d: date) -> bool:
        ndays = calendar.monthrange(d.year, d.month)[1]
        dom_ok = d.day in self.dom or (self.dom_last and d.day == ndays)
        if self.dom_nearest:
            target = min(self.dom_nearest, ndays)
            wd = date(d.year, d.month, target).weekday()  # Monday = 0
            if wd == 5:
                nearest = target - 1 if target > 1 else target + 2
            elif wd == 6:
                nearest = target + 1 if target < ndays else target - 2
            else:
                nearest = target
            dom_ok = dom_ok or d.day == nearest
        cron_wd = d.isoweekday() % 7
        if self.dow_nth:
            wanted = self.dow_nth.get(cron_wd, set())
            nth = (d.day - 1) // 7 + 1
            dow_ok = nth in wanted or (-1 in wanted and d.day + 7 > ndays)
        else:
            dow_ok = cron_wd in self.dow
        if self.dom_any and self.dow_any:
            return True
        if self.dom_any:
            return dow_ok
        if self.dow_any:
            return dom_ok
        return dom_ok or dow_ok

    def matches(self, wall: datetime) -> bool:
        return (
            wall.second in self.seconds
            and wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self.day_matches(wall.date())
        )


def parse(expression: str) -> OracleCron:
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    parts = text.split(" ")
    has_seconds = len(parts) == 6
    if has_seconds:
        sec_text, parts = parts[0], parts[1:]
    else:
        sec_text = "0"
    minute, hour, dom_text, month, dow_text = parts
    cron = OracleCron(
        text=text,
        seconds=_values(sec_text, 0, 59),
        minutes=_values(minute, 0, 59),
        hours=_values(hour, 0, 23),
        months=_values(month, 1, 12, _MONTHS),
        hour_text=hour,
        dom_any=dom_text in ("*", "?"),
        dow_any=dow_text in ("*", "?"),
        has_seconds=has_seconds,
    )
    for item in dom_text.split(","):
        low = item.lower()
        if low == "l":
            cron.dom_last = True
        elif low.endswith("w") or low.startswith("w"):
            cron.dom_nearest = int(low.strip("w"))
        else:
            cron.dom |= _values(item, 1, 31)
    for item in dow_text.split(","):
        low = item.lower()
        if "#" in low:
            day_text, nth = low.split("#")
            for d in _values(day_text, 0, 6, _DAYS):
                cron.dow_nth.setdefault(d % 7, set()).add(int(nth))
        elif low.startswith("l"):
            d = _number(low[1:], _DAYS, 0) % 7
            cron.dow_nth.setdefault(d, set()).add(-1)
        else:
            cron.dow |= {d % 7 for d in _values(item, 0, 6, _DAYS)}
    return cron


@dataclass(frozen=True)
class OracleFire:
    instant: datetime
    ruled: bool  # a DST rule moved or doubled it (the production fire has notes)


def _wall(u: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(u, zone).replace(tzinfo=None, fold=0)


def cron_fires(
    expression: str,
    zone_name: str,
    after: datetime,
    until: datetime,
    *,
    nonexistent: str = "shift_forward",
    ambiguous: str = "auto",
    margin: timedelta = timedelta(hours=3),
) -> list[OracleFire]:
    """Every fire with ``after < instant <= until``, by walking real time."""
    cron = parse(expression)
    zone = ZoneInfo(zone_name)
    step = 1 if cron.has_seconds else 60
    lo = int((after - margin).timestamp()) // step * step
    hi = int((until + margin).timestamp()) // step * step + step
    walk = [(u, _wall(u, zone)) for u in range(lo, hi + 1, step)]
    seen: dict[datetime, list[int]] = {}
    for u, wall in walk:
        seen.setdefault(wall, []).append(u)
    policy = ambiguous
    if policy == "auto":
        policy = "both" if ("*" in cron.hour_text or "/" in cron.hour_text) else "first"
    fires: dict[int, bool] = {}
    for index, (u, wall) in enumerate(walk):
        if cron.matches(wall):
            copies = seen[wall]
            if len(copies) == 1:
                fires[u] = fires.get(u, False)
            else:
                first = copies[0] == u
                if (
                    policy == "both"
                    or (policy == "first" and first)
                    or (policy == "last" and not first)
                ):
                    fires[u] = True
        if index and nonexistent == "shift_forward":
            previous = walk[index - 1][1]
            jumped = previous + timedelta(seconds=step)
            while jumped < wall:
                if cron.matches(jumped):
                    fires[u] = True  # the first instant after the jump
                    break
                jumped += timedelta(seconds=step)
    low_ts, high_ts = after.timestamp(), until.timestamp()
    return [
        OracleFire(datetime.fromtimestamp(u, UTC), ruled)
        for u, ruled in sorted(fires.items())
        if low_ts < u <= high_ts
    ]


def _months_later(d: date, months: int) -> tuple[date, bool]:
    index = d.month - 1 + months
    year, month = d.year + index // 12, index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(d.day, last)), d.day > last


def wall_instants(
    zone_name: str, wall: datetime, *, nonexistent: str, ambiguous: str
) -> list[OracleFire]:
    """Fires of one whole-minute wall time, by walking UTC minutes across +-15 hours."""
    zone = ZoneInfo(zone_name)
    guess = int(wall.replace(tzinfo=UTC).timestamp())
    walk = [(u, _wall(u, zone)) for u in range(guess - 15 * 3600, guess + 15 * 3600 + 1, 60)]
    hits = [u for u, w in walk if w == wall]
    if not hits:
        if nonexistent == "skip":
            return []
        after_gap = next(u for u, w in walk if w > wall)
        return [OracleFire(datetime.fromtimestamp(after_gap, UTC), True)]
    if len(hits) == 1:
        return [OracleFire(datetime.fromtimestamp(hits[0], UTC), False)]
    chosen = {"auto": hits[:1], "first": hits[:1], "last": hits[1:], "both": hits}[ambiguous]
    return [OracleFire(datetime.fromtimestamp(u, UTC), True) for u in chosen]


def calendar_interval_fires(
    start: datetime,
    zone_name: str,
    every: int,
    unit: str,
    count: int,
    *,
    nonexistent: str = "shift_forward",
    ambiguous: str = "auto",
    month_end: str = "clamp",
) -> list[OracleFire]:
    """The first ``count`` fires of a days/weeks/months interval (``start`` is k = 0)."""
    zone = ZoneInfo(zone_name)
    anchor = start.astimezone(zone).replace(tzinfo=None, fold=0)
    out = [OracleFire(start.astimezone(UTC), False)]
    k = 1
    while len(out) < count:
        if unit == "months":
            day, clamped = _months_later(anchor.date(), k * every)
            if clamped and month_end == "skip":
                k += 1
                continue
        else:
            day = anchor.date() + timedelta(days=k * every * (7 if unit == "weeks" else 1))
            clamped = False
        wall = datetime.combine(day, anchor.time())
        for fire in wall_instants(zone_name, wall, nonexistent=nonexistent, ambiguous=ambiguous):
            out.append(OracleFire(fire.instant, fire.ruled or clamped))
        k += 1
    return out[:count]


def transitions(zone_name: str, first_year: int, last_year: int) -> list[datetime]:
    """Offset changes between two years, found by daily sampling and bisection."""
    zone = ZoneInfo(zone_name)

    def offset(u: int) -> timedelta | None:
        return datetime.fromtimestamp(u, zone).utcoffset()

    u = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(last_year + 1, 1, 1, tzinfo=UTC).timestamp())
    found: list[datetime] = []
    while u < end:
        nxt = u + 86400
        if offset(u) != offset(nxt):
            lo, hi = u, nxt
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == offset(lo):
                    lo = mid
                else:
                    hi = mid
            found.append(datetime.fromtimestamp(hi, UTC))
        u = nxt
    return found
