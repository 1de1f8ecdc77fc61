"""The projector's memory of committed rows, so a batch rarely has to read DuckDB first.

Folding a batch needs the current row of every task, execution, registration and run it
touches. Most were written by the last few batches (a task fires again, an execution
finishes), so the projector keeps the states of recently touched rows.

While the cache is *complete* for a table (it has seen the table grow from empty) it also
remembers the keys it evicted, so a miss on any other key means "no such row yet": a new
execution costs neither a lookup nor a delete. Past ``max_evicted`` remembered keys it
stops being complete and every miss is looked up in DuckDB.

The fold mutates cached states in place; if a batch fails, the projector clears the cache,
since those states may no longer match what DuckDB committed. Batches are numbered; a
batch's states stay pinned (never evicted) until it commits.
"""

from __future__ import annotations

import threading
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
    """Row states of one table, least recently touched first.

    States of batches that are folded but not yet committed are *pinned*: never evicted
    until :meth:`release`, because the next batch may be prepared before they commit and
    must find them here rather than read older rows from DuckDB.
    """

    def __init__(self, limit: int, max_evicted: int = 1_000_000) -> None:
        self.limit = limit
        self.max_evicted = max_evicted
        self.rows: dict[str, _State] = {}
        self.complete = False
        self._evicted: set[str] = set()
        self._pinned: dict[str, int] = {}
        self._batches: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def lookup(self, keys: Iterable[str]) -> tuple[dict[str, _State], set[str]]:
        """Cached states among ``keys``, and the keys whose rows must be read from DuckDB."""
        rows = self.rows
        hits: dict[str, _State] = {}
        unknown: set[str] = set()
        evicted = self._evicted
        complete = self.complete
        for key in keys:
            state = rows.get(key)
            if state is not None:
                hits[key] = state
            elif not complete or key in evicted:
                unknown.add(key)
        return hits, unknown

    def remember(self, states: dict[str, _State], batch: int) -> None:
        """Store batch ``batch``'s final states, pinned, as the most recently used."""
        rows = self.rows
        with self._lock:
            pinned = self._pinned
            evicted = self._evicted
            for key, state in states.items():
                if rows.pop(key, None) is None:
                    evicted.discard(key)
                rows[key] = state
                pinned[key] = batch
            self._batches[batch] = list(states)
            excess = len(rows) - self.limit
            if excess <= 0:
                return
            doomed = list(islice((key for key in rows if key not in pinned), excess))
            for key in doomed:
                del rows[key]
            if self.complete:
                evicted.update(doomed)
                if len(evicted) > self.max_evicted:
                    self.complete = False
                    evicted.clear()

    def release(self, batch: int) -> None:
        """Batch ``batch`` committed: its states may be evicted from now on."""
        with self._lock:
            for key in self._batches.pop(batch, ()):
                if self._pinned.get(key) == batch:
                    del self._pinned[key]

    def reset(self, *, complete: bool) -> None:
        with self._lock:
            self.rows.clear()
            self._evicted.clear()
            self._pinned.clear()
            self._batches.clear()
            self.complete = complete


class StateCache:
    """One :class:`TableCache` per mutable table."""

    def __init__(self, *, max_tasks: int = 50_000, max_executions: int = 50_000) -> None:
        self.tasks: TableCache[TaskState] = TableCache(max_tasks)
        self.executions: TableCache[ExecutionState] = TableCache(max_executions)
        self.registrations: TableCache[RegistrationState] = TableCache(max_tasks)
        self.runs: TableCache[RunState] = TableCache(max_executions)
        self._tables = (self.tasks, self.executions, self.registrations, self.runs)

    def reset(self, *, complete: bool) -> None:
        """Forget everything; ``complete`` when the tables are known to be empty."""
        for table in self._tables:
            table.reset(complete=complete)

    def remember(self, fold: BatchFold, batch: int) -> None:
        """Keep the final states of a folded batch (pinned until :meth:`release`)."""
        self.tasks.remember(fold.tasks, batch)
        self.executions.remember(fold.executions, batch)
        self.registrations.remember(fold.registrations, batch)
        self.runs.remember(fold.runs, batch)

    def release(self, batch: int) -> None:
        """Batch ``batch`` committed."""
        for table in self._tables:
            table.release(batch)
