"""The ``chronolog`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from chronolog.domain import replay_task
from chronolog.events import (
    ExecutionStarted,
    ExecutionSucceeded,
    NextFireDecided,
    TaskDefinition,
    TaskScheduled,
)
from chronolog.store import NO_STREAM, SQLiteEventStore
from chronolog.triggers.spec import IntervalTrigger


def _demo(args: argparse.Namespace) -> int:
    """Write a task's first events to a fresh log, read them back and replay the state."""
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="chronolog-demo-")
    now = datetime.now(UTC).replace(microsecond=0)
    trigger = IntervalTrigger(every=1, unit="days", start=now, timezone="UTC")
    definition = TaskDefinition(name="Daily backup", function_name="backup", trigger=trigger)
    with SQLiteEventStore(data_dir) as store:
        store.append(
            "task-demo",
            [TaskScheduled(task_id="demo", definition=definition, recurring=True, first_fire=now)],
            NO_STREAM,
        )
        store.append(
            "task-demo",
            [
                ExecutionStarted(
                    task_id="demo",
                    execution_id="demo-1",
                    nominal_time=now,
                    attempt=1,
                    reason="schedule",
                    idempotency_key=f"demo:{now.isoformat()}",
                ),
                NextFireDecided(
                    task_id="demo",
                    nominal_time=now + timedelta(days=1),
                    fire_at=now + timedelta(days=1),
                ),
                ExecutionSucceeded(
                    task_id="demo", execution_id="demo-1", result="ok", duration_seconds=0.01
                ),
            ],
            expected_version=1,
        )
        print(f"event log: {store.path}")
        for envelope in store.read_all():
            where = f"{envelope.stream_id} v{envelope.stream_version}"
            print(f"  #{envelope.position} {where} {envelope.event_type}")
        state = replay_task("demo", store.read_stream("task-demo"))
    print(f"replayed: status={state.status} runs={state.runs} next={state.next_nominal}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``chronolog`` command."""
    parser = argparse.ArgumentParser(prog="chronolog", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo on an embedded data directory")
    demo.add_argument("--data-dir", help="where to keep the demo's data (default: a new temp dir)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chronolog`` command."""
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
