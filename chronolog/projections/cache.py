"""The projector's memory of committed rows, so a batch rarely has to read DuckDB first.

Folding a batch needs the current row of every task, execution, registration and run it
touches. Most were written by the last few batches (a task fires again, an execution
finishes), so the projector keeps the committed states of recently touched rows. While the
cache is *complete* for a table (it has seen that table from empty and evicted nothing) a
miss means "no such row", which spares a rebuild every lookup and every delete of new keys.

The fold mutates cached states in place; if a batch fails, the projector clears the cache,
since those states may no longer match what DuckDB committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Generic, TypeVar

from chronolog.projections.apply import (
    BatchFold,
    ExecutionState,
    RegistrationState,
    RunState,
    TaskState,
)

_State = TypeVar("_State")


class TableCache(Generic[_State]):
    """Committed row states of one table, least recently touched first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[str, _State] = {}
        self.complete = False

    def lookup(self, keys: Iterable[str]) -> tuple[dict[str, _State], set[str]]:
        """Split ``keys`` into cached states and misses."""
        rows = self.rows
        hits: dict[str, _State] = {}
        misses: set[str] = set()
        for key in keys:
            state = rows.get(key)
            if state is None:
                misses.add(key)
            else:
                hits[key] = state
        return hits, misses

    def remember(self, states: dict[str, _State]) -> None:
        """Store a batch's final states as the most recently used; evict beyond the limit."""
        rows = self.rows
        for key, state in states.items():
            rows.pop(key, None)
            rows[key] = state
        # Never evict what was just remembered: the next batch may be prepared before this
        # one commits, and must find these states here rather than read stale rows.
        excess = min(len(rows) - self.limit, len(rows) - len(states))
        if excess > 0:
            self.complete = False
            for key in list(islice(rows, excess)):
                del rows[key]

    def reset(self, *, complete: bool) -> None:
        self.rows.clear()
        self.complete = complete


class StateCache:
    """One :class:`TableCache` per mutable table."""

    def __init__(self, *, max_tasks: int = 50_000, max_executions: int = 50_000) -> None:
        self.tasks: TableCache[TaskState] = TableCache(max_tasks)
        self.executions: TableCache[ExecutionState] = TableCache(max_executions)
        self.registrations: TableCache[RegistrationState] = TableCache(max_tasks)
        self.runs: TableCache[RunState] = TableCache(max_executions)

    def reset(self, *, complete: bool) -> None:
        """Forget everything; ``complete`` when the tables are known to be empty."""
        for table in (self.tasks, self.executions, self.registrations, self.runs):
            table.reset(complete=complete)

    def remember(self, fold: BatchFold) -> None:
        """Keep the final states of a committed batch."""
        self.tasks.remember(fold.tasks)
        self.executions.remember(fold.executions)
        self.registrations.remember(fold.registrations)
        self.runs.remember(fold.runs)
