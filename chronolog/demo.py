"""``chronolog demo``: the scheduler on an embedded data directory, live, for ~12 seconds.

It schedules a one-shot, an interval task, a cron task (6 fields: every 2 seconds), a task
that fails and is retried, and one that times out; prints every domain event as it is
appended; and ends with the execution history read from the DuckDB projections.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from chronolog.events import Envelope
from chronolog.module import AppContext, SchedulerModule
from chronolog.service import SchedulerService
from chronolog.settings import Settings


def send_welcome_email(user: str) -> str:
    """A one-shot job."""
    return f"welcome mail queued for {user}"


def sync_inventory(warehouse: str) -> dict[str, Any]:
    """An interval job."""
    return {"warehouse": warehouse, "items": random.randint(900, 1100)}


async def collect_metrics() -> int:
    """A cron job (async functions run on chronolog's event loop thread)."""
    await asyncio.sleep(0.05)
    return random.randint(10, 99)


_flaky_calls = {"n": 0}


def flaky_upload() -> str:
    """Fails twice, then succeeds: retried with exponential backoff."""
    _flaky_calls["n"] += 1
    if _flaky_calls["n"] < 3:
        raise ConnectionError(f"upload attempt {_flaky_calls['n']} refused")
    return "uploaded on attempt 3"


async def slow_report() -> str:
    """Takes longer than its 1 s timeout."""
    await asyncio.sleep(5)
    return "never"


def _describe(envelope: Envelope) -> str:
    event = envelope.event
    fields = []
    for name in (
        "nominal_time",
        "attempt",
        "reason",
        "retry_at",
        "fire_at",
        "error_type",
        "message",
        "result",
    ):
        value = getattr(event, name, None)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).strftime("%H:%M:%S")
        fields.append(f"{name}={value}")
    return " ".join(fields)


async def _follow(
    svc: SchedulerService,
    module: SchedulerModule,
    names: dict[str, str],
    seconds: float,
    out: TextIO,
) -> None:
    runtime = module.require_runtime()
    store = runtime.store
    position = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.to_thread(store.wait_for_events, position, 0.25)
        for envelope in store.read_all(position + 1):
            position = envelope.position
            task = names.get(envelope.stream_id.removeprefix("task-"), envelope.stream_id)
            stamp = envelope.recorded_at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
            line = f"{stamp}  #{position:<4} {task:<18} {envelope.event_type:<20}"
            print(f"{line} {_describe(envelope)}", file=out)


async def run_demo(
    data_dir: str | None = None, seconds: float = 12.0, out: TextIO | None = None
) -> int:
    """Run the demo; returns a process exit code."""
    import sys

    stream = out or sys.stdout
    directory = data_dir or tempfile.mkdtemp(prefix="chronolog-demo-")
    settings = Settings(
        data_dir=directory, log_format="console", log_level="warning", actor_idle_seconds=5
    )
    app = AppContext()
    module = SchedulerModule(settings)
    module.register(app)
    await module.start()
    svc: SchedulerService = app.get_service("scheduler_service")
    for name, function in (
        ("send_welcome_email", send_welcome_email),
        ("sync_inventory", sync_inventory),
        ("collect_metrics", collect_metrics),
        ("flaky_upload", flaky_upload),
        ("slow_report", slow_report),
    ):
        svc.register_function(name, function, module_id="demo")
    now = datetime.now(UTC)
    print(f"chronolog demo: data in {directory}", file=stream)
    requests: list[dict[str, Any]] = [
        dict(
            name="Welcome email",
            function_name="send_welcome_email",
            next_execution=now + timedelta(seconds=1),
            parameters={"user": "ada@example.com"},
        ),
        dict(
            name="Inventory sync",
            function_name="sync_inventory",
            next_execution=now + timedelta(seconds=2),
            recurring=True,
            interval_type="minutes",
            interval_value=1,
            parameters={"warehouse": "north"},
        ),
        dict(
            name="Metrics",
            function_name="collect_metrics",
            cron_expression="*/2 * * * * *",
            timezone="UTC",
        ),
        dict(
            name="Flaky upload",
            function_name="flaky_upload",
            next_execution=now + timedelta(seconds=1),
            max_retries=3,
            retry_backoff=1.0,
        ),
        dict(
            name="Slow report",
            function_name="slow_report",
            next_execution=now + timedelta(seconds=3),
            timeout=1.0,
        ),
    ]
    names: dict[str, str] = {}
    for request in requests:
        result = await svc.schedule_event(module_id="demo", **request)
        if not result.ok:
            assert result.error is not None
            print(f"could not schedule {request['name']}: {result.error.message}", file=stream)
            await module.stop()
            return 1
        assert result.value is not None
        names[result.value] = request["name"]
    bad = await svc.schedule_event(name="Typo", function_name="no_such_function")
    assert bad.error is not None
    print(
        f"bad input is refused and changes nothing: [{bad.error.code}] {bad.error.message}\n",
        file=stream,
    )
    await _follow(svc, module, names, seconds, stream)
    history = await svc.get_executions(limit=50)
    tasks = await svc.list_events(limit=50)
    await module.stop()
    print("\nexecution history (from the DuckDB projections):", file=stream)
    print(
        f"  {'task':<16} {'nominal':<9} {'attempt':>7}  {'status':<10} {'duration':>9}  detail",
        file=stream,
    )
    for row in reversed(history.unwrap().items):
        nominal = row.nominal_time.astimezone(UTC).strftime("%H:%M:%S") if row.nominal_time else "-"
        duration = f"{row.duration_seconds:.3f}s" if row.duration_seconds is not None else "-"
        detail = row.error_message or (str(row.result) if row.result is not None else "")
        label = names.get(row.task_id, row.task_id)
        line = f"  {label:<16} {nominal:<9} {row.attempt:>7}  {row.status:<10} {duration:>9}"
        print(f"{line}  {detail[:40]}", file=stream)
    print("\ntasks:", file=stream)
    for task in tasks.unwrap().items:
        next_fire = task.next_fire.astimezone(UTC).strftime("%H:%M:%S") if task.next_fire else "-"
        summary = f"{task.status:<10} runs={task.runs:<3} next={next_fire}"
        print(f"  {task.name:<16} {summary}", file=stream)
    return 0
