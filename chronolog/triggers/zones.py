"""Time zones: loading them, naming the machine's zone, and finding DST transitions.

Everything here works on whole seconds since the Unix epoch: tzdata transitions and
offsets are whole seconds, and integer arithmetic is both exact and fast. A *wall* value
is the naive local time read as if it were UTC (``wall = instant + utc_offset``).
"""

from __future__ import annotations

import difflib
import os
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from chronolog.triggers.localtime import LOCALTIME, zone_of_copy

EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
ONE_SECOND = timedelta(seconds=1)

# Zones whose offset never changed: the engine skips all DST handling for them.
_FIXED_NAMES = frozenset(
    {"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu"}
)


#: Debian's name of the machine's zone, read when ``/etc/localtime`` is no symlink.
TIMEZONE_FILE = Path("/etc/timezone")


class UnknownZoneError(LookupError):
    """The name is not an IANA zone known to this machine's tz database."""


@lru_cache(maxsize=1024)
def get_zone(name: str) -> ZoneInfo:
    """Return the (cached) ``ZoneInfo`` for an IANA name; raise :class:`UnknownZoneError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, IsADirectoryError) as exc:
        # ValueError/IsADirectoryError: keys like "../x" or "Europe" that are paths, not zones.
        raise UnknownZoneError(name) from exc


def unknown_zone_message(name: object) -> str:
    """What to tell someone who named an unknown zone: close names, then the usual form."""
    close = suggest_zones(name) if isinstance(name, str) else []
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return (
        f"unknown time zone {name!r}: {hint}use an IANA name such as 'Europe/Berlin' "
        "or 'UTC' (zoneinfo.available_timezones() lists them)"
    )


@lru_cache(maxsize=1)
def _all_zone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


def suggest_zones(name: str) -> list[str]:
    """Up to three known zone names that look like ``name`` (for error messages)."""
    names = _all_zone_names()
    by_lower = {n.lower(): n for n in names}
    if name.lower() in by_lower:
        return [by_lower[name.lower()]]
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


@lru_cache(maxsize=1024)
def fixed_offset(name: str) -> int | None:
    """The constant UTC offset in seconds of a zone that never changes, else ``None``."""
    if name in _FIXED_NAMES or name.startswith("Etc/"):
        offset = datetime(2000, 1, 1, tzinfo=get_zone(name)).utcoffset()
        return None if offset is None else offset // ONE_SECOND
    return None


def offset_at(zone: ZoneInfo, instant: int) -> int:
    """UTC offset in seconds of ``zone`` at the instant ``instant`` (Unix seconds)."""
    offset = (EPOCH_UTC + timedelta(seconds=instant)).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always answers for aware datetimes
    return offset // ONE_SECOND


def wall_offsets(zone: ZoneInfo, wall: datetime) -> tuple[int, int]:
    """The offsets (seconds) a naive wall time gets with ``fold=0`` and ``fold=1``.

    Equal offsets: the wall time happens exactly once. ``fold0 < fold1``: it falls in a gap
    (spring forward) and never happens. ``fold0 > fold1``: it happens twice (fall back),
    first with ``fold0``, then with ``fold1``. This is PEP 495's contract for ``fold``.
    """
    # Positional construction is several times cheaper than datetime.replace(...).
    fields = (wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second)
    off0 = datetime(*fields, wall.microsecond, zone).utcoffset()
    off1 = datetime(*fields, wall.microsecond, zone, fold=1).utcoffset()
    assert off0 is not None and off1 is not None
    return off0 // ONE_SECOND, off1 // ONE_SECOND


def transition_between(zone: ZoneInfo, lo: int, hi: int) -> int:
    """The first instant in ``(lo, hi]`` whose offset differs from the offset at ``lo``.

    The caller guarantees the offset at ``hi`` differs; bisection needs ~12 probes for an
    hour-long window, and only runs for wall times that sit in a gap or a repeated hour.
    """
    before = offset_at(zone, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset_at(zone, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


@lru_cache(maxsize=4096)
def transitions_in_year(name: str, year: int) -> tuple[tuple[int, int, int], ...]:
    """``(instant, offset_before, offset_after)`` for every offset change in a UTC year.

    Found by sampling every hour and bisecting the hours where the offset changed; tzdata
    has no zone whose offset changes and changes back within one hour.
    """
    if fixed_offset(name) is not None:
        return ()
    zone = get_zone(name)
    start = int((datetime(year, 1, 1, tzinfo=UTC) - EPOCH_UTC).total_seconds())
    end = int((datetime(year + 1, 1, 1, tzinfo=UTC) - EPOCH_UTC).total_seconds())
    found: list[tuple[int, int, int]] = []
    # Each year covers (start, end]; an instant exactly at ``start`` belongs to the year before.
    t = start
    previous = offset_at(zone, t)
    while t < end:
        nxt = min(t + 3600, end)
        current = offset_at(zone, nxt)
        if current != previous:
            found.append((transition_between(zone, t, nxt), previous, current))
            previous = current
        t = nxt
    return tuple(found)


def local_zone_name() -> str:
    """The machine's IANA zone name, or ``"UTC"`` when it cannot be determined.

    Looks at ``TZ`` (``Europe/Berlin``, ``:Europe/Berlin`` or a path into a zoneinfo
    tree), then the ``/etc/localtime`` symlink, then ``/etc/timezone``, then, when
    ``/etc/localtime`` is a copy of a zone file (a container's), the zone with the same
    bytes. Every candidate must load as a ``ZoneInfo``; POSIX rule strings such as
    ``CET-1CEST`` are ignored.
    """
    candidates: list[str] = []
    tz_env = os.environ.get("TZ", "").strip()
    if tz_env:
        candidates.append(_zone_name_from_path(tz_env.lstrip(":")))
    linked = True
    try:
        candidates.append(_zone_name_from_path(os.readlink(LOCALTIME)))
    except OSError:  # a copy of a zone file (or none at all)
        linked = False
    try:
        text = TIMEZONE_FILE.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        pass
    else:
        candidates.append(text)
    for name in candidates:
        if _loads(name):
            return name
    if not linked:
        copied = zone_of_copy(LOCALTIME)
        if copied is not None and _loads(copied):
            return copied
    return "UTC"


def _loads(name: str) -> bool:
    """Whether ``name`` is a zone this machine can load."""
    if not name:
        return False
    try:
        get_zone(name)
    except UnknownZoneError:
        return False
    return True


#: How long :func:`machine_zone` trusts its last look at the system files (seconds).
MACHINE_ZONE_TTL = 60.0
_machine_zone: tuple[str, float, str] | None = None  # (TZ value, checked at, zone name)


def machine_zone() -> str:
    """:func:`local_zone_name`, re-read at most once a minute (and whenever ``TZ`` changes).

    Scheduling calls ask for the default zone on every call; reading ``/etc/localtime``
    and ``/etc/timezone`` each time cost more than the rest of the validation together.
    """
    global _machine_zone
    tz_env = os.environ.get("TZ", "")
    now = time.monotonic()
    cached = _machine_zone
    if cached is not None and cached[0] == tz_env and now - cached[1] < MACHINE_ZONE_TTL:
        return cached[2]
    name = local_zone_name()
    _machine_zone = (tz_env, now, name)
    return name


def _zone_name_from_path(value: str) -> str:
    """``/usr/share/zoneinfo/Europe/Berlin`` → ``Europe/Berlin``; names pass through."""
    marker = "zoneinfo/"
    index = value.rfind(marker)
    if index >= 0:
        return value[index + len(marker) :]
    return "" if value.startswith("/") else value


__all__ = [
    "EPOCH_NAIVE",
    "EPOCH_UTC",
    "ONE_SECOND",
    "UTC",
    "UnknownZoneError",
    "fixed_offset",
    "get_zone",
    "local_zone_name",
    "offset_at",
    "suggest_zones",
    "transition_between",
    "transitions_in_year",
    "wall_offsets",
]
