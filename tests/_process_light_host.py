"""A host with a process-engine scheduler that makes every kind of facade call, then
prints which of the scheduler's heavy dependencies this process has imported.

Each call's answer is checked, so a host that stays light by failing does not pass.
Prints ``LOADED`` followed by the loaded names among ``duckdb`` and ``pykka``.

Usage: python _process_light_host.py DATA_DIR CLEANUP_DIR
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from chronolog import AppContext, SchedulerModule, Settings
from chronolog.api.agent import AgentDispatcher


def report() -> str:
    """The task function (never due during the run)."""
    return "built"


def main() -> None:
    data_dir, cleanup_dir = sys.argv[1], sys.argv[2]
    settings = Settings(
        data_dir=data_dir,
        engine="process",
        log_level="error",
        cleanup_allowed_roots=(cleanup_dir,),
    )
    module = SchedulerModule(settings)
    module.register(AppContext())
    module.service.register_function("report", report)
    module.start_blocking()
    try:
        sync = module.service.sync
        later = datetime.now(UTC) + timedelta(days=1)
        task = sync.schedule_event("nightly", "report", later).unwrap()
        assert sync.get_event(task).unwrap().name == "nightly"
        assert sync.list_events().unwrap().total == 1
        assert sync.list_event_summaries().unwrap().total == 1
        assert sync.get_executions(task).unwrap().total == 0
        assert sync.explain_event(task).unwrap()
        assert len(sync.preview_event(task, 2).unwrap()) == 1
        assert sync.pause_event(task, note="holiday").ok
        assert sync.get_stats(task).ok
        registration = sync.register_cleanup(cleanup_dir, "*.log", max_files=3).unwrap()
        assert sync.list_cleanups().unwrap()[0].directory == cleanup_dir
        outcome = sync.run_cleanup(registration, dry_run=True).unwrap()[0]
        assert outcome.report is not None
        assert sync.get_event("missing").error is not None
        dispatcher = AgentDispatcher(module.service, agent_id="light")
        try:
            listed = dispatcher.call_sync("list_tasks", {"status": "paused"})
        finally:
            dispatcher.close()
        assert listed["ok"], listed
    finally:
        module.stop_blocking()
    print("LOADED", *(name for name in ("duckdb", "pykka") if name in sys.modules), flush=True)


if __name__ == "__main__":
    main()
