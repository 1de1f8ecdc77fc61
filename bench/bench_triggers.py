"""Trigger engine throughput, next to APScheduler 3.11 in the same run.

Run: ``python bench/bench_triggers.py [--quick]``. Prints one JSON object per line:
``{"bench": ..., "value": ..., "unit": ..., ...}``. Rates are best-of-N (shared machines
drift; the ratio to APScheduler measured in the same process is the figure to trust).

* ``cron_next_fire`` / ``interval_next_fire``: walking one spec forward, each call asking
  for the fire after the previous one (what the scheduler's timer does).
* ``first_fire_mixed_cold``: 100,000 mixed tasks (cron in many zones, intervals, dates),
  every cache cleared first, timing spec construction + validation + parsing + first fire.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger as ApsCron
from apscheduler.triggers.date import DateTrigger as ApsDate
from apscheduler.triggers.interval import IntervalTrigger as ApsInterval

from chronolog.triggers import CronTrigger, DateTrigger, IntervalTrigger, next_fire
from chronolog.triggers.engine import clear_caches

NOW = datetime(2027, 1, 1, tzinfo=UTC)
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "Africa/Casablanca",
]
# Standard syntax both engines read the same way (APScheduler 3 numbers weekdays from
# Monday, so weekdays are written as names).
MINUTES = ["0", "*/5", "*/15", "30", "0,30", "15", "10-50/20"]
HOURS = ["*", "9", "9-17", "*/2", "0", "3", "8,12,18"]
DOMS = ["*", "*", "*", "1", "15", "1-7"]
MONTHS = ["*", "*", "*", "*/3", "jan-jun"]
DOWS = ["*", "*", "mon-fri", "sat,sun", "mon"]


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def best_rate(run: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        calls = run()
        best = max(best, calls / (time.perf_counter() - started))
    return best


def best_time(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (CPU time shows what other load stole)."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        gc.collect()
        started, started_cpu = time.perf_counter(), time.process_time()
        run()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu


def walk_ours(spec: CronTrigger | IntervalTrigger, calls: int) -> Callable[[], int]:
    def run() -> int:
        after = NOW
        for _ in range(calls):
            fire = next_fire(spec, after)
            assert fire is not None
            after = fire.nominal
        return calls

    return run


def walk_aps(trigger: ApsCron | ApsInterval, calls: int) -> Callable[[], int]:
    def run() -> int:
        fire = trigger.get_next_fire_time(None, NOW)
        for _ in range(calls - 1):
            fire = trigger.get_next_fire_time(fire, fire)
        return calls

    return run


def bench_next_fire(calls: int, repeats: int) -> None:
    cases = [
        ("cron_next_fire", "*/5 * * * *", "Europe/Berlin", 50_000),
        ("cron_next_fire", "0 9-17 * * mon-fri", "America/New_York", 50_000),
        ("cron_next_fire", "*/5 * * * *", "UTC", 50_000),
    ]
    for name, expression, zone, target in cases:
        ours = best_rate(
            walk_ours(CronTrigger(expression=expression, timezone=zone), calls), repeats
        )
        aps = best_rate(walk_aps(ApsCron.from_crontab(expression, timezone=zone), calls), repeats)
        emit(
            bench=name,
            value=round(ours),
            unit="calls/s",
            target=f">= {target}",
            expression=expression,
            zone=zone,
            apscheduler=round(aps),
            ratio_vs_apscheduler=round(ours / aps, 2),
        )
    start = datetime(2026, 12, 31, 23, 58, 7, tzinfo=UTC)
    spec = IntervalTrigger(every=5, unit="minutes", start=start, timezone="Europe/Berlin")
    aps_trigger = ApsInterval(minutes=5, start_date=start, timezone="Europe/Berlin")
    ours = best_rate(walk_ours(spec, calls * 2), repeats)
    aps = best_rate(walk_aps(aps_trigger, calls * 2), repeats)
    emit(
        bench="interval_next_fire",
        value=round(ours),
        unit="calls/s",
        target=">= 200000",
        every="5 minutes",
        zone="Europe/Berlin",
        apscheduler=round(aps),
        ratio_vs_apscheduler=round(ours / aps, 2),
    )


def make_tasks(count: int, seed: int = 7) -> list[tuple[str, tuple[Any, ...]]]:
    """Plain descriptions of mixed tasks: 60% cron, 30% interval, 10% date."""
    rng = random.Random(seed)
    tasks: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(count):
        zone = rng.choice(ZONES)
        roll = rng.random()
        if roll < 0.6:
            fields = [rng.choice(options) for options in (MINUTES, HOURS, DOMS, MONTHS, DOWS)]
            tasks.append(("cron", (" ".join(fields), zone)))
        elif roll < 0.9:
            unit = rng.choice(["minutes", "hours", "days", "weeks"])
            start = NOW - timedelta(seconds=rng.randrange(0, 400 * 86400))
            tasks.append(("interval", (rng.randint(1, 120), unit, start, zone)))
        else:
            run_at = NOW + timedelta(seconds=rng.randrange(0, 400 * 86400))
            tasks.append(("date", (run_at, zone)))
    return tasks


def first_fires_ours(tasks: list[tuple[str, tuple[Any, ...]]]) -> None:
    for kind, args in tasks:
        spec: CronTrigger | IntervalTrigger | DateTrigger
        if kind == "cron":
            spec = CronTrigger(expression=args[0], timezone=args[1])
        elif kind == "interval":
            spec = IntervalTrigger(every=args[0], unit=args[1], start=args[2], timezone=args[3])
        else:
            spec = DateTrigger(run_at=args[0], timezone=args[1])
        next_fire(spec, NOW)


def first_fires_aps(tasks: list[tuple[str, tuple[Any, ...]]]) -> None:
    for kind, args in tasks:
        trigger: ApsCron | ApsInterval | ApsDate
        if kind == "cron":
            trigger = ApsCron.from_crontab(args[0], timezone=args[1])
        elif kind == "interval":
            trigger = ApsInterval(**{args[1]: args[0]}, start_date=args[2], timezone=args[3])
        else:
            trigger = ApsDate(run_date=args[0], timezone=args[1])
        trigger.get_next_fire_time(None, NOW)


def cold(run: Callable[[list[tuple[str, tuple[Any, ...]]]], None]) -> Callable[[], object]:
    def wrapped() -> object:
        clear_caches()
        ZoneInfo.clear_cache()
        run(TASKS)
        return None

    return wrapped


TASKS: list[tuple[str, tuple[Any, ...]]] = []


def bench_cold(count: int, repeats: int) -> None:
    TASKS[:] = make_tasks(count)
    distinct = len({args[0] for kind, args in TASKS if kind == "cron"})
    ours, ours_cpu = best_time(cold(first_fires_ours), repeats)
    aps, aps_cpu = best_time(cold(first_fires_aps), repeats)
    emit(
        bench="first_fire_mixed_cold",
        value=round(ours, 3),
        unit="s",
        target="< 2",
        cpu_s=round(ours_cpu, 3),
        tasks=count,
        mix="60% cron / 30% interval / 10% date, 8 zones",
        distinct_cron_expressions=distinct,
        apscheduler_s=round(aps, 3),
        apscheduler_cpu_s=round(aps_cpu, 3),
        speedup_vs_apscheduler=round(aps_cpu / ours_cpu, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, one repeat")
    options = parser.parse_args()
    calls, repeats, tasks = (20_000, 1, 20_000) if options.quick else (100_000, 3, 100_000)
    emit(
        bench="machine",
        value=os.cpu_count(),
        unit="cpus",
        python=sys.version.split()[0],
        platform=platform.platform(),
    )
    bench_next_fire(calls, repeats)
    bench_cold(tasks, repeats)


if __name__ == "__main__":
    main()
