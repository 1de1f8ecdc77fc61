"""Retention policies: a pure choice of files to remove from a list of file facts.

No I/O and no clock: the caller passes the facts (in walk order) and ``now``. The three
limits each pick a *suffix* of the same newest-first order, so applying them
independently and taking the union is the same as applying them one after another.

- **age**: the timestamp is strictly older than ``now - retention_days``; a future
  timestamp is never old.
- **count**: everything but the newest ``max_files``.
- **size**: walking newest first, every file from the one that takes the running total
  above ``max_total_bytes`` (that is, the oldest are removed until the total fits).

Ties in the newest-first order are broken by walk order: of two files with the same
timestamp, the one whose path sorts first counts as newer and is kept.

Selecting from a *subset* of the files (a run cut short by a budget) never selects a file
that the full set would keep: a file with N newer files in the subset has at least N in
the full set, and likewise for the running total. Partial runs are therefore safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from chronolog.housekeeping.model import CleanupRules, RemovalReason

_NS_PER_DAY = 86_400 * 10**9


class FileFact(msgspec.Struct, frozen=True, gc=False):
    """What the walk learned about one matching regular file."""

    #: Path relative to the registered directory (``surrogateescape`` str).
    rel: str
    #: Index of the containing directory in the walk's directory table.
    dir_index: int
    #: The file's name in that directory.
    name: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    #: Part of the identity: a new inode that reuses a freed number has a later ctime.
    ctime_ns: int
    #: The timestamp named by ``age_basis``, in ns since the epoch.
    ts_ns: int


def retention_ns(retention_days: float) -> int:
    """``retention_days`` in whole nanoseconds (the unit every age comparison uses)."""
    return round(retention_days * _NS_PER_DAY)


def select(
    facts: Sequence[FileFact], rules: CleanupRules, now_ns: int
) -> list[tuple[RemovalReason, ...]]:
    """Return, for each fact, the reasons it is removed (an empty tuple keeps it)."""
    n = len(facts)
    by_age = [False] * n
    by_count = [False] * n
    by_size = [False] * n
    if rules.retention_days is not None:
        threshold = now_ns - retention_ns(rules.retention_days)
        by_age = [fact.ts_ns < threshold for fact in facts]
    if rules.max_files is not None or rules.max_total_bytes is not None:
        newest_first = sorted(range(n), key=lambda i: (-facts[i].ts_ns, i))
        if rules.max_files is not None:
            for i in newest_first[rules.max_files :]:
                by_count[i] = True
        if rules.max_total_bytes is not None:
            total = 0
            for i in newest_first:
                total += facts[i].size
                if total > rules.max_total_bytes:
                    by_size[i] = True
    return [
        _REASONS[age | count << 1 | size << 2]
        for age, count, size in zip(by_age, by_count, by_size, strict=True)
    ]


def _reasons(bits: int) -> tuple[RemovalReason, ...]:
    names: tuple[RemovalReason, ...] = ("age", "count", "size")
    return tuple(name for k, name in enumerate(names) if bits >> k & 1)


# Indexed by age | count << 1 | size << 2; shared tuples keep 200k-file runs cheap.
_REASONS: tuple[tuple[RemovalReason, ...], ...] = tuple(_reasons(bits) for bits in range(8))

__all__ = ["FileFact", "retention_ns", "select"]
