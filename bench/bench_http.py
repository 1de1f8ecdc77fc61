"""HTTP listing latency: 50 concurrent loopback clients over 100,000 scheduled tasks.

Run: ``python bench/bench_http.py [--tasks N] [--clients N] [--seconds S] [--warmup S]
[--dir PATH] [--setup durable|fast] [--client raw|httpx] [--quick]``.
Prints one JSON object per line: ``{"bench", "value", "unit", ...}``.

Setup schedules ``--tasks`` tasks through the facade in concurrent chunks of 1,000
(``--setup durable``, the default: the shipped ``synchronous=FULL`` log; ``fast``: the same
calls with ``sqlite_synchronous="OFF"``, for setup only), over 20 modules and 5 functions,
a third recurring, one in 20 then paused; all fire a month from now, so nothing runs during
the measurement. The module is restarted every 8,000 tasks (each job actor thread leaves a
SQLite reader open, and this machine allows 20,000 descriptors). ``--dir`` keeps the data
directory and reuses it next time.

The load: ``GET /api/v1/scheduler/events?status=scheduled&module_id=<one of 20>&limit=100
&offset=<a random page>`` on ``--clients`` keep-alive connections from a separate process,
for ``--seconds`` after ``--warmup``. ``--client raw`` (default) is a minimal asyncio
HTTP/1.1 client (~0.1 ms of CPU per request, so the server gets the machine);
``httpx`` is ``httpx.AsyncClient`` (~1.7 ms per request, taken from the same two cores).
Reported: p50/p90/p99/max latency as the client sees it (target: p99 < 50 ms), requests/s,
and CPU per request in the server and client processes.

Then, to show where the time goes, each part of one request measured alone in the server
process: the page from the projector's in-memory task board (as summaries, the HTTP path,
and as full rows), the same page as a DuckDB query (the path before the board), building
and encoding the JSON, and whole requests on an idle server.
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
ROUND = 8_000
PAGE = 100
WARMUP = 3.0
TARGET_P99_MS = 50.0


def emit(bench: str, value: float, unit: str, **extra: Any) -> None:
    """Print one result line."""
    print(json.dumps({"bench": bench, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def _noop() -> None:
    return None


# --- setup --------------------------------------------------------------------------------------


async def populate(module: SchedulerModule, first_index: int, stop: int) -> None:
    """Schedule tasks ``first_index`` to ``stop - 1`` (1 in 20 then paused)."""
    svc = module.service
    first = datetime.now(UTC) + timedelta(days=30)

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

    for start in range(first_index, stop, CHUNK):
        await asyncio.gather(*(one(i) for i in range(start, min(stop, start + CHUNK))))


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
    """A started module holding ``args.tasks`` tasks; scheduling them if not there yet.

    The module is restarted every ``ROUND`` tasks: each job actor thread leaves an open
    SQLite reader behind (see the report), and 20,000 descriptors end a run near 10,000.
    """
    synchronous = "OFF" if args.setup == "fast" else "FULL"
    module = open_module(data_dir, synchronous)
    existing = module.service.sync.list_events(limit=1).unwrap().total
    if existing and existing != args.tasks:
        raise SystemExit(f"{data_dir} holds {existing} tasks, not {args.tasks}: use another --dir")
    if not existing:
        started = time.perf_counter()
        for first_index in range(0, args.tasks, ROUND):
            if first_index:
                module.stop_blocking()
                module = open_module(data_dir, synchronous)
            asyncio.run(populate(module, first_index, min(args.tasks, first_index + ROUND)))
            done = min(args.tasks, first_index + ROUND)
            rate = done / (time.perf_counter() - started)
            print(f"# scheduled {done:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
        rate = args.tasks / (time.perf_counter() - started)
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


def _target(rng: random.Random, matches: dict[str, int]) -> str:
    """The path and query of one listing request: a random module, a random page."""
    module_id = rng.choice(sorted(matches))
    offset = rng.randrange(max(1, -(-matches[module_id] // PAGE))) * PAGE
    return f"{EVENTS_PATH}?status=scheduled&module_id={module_id}&limit={PAGE}&offset={offset}"


async def _raw_client(url: str) -> Any:
    """A minimal HTTP/1.1 keep-alive client: almost no client CPU per request."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))

    async def get(target: str) -> int:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return int(head[9:12])

    return get, writer


async def _load(
    url: str,
    kind: str,
    clients: int,
    seconds: float,
    matches: dict[str, int],
    seed: int,
    warmup: float,
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    start = time.perf_counter()
    measure_from = start + warmup
    deadline = measure_from + seconds

    async def worker(get: Any, rng: random.Random) -> None:
        nonlocal sent
        while (began := time.perf_counter()) < deadline:
            status = await get(_target(rng, matches))
            sent += 1
            if began >= measure_from:
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1

    rngs = [random.Random(seed + i) for i in range(clients)]
    if kind == "httpx":
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

            async def get(target: str) -> int:
                return (await client.get(target)).status_code

            await asyncio.gather(*(worker(get, rng) for rng in rngs))
    else:
        connections = [await _raw_client(url) for _ in range(clients)]
        await asyncio.gather(
            *(worker(get, rng) for (get, _), rng in zip(connections, rngs, strict=True))
        )
        for _, writer in connections:
            writer.close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "seconds": seconds,
        "sent": sent,
        "client_cpu": time.process_time(),
    }


def _load_process(
    url: str,
    kind: str,
    clients: int,
    seconds: float,
    matches: dict[str, int],
    seed: int,
    warmup: float,
    out: Any,
) -> None:
    try:
        out.send(asyncio.run(_load(url, kind, clients, seconds, matches, seed, warmup)))
    except BaseException as exc:
        out.send({"error": f"{type(exc).__name__}: {exc}"})
    out.close()


def run_load(url: str, args: argparse.Namespace, matches: dict[str, int]) -> dict[str, Any]:
    """Drive the server from a child process; return its latencies and status counts."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_load_process,
        args=(
            url,
            args.client,
            args.clients,
            args.seconds,
            matches,
            args.seed,
            args.warmup,
            sender,
        ),
    )
    cpu_before = time.process_time()
    process.start()
    sender.close()
    deadline = time.monotonic() + args.warmup + args.seconds + 120
    while not receiver.poll(0.5):
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the load process failed (exit code {process.exitcode})")
    result: dict[str, Any] = receiver.recv()
    if "error" in result:
        raise SystemExit(f"the load process failed: {result['error']}")
    result["server_cpu"] = time.process_time() - cpu_before
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
    projector = module.require_projector()
    reader = projector.reader()
    rng = random.Random(7)
    picks: list[tuple[str, int]] = []
    for _ in range(200):
        module_id = rng.choice(sorted(matches))
        pages = max(1, matches[module_id] // PAGE)
        picks.append((module_id, rng.randrange(pages) * PAGE))

    def request_of(i: int) -> queries.TaskQuery:
        module_id, offset = picks[i % len(picks)]
        return queries.task_query(
            status="scheduled", module_id=module_id, limit=PAGE, offset=offset
        )

    def board(i: int) -> queries.Page[queries.TaskSummary]:
        return projector.list_tasks(request_of(i), queries.task_summary)

    def board_full_rows(i: int) -> queries.Page[queries.TaskRow]:
        return projector.list_tasks(request_of(i), queries.task_row)

    def duckdb_page(i: int) -> queries.Page[queries.TaskRow]:
        return queries.list_tasks_sql(reader, request_of(i))

    page = board(0)

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

    emit("part_board_page", _timed(200, board), "ms", note="the facade's path: 100 summaries")
    emit("part_board_page_full_rows", _timed(200, board_full_rows), "ms", note="100 TaskRows")
    emit("part_duckdb_page", _timed(200, duckdb_page), "ms", note="the same page from DuckDB")
    emit("part_build_and_encode_json", _timed(200, encode), "ms", bytes=len(encode(0)))
    with httpx.Client(base_url=server.url) as client:

        def request(i: int) -> None:
            module_id, offset = picks[i % len(picks)]
            params: dict[str, str | int] = {
                "status": "scheduled",
                "module_id": module_id,
                "limit": PAGE,
                "offset": offset,
            }
            client.get(EVENTS_PATH, params=params).raise_for_status()

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
    parser.add_argument("--warmup", type=float, default=WARMUP, help="seconds not measured")
    parser.add_argument("--dir", type=Path, default=None, help="keep and reuse this data dir")
    parser.add_argument("--setup", choices=("durable", "fast"), default="durable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw", help="load generator (see above)"
    )
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
        "client": args.client,
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
            per_request = 1000 / result["sent"]
            emit("http_server_cpu_per_request", result["server_cpu"] * per_request, "ms", **context)
            emit("http_client_cpu_per_request", result["client_cpu"] * per_request, "ms", **context)
            breakdown(module, server, matches)
    finally:
        module.stop_blocking()
        if args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
