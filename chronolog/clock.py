"""Time sources. Nothing in chronolog reads the wall clock except through a :class:`Clock`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Protocol

import msgspec

#: A datetime that must carry a zone; decoding a naive one from the log fails, so the log
#: can never hold an ambiguous instant.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Clock(Protocol):
    """Where chronolog gets the time: aware UTC wall time plus a monotonic reading."""

    def now(self) -> datetime:
        """The current instant as an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (only differences are meaningful)."""
        ...

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on ``condition`` (held by the caller) for at most ``timeout`` clock seconds.

        Returns early when the condition is notified, or when the clock itself moves in a
        way that may make something due (a fake clock being advanced).
        """
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        condition.wait(timeout)


def ensure_utc(value: datetime, name: str = "datetime") -> datetime:
    """Return ``value`` converted to UTC, rejecting naive datetimes."""
    if value.tzinfo is None or value.utcoffset() is None:
        from chronolog.errors import ValidationError

        raise ValidationError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)
