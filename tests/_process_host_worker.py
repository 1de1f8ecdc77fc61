"""A host with a process-engine scheduler, run until killed.

Starts a ``engine="process"`` module on DATA_DIR, schedules the task ``held`` (id
``held``) whose function blocks, waits until the function runs in this process, then
prints ``PIDS <scheduler process pid> <own pid>`` and blocks for good. Exit code 3: the
function did not start in time.

Usage: python _process_host_worker.py DATA_DIR
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import UTC, datetime

from chronolog import AppContext, SchedulerModule, Settings

STARTED = threading.Event()


def hold() -> str:
    """Signals that it runs, then blocks far longer than the test lasts."""
    STARTED.set()
    threading.Event().wait(600)
    return "never"


def main() -> None:
    data_dir = sys.argv[1]
    module = SchedulerModule(Settings(data_dir=data_dir, engine="process", log_level="error"))
    module.register(AppContext())
    module.service.register_function("hold", hold)
    module.start_blocking()
    module.service.sync.schedule_event("held", "hold", datetime.now(UTC), event_id="held").unwrap()
    if not STARTED.wait(30):
        sys.exit(3)
    assert module.engine is not None
    print(f"PIDS {module.engine.pid} {os.getpid()}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
