"""The task board (the in-memory ``tasks`` projection) answers the task list exactly as the
DuckDB query does: for any rows, any changes, any filters, sorts and pages, and however its
views were built, patched, rebuilt or loaded."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple
from test_projections_helpers import (
    at,
    cancelled,
    next_fire,
    paused,
    scheduled,
    store_with,
    stream_of,
)

from chronolog.errors import ValidationError
from chronolog.projections import Projector, board, queries
from chronolog.projections.apply import TaskState
from chronolog.projections.board import TaskBoard
from chronolog.projections.db import connect
from chronolog.projections.queries import TaskQuery, task_query
from chronolog.projections.rows import TaskRow
from chronolog.projections.schema import column_names, create_statements
from chronolog.projections.synthetic import synthetic_log
from chronolog.store import InMemoryEventStore

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
#: A few instants, with ties, and one instant also written in another offset.
INSTANTS = [
    None,
    T0,
    T0.astimezone(timezone(timedelta(hours=1))),
    T0 + timedelta(minutes=1),
    T0 - timedelta(days=3),
]
IDS = [f"t{i:02}" for i in range(16)]


@st.composite
def task_rows(draw: st.DrawFn) -> tuple[Any, ...]:
    """One ``tasks`` row with values drawn from small pools, so filters match and sort keys
    tie often (ties are ordered by task id, NULLs last)."""
    state = TaskState(
        task_id=draw(st.sampled_from(IDS)),
        name=draw(st.sampled_from([None, "alpha", "beta", "Beta", "é"])),
        function_name=draw(st.sampled_from([None, "mail.send", "reports.build"])),
        module_id=draw(st.sampled_from([None, "billing", "sync"])),
        status=draw(st.sampled_from(sorted(queries.TASK_STATUSES))),
        recurring=draw(st.sampled_from([None, True, False])),
        next_fire=draw(st.sampled_from(INSTANTS)),
        last_fire=draw(st.sampled_from(INSTANTS)),
        created_at=draw(st.sampled_from(INSTANTS)),
        updated_at=draw(st.sampled_from(INSTANTS[1:])),
        version=draw(st.integers(1, 9)),
    )
    return astuple(state)


@st.composite
def task_queries(draw: st.DrawFn) -> TaskQuery:
    """Any task list request over the pools of :func:`task_rows`."""
    # Each filter is left out half the time, so that combined filters still match rows.
    return task_query(
        status=draw(st.none() | st.sampled_from(sorted(queries.TASK_STATUSES))),
        module_id=draw(st.none() | st.sampled_from(["billing", "sync", "nowhere"])),
        function_name=draw(st.none() | st.sampled_from(["mail.send", "reports.build"])),
        recurring=draw(st.none() | st.booleans()),
        sort=draw(st.sampled_from(sorted(queries.TASK_SORTS))),
        descending=draw(st.booleans()),
        limit=draw(st.integers(1, 6)),
        offset=draw(st.sampled_from([0, 0, 1, 2, 3, 5, 8, 13, 40])),
    )


#: ("apply", rows of one batch) or ("query", which of the example's queries, offset)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), st.lists(task_rows(), min_size=1, max_size=6)),
        st.tuples(st.just("query"), st.tuples(st.integers(0, 2), st.integers(0, 12))),
    ),
    min_size=1,
    max_size=25,
)


class _Mirror:
    """A DuckDB ``tasks`` table written the projector's way: replace touched rows."""

    def __init__(self) -> None:
        self.conn = connect(None)
        for statement in create_statements():
            self.conn.execute(statement)

    def apply(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        final = {row[0]: row for row in rows}  # a batch writes each task's last state
        self.conn.execute(
            "DELETE FROM tasks WHERE task_id IN (SELECT unnest($ids))", {"ids": list(final)}
        )
        with self.conn.appender("tasks") as appender:
            appender.append_rows(list(final.values()))
        return list(final.values())


def _loaded_board() -> TaskBoard:
    """A board that was loaded from empty tables (as after the first task list)."""
    task_board = TaskBoard()
    with mock.patch.object(board, "_snapshot", return_value=(0, [])):
        task_board.load(connect(None))
    assert task_board.loaded
    return task_board


def _same(task_board: TaskBoard, mirror: _Mirror, query: TaskQuery) -> None:
    expected = queries.list_tasks_sql(mirror.conn, query)
    assert task_board.list_tasks(query) == expected, query


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, shapes=st.lists(task_queries(), min_size=3, max_size=3))
def test_the_board_answers_like_duckdb(
    plan: list[tuple[str, Any]], shapes: list[TaskQuery]
) -> None:
    """Views built at any point and patched batch by batch give DuckDB's pages and totals.

    Each example asks a few filter-and-sort shapes again and again (other pages), so that
    views are built, then patched by later batches, then read."""
    task_board, mirror = _loaded_board(), _Mirror()
    position = 0
    for kind, item in plan:
        if kind == "apply":
            position += 1
            task_board.apply(position, mirror.apply(item))
        else:
            which, offset = item
            _same(task_board, mirror, msgspec.structs.replace(shapes[which], offset=offset))
    for query in shapes:
        _same(task_board, mirror, query)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.lists(task_rows(), min_size=1, max_size=6), max_size=5),
    after=st.lists(st.lists(task_rows(), min_size=1, max_size=6), max_size=5),
    query=task_queries(),
)
def test_a_board_loaded_from_a_snapshot_replays_later_batches(
    before: list[list[tuple[Any, ...]]], after: list[list[tuple[Any, ...]]], query: TaskQuery
) -> None:
    """An unloaded board loads a snapshot's rows and merges the batches committed while it
    loaded (only those newer than the snapshot; batches before the load are in it)."""
    mirror = _Mirror()
    task_board = TaskBoard()
    position = 0
    for rows in before:
        position += 1
        task_board.apply(position, mirror.apply(rows))
    snapshot = (position, mirror.conn.execute("SELECT * FROM tasks").fetchall())

    def read_while_the_projector_goes_on(cursor: object) -> tuple[int, list[Any]]:
        nonlocal position
        task_board.apply(position, mirror.apply(before[-1]) if before else [])  # again
        for rows in after:
            position += 1
            task_board.apply(position, mirror.apply(rows))
        return snapshot

    assert not task_board.loaded
    with mock.patch.object(board, "_snapshot", side_effect=read_while_the_projector_goes_on):
        page = task_board.list_tasks(query, load=lambda: connect(None))
    assert page == queries.list_tasks_sql(mirror.conn, query)
    assert task_board.loaded and task_board.position == position
    assert task_board._pending == []


class TestViews:
    """Views are patched while close behind, rebuilt when too far behind."""

    def test_a_view_behind_the_change_horizon_is_rebuilt(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once the change log dropped what a view needs, the view is built again."""
        monkeypatch.setattr(board, "MAX_CHANGES", 3)
        task_board, mirror = _loaded_board(), _Mirror()
        rows = [astuple(TaskState(task_id=i, updated_at=T0, created_at=T0)) for i in IDS[:6]]
        task_board.apply(1, mirror.apply(rows))
        query = task_query(status="scheduled", limit=3, offset=1)
        _same(task_board, mirror, query)
        for position, task_id in enumerate(IDS[:5], start=2):
            changed = TaskState(task_id=task_id, status="paused", updated_at=T0, created_at=T0)
            task_board.apply(position, mirror.apply([astuple(changed)]))
        _same(task_board, mirror, query)
        _same(task_board, mirror, task_query(status="paused", descending=True))

    def test_views_are_dropped_least_recently_read_first(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only MAX_VIEWS filtered views are kept; the unfiltered view of each sort column
        they derive from stays, and serves both directions."""
        monkeypatch.setattr(board, "MAX_VIEWS", 2)
        task_board = _loaded_board()
        task_board.apply(1, [astuple(TaskState(task_id="a", updated_at=T0))])
        for module_id in ("x", "y", "z"):
            for descending in (False, True):
                query = task_query(module_id=module_id, sort="name", descending=descending)
                assert task_board.list_tasks(query).total == 0
        assert [shape[0] for shape in task_board._views] == [((3, "y"),), ((3, "z"),)]
        assert list(task_board._bases) == [1]

    def test_only_ready_views_answer_at_once(self) -> None:
        """page_if_ready answers from an existing, current view and otherwise declines."""
        task_board = TaskBoard()
        query = task_query(status="scheduled")
        assert task_board.page_if_ready(query) is None  # not loaded
        task_board = _loaded_board()
        task_board.apply(1, [astuple(TaskState(task_id="a", updated_at=T0))])
        assert task_board.page_if_ready(query) is None  # no view yet
        built = task_board.list_tasks(query)
        assert task_board.page_if_ready(query) == built
        task_board.apply(2, [astuple(TaskState(task_id="b", updated_at=T0))])
        ready = task_board.page_if_ready(query)  # patched on the way
        assert ready is not None and ready.total == 2

    def test_a_view_too_far_behind_is_not_patched_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A quick read declines a view that would need rebuilding; a full read rebuilds."""
        monkeypatch.setattr(board, "MAX_CHANGES", 1)
        task_board = _loaded_board()
        query = task_query(module_id="billing")
        task_board.list_tasks(query)
        for position, task_id in enumerate(IDS[:3], start=1):
            row = TaskState(task_id=task_id, module_id="billing", updated_at=T0)
            task_board.apply(position, [astuple(row)])
        assert task_board.page_if_ready(query) is None
        assert task_board.list_tasks(query).total == 3

    def test_summaries_are_rows_without_parameters_and_policies(self) -> None:
        """The summary converter gives the row's other fields unchanged."""
        task_board = _loaded_board()
        state = TaskState(
            task_id="a", trigger='{"kind":"date"}', parameters="{}", policies="{}", updated_at=T0
        )
        task_board.apply(1, [astuple(state)])
        full = task_board.list_tasks(task_query()).items[0]
        summary = task_board.list_tasks(task_query(), row=queries.task_summary).items[0]
        expected = msgspec.structs.asdict(full)
        del expected["parameters"], expected["policies"]
        assert msgspec.structs.asdict(summary) == expected

    def test_a_task_is_looked_up_only_once_loaded(self) -> None:
        """Before a load the board says so; afterwards it answers from memory."""
        board = TaskBoard()
        assert board.task_if_loaded("x") == (False, None)
        with pytest.raises(RuntimeError):
            board.get_task("x")

    def test_an_unloaded_board_needs_a_loader(self) -> None:
        """Without a way to load, an unloaded board refuses rather than answer empty."""
        task_board = TaskBoard()
        with pytest.raises(RuntimeError):
            task_board.list_tasks(task_query())

    def test_an_unloaded_board_keeps_nothing_until_asked(self) -> None:
        """Before the first task list, applied batches cost no memory (DuckDB has them)."""
        task_board = TaskBoard()
        for position, task_id in enumerate(IDS[:4], start=1):
            task_board.apply(position, [astuple(TaskState(task_id=task_id, updated_at=T0))])
        assert task_board._rows == {} and task_board._pending == []
        assert task_board.position == 4 and not task_board.loaded

    def test_a_load_interrupted_by_a_reset_loads_again(self) -> None:
        """A rebuild that starts while the board loads makes the load start over."""
        task_board = TaskBoard()
        rows = [astuple(TaskState(task_id=i, updated_at=T0)) for i in IDS[:3]]
        answers = iter([(9, rows), (0, rows[:1])])

        def snapshot(cursor: object) -> tuple[int, list[Any]]:
            answer = next(answers)
            if answer[0] == 9:
                task_board.reset()  # the projector started over meanwhile
            return answer

        with mock.patch.object(board, "_snapshot", side_effect=snapshot):
            page = task_board.list_tasks(task_query(), load=lambda: connect(None))
        assert [row.task_id for row in page.items] == IDS[:1]


def test_task_row_knows_where_the_json_columns_are() -> None:
    """The positional row conversion matches the schema's column order."""
    columns = column_names("tasks")
    assert columns == tuple(TaskRow.__struct_fields__)
    assert all(columns[at] == name for name, at in queries.TASK_JSON_COLUMNS.items())
    values = astuple(TaskState(task_id="x", trigger='{"kind":"date"}', updated_at=T0))
    assert queries.task_row(values).trigger == {"kind": "date"}


class TestProjectorTaskList:
    """The projector keeps its board next to DuckDB; the facade reads it."""

    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "p.duckdb"

    def _events(self) -> list[Any]:
        return [
            scheduled("a", first_fire=at(3), name="a", module_id="billing"),
            scheduled("b", first_fire=at(1), name="b", module_id="sync"),
            scheduled("c", first_fire=None, name="c", module_id="billing"),
            next_fire("a", at(9)),
            paused("b", note="later"),
            cancelled("c"),
        ]

    def _all_queries(self) -> Iterator[TaskQuery]:
        for sort in queries.TASK_SORTS:
            for descending in (False, True):
                for module_id in (None, "billing"):
                    for offset in (0, 1, 5):
                        yield task_query(
                            sort=sort,
                            descending=descending,
                            module_id=module_id,
                            limit=2,
                            offset=offset,
                        )
        for status in queries.TASK_STATUSES:
            yield task_query(status=status)

    def _check(self, projector: Projector) -> None:
        reader = projector.reader()
        for query in self._all_queries():
            assert projector.list_tasks(query) == queries.list_tasks_sql(reader, query)
        for task_id in ("a", "b", "c", "missing"):
            expected = queries.get_task(reader, task_id)
            assert projector.get_task(task_id) == expected
            assert projector.get_task_if_ready(task_id) == (True, expected)
        reader.close()

    def test_live_batches_keep_the_board_equal_to_duckdb(self, path: Path) -> None:
        """After every one-event batch the board and DuckDB agree."""
        store = store_with()
        with Projector(store, path, batch_size=1) as projector:
            for event in self._events():
                store.append(stream_of(event), [event])
                projector.catch_up()
                self._check(projector)

    def test_reopening_loads_the_board_from_duckdb(self, path: Path) -> None:
        """A reopened projector's board loads lazily and sees batches applied meanwhile."""
        events = self._events()
        store = store_with(*events[:4])
        with Projector(store, path) as projector:
            projector.catch_up()
        with Projector(store, path) as projector:
            for event in events[4:]:
                store.append(stream_of(event), [event])
            projector.catch_up()  # applied before the board was ever loaded
            self._check(projector)
            projector.rebuild()
            self._check(projector)

    def test_a_loaded_board_holds_one_copy_of_texts_that_tasks_repeat(self, path: Path) -> None:
        """DuckDB hands out a new string per cell; the board keeps one of each repeating
        text (100,000 tasks on one cron expression hold one trigger text)."""
        store = store_with(scheduled("a"), scheduled("b"))
        with Projector(store, path) as projector:
            projector.catch_up()
        with Projector(store, path) as projector:
            projector.get_task("a")  # loads the board from DuckDB
            rows = [projector._board.task_if_loaded(task_id, 0)[1] for task_id in "ab"]
            first, second = (
                dict(zip(column_names("tasks"), row or (), strict=True)) for row in rows
            )
            for column in ("function_name", "module_id", "trigger", "parameters", "policies"):
                assert first[column] == second[column] is not None
                assert first[column] is second[column], column

    def test_readers_during_batches_see_consistent_pages(self, path: Path) -> None:
        """Lists on other threads while batches commit: never an error, every page's total
        counts its matches at one position, and the end state equals DuckDB's."""
        store = InMemoryEventStore()
        appends = list(synthetic_log(events=3_000, tasks=60, cleanups=0, seed=7))
        failures: list[BaseException] = []
        done = threading.Event()
        with Projector(store, path, batch_size=40) as projector:

            def read() -> None:
                rng = random.Random(threading.get_ident())
                try:
                    while not done.is_set():
                        query = task_query(
                            status=rng.choice([None, "scheduled", "running", "paused"]),
                            sort=rng.choice(sorted(queries.TASK_SORTS)),
                            descending=rng.random() < 0.5,
                            limit=rng.randint(1, 30),
                            offset=rng.choice([0, 5, 50]),
                        )
                        page = projector.list_tasks(query)
                        assert len(page.items) == min(
                            query.limit, max(0, page.total - query.offset)
                        )
                        assert len({row.task_id for row in page.items}) == len(page.items)
                except BaseException as exc:
                    failures.append(exc)

            readers = [threading.Thread(target=read) for _ in range(3)]
            for reader in readers:
                reader.start()
            try:
                for append in appends:
                    store.append(append.stream_id, append.events, metadata=append.metadata)
                    if append.stream_id.endswith("0"):
                        projector.catch_up()
                projector.catch_up()
            finally:
                done.set()
                for reader in readers:
                    reader.join()
            assert not failures, failures[0]
            self._check(projector)

    def test_instants_in_other_offsets_read_as_utc(self, path: Path) -> None:
        """Rows from the fold encode like DuckDB's: instants in UTC."""
        berlin = timezone(timedelta(hours=1))
        store = store_with(scheduled("a", first_fire=at(3).astimezone(berlin)))
        with Projector(store, path) as projector:
            projector.catch_up()
            row = projector.list_tasks(task_query()).items[0]
        assert row.next_fire == at(3)
        assert row.next_fire is not None and row.next_fire.utcoffset() == timedelta(0)

    def test_bad_arguments_are_refused_before_reading(self) -> None:
        """Validation is shared with the DuckDB query."""
        with pytest.raises(ValidationError):
            task_query(sort="task_id")
        with pytest.raises(ValidationError):
            task_query(limit=0)
