"""Recovery benchmark: a start that folds the whole event log against one that starts from
the state snapshots.

Prints one JSON object per line: ``{"bench", "value", "unit", ...}``.

    python bench/bench_recovery.py                              # 1,000,000 events
    python bench/bench_recovery.py --events 50000 --tasks 500   # quick

A start needs the state of every task and cleanup registration, so it folds their streams.
Without snapshots that fold reads the whole log, and its cost grows with the log for as
long as the scheduler lives; with the snapshot file (``state-snapshots.sqlite3``) a start
loads one saved state per stream and folds only the events after the file's position.
This script measures both on the same log:

* ``recovery_whole_log`` / ``recovery_from_snapshot``: ``Runtime._recover()`` (load the
  snapshot if there is one, fold the log after it, arm the timer's entries), with no
  snapshot file and with one saved at the log's end. That is the part of a start the
  snapshots change; no actors are started. ``--rounds`` rounds, the two ways alternating,
  each on a fresh copy of the log's directory. Both ways must give the same task and
  cleanup states and the same interrupted tasks, else the script stops with an error.
* ``module_start_whole_log`` / ``module_start_from_snapshot``: ``start_blocking()`` of a
  ``SchedulerModule`` on such a copy (the projections prebuilt and copied too, so the
  projector has nothing to catch up), and its ``stop_blocking()`` alongside. The module
  runs with ``fire_timers=False``: the synthetic tasks are due in 2024 and their functions
  are not registered, so a firing scheduler catches up on every task as soon as it starts;
  its stop then waits out the shards' backlog (over 30 s at 500 tasks), and the work left
  running slows the next start in the same process. It still recovers the executions the
  log leaves open. ``--module-rounds 0`` skips it.
* ``snapshot_save``: folding the whole log and saving every state into an empty file, as
  the first start with snapshots does (the snapshotter saves what the start folded), once;
  ``snapshot_file`` is that file's size.

The log is the synthetic mix of ``chronolog.projections.synthetic`` (``--events`` events
over ``--tasks`` tasks), written once with ``bench_projections.build_log`` and kept in
``--dir`` for later runs. Timings are wall clock on a shared machine; CPU seconds and the
load average are printed alongside.

At the default size the first run takes about 2.5 minutes on two cores (about 70 s to
write the log and 35 s to project it, both kept for later runs), later runs about one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# bench/ is on sys.path when this file runs as a script, as the other bench scripts do.
from bench_projections import build_log, cpu_seconds, emit, emit_machine

from chronolog import SchedulerModule, Settings
from chronolog.actors.recovery import FINGERPRINT
from chronolog.actors.runtime import Runtime
from chronolog.domain.cleanup_state import CleanupState
from chronolog.domain.task_state import TaskState
from chronolog.functions import FunctionRegistry
from chronolog.module import PROJECTIONS_FILENAME
from chronolog.projections import Projector
from chronolog.store import SQLiteEventStore
from chronolog.store.snapshots import SNAPSHOTS_FILENAME, SnapshotFile
from chronolog.store.sqlite import DB_FILENAME

WHOLE, SNAPSHOT = "whole_log", "from_snapshot"
PROJECTIONS_MARKER = "bench-projections.json"


@dataclass
class Recovered:
    """What one recovery produced, to compare the two ways."""

    tasks: dict[str, TaskState]
    cleanups: dict[str, CleanupState]
    open_tasks: set[str]
    recovered_from: int


def sqlite_files(name: str) -> tuple[str, ...]:
    return (name, f"{name}-wal", f"{name}-shm")


def copy_data(base: Path, dest: Path, *, snapshot: bool, projections: bool) -> None:
    """A fresh data directory at ``dest``: the log, and the snapshot file and projections
    if asked for."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    names = list(sqlite_files(DB_FILENAME))
    if snapshot:
        names += sqlite_files(SNAPSHOTS_FILENAME)
    if projections:
        names += [PROJECTIONS_FILENAME, f"{PROJECTIONS_FILENAME}.wal"]
    for name in names:
        if (base / name).exists():
            shutil.copyfile(base / name, dest / name)


def idle_runtime(data: Path, store: SQLiteEventStore, snapshots: SnapshotFile | None) -> Runtime:
    """A runtime over ``store`` that fires nothing and has no functions: only its start's
    fold (``_recover``) is used."""
    return Runtime(
        Settings(data_dir=str(data)),
        store,
        FunctionRegistry(),
        fire_timers=False,
        snapshots=snapshots,
    )


def make_snapshot(base: Path, events: int) -> None:
    """Fold the whole log into a new snapshot file in ``base``, the way a start does: the
    runtime folds it and its snapshotter saves what was folded."""
    for name in sqlite_files(SNAPSHOTS_FILENAME):
        (base / name).unlink(missing_ok=True)
    store = SQLiteEventStore(base, read_only=True)
    snapshots = SnapshotFile(base / SNAPSHOTS_FILENAME, FINGERPRINT)
    try:
        runtime = idle_runtime(base, store, snapshots)
        cpu = cpu_seconds()
        started = time.perf_counter()
        runtime._recover()
        folded = time.perf_counter() - started
        assert runtime._snapshotter is not None
        runtime._snapshotter.stop(budget=600)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
        position, _ = snapshots.position()
        rows = sum(1 for _ in snapshots.rows())
    finally:
        snapshots.close()
        store.close()
    if position != events:
        raise RuntimeError(f"the snapshot stops at position {position}, not at {events}")
    emit(
        "snapshot_save",
        elapsed,
        "s",
        fold_s=round(folded, 3),
        save_s=round(elapsed - folded, 3),
        cpu_s=round(cpu, 2),
        rows=rows,
        events=events,
        note="once: the first start with snapshots",
    )


def make_projections(base: Path, events: int) -> None:
    """Project the log once into ``base``, so module starts find the projections current."""
    if (base / PROJECTIONS_MARKER).exists():
        return
    (base / PROJECTIONS_FILENAME).unlink(missing_ok=True)
    started = time.monotonic()
    store = SQLiteEventStore(base, read_only=True)
    try:
        with Projector(store, base / PROJECTIONS_FILENAME) as projector:
            projector.catch_up()
    finally:
        store.close()
    (base / PROJECTIONS_MARKER).write_text(f'{{"events": {events}}}')
    emit("projections_setup", time.monotonic() - started, "s", note="not a target")


def recover_once(data: Path, way: str) -> tuple[float, float, Recovered, int]:
    """Time ``Runtime._recover()`` on ``data``: (seconds, CPU seconds, result, tasks)."""
    store = SQLiteEventStore(data)
    snapshots = SnapshotFile(data / SNAPSHOTS_FILENAME, FINGERPRINT) if way == SNAPSHOT else None
    try:
        runtime = idle_runtime(data, store, snapshots)
        cpu = cpu_seconds()
        started = time.perf_counter()
        open_tasks, cleanups, states = runtime._recover()
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
        if runtime._snapshotter is not None:
            runtime._snapshotter.stop(budget=0)
        recovered = Recovered(
            tasks={state.task_id: state for state in states},
            cleanups=dict(cleanups),
            open_tasks=set(open_tasks),
            recovered_from=runtime.recovered_from,
        )
        return elapsed, cpu, recovered, runtime.recovered_tasks
    finally:
        if snapshots is not None:
            snapshots.close()
        store.close()


def check_equal(reference: Recovered, other: Recovered, label: str) -> None:
    """Stop the benchmark if ``other`` differs from ``reference``."""
    if reference.tasks != other.tasks:
        differing = sorted(
            task_id
            for task_id in reference.tasks.keys() | other.tasks.keys()
            if reference.tasks.get(task_id) != other.tasks.get(task_id)
        )
        raise RuntimeError(
            f"{label}: {len(differing)} task states differ from the whole-log fold "
            f"(first: {differing[0]}: {reference.tasks.get(differing[0])!r} "
            f"!= {other.tasks.get(differing[0])!r})"
        )
    if reference.cleanups != other.cleanups:
        raise RuntimeError(f"{label}: the cleanup states differ from the whole-log fold")
    if reference.open_tasks != other.open_tasks:
        raise RuntimeError(f"{label}: the interrupted tasks differ from the whole-log fold")


def bench_recovery(
    base: Path, work: Path, events: int, tasks: int, rounds: int
) -> dict[str, float]:
    """Alternate the two ways for ``rounds`` rounds; the medians by way."""
    timings: dict[str, list[float]] = {WHOLE: [], SNAPSHOT: []}
    reference: Recovered | None = None
    for round_ in range(1, rounds + 1):
        for way in (WHOLE, SNAPSHOT):
            data = work / "recovery"
            copy_data(base, data, snapshot=way == SNAPSHOT, projections=False)
            elapsed, cpu, recovered, recovered_tasks = recover_once(data, way)
            shutil.rmtree(data)
            expected_from = events if way == SNAPSHOT else 0
            if recovered.recovered_from != expected_from:
                raise RuntimeError(
                    f"{way}: the fold began after position {recovered.recovered_from}, "
                    f"not {expected_from}"
                )
            if reference is None:
                reference = recovered
            else:
                check_equal(reference, recovered, f"{way}, round {round_}")
            timings[way].append(elapsed)
            emit(
                f"recovery_{way}",
                elapsed,
                "s",
                round=round_,
                cpu_s=round(cpu, 2),
                folded_after_position=recovered.recovered_from,
                events_folded=events - recovered.recovered_from,
                tasks=recovered_tasks,
                interrupted_tasks=len(recovered.open_tasks),
                events=events,
            )
    return emit_medians("recovery", timings, events, tasks, "medians", states_equal=True)


def emit_medians(
    name: str,
    samples: dict[str, list[float]],
    events: int,
    tasks: int,
    what: str,
    **extra: object,
) -> dict[str, float]:
    """Emit each way's median and the whole-log / from-snapshot ratio; the medians."""
    medians = {way: statistics.median(runs) for way, runs in samples.items()}
    for way, runs in samples.items():
        emit(
            f"{name}_{way}_median",
            medians[way],
            "s",
            runs=[round(s, 4) for s in runs],
            events=events,
            tasks=tasks,
        )
    emit(
        f"{name}_ratio",
        medians[WHOLE] / medians[SNAPSHOT],
        "x",
        note=f"whole log / from snapshot, {what}",
        events=events,
        tasks=tasks,
        **extra,
    )
    return medians


def bench_module(base: Path, work: Path, events: int, tasks: int, rounds: int) -> dict[str, float]:
    """Alternate full module starts (and stops) of the two ways; the start medians."""
    starts: dict[str, list[float]] = {WHOLE: [], SNAPSHOT: []}
    for round_ in range(1, rounds + 1):
        for way in (WHOLE, SNAPSHOT):
            data = work / "module"
            copy_data(base, data, snapshot=way == SNAPSHOT, projections=True)
            module = SchedulerModule(
                Settings(data_dir=str(data), log_level="warning"), fire_timers=False
            )
            started = time.perf_counter()
            module.start_blocking()
            start_s = time.perf_counter() - started
            runtime = module.runtime
            assert runtime is not None
            recovered_from, recovered_tasks = runtime.recovered_from, runtime.recovered_tasks
            started = time.perf_counter()
            module.stop_blocking()
            stop_s = time.perf_counter() - started
            shutil.rmtree(data)
            expected_from = events if way == SNAPSHOT else 0
            if recovered_from != expected_from:
                raise RuntimeError(
                    f"module {way}: the fold began after position {recovered_from}, "
                    f"not {expected_from}"
                )
            starts[way].append(start_s)
            emit(
                f"module_start_{way}",
                start_s,
                "s",
                round=round_,
                stop_s=round(stop_s, 3),
                folded_after_position=recovered_from,
                tasks=recovered_tasks,
                events=events,
            )
    return emit_medians("module_start", starts, events, tasks, "medians of start_blocking()")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way")
    parser.add_argument(
        "--module-rounds", type=int, default=None, help="full module starts (default: --rounds)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="keep the log here")
    args = parser.parse_args(argv)
    module_rounds = args.rounds if args.module_rounds is None else args.module_rounds
    emit_machine()
    base = args.dir or (
        Path(tempfile.gettempdir()) / f"chronolog-bench-recovery-log-{args.events}-{args.tasks}"
    )
    base.mkdir(parents=True, exist_ok=True)
    build_log(base, args.events, args.tasks)
    make_snapshot(base, args.events)
    snapshot_bytes = (base / SNAPSHOTS_FILENAME).stat().st_size
    log_bytes = (base / DB_FILENAME).stat().st_size
    emit("snapshot_file", snapshot_bytes, "bytes", log_bytes=log_bytes, events=args.events)
    if module_rounds > 0:
        make_projections(base, args.events)
    with tempfile.TemporaryDirectory(prefix="chronolog-bench-") as tmp:
        work = Path(tmp)
        recovery = bench_recovery(base, work, args.events, args.tasks, args.rounds)
        module = (
            bench_module(base, work, args.events, args.tasks, module_rounds)
            if module_rounds
            else {}
        )
    summary = {
        "recovery_whole_log_s": round(recovery[WHOLE], 4),
        "recovery_from_snapshot_s": round(recovery[SNAPSHOT], 4),
    }
    if module:
        summary |= {
            "module_start_whole_log_s": round(module[WHOLE], 4),
            "module_start_from_snapshot_s": round(module[SNAPSHOT], 4),
            "module_start_ratio": round(module[WHOLE] / module[SNAPSHOT], 2),
        }
    emit(
        "summary",
        recovery[WHOLE] / recovery[SNAPSHOT],
        "x",
        note="recovery speed-up from snapshots (whole log / from snapshot, medians)",
        events=args.events,
        tasks=args.tasks,
        rounds=args.rounds,
        snapshot_bytes=snapshot_bytes,
        states_equal=True,
        **summary,
    )
    emit("machine_after", os.getloadavg()[0], "load1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
