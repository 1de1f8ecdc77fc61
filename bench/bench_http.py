"""HTTP listing latency: 50 concurrent loopback clients over 100,000 scheduled tasks.

Run: ``python bench/bench_http.py [--tasks N] [--clients N] [--seconds S] [--dir PATH]
[--setup durable|fast] [--quick]``. Prints one JSON object per line:
``{"bench", "value", "unit", ...}``.

Setup schedules ``--tasks`` tasks through the facade in concurrent chunks of 1,000
(``--setup durable``: the default ``synchronous=FULL`` log; ``fast``: the same facade calls
with ``sqlite_synchronous="OFF"``, for setup only), spread over 20 modules and 5 functions,
a third of them recurring, one in 20 paused; all fire a month from now, so nothing runs
during the measurement. ``--dir`` keeps the data directory and reuses it next time.

The load: ``GET /api/v1/scheduler/events?status=scheduled&module_id=<one of 20>&limit=100
&offset=<a random page>`` from ``--clients`` keep-alive connections (``httpx.AsyncClient``
in a separate process, so client CPU does not count against the server's GIL), for
``--seconds`` after a 3 s warm-up. Reported: p50/p90/p99/max latency as the client sees
it (target: p99 < 50 ms) and requests/s. Then, to show where the time goes, the same
request's parts measured one at a time in the server process: the DuckDB page query
(with its ``count(*) OVER ()``), the same page without the count, building and encoding
the response, and a whole request on an idle server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from chronolog import SchedulerModule, Settings
from chronolog.api.http import encode_cursor
from chronolog.api.openapi import EVENTS_PATH, EventPage, ScheduledEvent
from chronolog.api.server import HttpServer
from chronolog.projections import queries

MODULES = 20
FUNCTIONS = tuple(f"bench.job{i}" for i in range(5))
CHUNK = 1_000
PAGE = 100
WARMUP = 3.0
TARGET_P99_MS = 50.0


def emit(bench: str, value: float, unit: str, **extra: Any) -> None:
    """Print one result line."""
    print(json.dumps({"bench": bench, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def _noop() -> None:
    return None


# --- setup --------------------------------------------------------------------------------------


async def populate(module: SchedulerModule, total: int) -> float:
    """Schedule ``total`` tasks (1 in 20 then paused); return tasks per second."""
    svc = module.service
    first = datetime.now(UTC) + timedelta(days=30)
    started = time.perf_counter()

    async def one(i: int) -> None:
        recurring = i % 3 == 0
        (
            await svc.schedule_event(
                name=f"task {i}",
                function_name=FUNCTIONS[i % len(FUNCTIONS)],
                next_execution=first + timedelta(seconds=i),
                recurring=recurring,
                interval_type="days" if recurring else None,
                interval_value=1 if recurring else None,
                module_id=f"mod{i % MODULES:02}",
                event_id=f"t{i:07}",
            )
        ).unwrap()
        if i % 20 == 0:
            (await svc.pause_event(f"t{i:07}")).unwrap()

    for start in range(0, total, CHUNK):
        await asyncio.gather(*(one(i) for i in range(start, min(total, start + CHUNK))))
        done = min(total, start + CHUNK)
        if done % 20_000 == 0 or done == total:
            rate = done / (time.perf_counter() - started)
            print(f"# scheduled {done:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    return total / (time.perf_counter() - started)


def open_module(data_dir: Path, synchronous: str) -> SchedulerModule:
    settings = Settings(
        data_dir=str(data_dir),
        default_timezone="UTC",
        http_port=0,
        log_level="warning",
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
    )
    module = SchedulerModule(settings)
    for name in FUNCTIONS:
        module.registry.register(name, _noop, module_id="bench")
    module.start_blocking()
    return module


def prepare(args: argparse.Namespace, data_dir: Path) -> tuple[SchedulerModule, dict[str, int]]:
    """A started module holding ``args.tasks`` tasks; scheduling them if not there yet."""
    synchronous = "OFF" if args.setup == "fast" else "FULL"
    module = open_module(data_dir, synchronous)
    existing = module.service.sync.list_events(limit=1).unwrap().total
    if existing < args.tasks:
        if existing:
            raise SystemExit(f"{data_dir} holds {existing} tasks, not {args.tasks}: use another --dir")
        rate = asyncio.run(populate(module, args.tasks))
        emit("http_setup_schedule", rate, "tasks/s", tasks=args.tasks, synchronous=synchronous)
        if synchronous == "OFF":  # measure on the durable setting the product ships with
            module.stop_blocking()
            module = open_module(data_dir, "FULL")
    runtime = module.require_runtime()
    assert module.require_projector().wait_for_position(runtime.store.last_position(), 600)
    svc = module.service.sync
    matches = {
        f"mod{m:02}": svc.list_events(status="scheduled", module_id=f"mod{m:02}", limit=1)
        .unwrap()
        .total
        for m in range(MODULES)
    }
    return module, matches


# --- the load (runs in a separate process) ------------------------------------------------------


async def _load(
    url: str, clients: int, seconds: float, matches: dict[str, int], seed: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.perf_counter()
    measure_from = start + WARMUP
    deadline = measure_from + seconds
    modules = sorted(matches)

    async def worker(client: httpx.AsyncClient, rng: random.Random) -> None:
        while True:
            began = time.perf_counter()
            if began >= deadline:
                return
            module_id = rng.choice(modules)
            pages = max(1, -(-matches[module_id] // PAGE))
            params = {
                "status": "scheduled",
                "module_id": module_id,
                "limit": PAGE,
                "offset": rng.randrange(pages) * PAGE,
            }
            response = await client.get(EVENTS_PATH, params=params)
            ended = time.perf_counter()
            if began >= measure_from:
                latencies.append(ended - began)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        rngs = [random.Random(seed + i) for i in range(clients)]
        await asyncio.gather(*(worker(client, rng) for rng in rngs))
    return {"latencies": latencies, "statuses": statuses, "seconds": seconds}


def _load_process(
    url: str,
    clients: int,
    seconds: float,
    matches: dict[str, int],
    seed: int,
    out: Any,
) -> None:
    out.send(asyncio.run(_load(url, clients, seconds, matches, seed)))
    out.close()


def run_load(url: str, args: argparse.Namespace, matches: dict[str, int]) -> dict[str, Any]:
    """Drive the server from a child process; return its latencies and status counts."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_load_process, args=(url, args.clients, args.seconds, matches, args.seed, sender)
    )
    process.start()
    result: dict[str, Any] = receiver.recv()
    process.join()
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- where the time goes (in-process, one request at a time) ------------------------------------


def _timed(repeat: int, run: Any) -> float:
    """Median milliseconds of ``run(i)`` over ``repeat`` calls."""
    samples = []
    for i in range(repeat):
        began = time.perf_counter()
        run(i)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def breakdown(module: SchedulerModule, server: HttpServer, matches: dict[str, int]) -> None:
    """Median cost of each part of one listing request, measured alone."""
    reader = module.require_projector().reader()
    rng = random.Random(7)
    picks = []
    for _ in range(200):
        module_id = rng.choice(sorted(matches))
        pages = max(1, matches[module_id] // PAGE)
        picks.append((module_id, rng.randrange(pages) * PAGE))

    def query(i: int) -> queries.Page[queries.TaskRow]:
        module_id, offset = picks[i % len(picks)]
        return queries.list_tasks(
            reader, status="scheduled", module_id=module_id, limit=PAGE, offset=offset
        )

    columns = ", ".join(f'"{c}"' for c in queries.column_names("tasks"))

    def query_without_count(i: int) -> None:
        module_id, offset = picks[i % len(picks)]
        reader.execute(
            f"SELECT {columns} FROM tasks WHERE status = 'scheduled' AND module_id = $m "
            "ORDER BY created_at, task_id LIMIT 100 OFFSET $o",
            {"m": module_id, "o": offset},
        ).fetchall()

    page = query(0)

    def encode(i: int) -> bytes:
        events = tuple(ScheduledEvent.from_row(row) for row in page.items)
        return msgspec.json.encode(
            EventPage(
                events=events,
                total=page.total,
                limit=PAGE,
                offset=0,
                next_cursor=encode_cursor(PAGE, {"status": "scheduled", "module_id": "mod00"}),
            )
        )

    emit("part_duckdb_page_with_count", _timed(200, query), "ms", note="list_tasks, 100 rows")
    emit("part_duckdb_page_without_count", _timed(200, query_without_count), "ms")
    emit("part_build_and_encode_json", _timed(200, encode), "ms", bytes=len(encode(0)))
    with httpx.Client(base_url=server.url) as client:

        def request(i: int) -> None:
            module_id, offset = picks[i % len(picks)]
            params = {"status": "scheduled", "module_id": module_id, "limit": PAGE}
            client.get(EVENTS_PATH, params={**params, "offset": offset}).raise_for_status()

        def floor(i: int) -> None:
            client.get(EVENTS_PATH + "/t0000001").raise_for_status()

        emit("part_idle_request_list", _timed(200, request), "ms", note="one client, sequential")
        emit("part_idle_request_one_event", _timed(200, floor), "ms", note="HTTP + 1-row query")
    reader.close()


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None, help="keep and reuse this data dir")
    parser.add_argument("--setup", choices=("durable", "fast"), default="durable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 5 s")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seconds = 2_000, 5.0
    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="chronolog-bench-http-"))
    context = {
        "tasks": args.tasks,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    module, matches = prepare(args, data_dir)
    try:
        with HttpServer(module.service, module.settings) as server:
            result = run_load(server.url, args, matches)
            latencies = [s * 1000 for s in result["latencies"]]
            ok = result["statuses"].get(200, 0)
            if ok != len(latencies):
                raise SystemExit(f"non-200 answers: {result['statuses']}")
            p99 = percentile(latencies, 0.99)
            page = {"query": "status=scheduled&module_id=modNN&limit=100&offset=random"}
            emit("http_list_p50", percentile(latencies, 0.50), "ms", **context, **page)
            emit("http_list_p90", percentile(latencies, 0.90), "ms", **context)
            emit(
                "http_list_p99",
                p99,
                "ms",
                target=TARGET_P99_MS,
                met=p99 < TARGET_P99_MS,
                **context,
            )
            emit("http_list_max", max(latencies), "ms", **context)
            emit(
                "http_list_throughput",
                len(latencies) / result["seconds"],
                "req/s",
                requests=len(latencies),
                **context,
            )
            breakdown(module, server, matches)
    finally:
        module.stop_blocking()
        if args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
