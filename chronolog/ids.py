"""Fresh ids for tasks, executions and correlations.

An id is 32 hex characters, the shape of ``uuid4().hex``: 64 random bits drawn once per
process, then a 64-bit counter. Two processes (or a parent and its forked child, which
draws anew) share a prefix with probability 2**-64, and one process never repeats a
counter value, so ids do not collide. Drawing 128 fresh random bits per id instead costs
a system call each time, which on a busy scheduler means giving up the GIL and waiting to
get it back: thousands of times per second, that showed as latency.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter: itertools.count[int] = itertools.count()


def _draw() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count()


def new_id() -> str:
    """A new id, unique across processes and restarts (32 lowercase hex characters)."""
    # next() on an itertools.count is atomic under the GIL: no lock needed.
    return f"{_prefix}{next(_counter):016x}"


_draw()
os.register_at_fork(after_in_child=_draw)
