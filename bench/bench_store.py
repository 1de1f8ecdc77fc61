"""Event store throughput, next to the ``eventsourcing`` package's SQLite recorder.

Run: ``python bench/bench_store.py [--quick] [--repeat N] [--dir PATH]``. Prints one JSON
object per line: ``{"bench", "value", "unit", ...}`` with ``target`` where chronolog has
one and ``ratio`` (chronolog / eventsourcing) on the comparison lines. Each figure is the
best of ``--repeat`` runs (``runs`` lists them all): shared machines drift, so the ratio
measured in the same process is the figure to trust.

Workloads, all on real files in WAL mode with ``synchronous=FULL`` unless noted:

* ``append_16_threads``: 16 threads each appending one event at a time (each thread to its
  own streams, with expected versions). Target >= 20,000 acknowledged events/s.
* ``append_batches_1000``: one thread appending batches of 1,000 events. Target >= 200,000.
* ``read_all_paged``: ``read_all`` in pages of 10,000, decoding every event. Target >=
  300,000 events/s.
* ``open_1m_last_position``: opening a 1,000,000-event log and reading its last position
  (built with batched appends at ``synchronous=OFF``). Target < 1 s.

The eventsourcing side (9.5, ``SQLiteApplicationRecorder``: a global, gapless-by-rowid
order like chronolog's positions) stores the same msgspec-encoded payloads; its
connections use SQLite's default ``synchronous`` in WAL mode, which is FULL (checked and
printed as ``synchronous``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from chronolog.events import (
    DEFAULT_CODEC,
    DomainEvent,
    ExecutionStarted,
    ExecutionSucceeded,
    NextFireDecided,
)
from chronolog.store import SQLiteEventStore

THREADS = 16
BATCH = 1_000
PAGE = 10_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)

try:  # the comparison is optional: chronolog's own figures do not need it
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
except ImportError:  # pragma: no cover
    SQLiteDatastore = None  # type: ignore[assignment,misc]


def emit(bench: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": bench, "value": _rounded(value, unit), "unit": unit, **extra}))
    sys.stdout.flush()


def _rounded(value: float, unit: str) -> float:
    return round(value, 6 if unit == "s" else 1)


def best_of(
    repeat: int, run: Callable[[], float], higher_is_better: bool = True
) -> tuple[float, list[float]]:
    runs = [run() for _ in range(repeat)]
    unit = "events/s" if higher_is_better else "s"
    return (max(runs) if higher_is_better else min(runs)), [_rounded(r, unit) for r in runs]


def make_events(n: int, task: str) -> list[DomainEvent]:
    """A realistic mix: fire decided, execution started, execution succeeded, repeated."""
    out: list[DomainEvent] = []
    for i in range(n):
        nominal = T0 + timedelta(minutes=i // 3)
        kind = i % 3
        if kind == 0:
            out.append(NextFireDecided(task_id=task, nominal_time=nominal, fire_at=nominal))
        elif kind == 1:
            out.append(
                ExecutionStarted(
                    task_id=task,
                    execution_id=f"{task}-{i}",
                    nominal_time=nominal,
                    attempt=1,
                    reason="schedule",
                    idempotency_key=f"{task}:{nominal.isoformat()}",
                )
            )
        else:
            out.append(
                ExecutionSucceeded(
                    task_id=task,
                    execution_id=f"{task}-{i - 1}",
                    result={"rows": i, "ok": True},
                    duration_seconds=0.0123,
                )
            )
    return out


class Workdir:
    """Fresh directories under one root, removed at exit."""

    def __init__(self, root: str | None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chronolog-bench-", dir=root))
        self.n = 0

    def new(self) -> Path:
        self.n += 1
        path = self.root / f"run{self.n}"
        path.mkdir()
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_threads(threads: int, work: Callable[[int], None]) -> float:
    """Run ``work(k)`` on ``threads`` threads started together; return the wall time."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def body(k: int) -> None:
        barrier.wait()
        try:
            work(k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


# --- chronolog ---------------------------------------------------------------------------


def chronolog_threads(work: Workdir, per_thread: int, streams: int = 8) -> float:
    store = SQLiteEventStore(work.new(), synchronous="FULL")
    events = {k: make_events(per_thread, f"t{k}") for k in range(THREADS)}

    def append_all(k: int) -> None:
        versions = [0] * streams
        mine = events[k]
        for i, event in enumerate(mine):
            s = i % streams
            store.append(f"task-{k}-{s}", [event], expected_version=versions[s])
            versions[s] += 1

    elapsed = run_threads(THREADS, append_all)
    assert store.last_position() == THREADS * per_thread
    store.close()
    return THREADS * per_thread / elapsed


def chronolog_batches(work: Workdir, total: int) -> tuple[float, Path]:
    data_dir = work.new()
    store = SQLiteEventStore(data_dir, synchronous="FULL")
    batches = [make_events(BATCH, f"b{n}") for n in range(total // BATCH)]
    start = time.perf_counter()
    for n, batch in enumerate(batches):
        store.append(f"task-b{n}", batch, expected_version=0)
    elapsed = time.perf_counter() - start
    store.close()
    return total / elapsed, data_dir


def chronolog_read_all(data_dir: Path) -> float:
    with SQLiteEventStore(data_dir, read_only=True) as store:
        start = time.perf_counter()
        count, position = 0, 1
        while True:
            page = store.read_all(position, limit=PAGE)
            if not page:
                break
            count += len(page)
            position = page[-1].position + 1
        elapsed = time.perf_counter() - start
    return count / elapsed


def chronolog_build(data_dir: Path, total: int) -> None:
    store = SQLiteEventStore(data_dir, synchronous="OFF")
    batch = make_events(10_000, "big")
    for n in range(total // len(batch)):
        store.append(f"task-big-{n}", batch, expected_version=0)
    store.close()


def chronolog_open(data_dir: Path, read_only: bool) -> float:
    start = time.perf_counter()
    store = SQLiteEventStore(data_dir, read_only=read_only)
    store.last_position()
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


# --- eventsourcing -----------------------------------------------------------------------


def es_recorder(path: Path) -> tuple[Any, Any]:
    datastore = SQLiteDatastore(str(path / "es.sqlite3"), pool_size=THREADS + 4)
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    return datastore, recorder


def es_synchronous(datastore: Any) -> int:
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])


_ENCODER = msgspec.json.Encoder()


def es_stored(event: DomainEvent, originator: uuid.UUID, version: int) -> Any:
    return StoredEvent(
        originator_id=originator,
        originator_version=version,
        topic=type(event).__name__,
        state=_ENCODER.encode(event),
    )


def es_threads(work: Workdir, per_thread: int, streams: int = 8) -> tuple[float, int]:
    datastore, recorder = es_recorder(work.new())
    sync = es_synchronous(datastore)
    events = {k: make_events(per_thread, f"t{k}") for k in range(THREADS)}

    def append_all(k: int) -> None:
        ids = [uuid.uuid4() for _ in range(streams)]
        versions = [0] * streams
        for i, event in enumerate(events[k]):
            s = i % streams
            versions[s] += 1
            recorder.insert_events([es_stored(event, ids[s], versions[s])])

    elapsed = run_threads(THREADS, append_all)
    assert recorder.max_notification_id() == THREADS * per_thread
    datastore.close()
    return THREADS * per_thread / elapsed, sync


def es_batches(work: Workdir, total: int) -> tuple[float, Any]:
    datastore, recorder = es_recorder(work.new())
    batches = [make_events(BATCH, f"b{n}") for n in range(total // BATCH)]
    start = time.perf_counter()
    for batch in batches:
        originator = uuid.uuid4()
        recorder.insert_events(
            [es_stored(event, originator, v) for v, event in enumerate(batch, 1)]
        )
    elapsed = time.perf_counter() - start
    return total / elapsed, (datastore, recorder)


def es_read_all(recorder: Any) -> float:
    decode = DEFAULT_CODEC.decode_event
    start = time.perf_counter()
    count, position = 0, 1
    while True:
        page = recorder.select_notifications(position, PAGE)
        if not page:
            break
        for n in page:
            decode(n.topic, 1, n.state)
        count += len(page)
        position = page[-1].id + 1
    return count / (time.perf_counter() - start)


def es_build(path: Path, total: int) -> None:
    datastore, recorder = es_recorder(path)
    batch = make_events(10_000, "big")
    for _ in range(total // len(batch)):
        originator = uuid.uuid4()
        recorder.insert_events(
            [es_stored(event, originator, v) for v, event in enumerate(batch, 1)]
        )
    datastore.close()


def es_open(path: Path) -> float:
    start = time.perf_counter()
    datastore = SQLiteDatastore(str(path / "es.sqlite3"))
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.max_notification_id()
    elapsed = time.perf_counter() - start
    datastore.close()
    return elapsed


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--dir", default=None, help="where to put the files (default: tmp)")
    parser.add_argument("--no-peer", action="store_true", help="skip eventsourcing")
    args = parser.parse_args()

    per_thread = 300 if args.quick else 2_000
    batch_total = 20_000 if args.quick else 200_000
    big = 100_000 if args.quick else 1_000_000
    peer = SQLiteDatastore is not None and not args.no_peer
    work = Workdir(args.dir)
    common = {"sqlite": sqlite3.sqlite_version, "python": platform.python_version()}
    load = [round(x, 2) for x in os.getloadavg()]
    emit("machine", os.cpu_count() or 0, "cpus", platform=platform.platform(), load=load, **common)
    try:
        # 16 threads, one event per append, FULL.
        value, runs = best_of(args.repeat, lambda: chronolog_threads(work, per_thread))
        extra: dict[str, Any] = {}
        if peer:
            es_thread_runs = [
                es_threads(work, max(per_thread // 4, 50)) for _ in range(args.repeat)
            ]
            es_value = max(r[0] for r in es_thread_runs)
            emit(
                "eventsourcing_append_16_threads",
                es_value,
                "events/s",
                runs=[round(r[0], 1) for r in es_thread_runs],
                synchronous=es_thread_runs[0][1],
            )
            extra = {"ratio": round(value / es_value, 2)}
        emit(
            "append_16_threads",
            value,
            "events/s",
            target=20_000,
            runs=runs,
            median=round(statistics.median(runs), 1),
            events=THREADS * per_thread,
            **extra,
        )

        # One thread, batches of 1,000, FULL.
        results = [chronolog_batches(work, batch_total) for _ in range(args.repeat)]
        value = max(r[0] for r in results)
        read_dir = results[-1][1]
        extra = {}
        es_reader = None
        if peer:
            es_results = [es_batches(work, batch_total) for _ in range(args.repeat)]
            es_value = max(r[0] for r in es_results)
            es_reader = es_results[-1][1]
            emit(
                "eventsourcing_append_batches_1000",
                es_value,
                "events/s",
                runs=[round(r[0], 1) for r in es_results],
            )
            extra = {"ratio": round(value / es_value, 2)}
        emit(
            "append_batches_1000",
            value,
            "events/s",
            target=200_000,
            runs=[round(r[0], 1) for r in results],
            events=batch_total,
            **extra,
        )

        # read_all with decoding, pages of 10,000 (first run is the cold one).
        value, runs = best_of(args.repeat + 1, lambda: chronolog_read_all(read_dir))
        extra = {}
        if es_reader is not None:
            es_value, es_runs = best_of(args.repeat + 1, lambda: es_read_all(es_reader[1]))
            es_reader[0].close()
            emit("eventsourcing_read_all_paged", es_value, "events/s", runs=es_runs)
            extra = {"ratio": round(value / es_value, 2)}
        emit(
            "read_all_paged",
            value,
            "events/s",
            target=300_000,
            runs=runs,
            page=PAGE,
            events=batch_total,
            **extra,
        )

        # Opening a big log and reading its last position.
        big_dir = work.new()
        start = time.perf_counter()
        chronolog_build(big_dir, big)
        build_rate = big / (time.perf_counter() - start)
        value, runs = best_of(
            args.repeat, lambda: chronolog_open(big_dir, False), higher_is_better=False
        )
        ro_value, ro_runs = best_of(
            args.repeat, lambda: chronolog_open(big_dir, True), higher_is_better=False
        )
        extra = {}
        if peer:
            es_dir = work.new()
            es_build(es_dir, big)
            es_value, es_runs = best_of(
                args.repeat, lambda: es_open(es_dir), higher_is_better=False
            )
            emit("eventsourcing_open_last_position", es_value, "s", runs=es_runs, events=big)
            extra = {"ratio_time": round(value / es_value, 2)}
        emit(
            "open_1m_last_position",
            value,
            "s",
            target_max=1.0,
            runs=runs,
            events=big,
            build_events_per_s=round(build_rate),
            **extra,
        )
        emit("open_1m_last_position_read_only", ro_value, "s", target_max=1.0, runs=ro_runs)
        # The machine is shared: the load at the end says whether the run was disturbed.
        emit("load_after", os.getloadavg()[0], "load", load=[round(x, 2) for x in os.getloadavg()])
    finally:
        work.cleanup()


if __name__ == "__main__":
    main()
