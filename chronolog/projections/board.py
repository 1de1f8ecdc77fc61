"""The task board: the ``tasks`` projection kept in memory as well, for the task list.

The task list is what UIs and agents ask for most: a filtered, sorted page of 100 out of
100,000 tasks. DuckDB answers that in milliseconds, but each page costs a scan, a sort and
the conversion of every cell to Python (~9 ms of CPU); fifty clients paging at random need
an answer in a fraction of one. So the projector can keep a second copy of the ``tasks``
table in memory, written from the same folded rows as DuckDB's, and answer from it:

* every task's row as the tuple of its column values (exactly what DuckDB returns), with
  repeated strings (module, function, status, policies …) shared: about 850 bytes a task;
* *views*: for each filter and sort column asked for recently, the matching rows in that
  column's order (read forwards or backwards for either direction), so a page is a slice
  and ``total`` a length. The unfiltered view of a column is sorted once; filtered views
  are derived from it or sorted afresh, whichever is cheaper. A view is brought up to date
  when it is next read, from a log of the rows each batch changed (a bisection or two per
  changed task), or rebuilt when it has fallen too far behind.

Rows are turned into :class:`~chronolog.projections.rows.TaskRow` (or the lighter
:class:`~chronolog.projections.rows.TaskSummary`) per page, about 2 µs each, rather than
kept: decoded JSON would triple the board's memory.

The board is derived only from the log, like every projection: the projector applies each
batch to it before publishing the new position, so a reader waiting for a position
(read-your-writes) finds the board there too. A batch of the live tail reaches a loaded
board as soon as it is folded, before its DuckDB commit, and the projector publishes the
board's position then (``Projector.board_positions``): a board read waits for the fold,
not the commit. Every other batch, and every batch while the board is unloaded, is
applied after its commit. A new projection's
board starts empty and complete; a reopened one's starts *unloaded* (reading 100,000
tasks at every start would be slow) and costs nothing until the first read, which loads
it from a DuckDB snapshot (rows plus the position they reflect) and merges the batches
committed while it loaded; from then on the projector keeps it current.
"""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from operator import itemgetter
from typing import Any, Final, TypeVar

import duckdb

from chronolog.projections.queries import TASK_SORTS, TaskQuery, task_row
from chronolog.projections.rows import Page
from chronolog.projections.schema import TASKS, column_names

R = TypeVar("R")

#: Column values of one ``tasks`` row, in schema order (what DuckDB returns for ``SELECT *``).
Values = tuple[Any, ...]
#: A view's sort key of a row: (NULL-ness flag, the sort column's value, task id).
_Key = tuple[bool, Any, str]
#: A view's identity: the filters (column index, value) and the sort column's index.
_Shape = tuple[tuple[tuple[int, Any], ...], int]

#: Sorts before every key whose value is NULL and after every other one.
_NULLS: Final[Any] = (True,)

_COLUMNS: Final = column_names("tasks")
_AT: Final = {name: i for i, name in enumerate(_COLUMNS)}
_ID: Final = _AT["task_id"]
_INSTANTS: Final = tuple(i for i, (_, kind) in enumerate(TASKS) if kind.startswith("TIMESTAMPTZ"))
#: Columns whose values repeat across tasks: one string object each is kept (interned).
_SHARED: Final = tuple(
    _AT[name]
    for name in (
        "function_name",
        "module_id",
        "status",
        "trigger_kind",
        "trigger",
        "timezone",
        "parameters",
        "policies",
        "last_outcome",
        "paused_by",
        "end_reason",
    )
)

#: Views kept (least recently read dropped first).
MAX_VIEWS: Final = 32
#: Changed task ids remembered for bringing views up to date; older views are rebuilt.
MAX_CHANGES: Final = 100_000
#: A view this far behind (changed ids per matching row) is rebuilt rather than patched.
_REBUILD_RATIO: Final = 0.25


class _View:
    """The tasks matching one filter, in one sort column's order, as of ``position``.

    ``rows`` holds the matching rows themselves, sorted on ``(value is None, value, task
    id)``: that is ``value ASC NULLS LAST, task_id ASC``. Read back to front, non-NULL part
    first, they give ``value DESC NULLS LAST, task_id DESC``, so one view serves both
    directions. Bisection computes the key of the few rows it probes; nothing else is
    stored per row but the reference.
    """

    __slots__ = ("column", "filters", "position", "rows", "sort_key")

    def __init__(self, filters: tuple[tuple[int, Any], ...], column: int) -> None:
        self.filters = filters
        self.column = column
        self.rows: list[Values] = []
        self.position = -1
        self.sort_key: Callable[[Values], _Key] = lambda v: (
            v[column] is None,
            v[column],
            v[_ID],
        )

    def matches(self, values: Values) -> bool:
        # ``==`` on the raw values is SQL's ``column = value``: NULL matches nothing.
        return all(values[at] == wanted for at, wanted in self.filters)

    def fill(self, rows: Iterable[Values], position: int) -> None:
        """Select and sort from every row (a whole-board scan)."""
        selected = list(rows) if not self.filters else _matching(self.filters, rows)
        self.rows = _in_order(selected, self.column)
        self.position = position

    def derive(self, rows: Iterable[Values], base: list[Values], position: int) -> None:
        """Build a filtered view from ``rows`` and ``base``, the unfiltered view of the same
        column at ``position``.

        Few matches are cheapest sorted afresh (the rows are scanned in memory order).
        Many are cheapest taken from ``base`` in its order, with nothing to sort (its rows
        lie all over memory, so this is slower per row than the scan).
        """
        selected = _matching(self.filters, rows)
        if len(selected) * 4 < len(base):
            self.rows = _in_order(selected, self.column)
        else:
            self.rows = _matching(self.filters, base)
        self.position = position

    def patch(self, changes: dict[str, Values | None], rows: dict[str, Values]) -> bool:
        """Replace the rows of changed tasks: ``changes`` maps each to its values as of
        this view's position (None: it did not exist then). False if a row that should be
        there is not (the caller rebuilds the view rather than trust it)."""
        ordered, sort_key = self.rows, self.sort_key
        for task_id, old in changes.items():
            if old is not None and self.matches(old):
                index = bisect_left(ordered, sort_key(old), key=sort_key)
                if index == len(ordered) or ordered[index] is not old:
                    return False
                del ordered[index]
            values = rows.get(task_id)
            if values is not None and self.matches(values):
                insort(ordered, values, key=sort_key)
        return True

    def page(self, offset: int, limit: int, descending: bool) -> list[Values]:
        """Rows ``offset`` to ``offset + limit`` in this view's order, or the reverse."""
        ordered = self.rows
        if not descending:
            return ordered[offset : offset + limit]
        # Descending: the non-NULL rows (before ``split``) back to front, then the NULL
        # ones back to front. Position i < split is rows[split - 1 - i]; i >= split is
        # rows[n - 1 - (i - split)].
        n = len(ordered)
        split = bisect_left(ordered, _NULLS, key=self.sort_key)
        end = min(offset + limit, n)
        page: list[Values] = []
        if offset < min(end, split):
            stop = min(end, split)
            page.extend(reversed(ordered[split - stop : split - offset]))
            offset = stop
        if offset < end:
            page.extend(reversed(ordered[n - end + split : n - offset + split]))
        return page


class TaskBoard:
    """The in-memory copy of the ``tasks`` projection that answers the task list.

    Thread-safe: the projector calls :meth:`apply` for each batch; any number of query
    threads call :meth:`list_tasks`. Critical sections are short: loading and building a
    view happen outside the lock, so a query rarely holds up the projector.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._rows: dict[str, Values] = {}
        self._loaded = False
        self._position = 0
        #: Bumped on every reset: work started before it is thrown away.
        self._generation = 0
        #: (position, {task id: values before that batch}) per applied batch, oldest first.
        self._changes: list[tuple[int, dict[str, Values | None]]] = []
        self._changed_ids = 0
        #: Views at positions before this cannot be patched (their changes were dropped).
        self._horizon = 0
        #: Loads in progress, and the batches applied meanwhile (merged by the load).
        self._loading = 0
        self._pending: list[tuple[int, Sequence[Values]]] = []
        #: The unfiltered view of each sort column asked for (kept: filtered views of that
        #: column are derived from it), and the filtered views, least recently read first.
        self._bases: dict[int, _View] = {}
        self._views: dict[_Shape, _View] = {}

    # --- writing (the projector) -------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the board holds every task (else the next task list loads it)."""
        return self._loaded

    @property
    def position(self) -> int:
        """The position of the last batch applied."""
        return self._position

    def reset(self, *, position: int = 0, empty: bool = False) -> None:
        """Forget every row, as of ``position``. ``empty``: the tables hold no task, so the
        empty board is complete (loaded) and no first read has to wait for a load;
        otherwise it is unloaded."""
        with self._lock:
            self._generation += 1
            self._rows = {}
            self._loaded = empty
            self._position = position
            self._changes = []
            self._changed_ids = 0
            self._horizon = position
            self._pending = []
            self._bases = {}
            self._views = {}

    def apply(self, position: int, rows: Sequence[Values]) -> None:
        """The batch ending at ``position`` committed these final ``tasks`` rows."""
        with self._lock:
            self._position = position
            if not self._loaded:
                if self._loading:
                    self._pending.append((position, rows))
                return
            current = self._rows
            before: dict[str, Values | None] = {}
            for values in rows:
                task_id = values[_ID]
                if task_id not in before:
                    before[task_id] = current.get(task_id)
                current[task_id] = _shared(_in_utc(values))
            if before:
                self._changes.append((position, before))
                self._changed_ids += len(before)
                self._trim_changes()

    def _trim_changes(self) -> None:
        changes = self._changes
        drop = 0
        while self._changed_ids > MAX_CHANGES and drop < len(changes):
            self._changed_ids -= len(changes[drop][1])
            self._horizon = changes[drop][0]
            drop += 1
        if drop:
            del changes[:drop]

    # --- loading -------------------------------------------------------------------------------

    def load(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Fill an unloaded board from a DuckDB snapshot, plus the batches applied meanwhile.

        Runs on the calling (query) thread without holding the board's lock. The snapshot
        is at least as new as every batch applied before the load began (the projector
        applies a batch to an unloaded board only after DuckDB committed it); batches
        applied during the load are kept aside and merged when newer than the snapshot.
        """
        with self._load_lock:  # one load at a time: the others then find it loaded
            self._load(cursor)

    def _load(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loading += 1
            generation = self._generation
        try:
            position, snapshot = _snapshot(cursor)
            rows = {values[_ID]: _shared(values) for values in snapshot}
            del snapshot
            with self._lock:
                if self.loaded or generation != self._generation:
                    return  # loaded by another thread, or reset: the next read loads again
                for batch_position, batch in self._pending:
                    if batch_position > position:
                        for values in batch:
                            rows[values[_ID]] = _shared(_in_utc(values))
                self._rows = rows
                self._position = max(self._position, position)
                self._changes = []
                self._changed_ids = 0
                self._horizon = self._position
                self._bases = {}
                self._views = {}
                self._loaded = True
        finally:
            with self._lock:
                self._loading -= 1
                if not self._loading:
                    self._pending = []

    # --- reading -------------------------------------------------------------------------------

    def list_tasks(
        self,
        query: TaskQuery,
        load: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        row: Callable[[Values], R] = task_row,  # type: ignore[assignment]
    ) -> Page[R]:
        """One page of the task list, as :func:`queries.list_tasks` would give it, each row
        made by ``row`` (:func:`~queries.task_row` or :func:`~queries.task_summary`).

        ``load`` opens a DuckDB cursor for loading an unloaded board (closed afterwards).
        """
        shape = _shape(query)
        while True:
            if not self._loaded:
                if load is None:
                    raise RuntimeError("the task board is not loaded")
                cursor = load()
                try:
                    self.load(cursor)
                finally:
                    cursor.close()
                continue
            view, generation = self._current_view(shape)
            page = self._read(view, generation, query, row)
            if page is not None:
                return page

    def get_task(
        self,
        task_id: str,
        load: Callable[[], duckdb.DuckDBPyConnection] | None = None,
    ) -> Values | None:
        """One task's row values (None when there is no such task), loading the board
        first if it is not loaded (``load`` as for :meth:`list_tasks`)."""
        while True:
            loaded, values = self.task_if_loaded(task_id)
            if loaded:
                return values
            if load is None:
                raise RuntimeError("the task board is not loaded")
            cursor = load()
            try:
                self.load(cursor)
            finally:
                cursor.close()

    def task_if_loaded(self, task_id: str, at_least: int = 0) -> tuple[bool, Values | None]:
        """Whether the board is loaded (and has applied position ``at_least``), and if so
        the task's row values (or None)."""
        with self._lock:
            if not self._loaded or self._position < at_least:
                return False, None
            return True, self._rows.get(task_id)

    def page_if_ready(
        self,
        query: TaskQuery,
        row: Callable[[Values], R] = task_row,  # type: ignore[assignment]
        at_least: int = 0,
    ) -> Page[R] | None:
        """The page, if that takes no slow work: None while the board is unloaded, has not
        applied position ``at_least``, or has no view for this filter and sort yet
        (:meth:`list_tasks` loads and builds)."""
        filters, column = shape = _shape(query)
        with self._lock:
            view = None
            if self._loaded and self._position >= at_least:
                view = self._views.get(shape) if filters else self._bases.get(column)
            generation = self._generation
        return None if view is None else self._read(view, generation, query, row, quick=True)

    def _read(
        self,
        view: _View,
        generation: int,
        query: TaskQuery,
        row: Callable[[Values], R],
        *,
        quick: bool = False,
    ) -> Page[R] | None:
        """A page of ``view``; None if the board was reset since the view was taken, or if
        ``quick`` and the view is too far behind to be patched."""
        with self._lock:
            if generation != self._generation or not self._loaded:
                return None
            if not self._catch_up(view, refill=not quick):
                return None
            total = len(view.rows)
            page = view.page(query.offset, query.limit, query.descending)
        items = tuple(map(row, page))
        return Page(items=items, total=total, limit=query.limit, offset=query.offset)

    def _current_view(self, shape: _Shape) -> tuple[_View, int]:
        """The view for ``shape``, built outside the lock if it does not exist yet: the
        unfiltered view of a column is sorted from the rows; a filtered one is the
        unfiltered one's keys filtered, in order (several times cheaper)."""
        filters, column = shape
        with self._lock:
            generation = self._generation
            if not filters:
                view = self._bases.get(column)
                if view is not None:
                    return view, generation
                rows = list(self._rows.values())
                position = self._position
            else:
                view = self._views.pop(shape, None)
                if view is not None:
                    self._views[shape] = view  # most recently used last
                    return view, generation
        if not filters:
            view = _View((), column)
            view.fill(rows, position)
            with self._lock:
                if generation == self._generation:
                    view = self._bases.setdefault(column, view)
            return view, generation
        base, generation = self._current_view(((), column))
        with self._lock:
            if generation != self._generation:
                return _View(filters, column), generation  # reset meanwhile: the caller retries
            self._catch_up(base)
            ordered, position = list(base.rows), base.position
            rows = list(self._rows.values())
        view = _View(filters, column)
        view.derive(rows, ordered, position)
        with self._lock:
            if generation == self._generation:
                self._views[shape] = view
                while len(self._views) > MAX_VIEWS:
                    del self._views[next(iter(self._views))]
        return view, generation

    def _catch_up(self, view: _View, *, refill: bool = True) -> bool:
        """Bring ``view`` to the board's position (the caller holds the lock). A view too
        far behind is rebuilt, unless not ``refill``: then this returns False."""
        if view.position >= self._position:
            return True
        old: dict[str, Values | None] | None = None
        if view.position >= self._horizon:
            # Values as of the view's position: the first batch after it that touched a
            # task recorded what the task was before.
            old = {}
            for position, before in reversed(self._changes):
                if position <= view.position:
                    break
                old.update(before)
            if len(old) > _REBUILD_RATIO * len(view.rows) + 1_000:
                old = None
        if old is not None and view.patch(old, self._rows):
            view.position = self._position
            return True
        if not refill:
            return False
        view.fill(self._rows.values(), self._position)
        return True


def _matching(filters: tuple[tuple[int, Any], ...], rows: Iterable[Values]) -> list[Values]:
    """The rows whose filtered columns all equal their values (``==``: SQL's ``column =
    value``, NULL matching nothing).

    Spelled out for one and two filters, the common cases: a comprehension with plain
    comparisons is several times faster than a call or a tuple per row.
    """
    if len(filters) == 1:
        ((a, x),) = filters
        return [v for v in rows if v[a] == x]
    if len(filters) == 2:
        (a, x), (b, y) = filters
        return [v for v in rows if v[a] == x and v[b] == y]
    return [v for v in rows if all(v[c] == w for c, w in filters)]


def _in_order(rows: list[Values], column: int) -> list[Values]:
    """``rows`` sorted on ``(value is None, value, task id)``, i.e. ``value ASC NULLS LAST,
    task_id ASC``.

    Done as stable sorts on single values (by id, then by value; NULLs apart): Python
    sorts a list of one type of key several times faster than tuples, which compare
    element by element.
    """
    present = [v for v in rows if v[column] is not None]
    missing = [v for v in rows if v[column] is None]
    by_id = itemgetter(_ID)
    present.sort(key=by_id)
    present.sort(key=itemgetter(column))
    missing.sort(key=by_id)
    present.extend(missing)
    return present


def _shape(query: TaskQuery) -> _Shape:
    """What identifies a view: the filters (column index, value) and the sort column."""
    filters = tuple((_AT[column], value) for column, value in query.filters().items())
    return (filters, _AT[TASK_SORTS[query.sort]])


def _shared(values: Values) -> Values:
    """``values`` with the strings that repeat across tasks replaced by one shared copy
    (DuckDB hands out a new string per cell: 100,000 copies of the same policies JSON)."""
    fixed = list(values)
    for at in _SHARED:
        text = fixed[at]
        if text is not None:
            fixed[at] = sys.intern(text)
    return tuple(fixed)


def _in_utc(values: Values) -> Values:
    """``values`` with every instant in UTC, as DuckDB's TIMESTAMPTZ gives it back.

    Events carry aware instants in any offset; equal instants compare equal either way, but
    a row must also *encode* like the DuckDB one (``Z``, not ``+01:00``).
    """
    if all(values[at] is None or values[at].tzinfo is UTC for at in _INSTANTS):
        return values
    fixed = list(values)
    for at in _INSTANTS:
        if fixed[at] is not None:
            fixed[at] = fixed[at].astimezone(UTC)
    return tuple(fixed)


def _snapshot(cursor: duckdb.DuckDBPyConnection) -> tuple[int, list[Values]]:
    """Every ``tasks`` row and the position they reflect, read in one DuckDB transaction."""
    columns = ", ".join(f'"{name}"' for name in _COLUMNS)
    cursor.begin()
    try:
        found = cursor.execute("SELECT position FROM projection_meta WHERE id = 1").fetchone()
        rows = cursor.execute(f"SELECT {columns} FROM tasks").fetchall()
    finally:
        cursor.rollback()
    return (int(found[0]) if found else 0), rows


__all__ = ["MAX_CHANGES", "MAX_VIEWS", "TaskBoard", "Values"]
