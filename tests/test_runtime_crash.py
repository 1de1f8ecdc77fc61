"""Crash safety of the scheduler: SIGKILL while functions run, then restart."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chronolog import AppContext, SchedulerModule, Settings
from chronolog.domain import replay_task
from chronolog.events import (
    ExecutionInterrupted,
    ExecutionStarted,
    ExecutionSucceeded,
    RetryScheduled,
)

WORKER = Path(__file__).with_name("_runtime_crash_worker.py")


def _run_until_ready(data_dir: Path, n_slow: int, n_interval: int) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(data_dir), str(n_slow), str(n_interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("ACK "):
            acked.append(line.split()[1])
        elif line.strip() == "READY":
            break
        assert time.monotonic() < deadline
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return acked


class TestCrashRecovery:
    def test_sigkill_mid_execution_then_restart(self, tmp_path: Path) -> None:
        """Acknowledged tasks survive; running executions become interrupted and are retried;
        no nominal time runs twice except as a retry."""
        data_dir = tmp_path / "data"
        acked = _run_until_ready(data_dir, n_slow=4, n_interval=6)
        assert len(acked) == 10

        app = AppContext()
        module = SchedulerModule(Settings(data_dir=str(data_dir), log_level="error"))
        module.register(app)
        svc = app.get_service("scheduler_service").sync
        svc.register_function("slow", lambda context=None: "done after restart")
        svc.register_function("quick", lambda: "ok")
        module.start_blocking()
        try:
            store = module.require_runtime().store
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = [e for e in store.read_all() if isinstance(e.event, ExecutionSucceeded)]
                if len({e.event.task_id for e in done if e.event.task_id.startswith("slow-")}) == 4:
                    break
                time.sleep(0.05)
            assert module.settle(10)
            for task_id in acked:
                assert svc.get_event(task_id).ok, task_id
            for i in range(4):
                events = [e.event for e in store.read_stream(f"task-slow-{i}")]
                kinds = [type(e) for e in events]
                assert kinds.count(ExecutionInterrupted) == 1
                retries = [e for e in events if isinstance(e, RetryScheduled)]
                assert [r.attempt for r in retries] == [2]
                started = [e for e in events if isinstance(e, ExecutionStarted)]
                assert [(s.attempt, s.reason) for s in started] == [(1, "schedule"), (2, "retry")]
                assert started[0].idempotency_key == started[1].idempotency_key
                assert (
                    replay_task(f"slow-{i}", store.read_stream(f"task-slow-{i}")).status
                    == "completed"
                )
            runs = collections.Counter(
                (e.event.task_id, e.event.nominal_time)
                for e in store.read_all()
                if isinstance(e.event, ExecutionStarted)
                and e.event.reason in ("schedule", "catch_up")
            )
            assert runs and max(runs.values()) == 1
        finally:
            module.stop_blocking()
