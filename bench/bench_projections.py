"""Projection benchmarks: rebuild throughput, live lag, and query latency.

Prints one JSON object per line: ``{"bench", "value", "unit", ...}``.

    python bench/bench_projections.py                      # full size (a few minutes)
    python bench/bench_projections.py --events 100000 --query-tasks 10000 \\
        --query-executions 100000 --live-seconds 5          # quick

* ``rebuild``: ``Projector.rebuild()`` over a SQLite log of ``--events`` events (the
  synthetic mix of ``chronolog.projections.synthetic``: fires, outcomes, retries, skips,
  pauses, cleanups), written once with batched appends and ``synchronous=OFF`` and kept in
  ``--log-dir`` for later runs. Target: under 10 s for 1,000,000 events.
* ``live_lag``: a writer appends at ``--live-rate`` events/s (several threads, group
  commit, ``synchronous=NORMAL``) while ``run_until_stopped`` follows in the same process;
  lag is the time from ``append`` returning to the commit of the batch holding that
  position (``on_applied``). Target: p99 under 200 ms at 5,000 events/s.
* ``task_list`` / ``execution_history``: the task list (filtered, sorted, paginated) over
  ``--query-tasks`` tasks as the facade answers it (``Projector.list_tasks``, the
  in-memory task board; the same requests through DuckDB as ``task_list_duckdb``), and
  ``queries.list_executions`` for one task over ``--query-executions`` executions. Those
  tables are generated in SQL with the layout the projector writes (rows in time order,
  tasks interleaved) rather than projected, to keep the run short. Targets: p99 under
  20 ms.

Timings are wall clock on a shared machine; CPU seconds and the load average are printed
alongside so a run on a busy machine can be read for what it is.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import queue
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chronolog.projections import Projector, queries
from chronolog.projections.synthetic import Append, synthetic_log
from chronolog.store import SQLiteEventStore


def emit(bench: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": bench, "value": round(value, 4), "unit": unit, **extra}), flush=True)


def emit_machine() -> None:
    """The line that says where the figures come from: cores, load, Python."""
    emit(
        "machine",
        os.cpu_count() or 0,
        "cpus",
        load_average=[round(x, 2) for x in os.getloadavg()],
        python=sys.version.split()[0],
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def append_concurrently(
    store: SQLiteEventStore,
    appends: Any,
    threads: int,
    on_appended: Callable[[int, float], None] | None = None,
    pace: float | None = None,
) -> None:
    """Append with ``threads`` writers (group commit); a stream always uses one thread, so
    its order is kept. ``pace``: events per second overall; ``on_appended(position, t)``."""
    queues: list[queue.SimpleQueue[Append | None]] = [queue.SimpleQueue() for _ in range(threads)]

    def work(q: queue.SimpleQueue[Append | None]) -> None:
        while (item := q.get()) is not None:
            envelopes = store.append(item.stream_id, item.events, metadata=item.metadata)
            if on_appended is not None and envelopes:
                on_appended(envelopes[-1].position, time.monotonic())

    workers = [threading.Thread(target=work, args=(q,)) for q in queues]
    for worker in workers:
        worker.start()
    start = time.monotonic()
    sent = 0
    for append in appends:
        if pace is not None:
            due = start + sent / pace
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        queues[hash(append.stream_id) % threads].put(append)
        sent += len(append.events)
    for q in queues:
        q.put(None)
    for worker in workers:
        worker.join()


def build_log(log_dir: Path, events: int, tasks: int) -> None:
    marker = log_dir / "bench-log.json"
    wanted = {"events": events, "tasks": tasks, "seed": 1}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    if log_dir.exists():
        for name in os.listdir(log_dir):
            os.remove(log_dir / name)
    started = time.monotonic()
    store = SQLiteEventStore(log_dir, synchronous="OFF")
    try:
        append_concurrently(store, synthetic_log(events=events, tasks=tasks, seed=1), threads=8)
        assert store.last_position() == events
    finally:
        store.close()
    marker.write_text(json.dumps(wanted))
    emit("log_setup", time.monotonic() - started, "s", events=events, note="not a target")


def bench_rebuild(log_dir: Path, work_dir: Path, events: int, tasks: int) -> None:
    build_log(log_dir, events, tasks)
    store = SQLiteEventStore(log_dir, read_only=True)
    db = work_dir / "rebuild.duckdb"
    try:
        with Projector(store, db) as projector:
            cpu = cpu_seconds()
            started = time.monotonic()
            applied = projector.rebuild()
            elapsed = time.monotonic() - started
            cpu = cpu_seconds() - cpu
            assert applied == events
            counts = {
                table: projector.reader().execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                for table in ("tasks", "executions", "events")
            }
    finally:
        store.close()
    emit(
        "rebuild",
        elapsed,
        "s",
        events=events,
        events_per_s=round(events / elapsed),
        cpu_s=round(cpu, 2),
        target_s=10.0 * events / 1_000_000,
        rows=counts,
        db_mb=round(db.stat().st_size / 2**20, 1),
    )


def bench_live(work_dir: Path, seconds: float, rate: int) -> None:
    data = work_dir / "live"
    store = SQLiteEventStore(data, synchronous="NORMAL")
    # (position, when) of every commit and every append, matched up afterwards: a
    # monitoring thread would add its own GIL waits to the lag it measures.
    commits: list[tuple[int, float]] = []
    appends: list[tuple[int, float]] = []
    projector = Projector(
        store,
        work_dir / "live.duckdb",
        on_applied=lambda position: commits.append((position, time.monotonic())),
    )
    stop = threading.Event()
    follower = threading.Thread(target=projector.run_until_stopped, args=(stop, 0.5))
    follower.start()
    total = int(seconds * rate)
    cpu = cpu_seconds()
    started = time.monotonic()
    append_concurrently(
        store,
        synthetic_log(events=total, tasks=2_000, seed=2),
        threads=4,
        on_appended=lambda position, at: appends.append((position, at)),
        pace=rate,
    )
    produced_in = time.monotonic() - started
    if not projector.wait_for_position(store.last_position(), 60):
        raise RuntimeError("the projector did not catch up")
    stop.set()
    follower.join()
    cpu = cpu_seconds() - cpu
    projector.close()
    store.close()
    commit_positions = [position for position, _ in commits]
    lags = []
    for position, at in appends:
        index = bisect.bisect_left(commit_positions, position)
        lags.append(commits[index][1] - at)
    emit(
        "live_lag_p99",
        percentile(lags, 0.99) * 1000,
        "ms",
        p50_ms=round(percentile(lags, 0.50) * 1000, 2),
        p999_ms=round(percentile(lags, 0.999) * 1000, 2),
        max_ms=round(max(lags) * 1000, 2),
        target_ms=200,
        events=total,
        batches=len(commits),
        achieved_rate=round(total / produced_in),
        cpu_s=round(cpu, 2),
    )


def _generate_tables(conn: Any, tasks: int, executions: int) -> None:
    """Fill tasks and executions in SQL, laid out as the projector writes them."""
    conn.execute(
        """
        INSERT INTO tasks BY NAME
        SELECT
            't' || lpad(i::VARCHAR, 7, '0') AS task_id,
            'task ' || i AS name,
            ['reports.build', 'mail.send', 'sync.pull', 'cache.warm'][1 + i % 4] AS function_name,
            ['billing', 'mail', 'sync', NULL][1 + (i // 4) % 4] AS module_id,
            ['scheduled', 'scheduled', 'scheduled', 'running', 'paused', 'completed',
             'cancelled', 'failed'][1 + (hash(i) % 8)::BIGINT] AS status,
            i % 10 <> 0 AS recurring,
            'interval' AS trigger_kind,
            '{"kind":"interval","every":5,"unit":"minutes"}' AS trigger,
            'UTC' AS timezone,
            '{"n":' || i || '}' AS parameters,
            '{}' AS policies,
            TIMESTAMPTZ '2024-06-01 00:00:00+00'
                + to_seconds((hash(i) % 86400)::BIGINT) AS next_fire,
            TIMESTAMPTZ '2024-05-31 00:00:00+00' + to_seconds(i) AS last_fire,
            'succeeded' AS last_outcome,
            100 AS runs, 90 AS successes, 10 AS failures, 0 AS skips, 0 AS open_executions,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i) AS created_at,
            TIMESTAMPTZ '2024-05-31 00:00:00+00' + to_seconds(i) AS updated_at,
            100 AS version
        FROM range($tasks) r(i)
        """,
        {"tasks": tasks},
    )
    conn.execute(
        """
        INSERT INTO executions BY NAME
        SELECT
            't' || lpad((i % $owners)::VARCHAR, 7, '0') || '-x' || (i // $owners) AS execution_id,
            't' || lpad((i % $owners)::VARCHAR, 7, '0') AS task_id,
            i + 1 AS position,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i) AS nominal_time,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i) AS started_at,
            TIMESTAMPTZ '2024-01-01 00:00:01+00' + to_seconds(i) AS finished_at,
            (hash(i) % 10000)::BIGINT / 1000.0 AS duration_seconds,
            1 AS attempt, 'schedule' AS reason,
            CASE WHEN hash(i) % 10 = 0 THEN 'failed' ELSE 'succeeded' END AS status,
            '{"rows":1}' AS result,
            't' || (i % $owners) || ':' || i AS idempotency_key
        FROM range($executions) r(i)
        """,
        {"owners": max(1, tasks // 10), "executions": executions},
    )


def _task_list_samples(rng: random.Random, samples: int) -> list[queries.TaskQuery]:
    """Random filtered, sorted pages of 50 (the same requests for both paths)."""
    return [
        queries.task_query(
            status=rng.choice(["scheduled", "running", "failed", None]),
            module_id=rng.choice(["billing", "mail", None]),
            sort=rng.choice(["next_fire", "created_at", "name"]),
            descending=rng.random() < 0.5,
            limit=50,
            offset=rng.choice([0, 50, 500, 5_000]),
        )
        for _ in range(samples)
    ]


def _timed_pages(run: Callable[[queries.TaskQuery], Any], requests: list[Any]) -> list[float]:
    timings = []
    for request in requests:
        started = time.perf_counter()
        page = run(request)
        timings.append(time.perf_counter() - started)
        assert page.total >= len(page.items)
    return timings


def bench_queries(work_dir: Path, tasks: int, executions: int, samples: int) -> None:
    from chronolog.store import InMemoryEventStore

    with Projector(InMemoryEventStore(), work_dir / "queries.duckdb") as projector:
        conn = projector.reader()
        _generate_tables(conn, tasks, executions)
        conn.execute("CHECKPOINT")
        rng = random.Random(3)
        # The facade's path: the projector's in-memory task board. Its first use loads it
        # from DuckDB (timed apart); warming up builds the unfiltered order of each sort
        # column once, as a running scheduler's first few lists would. Filtered views are
        # built during the measurement, when first asked for.
        started = time.perf_counter()
        projector.list_tasks(queries.task_query())
        emit("task_board_load", time.perf_counter() - started, "s", tasks=tasks, note="once")
        for sort in ("next_fire", "created_at", "name"):
            projector.list_tasks(queries.task_query(sort=sort))
        requests = _task_list_samples(rng, samples)
        timings = _timed_pages(projector.list_tasks, requests)
        emit(
            "task_list_p99",
            percentile(timings, 0.99) * 1000,
            "ms",
            p50_ms=round(statistics.median(timings) * 1000, 3),
            max_ms=round(max(timings) * 1000, 2),
            tasks=tasks,
            samples=samples,
            target_ms=20,
            path="Projector.list_tasks (task board), as the facade",
        )
        # The same requests as DuckDB queries (the CLI, exports and analysts' path).
        for _ in range(20):  # warm up DuckDB's buffers and the statement path
            queries.list_tasks(conn, status="scheduled", sort="name")
            queries.list_executions(conn, task_id="t0000000")
        timings = _timed_pages(lambda query: queries.list_tasks_sql(conn, query), requests)
        emit(
            "task_list_duckdb_p99",
            percentile(timings, 0.99) * 1000,
            "ms",
            p50_ms=round(statistics.median(timings) * 1000, 2),
            tasks=tasks,
            samples=samples,
            path="queries.list_tasks on DuckDB",
        )
        owners = max(1, tasks // 10)
        timings = []
        for _ in range(samples):
            task_id = f"t{rng.randrange(owners):07d}"
            started = time.perf_counter()
            page_e = queries.list_executions(conn, task_id=task_id, limit=50)
            timings.append(time.perf_counter() - started)
            assert page_e.items
        emit(
            "execution_history_p99",
            percentile(timings, 0.99) * 1000,
            "ms",
            p50_ms=round(statistics.median(timings) * 1000, 2),
            executions=executions,
            per_task=executions // owners,
            samples=samples,
            target_ms=20,
        )
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the rebuild log")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the log here")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--live-rate", type=int, default=5_000)
    parser.add_argument("--query-tasks", type=int, default=100_000)
    parser.add_argument("--query-executions", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument(
        "--only", choices=("rebuild", "live", "queries"), action="append", default=None
    )
    args = parser.parse_args(argv)
    only = set(args.only or ("rebuild", "live", "queries"))
    emit_machine()
    with tempfile.TemporaryDirectory(prefix="chronolog-bench-") as tmp:
        work = Path(tmp)
        log_dir = args.log_dir or Path(tempfile.gettempdir()) / f"chronolog-bench-log-{args.events}"
        if "rebuild" in only:
            bench_rebuild(log_dir, work, args.events, args.tasks)
        if "live" in only:
            bench_live(work, args.live_seconds, args.live_rate)
        if "queries" in only:
            bench_queries(work, args.query_tasks, args.query_executions, args.samples)
    emit("machine_after", os.getloadavg()[0], "load1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
