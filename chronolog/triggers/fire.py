"""The value a trigger produces (:class:`Fire`) and its deterministic jitter."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import msgspec

_ZERO = timedelta(0)
_TWO_64 = float(1 << 64)


class Fire(msgspec.Struct, frozen=True, gc=False):
    """One instant a trigger chose.

    ``nominal`` is the instant the rules picked (aware UTC); it names the execution and is
    what the next fire is computed from. ``at`` is ``nominal`` plus the task's deterministic
    jitter (equal when there is none). ``local`` is ``nominal`` as wall time in the spec's
    zone. ``notes`` says, in words, where a DST or month-end rule moved, merged, doubled or
    skipped something, e.g. ``"02:30 Europe/Berlin does not exist on 2027-03-28: fires at
    03:00"``.
    """

    nominal: datetime
    at: datetime
    local: datetime
    notes: tuple[str, ...] = ()


def jitter_for(seed: str, nominal: datetime, jitter_seconds: float) -> timedelta:
    """A delay in ``[0, jitter_seconds]`` fixed by ``(seed, nominal)``.

    A hash rather than a random generator, so that replaying a task's log (or asking twice)
    gives the same instants; different tasks (seeds) spread out over the window. Only
    positive delays: a task never runs before its nominal time.
    """
    if jitter_seconds <= 0.0:
        return _ZERO
    key = f"{seed}\x00{nominal.timestamp()!r}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / _TWO_64
    return timedelta(microseconds=int(fraction * jitter_seconds * 1_000_000))


__all__ = ["Fire", "jitter_for"]
