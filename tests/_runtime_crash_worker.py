"""Runs a scheduler until killed: schedules tasks, prints each acknowledged id, then
prints READY once the long-running executions have started.

Usage: python _runtime_crash_worker.py DATA_DIR N_SLOW N_INTERVAL
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime

from chronolog import AppContext, SchedulerModule, Settings
from chronolog.events import ExecutionStarted


def slow(context: object = None) -> str:
    time.sleep(600)
    return "never"


def quick() -> str:
    return "ok"


def main() -> None:
    data_dir, n_slow, n_interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = AppContext()
    module = SchedulerModule(
        Settings(data_dir=data_dir, log_level="error", executor_threads=n_slow + 4)
    )
    module.register(app)
    module.start_blocking()
    svc = app.get_service("scheduler_service").sync
    svc.register_function("slow", slow)
    svc.register_function("quick", quick)
    now = datetime.now(UTC)
    for i in range(n_slow):
        r = svc.schedule_event(
            name=f"slow{i}",
            function_name="slow",
            next_execution=now,
            max_retries=1,
            retry_backoff=0.2,
            event_id=f"slow-{i}",
        )
        print(f"ACK {r.unwrap()}", flush=True)
    for i in range(n_interval):
        r = svc.schedule_event(
            name=f"iv{i}",
            function_name="quick",
            next_execution=now,
            recurring=True,
            interval_type="minutes",
            interval_value=1,
            event_id=f"interval-{i}",
        )
        print(f"ACK {r.unwrap()}", flush=True)
    store = module.require_runtime().store
    while True:
        started = {
            e.event.task_id
            for e in store.read_all()
            if isinstance(e.event, ExecutionStarted) and e.event.task_id.startswith("slow-")
        }
        if len(started) == n_slow:
            break
        time.sleep(0.01)
    print("READY", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
