"""Bounds on the values callers hand in, and the checks every entry point shares.

A value that passes its type check can still be one that nothing downstream represents:
``timeout=1e18`` overflows a ``timedelta`` when the job actor arms the deadline, a
priority of ``2**40`` does not fit the projection's INTEGER column, and a string holding
a lone surrogate (``"\\ud800"``) cannot be written to the log as UTF-8. Accepted at the
facade, such a value would reach the log and fail each time it is replayed. These checks
run before anything is sent, so the caller gets a typed error naming the parameter and
the log is untouched.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TypeGuard

from chronolog.errors import ValidationError

#: The longest duration a task's policies or a trigger's jitter may name: 100 years.
#: Far beyond any real timeout or back-off, and far inside what ``timedelta`` and a
#: deadline computed from today can hold.
MAX_SECONDS = 100 * 366 * 86_400

#: Upper bound for retries, concurrency and catch-up limits: larger values are mistakes.
MAX_POLICY_COUNT = 10_000

#: The largest value an INTEGER column of the projections holds (counts, run limits,
#: priorities).
MAX_INT32 = 2**31 - 1

#: The largest value a BIGINT column holds (byte sizes).
MAX_INT64 = 2**63 - 1

#: The longest retention a cleanup may name, in days (the same 100 years).
MAX_RETENTION_DAYS = MAX_SECONDS // 86_400

#: The longest glob a cleanup's pattern or exclusion may be.
MAX_GLOB_LENGTH = 1_024

#: The earliest and latest wall times an instant may name (in any zone). A day inside
#: ``datetime``'s own range and after the Unix epoch, so that reading the wall time in a
#: zone, stepping a fire back by the commit lead, or forward by a month, cannot leave it.
EARLIEST_WALL_TIME = datetime(1970, 1, 2)
LATEST_WALL_TIME = datetime(9998, 12, 31)


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8: it holds no lone surrogate (which is how
    Python carries undecodable bytes, e.g. from ``os.fsdecode``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: object, field: str, *, max_length: int, allow_empty: bool = False) -> str:
    """``value`` if it is a string of at most ``max_length`` characters that UTF-8 can
    carry (and, unless ``allow_empty``, has something besides whitespace), else raise."""
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a string, got {type(value).__name__}", details={"field": field}
        )
    if len(value) > max_length or (not allow_empty and not value.strip()):
        shape = "a string" if allow_empty else "a non-empty string"
        raise ValidationError(
            f"{field} must be {shape} of at most {max_length} characters",
            details={"field": field},
        )
    if not is_utf8(value):
        raise ValidationError(
            f"{field} holds characters that are not valid Unicode text (a lone surrogate, "
            "as from undecodable bytes): pass it as proper text",
            details={"field": field},
        )
    return value


def _number_up_to(value: object, highest: float) -> TypeGuard[float]:
    """Whether ``value`` is a finite number (not a bool) from 0 to ``highest``."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and 0 <= value <= highest
    )


def check_seconds(value: object, field: str) -> float:
    """``value`` if it is a finite number of seconds from 0 to :data:`MAX_SECONDS`."""
    if not _number_up_to(value, MAX_SECONDS):
        raise ValidationError(
            f"{field} must be a number of seconds from 0 to {MAX_SECONDS} (100 years), "
            f"got {value!r}",
            details={"field": field},
        )
    return value


def instant_in_range(value: datetime) -> bool:
    """Whether ``value``'s wall time lies from :data:`EARLIEST_WALL_TIME` to
    :data:`LATEST_WALL_TIME` (its offset, if any, is ignored: the bounds leave a day)."""
    return EARLIEST_WALL_TIME <= value.replace(tzinfo=None) <= LATEST_WALL_TIME


def instant_range_message(field: str, value: datetime) -> str:
    """What an error about an instant out of range says."""
    return (
        f"{field} must lie between {EARLIEST_WALL_TIME.date()} and {LATEST_WALL_TIME.date()}, "
        f"got {value.isoformat()}"
    )


def check_retention_days(value: object) -> float:
    """``value`` if it is a finite number of days from 0 to :data:`MAX_RETENTION_DAYS`."""
    if not _number_up_to(value, MAX_RETENTION_DAYS):
        raise ValidationError(
            f"retention_days must be a finite number of days from 0 to {MAX_RETENTION_DAYS} "
            f"(100 years), got {value!r}",
            details={"field": "retention_days"},
        )
    return float(value)


def check_int(value: object, field: str, *, minimum: int, maximum: int) -> int:
    """``value`` if it is an integer (not a bool) from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(
            f"{field} must be an integer from {minimum} to {maximum}, got {value!r}",
            details={"field": field},
        )
    return value


__all__ = [
    "EARLIEST_WALL_TIME",
    "LATEST_WALL_TIME",
    "MAX_GLOB_LENGTH",
    "MAX_INT32",
    "MAX_INT64",
    "MAX_POLICY_COUNT",
    "MAX_RETENTION_DAYS",
    "MAX_SECONDS",
    "check_int",
    "check_retention_days",
    "check_seconds",
    "check_text",
    "instant_in_range",
    "instant_range_message",
    "is_utf8",
]
