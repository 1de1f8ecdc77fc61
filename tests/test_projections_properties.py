"""Property: however the log is cut into batches, and wherever the projector is stopped and
reopened, the tables equal those of one rebuild from scratch."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projections_helpers import (
    at,
    cancelled,
    completed,
    execution_cancelled,
    failed,
    interrupted,
    late,
    next_fire,
    paused,
    registered,
    resumed,
    retry,
    run_completed,
    run_failed,
    run_started,
    scheduled,
    skipped,
    started,
    stream_of,
    succeeded,
    table_contents,
    timed_out,
    unregistered,
    updated,
)

from chronolog.events import DomainEvent
from chronolog.projections import Projector, queries, writer
from chronolog.projections.apply import BatchFold
from chronolog.store import InMemoryEventStore

_OUTCOMES = {
    "succeeded": succeeded,
    "failed": failed,
    "timed_out": timed_out,
    "cancelled": execution_cancelled,
    "interrupted": interrupted,
}


@dataclass
class _TaskLife:
    task_id: str
    events: list[DomainEvent] = field(default_factory=list)
    executions: int = 0
    running: list[int] = field(default_factory=list)
    finished: dict[int, str] = field(default_factory=dict)
    minute: int = 0


@st.composite
def task_life(draw: st.DrawFn, task_id: str) -> list[DomainEvent]:
    """A plausible life of one task: what its job actor could append, plus rare oddities
    (a repeated outcome, an outcome with no start) that the fold must also handle."""
    life = _TaskLife(task_id)
    life.events.append(scheduled(task_id, recurring=draw(st.booleans()), first_fire=at(1)))
    steps = draw(
        st.lists(
            st.sampled_from(
                [
                    "start",
                    "start",
                    "finish",
                    "finish",
                    "next_fire",
                    "skip",
                    "late",
                    "retry",
                    "pause",
                    "resume",
                    "update",
                    "end",
                    "repeat",
                    "orphan",
                ]
            ),
            max_size=14,
        )
    )
    for step in steps:
        life.minute += 5
        nominal = at(life.minute)
        if step == "start":
            life.executions += 1
            life.running.append(life.executions)
            life.events.append(started(task_id, life.executions, nominal=nominal))
        elif step == "finish" and life.running:
            n = life.running.pop(draw(st.integers(0, len(life.running) - 1)))
            outcome = draw(st.sampled_from(sorted(_OUTCOMES)))
            life.finished[n] = outcome
            life.events.append(_OUTCOMES[outcome](task_id, n))
        elif step == "next_fire":
            life.events.append(next_fire(task_id, nominal))
        elif step == "skip":
            reason = draw(st.sampled_from(["misfire", "overlap", "paused", "catch_up_limit"]))
            life.events.append(skipped(task_id, nominal, reason))
        elif step == "late" and life.finished:
            n = draw(st.sampled_from(sorted(life.finished)))
            life.events.append(late(task_id, n, ok=draw(st.booleans())))
        elif step == "retry" and life.finished:
            n = draw(st.sampled_from(sorted(life.finished)))
            life.events.append(retry(task_id, n, nominal=nominal))
        elif step == "pause":
            life.events.append(
                paused(task_id, note=draw(st.sampled_from([None, "why", "é\n", "nul\x00😀"])))
            )
        elif step == "resume":
            life.events.append(resumed(task_id, draw(st.sampled_from([None, nominal]))))
        elif step == "update":
            life.events.append(updated(task_id, next_fire=nominal + timedelta(minutes=1)))
        elif step == "end":
            life.events.append(draw(st.sampled_from([cancelled, completed]))(task_id))
        elif step == "repeat" and life.finished:
            n = draw(st.sampled_from(sorted(life.finished)))
            life.events.append(_OUTCOMES[draw(st.sampled_from(sorted(_OUTCOMES)))](task_id, n))
        elif step == "orphan":
            life.executions += 1
            life.events.append(succeeded(task_id, life.executions))
    return life.events


@st.composite
def cleanup_life(draw: st.DrawFn, registration_id: str) -> list[DomainEvent]:
    """Registration, runs (completed, failed, dry), unregistration, re-registration."""
    events: list[DomainEvent] = [registered(registration_id)]
    for k in range(draw(st.integers(0, 4))):
        run_id = f"{registration_id}-r{k}"
        dry = draw(st.booleans())
        events.append(run_started(registration_id, run_id, dry_run=dry))
        ending = draw(st.sampled_from(["completed", "failed", "open", "twice"]))
        if ending in ("completed", "twice"):
            events.append(run_completed(registration_id, run_id, files=k, dry_run=dry))
        if ending == "twice":
            events.append(run_completed(registration_id, run_id, files=1, dry_run=dry))
        if ending == "failed":
            events.append(run_failed(registration_id, run_id))
        if draw(st.integers(0, 9)) == 0:
            events.append(unregistered(registration_id))
            if draw(st.booleans()):
                events.append(registered(registration_id, module_id=None))
    return events


@st.composite
def interleaved_log(draw: st.DrawFn) -> list[DomainEvent]:
    """Several lives merged into one log, in an order the scheduler could have produced."""
    lives = [draw(task_life(f"t{i}")) for i in range(draw(st.integers(1, 4)))]
    lives += [draw(cleanup_life(f"c{i}")) for i in range(draw(st.integers(0, 2)))]
    log: list[DomainEvent] = []
    while any(lives):
        pending = [life for life in lives if life]
        log.append(pending[draw(st.integers(0, len(pending) - 1))].pop(0))
    return log


@st.composite
def schedules(draw: st.DrawFn, total: int) -> list[tuple[int, int, bool]]:
    """(events to append before the step, batch size, reopen the projector after)."""
    plan = []
    appended = 0
    while appended < total:
        grow = draw(st.integers(1, max(1, total - appended)))
        appended += grow
        plan.append((grow, draw(st.integers(1, 7)), draw(st.booleans())))
    return plan


def _rebuilt(store: InMemoryEventStore, path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The tables of one rebuild of the same log, in one batch."""
    projector = Projector(store, path, rebuild_batch_size=100_000)
    try:
        assert projector.rebuild() == store.last_position()
        return table_contents(projector.reader())
    finally:
        projector.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_batched_and_restarted_projection_equals_a_rebuild(data: st.DataObject) -> None:
    """Any batching, any restarts, any cache size: same tables as one pass over the log."""
    events = data.draw(interleaved_log(), label="log")
    plan = data.draw(schedules(len(events)), label="plan")
    cache_rows = data.draw(st.sampled_from([1, 3, 50_000]), label="cache_rows")
    # Small row sets go through the appender, large ones through the JSON reader: mix both.
    appender_max = data.draw(st.sampled_from([0, 2, 10**9]), label="appender_max_rows")
    default_max, writer.APPENDER_MAX_ROWS = writer.APPENDER_MAX_ROWS, appender_max
    try:
        incremental, expected = _project_in_steps(events, plan, cache_rows)
    finally:
        writer.APPENDER_MAX_ROWS = default_max
    assert incremental == expected


def _assert_board_matches(projector: Projector) -> None:
    """The in-memory task board, however it got here (patched, or loaded after a reopen),
    lists what DuckDB lists."""
    reader = projector.reader()
    try:
        for sort in queries.TASK_SORTS:
            for descending in (False, True):
                for status in (None, "running", "scheduled"):
                    query = queries.task_query(sort=sort, descending=descending, status=status)
                    assert projector.list_tasks(query) == queries.list_tasks_sql(reader, query)
    finally:
        reader.close()


def _project_in_steps(
    events: list[DomainEvent], plan: list[tuple[int, int, bool]], cache_rows: int
) -> tuple[dict[str, list[tuple[object, ...]]], dict[str, list[tuple[object, ...]]]]:
    """The tables after following ``plan``, and after one rebuild of the same log."""
    with tempfile.TemporaryDirectory() as tmp:
        store = InMemoryEventStore()
        path = Path(tmp) / "incremental.duckdb"
        projector = Projector(store, path, batch_size=1, cache_rows=cache_rows)
        fed = 0
        try:
            for grow, batch_size, reopen in plan:
                for event in events[fed : fed + grow]:
                    store.append(stream_of(event), [event])
                fed += grow
                projector.batch_size = batch_size  # cut the backlog into this step's batches
                projector.catch_up()
                if reopen:
                    projector.close()
                    projector = Projector(store, path, batch_size=1, cache_rows=cache_rows)
            assert projector.position == store.last_position() == len(events)
            incremental = table_contents(projector.reader())
            _assert_board_matches(projector)
        finally:
            projector.close()
        writer.APPENDER_MAX_ROWS = 0  # the rebuild always takes the JSON path
        return incremental, _rebuilt(store, Path(tmp) / "rebuilt.duckdb")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=interleaved_log(), cut=st.integers(0, 60))
def test_applying_envelopes_directly_equals_a_rebuild(events: list[DomainEvent], cut: int) -> None:
    """Projector.apply with overlapping deliveries gives the same tables as a rebuild."""
    with tempfile.TemporaryDirectory() as tmp:
        store = InMemoryEventStore()
        for event in events:
            store.append(stream_of(event), [event])
        envelopes = store.read_all()
        projector = Projector(store, Path(tmp) / "applied.duckdb", cache_rows=2)
        try:
            cut = min(cut, len(envelopes))
            projector.apply(envelopes[:cut])
            projector.apply(envelopes[max(0, cut - 3) :])  # the first three again: ignored
            applied = table_contents(projector.reader())
        finally:
            projector.close()
        assert applied == _rebuilt(store, Path(tmp) / "rebuilt.duckdb")


def _fold(envelopes: list[Any], **slicing: Any) -> tuple[object, ...]:
    fold = BatchFold((), (), (), ())
    fold.apply_all(envelopes, **slicing)
    return (
        {k: msgspec.structs.asdict(v) for k, v in fold.tasks.items()},
        {k: msgspec.structs.asdict(v) for k, v in fold.executions.items()},
        {k: msgspec.structs.asdict(v) for k, v in fold.registrations.items()},
        {k: msgspec.structs.asdict(v) for k, v in fold.runs.items()},
        [msgspec.structs.asdict(r) for r in fold.events],
        [msgspec.structs.asdict(r) for r in fold.skips],
        {k: [msgspec.structs.asdict(r) for r in rows] for k, rows in fold.files.items()},
        fold.last_position,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=interleaved_log(), slice_size=st.integers(1, 20))
def test_a_fold_in_slices_equals_one_in_a_stretch(
    events: list[DomainEvent], slice_size: int
) -> None:
    """The live projector's sliced fold (the GIL handed over between slices) leaves the
    same rows as folding the batch at once, and pauses once between each two slices."""
    store = InMemoryEventStore()
    for event in events:
        store.append(stream_of(event), [event])
    envelopes = store.read_all()
    pauses: list[None] = []
    sliced = _fold(envelopes, slice_size=slice_size, between_slices=lambda: pauses.append(None))
    assert sliced == _fold(envelopes)
    assert len(pauses) == max(0, -(-len(envelopes) // slice_size) - 1)
