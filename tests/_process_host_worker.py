"""A host with a process-engine scheduler, run until killed.

Starts a ``engine="process"`` module on DATA_DIR, schedules the task ``held`` (id
``held``) whose function blocks, waits until the function runs in this process, then
prints ``PIDS <scheduler process pid> <own pid>`` and blocks for good. Exit code 3: the
function did not start in time. With ``--fork-holder`` it first forks a process that only
sleeps, holding every descriptor the host had (its end of the control channel among
them), and prints its pid as a third number.

Usage: python _process_host_worker.py DATA_DIR [--fork-holder]
"""

from __future__ import annotations

import os
import sys
import threading
import time
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
    pids = f"PIDS {module.engine.pid} {os.getpid()}"
    if "--fork-holder" in sys.argv:
        holder = os.fork()
        if holder == 0:  # the holder: keeps the inherited descriptors open, does nothing
            time.sleep(120)
            os._exit(0)
        pids += f" {holder}"
    print(pids, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
