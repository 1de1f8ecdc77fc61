"""Turning one wall time into instants under the DST policies, and saying so in words.

A wall time in a zone happens once (normal), never (it sits in a spring-forward gap) or
twice (it sits in a fall-back repeated hour). The policies decide what each case fires:

* gap, ``shift_forward``: one fire at the first instant after the gap (the transition);
* gap, ``skip``: nothing;
* repeated, ``first`` / ``last`` / ``both``: the first copy, the second copy, or both.

``auto`` is resolved by the caller (cron or interval) before it gets here.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from chronolog.triggers.zones import EPOCH_NAIVE, EPOCH_UTC, transition_between, wall_offsets

#: ``auto`` resolved: which copies of a repeated wall time fire.
FoldChoice = Literal["first", "last", "both"]


def format_wall(wall: datetime) -> str:
    """``02:30`` (or ``02:30:15`` when the seconds matter)."""
    return f"{wall:%H:%M:%S}" if wall.second else f"{wall:%H:%M}"


def format_offset(seconds: int) -> str:
    """``UTC+05:45`` / ``UTC-04:00``."""
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def gap_note(zone_name: str, wall: datetime, fires_at_wall: datetime) -> str:
    """Note for a nonexistent wall time moved to the end of the gap."""
    return (
        f"{format_wall(wall)} {zone_name} does not exist on {wall:%Y-%m-%d}: "
        f"fires at {format_wall(fires_at_wall)}"
    )


def skipped_gap_note(zone_name: str, walls: list[datetime]) -> str:
    """Note, carried by the next fire, for nonexistent wall times dropped by ``skip``."""
    first, last = walls[0], walls[-1]
    if first.date() != last.date():
        return (
            f"{len(walls)} fires skipped because their wall times do not exist in {zone_name} "
            f"({first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}; nonexistent='skip')"
        )
    if len(walls) == 1:
        return (
            f"{format_wall(first)} {zone_name} does not exist on {first:%Y-%m-%d}: "
            "skipped (nonexistent='skip')"
        )
    return (
        f"{format_wall(first)}-{format_wall(last)} {zone_name} do not exist on "
        f"{first:%Y-%m-%d}: {len(walls)} fires skipped (nonexistent='skip')"
    )


def fold_note(
    zone_name: str, wall: datetime, choice: FoldChoice, copy: int, offset: int, why: str = ""
) -> str:
    """Note for a fire at a repeated wall time; ``copy`` is 0 (first) or 1 (second)."""
    head = f"{format_wall(wall)} {zone_name} happens twice on {wall:%Y-%m-%d}: "
    which = "first" if copy == 0 else "second"
    if choice == "both":
        return f"{head}fires at both{why}; this is the {which} ({format_offset(offset)})"
    return f"{head}fires once, at the {which} ({format_offset(offset)})"


def gap_end(zone: ZoneInfo, wall_seconds: float, off0: int, off1: int) -> int:
    """The transition instant of the gap that swallows ``wall_seconds`` (a wall value).

    With ``off0 < off1`` the instant ``wall - off1`` lies before the transition and
    ``wall - off0`` after it, so the transition is bracketed and bisection finds it.
    """
    return transition_between(zone, math.floor(wall_seconds - off1), math.ceil(wall_seconds - off0))


def fold_window(zone: ZoneInfo, wall_seconds: int, off0: int, off1: int) -> tuple[int, int]:
    """Wall bounds ``[start, end)`` of the repeated hour containing ``wall_seconds``."""
    transition = transition_between(zone, wall_seconds - off0, wall_seconds - off1)
    return transition + off1, transition + off0


ResolvedFire = tuple[datetime, tuple[str, ...]]


def resolve_wall(
    zone: ZoneInfo,
    zone_name: str,
    wall: datetime,
    nonexistent: str,
    fold: FoldChoice,
) -> tuple[list[ResolvedFire], str | None]:
    """The fires (ascending aware-UTC instants with notes) for one naive wall time.

    The second item is a note for a wall time dropped by ``nonexistent='skip'``, which the
    caller attaches to the next fire it returns.
    """
    off0, off1 = wall_offsets(zone, wall)
    utc_wall = wall.replace(tzinfo=EPOCH_UTC.tzinfo)
    if off0 == off1:
        return [(utc_wall - timedelta(seconds=off0), ())], None
    if off0 < off1:
        if nonexistent == "skip":
            return [], skipped_gap_note(zone_name, [wall])
        wall_seconds = (wall - EPOCH_NAIVE).total_seconds()
        instant = EPOCH_UTC + timedelta(seconds=gap_end(zone, wall_seconds, off0, off1))
        note = gap_note(zone_name, wall, instant.astimezone(zone))
        return [(instant, (note,))], None
    fires: list[ResolvedFire] = []
    if fold in ("first", "both"):
        note = fold_note(zone_name, wall, fold, 0, off0)
        fires.append((utc_wall - timedelta(seconds=off0), (note,)))
    if fold in ("last", "both"):
        note = fold_note(zone_name, wall, fold, 1, off1)
        fires.append((utc_wall - timedelta(seconds=off1), (note,)))
    return fires, None


__all__ = [
    "FoldChoice",
    "ResolvedFire",
    "fold_note",
    "fold_window",
    "format_offset",
    "format_wall",
    "gap_end",
    "gap_note",
    "resolve_wall",
    "skipped_gap_note",
]
