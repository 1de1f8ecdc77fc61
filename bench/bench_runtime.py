"""The whole scheduler at work, next to APScheduler 3.11 on the same workloads.

Run: ``python bench/bench_runtime.py [--quick] [--only one_shot,interval,...]
[--subjects chronolog,aps_memory,aps_sqlite]``. Prints one JSON object per line:
``{"bench", "value", "unit", "peer", "ratio", "target", "meets", ...}``. ``value`` is
chronolog's figure, ``peer`` maps each APScheduler variant to its figure on the same
workload, ``ratio`` is chronolog / peer. The first line describes the machine.
``--subjects`` also takes ``chronolog_process`` (chronolog with ``engine="process"``; its
CPU, RSS and threads count the scheduler process too), which is then a peer column.

Each (workload, scheduler) pair runs in a fresh subprocess (threads and memory do not
bleed between runs) with its own data directory under the system temp dir, removed
afterwards, and the disk is synced before the next one starts (:func:`settle_disk`).
chronolog runs through its public API (``AppContext``, ``SchedulerModule``,
``scheduler_service``) with default settings (``sqlite_synchronous=FULL``); APScheduler
runs as a ``BackgroundScheduler`` with its ``MemoryJobStore`` (``aps_memory``) or a
``SQLAlchemyJobStore`` on a SQLite file (``aps_sqlite``), default job options
(``misfire_grace_time=1``, ``coalesce``) and its default 10-thread pool.

Workloads (``--quick`` divides every task count by 10):

* ``one_shot``: 10,000 one-shot tasks, all scheduled first, due evenly within 2 s starting
  a few seconds after scheduling ends (the head start adapts to the measured scheduling rate).
  Start lag = ``time.time()`` inside the function minus its nominal time. Fired count,
  min (never negative: no run begins before its instant)/p50/p99/max lag. Target p99 < 20 ms.
* ``interval``: 10,000 interval tasks every 10 s, 6 fires each (60 s), task i starting at
  t0 + i ms. Every fire happens, lag p99 < 20 ms, and process CPU seconds during the 60 s.
  chronolog runs it only if its ``IntervalUnit`` has ``seconds``; otherwise its line says
  ``"skipped": "no seconds unit"``.
* ``throughput``: 20,000 schedule calls (chronolog: ``asyncio.gather`` in chunks of 1,000
  concurrent calls; APScheduler: ``add_job`` on a running scheduler; its SQLite store gets
  at most 5,000). Target >= 5,000 tasks/s.
* ``memory``: 100,000 cron tasks (``m h * * *`` in UTC, all due at least 3 h later). RSS
  (MiB) as the last call is answered (target < 500) and live threads (target <= live-actor
  cap + the threads of an idle started module). Also the highest RSS sampled every 0.1 s
  while scheduling (``rss_peak``: a single reading can land on a moment's bump, such as a
  DuckDB checkpoint, or miss it) and a *settled* one, once chronolog's projections have
  every task and ``SETTLE_SECONDS`` more have passed (``rss_settled``).
* ``restart``: after ``memory``, stop the module and start a new one on the same data dir:
  seconds until ``start()`` returns and a task scheduled to run immediately has run
  (target < 3 s). Peer: APScheduler's SQLite store with 100,000 cron jobs (populated with
  ``synchronous=OFF``, untimed). ``memory`` and ``restart`` share one run.
* ``catch_up``: 10,000 tasks every minute (an interval, then in a second round the cron
  ``* * * * *``), scheduled a day (``CATCH_UP_GAP``) before the scheduler starts again:
  chronolog's on a fake clock set a day back, APScheduler's (SQLite store,
  ``coalesce=True``, no misfire grace: each job runs once) with its first run a day
  back. Seconds from the start until every task has run its one catch-up, and the events
  chronolog's log gained (each task records the fires it missed; the catch-up policy is
  chronolog's default, ``run_once``). Peer: ``aps_sqlite`` only (a memory store forgets
  its jobs when the process ends).
* ``read_your_writes``: while other writes trickle in (one ``schedule_event`` every
  20 ms), 200 rounds 37 ms apart of ``schedule_event`` then ``get_event`` of the new task
  (which waits until the projections have it) then ``list_events(limit=1)``. Latency of
  each call, p50/p99/max. Peers: ``add_job`` then ``get_job`` on APScheduler's stores.
* ``loop_lag``: a probe coroutine sleeps 1 ms in a loop and records the overshoot while
  10,000 concurrent facade calls run (``schedule_event``, then ``get_event``). p99 and max
  (target p99 < 5 ms). Peer: ``AsyncIOScheduler`` with 10,000 concurrent coroutines calling
  ``add_job`` then ``get_job``. The calls are started 100 per loop turn and gathered 100
  at a time (9,200-10,000 of the schedule calls are in flight at the peak, reported as
  ``schedule_peak_in_flight``): creating, or gathering, 10,000 tasks in one step would
  stall the loop by itself. After each burst, its ``floor``: the same probe over
  10,000 coroutines that only wait, answered over as long as the burst took (no
  scheduler), in the same worker: what the harness and Python's GC passes over its
  coroutines cost the loop by themselves. Three more runs: ``chronolog_process``, the same
  with ``engine="process"`` (reported as its own ``loop_lag.process.*`` lines, with the
  same peers), ``chronolog_frozen``, the same
  with the host calling ``gc.collect(); gc.freeze()`` after ``start()`` (full GC passes
  then skip everything that existed before), and ``bare``, the floors alone in a worker
  that imports no scheduler, over as long as chronolog's bursts took: what any library
  in a bare interpreter would measure at best. A burst of reads is over in a fraction of
  a second (a few dozen probe samples), so chronolog and its frozen variant also run
  *sustained* windows: 10,000 callers each making its next call as soon as the last
  returned (``schedule_event``, then ``get_event``), probed for 3 s once all of them
  are started (starting them is the burst above), each followed by its floor (10,000
  callers whose calls only wait as long as a real one took on average). Every probed
  window also reports the cyclic GC's full passes that overlapped it (``*_full_gc_*``:
  how many, the longest, the probe samples they covered, the p99 of the other samples):
  one such pass decides a short burst's p99, and whether it lands in a burst or in its
  floor depends on what the interpreter allocated before. The read burst then runs
  ``READ_BURSTS`` times in all, each with its floor, and their samples are pooled
  (``read_pooled_*``, with each burst's own p99): one burst's 30-140 samples make its
  nearest-rank p99 its worst sample, the pooled ones give a p99 of the lag during such
  bursts, and show how often a full pass lands in one.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import math
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chronolog import Result, SchedulerModule, SchedulerService

RESULT_MARK = "@@result "
TMP_PREFIX = "chronolog-bench-runtime-"
WORKLOADS = (
    "one_shot",
    "interval",
    "throughput",
    "memory",
    "restart",
    "loop_lag",
    "read_your_writes",
    "catch_up",
)
#: ``read_your_writes``: rounds, their spacing, and the other writes' spacing (seconds).
RYW_ROUNDS, RYW_EVERY, RYW_TRICKLE_EVERY = 200, 0.037, 0.02
SUBJECTS = ("chronolog", "aps_memory", "aps_sqlite")
PEERS = ("aps_memory", "aps_sqlite", "aps_asyncio")
#: Extra loop-lag runs reported beside the peer (see the module docstring).
LOOP_LAG_VARIANTS = ("chronolog_process", "chronolog_frozen", "bare")
#: Subjects run only when named in ``--subjects``: chronolog with ``engine="process"``.
EXTRA_SUBJECTS = ("chronolog_process",)
#: The subjects that are chronolog (one per engine).
CHRONOLOG_SUBJECTS = ("chronolog", "chronolog_process")
CHUNK = 1_000
#: Tasks the loop-lag harness creates per loop turn (all stay in flight together). A turn
#: that starts 250 takes ~2 ms by itself: the probe's 1 ms sleep then spans two of them,
#: and the harness alone reads 4.0-5.1 ms at p99, most of the 5 ms target. At 100 a turn
#: its own p99 is ~2 ms, and as many calls are in flight at the peak (the facade admits
#: a few dozen a turn either way).
SPAWN_CHUNK = 100
#: How long the loop-lag harness keeps 10,000 calls in flight in its sustained windows.
SUSTAIN_SECONDS = 3.0
#: Read bursts the loop-lag harness runs one after another (each with its floor). One
#: burst of 10,000 reads is over in 0.1-0.3 s and gives the probe 30-140 samples, below
#: the 100 a nearest-rank p99 needs to be anything but the worst sample; their samples
#: pooled give a p99 of the lag during such bursts.
READ_BURSTS = 8
#: ``catch_up``: how long the scheduler was down, and the tasks' interval (seconds).
CATCH_UP_GAP, CATCH_UP_EVERY = 86_400, 60
ONE_SHOT_SPREAD = 2.0
INTERVAL_EVERY = 10
INTERVAL_SPREAD = 10.0
APS_SQLITE_THROUGHPUT_CAP = 5_000
#: A fire-waiting loop gives up when nothing new happened for this long after the last due.
QUIET_SECONDS = 15.0
#: Hard bound on one worker subprocess (seconds).
WORKER_TIMEOUT = 1_800
#: Seconds to wait after syncing the disk between two workers (:func:`settle_disk`).
SETTLE_SECONDS = 1.0

# What the task functions record, in the worker process.
_LAGS: list[float] = []
_SKIPPED: list[int] = []
_ERRORS: list[str] = []


# --- measuring helpers -------------------------------------------------------------------


#: The scheduler process of ``engine="process"``, when one runs: its CPU, memory and
#: threads count with the host's.
_SCHEDULER_PIDS: list[int] = []


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (and its scheduler process) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    for pid in _SCHEDULER_PIDS:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


_STATUS_FILE: list[Any] = []


def proc_status(field: str) -> int:
    """An integer field of /proc/self/status (``VmRSS`` in KiB, ``Threads``), plus the
    scheduler process's.

    The file stays open, so the figure can still be read when the process is out of file
    descriptors (a finding in itself: see ``open_fds``).
    """
    if not _STATUS_FILE:
        _STATUS_FILE.append(open("/proc/self/status"))  # noqa: SIM115 - kept open on purpose
    fh = _STATUS_FILE[0]
    fh.seek(0)
    found = _status_field(fh.read(), field)
    for pid in _SCHEDULER_PIDS:
        try:
            with open(f"/proc/{pid}/status") as other:
                found += max(_status_field(other.read(), field), 0)
        except OSError:
            continue
    return found


def _status_field(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def open_fds() -> int | None:
    """Open file descriptors of this process (None when none is left to count them)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def rss_mib() -> float:
    """Resident set size in MiB."""
    return proc_status("VmRSS") / 1024


class PeakRss:
    """The highest RSS (this process plus the scheduler process, MiB) sampled every
    ``every`` seconds on a thread of its own while the ``with`` block runs: a single
    reading can land on a moment's bump (a DuckDB checkpoint) or miss it."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    @property
    def running(self) -> int:
        """1 while its thread runs (for thread counts that should leave it out), else 0."""
        return int(self._thread.is_alive())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            total = 0
            for pid in ("self", *_SCHEDULER_PIDS):
                try:  # its own files: the main thread's status file is not shared
                    with open(f"/proc/{pid}/status") as fh:
                        total += max(_status_field(fh.read(), "VmRSS"), 0)
                except OSError:  # out of file descriptors, or the process is gone
                    continue
            self.peak = max(self.peak, total / 1024)


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def lag_stats(lags: list[float], prefix: str = "lag") -> dict[str, float | None]:
    """min/p50/p99/max of lags given in seconds, reported in milliseconds (a negative
    minimum would be a run that began before its instant)."""
    ordered = sorted(x * 1000 for x in lags)
    return {
        f"{prefix}_min_ms": ordered[0] if ordered else None,
        f"{prefix}_p50_ms": percentile(ordered, 0.50),
        f"{prefix}_p99_ms": percentile(ordered, 0.99),
        f"{prefix}_max_ms": ordered[-1] if ordered else None,
    }


def log_event_counts(data_dir: Path) -> dict[str, int]:
    """Domain events per type in chronolog's log (read-only; empty if unreadable)."""
    path = data_dir / "events.sqlite3"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {str(kind): int(count) for kind, count in rows}


async def wait_for_fires(expected: int, last_due: float, deadline: float) -> None:
    """Wait until ``expected`` fires ran or were skipped, the deadline passed, or nothing
    happened for ``QUIET_SECONDS`` after the last due instant."""
    seen, changed = -1, time.time()
    while time.time() < deadline:
        done = len(_LAGS) + len(_SKIPPED)
        if done >= expected:
            return
        now = time.time()
        if done != seen:
            seen, changed = done, now
        elif now > last_due and now - changed > QUIET_SECONDS:
            return
        await asyncio.sleep(0.05)


# --- the task functions --------------------------------------------------------------------


def chronolog_probe(context: Any) -> None:
    """chronolog task: record the start lag against the execution's nominal time."""
    _LAGS.append(time.time() - context.nominal_time.timestamp())


def count_run(*_args: object) -> None:
    """A task or job that only counts its runs."""
    _LAGS.append(0.0)


def aps_probe(due: float) -> None:
    """APScheduler one-shot job: record the start lag against ``due``."""
    _LAGS.append(time.time() - due)


def aps_interval_probe(start: float, every: float) -> None:
    """APScheduler interval job: the lag behind the latest fire instant of its grid."""
    _LAGS.append((time.time() - start) % every)


# --- what to schedule, scheduler-neutral ---------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """One task: a one-shot at ``due``, ``runs`` fires every ``every`` s from ``due``, or a
    daily cron at ``hour``:``minute`` UTC."""

    name: str
    kind: typing.Literal["date", "interval", "cron"]
    due: float = 0.0
    every: int = 0
    runs: int = 0
    minute: int = 0
    hour: int = 0


MakeSpec = Callable[[int], JobSpec]


class Subject:
    """A scheduler under test: start, schedule many, stop."""

    name = ""

    async def start(self) -> None:
        raise NotImplementedError

    async def add_many(self, count: int, make: MakeSpec) -> tuple[float, int, str | None]:
        """Schedule ``make(0..count-1)``; returns seconds, failures, the first error."""
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """Extra figures worth reporting (supervisor stats, events per type)."""
        return {}


class ChronologSubject(Subject):
    """chronolog through its facade."""

    name = "chronolog"

    def __init__(self, data_dir: Path, engine: str = "thread") -> None:
        self.data_dir = data_dir
        self.engine = engine
        self.module: SchedulerModule | None = None
        self.service: SchedulerService | None = None
        self.aborted_at: int | None = None
        self.healthy_calls = 0
        self.healthy_seconds = 0.0

    async def start(self) -> None:
        from chronolog import AppContext, SchedulerModule, Settings

        module = SchedulerModule(
            Settings(
                data_dir=str(self.data_dir),
                log_level="warning",
                log_format="json",
                engine=self.engine,  # type: ignore[arg-type]
            )
        )
        app = AppContext()
        module.register(app)
        service: SchedulerService = app.get_service("scheduler_service")
        service.register_function("probe", chronolog_probe)
        self.module, self.service = module, service
        await module.start()
        if module.engine is not None and module.engine.pid is not None:
            _SCHEDULER_PIDS.append(module.engine.pid)

    @property
    def svc(self) -> SchedulerService:
        """The facade (after :meth:`start`)."""
        if self.service is None:
            raise RuntimeError("start() first")
        return self.service

    def _call(self, spec: JobSpec) -> Awaitable[Result[str]]:
        svc = self.svc
        if spec.kind == "date":
            return svc.schedule_event(
                spec.name, "probe", datetime.fromtimestamp(spec.due, UTC), timezone="UTC"
            )
        if spec.kind == "interval":
            return svc.schedule_event(
                spec.name,
                "probe",
                datetime.fromtimestamp(spec.due, UTC),
                recurring=True,
                interval_type="seconds",
                interval_value=spec.every,
                max_runs=spec.runs,
                timezone="UTC",
            )
        return svc.schedule_event(
            spec.name, "probe", cron_expression=f"{spec.minute} {spec.hour} * * *", timezone="UTC"
        )

    async def add_many(self, count: int, make: MakeSpec) -> tuple[float, int, str | None]:
        failures, first_error = 0, None
        started = time.perf_counter()
        for offset in range(0, count, CHUNK):
            calls = [self._call(make(i)) for i in range(offset, min(offset + CHUNK, count))]
            chunk_started = time.perf_counter()
            for result in await asyncio.gather(*calls):
                if not result.ok:
                    failures += 1
                    first_error = first_error or describe(result)
            if not failures:  # the rate while everything still worked
                self.healthy_calls += len(calls)
                self.healthy_seconds += time.perf_counter() - chunk_started
            if failures >= CHUNK:  # broken: do not wait out a reply timeout per chunk
                failures += count - offset - len(calls)
                self.aborted_at = offset + len(calls)
                break
        return time.perf_counter() - started, failures, first_error

    async def stop(self) -> None:
        if self.module is not None:
            await asyncio.wait_for(self.module.stop(), 120)

    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {"open_fds": open_fds()}
        if self.aborted_at is not None:
            found["scheduling_aborted_at"] = self.aborted_at
        if self.healthy_seconds:
            found["healthy_calls"] = self.healthy_calls
            found["healthy_calls_per_s"] = self.healthy_calls / self.healthy_seconds
        runtime = self.module.runtime if self.module is not None else None
        if runtime is not None:
            try:
                found["actors"] = runtime.supervisor_stats()
            except Exception as exc:  # diagnostics only
                found["actors"] = repr(exc)
        return found


class ApsSubject(Subject):
    """APScheduler 3's BackgroundScheduler with a memory or SQLite job store."""

    def __init__(self, store: str, data_dir: Path) -> None:
        self.name = f"aps_{store}"
        self.store = store
        self.data_dir = data_dir
        self.scheduler: Any = None
        self.engine: Any = None

    def build(self, *, fast_populate: bool = False) -> Any:
        """A scheduler (not started) on this subject's store."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.schedulers.background import BackgroundScheduler

        jobstores: dict[str, Any] = {}
        if self.store == "sqlite":
            from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
            from sqlalchemy import create_engine, event

            engine = create_engine(f"sqlite:///{self.data_dir / 'jobs.sqlite'}")
            if fast_populate:

                @event.listens_for(engine, "connect")
                def _sync_off(conn: Any, _record: Any) -> None:
                    conn.execute("PRAGMA synchronous=OFF")

            jobstores["default"] = SQLAlchemyJobStore(engine=engine)
            self.engine = engine
        scheduler = BackgroundScheduler(timezone="UTC", jobstores=jobstores)
        scheduler.add_listener(
            lambda _event: _SKIPPED.append(1), EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        return scheduler

    async def start(self) -> None:
        self.scheduler = self.build()
        self.scheduler.start()

    def add(self, spec: JobSpec) -> None:
        """``add_job`` for one spec."""
        add_job(self.scheduler, spec)

    async def add_many(self, count: int, make: MakeSpec) -> tuple[float, int, str | None]:
        failures, first_error = 0, None
        started = time.perf_counter()
        for i in range(count):
            try:
                self.add(make(i))
            except Exception as exc:
                failures += 1
                first_error = first_error or repr(exc)
        return time.perf_counter() - started, failures, first_error

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)


def add_job(scheduler: Any, spec: JobSpec) -> Any:
    """APScheduler ``add_job`` for a scheduler-neutral spec."""
    from apscheduler.triggers.cron import CronTrigger

    start = datetime.fromtimestamp(spec.due, UTC)
    if spec.kind == "date":
        return scheduler.add_job(aps_probe, "date", run_date=start, args=[spec.due], id=spec.name)
    if spec.kind == "interval":
        end = start + timedelta(seconds=spec.every * (spec.runs - 1) + spec.every / 2)
        return scheduler.add_job(
            aps_interval_probe,
            "interval",
            seconds=spec.every,
            start_date=start,
            end_date=end,
            args=[spec.due, float(spec.every)],
            id=spec.name,
        )
    trigger = CronTrigger(minute=spec.minute, hour=spec.hour, timezone=UTC)
    return scheduler.add_job(aps_probe, trigger, args=[0.0], id=spec.name)


async def stop_quietly(subject: Subject) -> None:
    """Stop a subject; a failure to stop is reported, not raised."""
    try:
        await subject.stop()
    except Exception as exc:
        _ERRORS.append(f"stop {subject.name}: {exc!r}")


def make_subject(name: str, data_dir: Path) -> Subject:
    """The subject called ``name``."""
    if name == "chronolog":
        return ChronologSubject(data_dir)
    if name == "chronolog_process":
        return ChronologSubject(data_dir, "process")
    return ApsSubject(name.removeprefix("aps_"), data_dir)


def far_future(i: int) -> JobSpec:
    """A one-shot due tomorrow (never fires during a run)."""
    return JobSpec(name=f"far-{i}", kind="date", due=time.time() + 86_400 + i)


def schedule_arguments(i: int) -> tuple[str, str, datetime]:
    """The loop-lag harness's ``i``-th ``schedule_event`` call: name, function, when."""
    spec = far_future(i)
    return spec.name, "probe", datetime.fromtimestamp(spec.due, UTC)


def later_cron(i: int, offset: int = 0) -> JobSpec:
    """A daily cron at least 3 hours from now (UTC)."""
    i += offset
    hour = (datetime.now(UTC).hour + 3 + (i // 60) % 18) % 24
    return JobSpec(name=f"cron-{i}", kind="cron", minute=i % 60, hour=hour)


def seconds_unit_available() -> bool:
    """Whether chronolog's IntervalTrigger accepts ``seconds``."""
    from chronolog.triggers.spec import IntervalUnit

    return "seconds" in typing.get_args(IntervalUnit)


# --- workers (one per subprocess) ------------------------------------------------------------


async def run_one_shot(subject: Subject, n: int) -> dict[str, Any]:
    """Schedule ``n`` one-shots due within 2 s, then measure their start lag."""
    await subject.start()
    try:
        calibration = max(50, n // 100)
        seconds, _, _ = await subject.add_many(calibration, far_future)
        estimate = n * seconds / calibration
        lead = max(4.0, 1.5 * estimate + 3.0)
        t0 = time.time() + lead
        seconds, failures, error = await subject.add_many(
            n, lambda i: JobSpec(name=f"once-{i}", kind="date", due=t0 + i * ONE_SHOT_SPREAD / n)
        )
        overran = time.time() > t0
        last_due = t0 + ONE_SHOT_SPREAD
        await wait_for_fires(n - failures, last_due, last_due + 120)
        lags = list(_LAGS)
        return {
            "n": n,
            "scheduled_per_s": (n - failures) / seconds,
            "schedule_failures": failures,
            "first_error": error,
            "lead_s": lead,
            "scheduling_overran_first_due": overran,
            "fired": len(lags),
            "skipped": len(_SKIPPED),
            **lag_stats(lags),
            **subject.details(),
        }
    finally:
        await stop_quietly(subject)


async def run_interval(subject: Subject, n: int, runs: int) -> dict[str, Any]:
    """``n`` tasks every 10 s, ``runs`` fires each, starts spread over 10 s."""
    if subject.name == "chronolog" and not seconds_unit_available():
        return {"skipped": "no seconds unit"}
    await subject.start()
    try:
        calibration = max(50, n // 100)
        seconds, _, _ = await subject.add_many(calibration, far_future)
        lead = max(4.0, 1.5 * n * seconds / calibration + 3.0)
        t0 = time.time() + lead
        step = INTERVAL_SPREAD / n
        seconds, failures, error = await subject.add_many(
            n,
            lambda i: JobSpec(
                name=f"every-{i}",
                kind="interval",
                due=t0 + i * step,
                every=INTERVAL_EVERY,
                runs=runs,
            ),
        )
        overran = time.time() > t0
        while time.time() < t0:
            await asyncio.sleep(0.01)
        cpu0, wall0 = cpu_seconds(), time.time()
        last_due = t0 + INTERVAL_SPREAD + INTERVAL_EVERY * (runs - 1)
        expected = (n - failures) * runs
        await wait_for_fires(expected, last_due, last_due + 120)
        cpu = cpu_seconds() - cpu0
        wall = time.time() - wall0
        lags = list(_LAGS)
        return {
            "n": n,
            "runs_each": runs,
            "expected_fires": n * runs,
            "fired": len(lags),
            "skipped": len(_SKIPPED),
            "schedule_failures": failures,
            "first_error": error,
            "scheduling_overran_first_due": overran,
            "cpu_s": cpu,
            "wall_s": wall,
            **lag_stats(lags),
            **subject.details(),
        }
    finally:
        await stop_quietly(subject)


async def run_throughput(subject: Subject, n: int) -> dict[str, Any]:
    """Time ``n`` schedule calls of one-shots due tomorrow."""
    await subject.start()
    try:
        if subject.name == "aps_sqlite":
            n = min(n, APS_SQLITE_THROUGHPUT_CAP)
        seconds, failures, error = await subject.add_many(n, far_future)
        return {
            "n": n,
            "tasks_per_s": (n - failures) / seconds,
            "seconds": seconds,
            "failures": failures,
            "first_error": error,
            **subject.details(),
        }
    finally:
        await stop_quietly(subject)


async def run_cron_memory(subject: Subject, n: int) -> dict[str, Any]:
    """Schedule ``n`` cron tasks, report RSS and threads; chronolog also restarts."""
    await subject.start()
    # Python's threads of this process; with engine="process", the OS threads of both
    # processes (the scheduler's are not Python threads of this one).
    process_engine = isinstance(subject, ChronologSubject) and subject.engine == "process"

    sampler = PeakRss()

    def threads() -> int:
        # Not counting the RSS sampler's own thread.
        found = proc_status("Threads") if process_engine else threading.active_count()
        return found - sampler.running

    base_rss, base_threads = rss_mib(), threads()
    with sampler as peak:
        seconds, failures, error = await subject.add_many(n, later_cron)
        found: dict[str, Any] = {
            "n": n,
            "scheduled_per_s": (n - failures) / seconds,
            "failures": failures,
            "first_error": error,
            "rss_idle_mib": base_rss,
            "rss_mib": rss_mib(),
            "threads_idle": base_threads,
            "threads": threads(),
            "os_threads": proc_status("Threads") - sampler.running,
            **subject.details(),
        }
        # Settled: chronolog's projections have every task (a query reads the caller's
        # own writes), then whatever a commit set off (a checkpoint) has had time to end.
        if isinstance(subject, ChronologSubject):
            await subject.svc.list_events(limit=1)
        await asyncio.sleep(SETTLE_SECONDS)
        found["rss_settled_mib"] = rss_mib()
    found["rss_peak_mib"] = peak.peak
    if not isinstance(subject, ChronologSubject):
        await stop_quietly(subject)
        return found
    from chronolog.settings import Settings

    found["live_actor_cap"] = Settings().max_live_actors
    started = time.perf_counter()
    await stop_quietly(subject)
    found["stop_s"] = time.perf_counter() - started
    found.update(await chronolog_top_up(subject.data_dir, n, subject.engine))
    found.update(await chronolog_restart(subject.data_dir, subject.engine))
    return found


#: How long the memory workload waits, once everything is scheduled, before its settled
#: reading.
SETTLE_SECONDS = 3.0


def tasks_in_log(data_dir: Path) -> int:
    """How many tasks chronolog's log holds."""
    return log_event_counts(data_dir).get("TaskScheduled", 0)


async def chronolog_top_up(data_dir: Path, n: int, engine: str = "thread") -> dict[str, Any]:
    """Bring the log to ``n`` tasks through the facade, in sessions small enough to stay
    under the file-descriptor limit (a fresh module per session), so that ``restart`` is
    measured on ``n`` tasks even when one session cannot schedule them all."""
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    session = max(1_000, min(8_000, (soft_limit - 1_000) // 2 - 1_000))
    sessions = 0
    have = tasks_in_log(data_dir)
    while have < n and sessions < 2 * (n // session + 1):
        subject = ChronologSubject(data_dir, engine)
        await subject.start()
        count = min(session, n - have)
        await subject.add_many(count, functools.partial(later_cron, offset=have))
        await stop_quietly(subject)
        sessions += 1
        have = tasks_in_log(data_dir)
    return {"top_up_sessions": sessions, "tasks_before_restart": have}


async def chronolog_restart(data_dir: Path, engine: str = "thread") -> dict[str, Any]:
    """Start a new module on ``data_dir`` and run one task due now."""
    subject = ChronologSubject(data_dir, engine)
    _LAGS.clear()
    started = time.perf_counter()
    try:
        await subject.start()
    except Exception as exc:
        return {"restart_error": repr(exc)}
    start_s = time.perf_counter() - started
    try:
        result = await subject.svc.schedule_event("after-restart", "probe")
        deadline = time.time() + 60
        while not _LAGS and time.time() < deadline:
            await asyncio.sleep(0.001)
        total = time.perf_counter() - started if _LAGS else None
        return {
            "restart_start_s": start_s,
            "restart_to_first_run_s": total,
            "restart_schedule_ok": result.ok,
            "rss_after_restart_mib": rss_mib(),
        }
    finally:
        await stop_quietly(subject)


async def run_aps_restart(data_dir: Path, n: int) -> dict[str, Any]:
    """APScheduler's SQLite store: populate ``n`` crons (untimed), restart, run one job."""
    subject = ApsSubject("sqlite", data_dir)
    scheduler = subject.build(fast_populate=True)
    for i in range(n):
        add_job(scheduler, later_cron(i))
    populate = time.perf_counter()
    scheduler.start()
    populate_s = time.perf_counter() - populate
    scheduler.shutdown(wait=False)
    subject.engine.dispose()
    started = time.perf_counter()
    await subject.start()
    start_s = time.perf_counter() - started
    try:
        subject.add(JobSpec(name="after-restart", kind="date", due=time.time()))
        deadline = time.time() + 60
        while not _LAGS and time.time() < deadline:
            await asyncio.sleep(0.001)
        return {
            "n": n,
            "populate_s": populate_s,
            "restart_start_s": start_s,
            "restart_to_first_run_s": time.perf_counter() - started if _LAGS else None,
        }
    finally:
        await stop_quietly(subject)


def first_failure(results: list[Any]) -> str | None:
    """The first failed ``Result``'s code and message."""
    for result in results:
        if not result.ok:
            return describe(result)
    return None


def describe(result: Result[Any]) -> str:
    """A failed result's code and message."""
    error = result.error
    return "ok" if error is None else f"{error.code}: {error.message}"


async def probe_loop(
    stop: asyncio.Event, out: list[float], spans: list[tuple[float, float]] | None = None
) -> None:
    """Sleep 1 ms repeatedly and record how late each wake-up is (seconds), and in
    ``spans`` when each sleep began and ended."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        after = time.perf_counter()
        out.append(after - before - 0.001)
        if spans is not None:
            spans.append((before, after))


class FullCollections:
    """Records the cyclic GC's full passes (generation 2), on any thread, while entered:
    (start, end) in ``time.perf_counter`` seconds."""

    def __init__(self) -> None:
        self.passes: list[tuple[float, float]] = []
        self._started: dict[int, float] = {}

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        now, thread = time.perf_counter(), threading.get_ident()
        if phase == "start":
            self._started[thread] = now
        elif (began := self._started.pop(thread, None)) is not None:
            self.passes.append((began, now))


@dataclass
class Window:
    """One probed window: the probe's overshoots (seconds), when each sleep began and
    ended, how long the window lasted, and the full GC passes that overlapped it."""

    lags: list[float]
    spans: list[tuple[float, float]]
    seconds: float
    passes: list[tuple[float, float]]

    def stats(self, label: str) -> dict[str, Any]:
        """:func:`lag_stats`, and the full GC passes: how many, the longest, how many
        probe samples overlapped one, and the p99 of the others. A window of a tenth of
        a second has a few dozen samples: one full pass decides its p99, and whether a
        pass falls in it or in the next window is the interpreter's choice."""
        found: dict[str, Any] = lag_stats(self.lags, label)
        in_pass = [
            any(s < after and e > before for s, e in self.passes) for before, after in self.spans
        ]
        outside = [lag for lag, hit in zip(self.lags, in_pass, strict=True) if not hit]
        found[f"{label}_full_gc_passes"] = len(self.passes)
        found[f"{label}_full_gc_longest_ms"] = max(
            ((e - s) * 1000 for s, e in self.passes), default=None
        )
        found[f"{label}_samples_in_full_gc"] = sum(in_pass)
        found[f"{label}_outside_full_gc_p99_ms"] = percentile(
            sorted(x * 1000 for x in outside), 0.99
        )
        return found


class InFlight:
    """How many calls are in flight, and the most there were at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def start_all(
    call: Callable[[Any], Awaitable[Any]],
    arguments: Iterable[Any],
    started: asyncio.Event | None = None,
) -> list[Any]:
    """``call`` on every argument, all in flight at once, and their results in order.

    The tasks are created ``SPAWN_CHUNK`` per loop turn and gathered as many at a time:
    creating 10,000 coroutines and tasks in one step, or one ``gather`` over all of them
    (which adds a done-callback to each, and builds the results list in one callback when
    the last ends), holds the loop for ten milliseconds or more by itself, which is the
    harness's lag, not the scheduler's.
    """
    chunks: list[asyncio.Future[list[Any]]] = []
    chunk: list[Awaitable[Any]] = []
    for argument in arguments:
        chunk.append(call(argument))
        if len(chunk) == SPAWN_CHUNK:
            chunks.append(asyncio.gather(*chunk))
            chunk = []
            await asyncio.sleep(0)
    if chunk:
        chunks.append(asyncio.gather(*chunk))
    if started is not None:
        started.set()
    results: list[Any] = []
    for done in chunks:
        results.extend(await done)
    return results


async def with_probe(work: Callable[[], Awaitable[Any]]) -> tuple[Any, Window]:
    """Run ``work`` while the probe runs; returns its value and the probed window."""
    stop, out, spans = asyncio.Event(), list[float](), list[tuple[float, float]]()
    probe = asyncio.create_task(probe_loop(stop, out, spans))
    await asyncio.sleep(0.05)
    out.clear()
    spans.clear()
    with FullCollections() as collections:
        started = time.perf_counter()
        value = await work()
        seconds = time.perf_counter() - started
        stop.set()
        await probe
    return value, Window(out, spans, seconds, collections.passes)


#: Makes the ``i``-th call's arguments, as a real call does (floors make them too).
MakeArguments = Callable[[int], object]


def no_arguments(i: int) -> object:
    """For calls whose arguments exist before the burst (reads of known ids)."""
    return i


def answered_within(
    seconds: float, n: int, make_arguments: MakeArguments = no_arguments
) -> Callable[[int], Awaitable[int]]:
    """A floor call: it makes the ``i``-th real call's arguments, then the ``i``-th of
    ``n`` is answered by a loop timer ``i / n`` of ``seconds`` after it starts, so ``n`` of
    them stay in flight about as long as a burst of real calls that took ``seconds``, with
    no scheduler at all."""

    async def call(i: int) -> int:
        make_arguments(i)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()
        loop.call_later(seconds * i / n, answer.set_result, i)
        return await answer

    return call


def pooled(windows: list[Window]) -> Window:
    """The samples, sleeps and full GC passes of several probed windows as one window."""
    return Window(
        [lag for w in windows for lag in w.lags],
        [span for w in windows for span in w.spans],
        sum(w.seconds for w in windows),
        [p for w in windows for p in w.passes],
    )


async def probed_burst(
    n: int, work: Callable[[], Awaitable[list[Any]]], make_arguments: MakeArguments
) -> tuple[list[Any], Window, Window]:
    """Run ``work`` (``n`` calls) under the probe, then its floor: ``n`` calls that make
    the same arguments and only wait, for as long as ``work`` took. Returns the calls'
    values, the burst's window and the floor's."""
    value, window = await with_probe(work)
    floor_calls = answered_within(window.seconds, n, make_arguments)
    _, floor = await with_probe(lambda: start_all(floor_calls, range(n)))
    return value, window, floor


def burst_stats(label: str, window: Window, floor: Window) -> dict[str, Any]:
    """A burst's figures and its floor's, keyed by ``label``."""
    found: dict[str, Any] = {f"{label}_s": window.seconds, f"{label}_samples": len(window.lags)}
    found.update(**window.stats(label), **floor.stats(f"{label}_floor"))
    return found


async def burst(
    label: str,
    n: int,
    work: Callable[[], Awaitable[list[Any]]],
    make_arguments: MakeArguments = no_arguments,
) -> tuple[list[Any], dict[str, Any]]:
    """Run ``work`` (``n`` calls) under the probe, then its floor (:func:`probed_burst`).
    The floor is what the harness's own coroutines, their arguments and Python's cyclic
    GC passes over them cost the loop by themselves; a short burst gives the probe few
    samples, so one GC pass can be its p99."""
    value, window, floor = await probed_burst(n, work, make_arguments)
    return value, burst_stats(label, window, floor)


async def read_bursts(
    label: str, n: int, work: Callable[[], Awaitable[list[Any]]], times: int = READ_BURSTS
) -> tuple[list[Any], dict[str, Any]]:
    """``times`` bursts of ``work``, each with its floor: the first one's figures under
    ``label`` (as :func:`burst`), and all of them pooled under ``{label}_pooled``, with
    each burst's own p99 in ``{label}_each_p99_ms``."""
    value, window, floor = await probed_burst(n, work, no_arguments)
    found = burst_stats(label, window, floor)
    windows, floors = [window], [floor]
    for _ in range(times - 1):
        _, window, floor = await probed_burst(n, work, no_arguments)
        windows.append(window)
        floors.append(floor)
    found.update(burst_stats(f"{label}_pooled", pooled(windows), pooled(floors)))
    found[f"{label}_each_p99_ms"] = [
        percentile(sorted(lag * 1000 for lag in w.lags), 0.99) for w in windows
    ]
    found[f"{label}_bursts"] = times
    return value, found


async def keep_in_flight(
    call: Callable[[int, int], Awaitable[object]], n: int, seconds: float
) -> tuple[int, Window]:
    """``n`` callers, each making its next call ``call(i, k)`` as soon as its last one
    returned: ``n`` calls stay in flight. Once all of them are started (the ramp is a
    burst, measured as such), the probe runs for ``seconds``; then the callers stop.
    Returns the calls completed while the probe ran, and the probed window."""
    stopping = False
    completed = 0

    async def caller(i: int) -> None:
        nonlocal completed
        k = 0
        while not stopping:
            await call(i, k)
            k += 1
            completed += 1

    all_started = asyncio.Event()
    callers = asyncio.create_task(start_all(caller, range(n), all_started))
    await all_started.wait()
    before = completed
    _, window = await with_probe(lambda: asyncio.sleep(seconds))
    during = completed - before
    stopping = True
    await callers
    return during, window


def answered_after(
    latency: float, make_arguments: MakeArguments = no_arguments
) -> Callable[[int, int], Awaitable[None]]:
    """A floor call for :func:`keep_in_flight`: it makes caller ``i``'s ``k``-th real
    call's arguments, then is answered by a loop timer after ``latency`` seconds, with no
    scheduler."""

    async def call(i: int, k: int) -> None:
        make_arguments(sustained_index(i, k))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[None] = loop.create_future()
        loop.call_later(latency, answer.set_result, None)
        await answer

    return call


def sustained_index(i: int, k: int) -> int:
    """The argument index of caller ``i``'s ``k``-th call in a sustained window (apart
    from the burst's ``0..n-1``)."""
    return 10_000_000 + i * 1_000 + k


async def sustained(
    label: str,
    n: int,
    call: Callable[[int, int], Awaitable[object]],
    make_arguments: MakeArguments = no_arguments,
) -> dict[str, Any]:
    """The probe while ``n`` calls are kept in flight for :data:`SUSTAIN_SECONDS`, then
    its floor: ``n`` callers whose calls make the same arguments and only wait, each as
    long as a real call took on average (so as many complete per second), in the same
    worker."""
    completed, window = await keep_in_flight(call, n, SUSTAIN_SECONDS)
    rate = completed / window.seconds
    floor_calls = answered_after(n / rate if rate else 1.0, make_arguments)
    _, floor = await keep_in_flight(floor_calls, n, SUSTAIN_SECONDS)
    found: dict[str, Any] = {f"{label}_calls_per_s": rate, f"{label}_samples": len(window.lags)}
    found.update(**window.stats(label), **floor.stats(f"{label}_floor"))
    return found


async def run_loop_lag(
    subject_name: str, data_dir: Path, n: int, floor_seconds: tuple[float, float]
) -> dict[str, Any]:
    """Event-loop lag while ``n`` concurrent calls schedule, then read, tasks."""
    idle: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(probe_loop(stop, idle))
    await asyncio.sleep(1.0)
    stop.set()
    await probe
    found: dict[str, Any] = {"n": n, **lag_stats(idle, "idle")}
    if subject_name == "bare":
        makers: tuple[MakeArguments, MakeArguments] = (schedule_arguments, no_arguments)
        for label, seconds, make in zip(("schedule", "read"), floor_seconds, makers, strict=True):
            calls = functools.partial(start_all, answered_within(seconds, n, make), range(n))
            _, window = await with_probe(calls)
            found.update({f"{label}_s": seconds, f"{label}_samples": len(window.lags)})
            found.update(**window.stats(label))
        return found
    if subject_name in ("chronolog", "chronolog_frozen", "chronolog_process"):
        engine = "process" if subject_name == "chronolog_process" else "thread"
        subject = ChronologSubject(data_dir, engine)
        await subject.start()
        if subject_name == "chronolog_frozen":
            gc.collect()
            gc.freeze()
        try:
            svc = subject.svc
            in_flight = InFlight()

            async def schedule_one(i: int) -> Any:
                in_flight.enter()
                try:
                    return await svc.schedule_event(*schedule_arguments(i))
                finally:
                    in_flight.leave()

            results, stats = await burst(
                "schedule", n, lambda: start_all(schedule_one, range(n)), schedule_arguments
            )
            ids = [r.value for r in results if r.ok]
            found.update(schedule_ok=len(ids), schedule_peak_in_flight=in_flight.peak, **stats)
            found["schedule_first_error"] = first_failure(results)
            results, stats = await read_bursts("read", n, lambda: start_all(svc.get_event, ids))
            found.update(read_ok=sum(1 for r in results if r.ok), **stats)
            found["first_error"] = first_failure(results)
            failures: list[Result[Any]] = []

            async def schedule_again(i: int, k: int) -> None:
                result = await schedule_one(sustained_index(i, k))
                if not result.ok:
                    failures.append(result)

            async def read_again(i: int, k: int) -> None:
                result = await svc.get_event(ids[i % len(ids)])
                if not result.ok:
                    failures.append(result)

            found.update(
                await sustained("sustained_schedule", n, schedule_again, schedule_arguments)
            )
            found.update(await sustained("sustained_read", n, read_again))
            found["sustained_failures"] = len(failures)
            found["sustained_first_error"] = first_failure(failures)
        finally:
            await stop_quietly(subject)
        return found
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.start()
    try:

        async def add_one(i: int) -> Any:
            return add_job(scheduler, far_future(i))

        async def get_one(job_id: str) -> Any:
            return scheduler.get_job(job_id)

        jobs, stats = await burst("schedule", n, lambda: start_all(add_one, range(n)), far_future)
        found.update(schedule_ok=len(jobs), **stats)
        ids = [job.id for job in jobs]
        found_jobs, stats = await read_bursts("read", n, lambda: start_all(get_one, ids))
        found.update(read_ok=sum(1 for job in found_jobs if job is not None), **stats)
    finally:
        scheduler.shutdown(wait=False)
    return found


async def run_read_your_writes(subject: Subject) -> dict[str, Any]:
    """Latency of a read of one's own write, under a trickle of other writes."""
    await subject.start()
    writes, reads, lists = list[float](), list[float](), list[float]()
    stop = asyncio.Event()
    try:
        if isinstance(subject, ChronologSubject):
            svc = subject.svc

            async def write(i: int) -> str:
                result = await svc.schedule_event(*schedule_arguments(i))
                if not result.ok:
                    raise RuntimeError(describe(result))
                return typing.cast(str, result.value)

            async def read(event_id: str) -> None:
                result = await svc.get_event(event_id)
                if not result.ok:
                    raise RuntimeError(describe(result))

            async def list_one() -> None:
                result = await svc.list_events(limit=1)
                if not result.ok:
                    raise RuntimeError(describe(result))

        else:
            scheduler = typing.cast(ApsSubject, subject).scheduler

            async def write(i: int) -> str:
                return typing.cast(str, add_job(scheduler, far_future(i)).id)

            async def read(event_id: str) -> None:
                if scheduler.get_job(event_id) is None:
                    raise RuntimeError(f"job {event_id} not found")

            async def list_one() -> None:
                scheduler.get_jobs()[:1]

        async def trickle() -> None:
            i = 1_000_000
            while not stop.is_set():
                await write(i)
                i += 1
                await asyncio.sleep(RYW_TRICKLE_EVERY)

        other_writes = asyncio.create_task(trickle())
        await asyncio.sleep(0.5)
        for i in range(RYW_ROUNDS):
            started = time.perf_counter()
            event_id = await write(i)
            written = time.perf_counter()
            await read(event_id)
            read_done = time.perf_counter()
            await list_one()
            writes.append(written - started)
            reads.append(read_done - written)
            lists.append(time.perf_counter() - read_done)
            await asyncio.sleep(RYW_EVERY)
        stop.set()
        await other_writes
    finally:
        stop.set()
        await stop_quietly(subject)
    return {
        "rounds": len(reads),
        **lag_stats(writes, "write"),
        **lag_stats(reads, "read"),
        **lag_stats(lists, "list"),
    }


async def wait_for_runs(n: int, timeout: float) -> bool:
    """Wait until ``n`` runs were counted (:func:`count_run`); whether they were."""
    deadline = time.perf_counter() + timeout
    while len(_LAGS) < n and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
    return len(_LAGS) >= n


async def run_catch_up(subject_name: str, data_dir: Path, n: int) -> dict[str, Any]:
    """``n`` minutely tasks whose scheduler was down for :data:`CATCH_UP_GAP`: seconds
    from the start until each has run once; an interval, then a cron, each on a data
    directory of its own."""
    found: dict[str, Any] = {}
    for kind in ("interval", "cron"):
        first_due = datetime.now(UTC) - timedelta(seconds=CATCH_UP_GAP)
        first_due = first_due.replace(second=0, microsecond=0)  # a cron's minute
        directory = data_dir / kind
        directory.mkdir()
        if subject_name == "chronolog":
            result = await chronolog_catch_up(directory, n, first_due, kind)
        else:
            result = await aps_catch_up(directory, n, first_due, kind)
        found.update({f"{kind}_{key}": value for key, value in result.items()})
    return found


async def chronolog_catch_up(
    data_dir: Path, n: int, first_due: datetime, kind: str
) -> dict[str, Any]:
    from chronolog import AppContext, SchedulerModule, Settings
    from chronolog.testing import FakeClock

    async def session(clock: FakeClock | None) -> tuple[SchedulerModule, SchedulerService]:
        settings = Settings(data_dir=str(data_dir), log_level="warning", log_format="json")
        module = SchedulerModule(settings, clock=clock)
        app = AppContext()
        module.register(app)
        service: SchedulerService = app.get_service("scheduler_service")
        service.register_function("count_run", count_run)
        await module.start()
        return module, service

    every: dict[str, Any] = {"cron_expression": "* * * * *"}
    if kind == "interval":
        every = {"recurring": True, "interval_type": "seconds", "interval_value": CATCH_UP_EVERY}
    module, svc = await session(FakeClock(first_due - timedelta(seconds=1)))
    for offset in range(0, n, CHUNK):
        results = await asyncio.gather(
            *(
                svc.schedule_event(f"minutely-{i}", "count_run", first_due, **every)
                for i in range(offset, min(offset + CHUNK, n))
            )
        )
        failed = [r for r in results if not r.ok]
        if failed:
            await module.stop()
            return {"error": describe(failed[0])}
    await module.stop()
    before = log_event_counts(data_dir)
    _LAGS.clear()
    started = time.perf_counter()
    module, svc = await session(None)
    start_s = time.perf_counter() - started
    try:
        all_ran = await wait_for_runs(n, 300)
        seconds = time.perf_counter() - started
    finally:
        await module.stop()
    after = log_event_counts(data_dir)
    added = {kind: count - before.get(kind, 0) for kind, count in after.items()}
    return {
        "n": n,
        "start_s": start_s,
        "all_ran_s": seconds if all_ran else None,
        "runs": len(_LAGS),
        "events_added": sum(added.values()),
        "events_added_per_task": sum(added.values()) / n,
        "events_added_by_type": {k: v for k, v in added.items() if v},
    }


async def aps_catch_up(data_dir: Path, n: int, first_due: datetime, kind: str) -> dict[str, Any]:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    subject = ApsSubject("sqlite", data_dir)
    scheduler = subject.build(fast_populate=True)
    scheduler.start(paused=True)
    trigger: Any = CronTrigger(minute="*", timezone=UTC)
    if kind == "interval":
        trigger = IntervalTrigger(seconds=CATCH_UP_EVERY, start_date=first_due, timezone=UTC)
    for i in range(n):
        scheduler.add_job(
            count_run,
            trigger,
            next_run_time=first_due,
            coalesce=True,
            misfire_grace_time=None,
            id=f"minutely-{i}",
        )
    scheduler.shutdown(wait=False)
    subject.engine.dispose()
    _LAGS.clear()
    started = time.perf_counter()
    await subject.start()
    start_s = time.perf_counter() - started
    try:
        all_ran = await wait_for_runs(n, 300)
        seconds = time.perf_counter() - started
    finally:
        await stop_quietly(subject)
    return {
        "n": n,
        "start_s": start_s,
        "all_ran_s": seconds if all_ran else None,
        "runs": len(_LAGS),
    }


async def worker(
    workload: str,
    subject_name: str,
    data_dir: Path,
    scale: int,
    floor_seconds: tuple[float, float],
) -> dict[str, Any]:
    """Run one (workload, subject) pair in this process."""
    if workload == "loop_lag":
        return await run_loop_lag(subject_name, data_dir, 10_000 // scale, floor_seconds)
    if workload == "restart":
        return await run_aps_restart(data_dir, 100_000 // scale)
    if workload == "catch_up":
        return await run_catch_up(subject_name, data_dir, 10_000 // scale)
    subject = make_subject(subject_name, data_dir)
    if workload == "one_shot":
        return await run_one_shot(subject, 10_000 // scale)
    if workload == "interval":
        return await run_interval(subject, 10_000 // scale, 6 if scale == 1 else 3)
    if workload == "throughput":
        return await run_throughput(subject, 20_000 // scale)
    if workload == "memory":
        return await run_cron_memory(subject, 100_000 // scale)
    if workload == "read_your_writes":
        return await run_read_your_writes(subject)
    raise SystemExit(f"unknown workload {workload!r}")


def worker_main(spec: str, data_dir: Path, scale: int, floor_seconds: tuple[float, float]) -> None:
    """Entry point of a worker subprocess: print one result line."""
    workload, subject_name = spec.split(":", 1)
    started = time.perf_counter()
    found = asyncio.run(worker(workload, subject_name, data_dir, scale, floor_seconds))
    found["worker_wall_s"] = time.perf_counter() - started
    if _ERRORS:
        found["errors"] = _ERRORS
    if subject_name == "chronolog" and workload != "loop_lag":
        found["log_events"] = log_event_counts(data_dir)
    print(RESULT_MARK + json.dumps(found, default=str), flush=True)
    sys.stdout.flush()
    os._exit(0)  # leftover non-daemon threads of a peer must not keep the worker alive


# --- the parent: run workers, print lines ----------------------------------------------------


def run_worker(
    workload: str, subject_name: str, scale: int, floor_seconds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Run one worker subprocess in a fresh temp dir, on a settled disk; its result or an
    error."""
    settle_disk()
    data_dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        f"{workload}:{subject_name}",
        "--dir",
        str(data_dir),
        "--scale",
        str(scale),
    ]
    if floor_seconds is not None:
        command += ["--floor-seconds", ",".join(str(s) for s in floor_seconds)]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False
        )
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_MARK):
                found: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
                return found
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {WORKER_TIMEOUT} s"}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def settle_disk() -> None:
    """Have the disk write out what came before (the last worker's data directory's
    removal among it) before a worker starts.

    Removing a worker's data directory leaves the file system work to do later (on an ext4
    mounted with ``discard``, trimming the freed blocks at the next journal commit), and
    the next worker's first fsyncs waited behind it: in alternating single runs, the
    one-shot p99 of whichever subject came second read 21-49 ms against 5-6 ms once the
    disk was synced between them. Durable subjects pay for that, a memory store does not.
    """
    os.sync()
    time.sleep(SETTLE_SECONDS)


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, recursively."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def emit(
    bench: str,
    results: dict[str, dict[str, Any]],
    key: str,
    unit: str,
    target: str | None = None,
    meets: Callable[[float], bool] | None = None,
    *,
    peer_key: str | None = None,
    ours_name: str = "chronolog",
    **extra: Any,
) -> None:
    """One JSON line: chronolog's ``key`` (or ``ours_name``'s) with every peer's figure
    and the ratios."""
    ours = results.get(ours_name, {})
    value = ours.get(key)
    if isinstance(value, str):  # e.g. "skipped": "no seconds unit" is not a figure
        value = None
    peers: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    for name in ("chronolog", *PEERS, *LOOP_LAG_VARIANTS):
        if name not in results or name == ours_name:
            continue
        theirs = results[name].get(peer_key or key)
        peers[name] = theirs
        numbers = isinstance(value, int | float) and isinstance(theirs, int | float)
        ratios[name] = value / theirs if numbers and theirs else None
    line: dict[str, Any] = {
        "bench": bench,
        "value": value,
        "unit": unit,
        "peer": peers,
        "ratio": ratios,
        "target": target,
    }
    if meets is not None:
        line["meets"] = meets(value) if isinstance(value, int | float) else False
    for name in ("skipped", "error", "errors"):
        if isinstance(ours.get(name), str | list):
            line[name] = ours[name]
    line.update(extra)
    print(json.dumps(rounded(line), default=str), flush=True)


def detail(bench: str, results: dict[str, dict[str, Any]]) -> None:
    """Every raw figure of a workload, per scheduler, on one line."""
    print(json.dumps(rounded({"bench": bench, "detail": results}), default=str), flush=True)


def machine_line() -> None:
    """The machine the figures come from."""
    from importlib.metadata import version

    versions: dict[str, str | None] = {}
    for package in ("chronolog", "apscheduler", "sqlalchemy", "pykka", "duckdb"):
        try:
            versions[package] = version(package)
        except Exception:
            versions[package] = None
    print(
        json.dumps(
            {
                "bench": "machine",
                "nproc": os.cpu_count(),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "platform": platform.platform(),
                "versions": versions,
            }
        ),
        flush=True,
    )


def report(workload: str, results: dict[str, dict[str, Any]]) -> None:
    """Print the lines of one workload."""
    ours = results.get("chronolog", {})
    if workload == "one_shot":
        emit(
            "one_shot.fired",
            results,
            "fired",
            "tasks",
            "all",
            None,
            n=results_n(results),
            schedule_failures=ours.get("schedule_failures"),
        )
        emit("one_shot.lag_min", results, "lag_min_ms", "ms", ">= 0", lambda v: v >= 0)
        emit("one_shot.lag_p50", results, "lag_p50_ms", "ms")
        emit("one_shot.lag_p99", results, "lag_p99_ms", "ms", "< 20", below(20))
        emit("one_shot.lag_max", results, "lag_max_ms", "ms")
        emit("one_shot.skipped", results, "skipped", "tasks")
    elif workload == "interval":
        emit("interval.fired", results, "fired", "fires", "all", None)
        emit("interval.lag_min", results, "lag_min_ms", "ms", ">= 0", lambda v: v >= 0)
        emit("interval.lag_p99", results, "lag_p99_ms", "ms", "< 20", below(20))
        emit("interval.lag_max", results, "lag_max_ms", "ms")
        emit("interval.cpu", results, "cpu_s", "cpu s / 60 s")
        emit("interval.skipped", results, "skipped", "fires")
    elif workload == "throughput":
        emit(
            "throughput.schedule",
            results,
            "tasks_per_s",
            "tasks/s",
            ">= 5000",
            lambda v: v >= 5000,
            failures=ours.get("failures"),
            rate_before_first_failure=ours.get("healthy_calls_per_s"),
        )
    elif workload == "memory":
        scheduled = ours.get("n", 0) - ours.get("failures", 0) if ours else None
        emit(
            "memory.rss_100k_cron",
            results,
            "rss_mib",
            "MiB",
            "< 500",
            below(500),
            scheduled_ok=scheduled,
            open_fds=ours.get("open_fds"),
        )
        cap = ours.get("live_actor_cap", 1000) + ours.get("threads_idle", 0)
        emit(
            "memory.threads_100k_cron",
            results,
            "threads",
            "threads",
            f"<= {cap}",
            lambda v: v <= cap,
            scheduled_ok=scheduled,
        )
        emit("memory.rss_peak_100k_cron", results, "rss_peak_mib", "MiB")
        emit("memory.rss_settled_100k_cron", results, "rss_settled_mib", "MiB")
        emit("memory.schedule_100k_cron", results, "scheduled_per_s", "tasks/s")
    elif workload == "restart":
        emit(
            "restart.to_first_run",
            results,
            "restart_to_first_run_s",
            "s",
            "< 3",
            below(3),
            start_s=ours.get("restart_start_s"),
            tasks_in_log=ours.get("tasks_before_restart"),
        )
    elif workload == "catch_up":
        for kind in ("interval", "cron"):
            emit(
                f"catch_up.{kind}.all_ran",
                results,
                f"{kind}_all_ran_s",
                "s",
                n=ours.get(f"{kind}_n"),
                start_s=ours.get(f"{kind}_start_s"),
                runs=ours.get(f"{kind}_runs"),
            )
            emit(
                f"catch_up.{kind}.events_per_task",
                results,
                f"{kind}_events_added_per_task",
                "events",
            )
    elif workload == "read_your_writes":
        for call in ("write", "read", "list"):
            for stat in ("p50", "p99", "max"):
                emit(f"read_your_writes.{call}_{stat}", results, f"{call}_{stat}_ms", "ms")
    elif workload == "loop_lag":
        # chronolog's default engine, then engine="process" with the same peers.
        for prefix, name in (
            ("loop_lag.", "chronolog"),
            ("loop_lag.process.", "chronolog_process"),
        ):
            if name in results:
                emit_loop_lag(prefix, results, name)
    detail(workload + ".detail", results)


def emit_loop_lag(prefix: str, results: dict[str, dict[str, Any]], ours_name: str) -> None:
    """The loop-lag lines of one chronolog engine."""
    ours = results[ours_name]
    extra: dict[str, Any] = {"schedule_ok": ours.get("schedule_ok"), "read_ok": ours.get("read_ok")}
    line = functools.partial(emit, results=results, ours_name=ours_name)
    for kind in ("schedule", "read"):
        line(
            bench=f"{prefix}{kind}_p99",
            key=f"{kind}_p99_ms",
            unit="ms",
            target="< 5",
            meets=below(5),
            # Below 100 samples a p99 is the worst sample (a read burst gets ~50-140).
            samples=ours.get(f"{kind}_samples"),
            peak_in_flight=ours.get(f"{kind}_peak_in_flight"),
            **extra,
        )
        line(bench=f"{prefix}{kind}_max", key=f"{kind}_max_ms", unit="ms")
        line(bench=f"{prefix}{kind}_floor_p99", key=f"{kind}_floor_p99_ms", unit="ms")
        full_gc_lines(line, prefix, kind, ours)
        full_gc_lines(line, prefix, f"{kind}_floor", ours)
    line(
        bench=f"{prefix}read_pooled_p99",
        key="read_pooled_p99_ms",
        unit="ms",
        target="< 5",
        meets=below(5),
        bursts=ours.get("read_bursts"),
        samples=ours.get("read_pooled_samples"),
        each_burst_p99_ms=ours.get("read_each_p99_ms"),
    )
    line(bench=f"{prefix}read_pooled_floor_p99", key="read_pooled_floor_p99_ms", unit="ms")
    full_gc_lines(line, prefix, "read_pooled", ours)
    full_gc_lines(line, prefix, "read_pooled_floor", ours)
    for kind in ("schedule", "read"):
        label = f"sustained_{kind}"
        line(
            bench=f"{prefix}{label}_p99",
            key=f"{label}_p99_ms",
            unit="ms",
            target="< 5",
            meets=below(5),
            calls_per_s=ours.get(f"{label}_calls_per_s"),
            failures=ours.get("sustained_failures"),
            samples=ours.get(f"{label}_samples"),
        )
        line(bench=f"{prefix}{label}_floor_p99", key=f"{label}_floor_p99_ms", unit="ms")
        full_gc_lines(line, prefix, label, ours)
        full_gc_lines(line, prefix, f"{label}_floor", ours)


def full_gc_lines(line: Callable[..., None], prefix: str, label: str, ours: dict[str, Any]) -> None:
    """The p99 of a window's probe samples that no full GC pass overlapped, with the
    passes it had (for every subject: the peers' passes are in their detail)."""
    line(
        bench=f"{prefix}{label}_outside_full_gc_p99",
        key=f"{label}_outside_full_gc_p99_ms",
        unit="ms",
        full_gc_passes=ours.get(f"{label}_full_gc_passes"),
        full_gc_longest_ms=ours.get(f"{label}_full_gc_longest_ms"),
        samples_in_full_gc=ours.get(f"{label}_samples_in_full_gc"),
    )


def below(limit: float) -> Callable[[float], bool]:
    """A check that a figure is under ``limit``."""
    return lambda value: value < limit


def results_n(results: dict[str, dict[str, Any]]) -> Any:
    """The task count of a workload (chronolog's, else any)."""
    for found in results.values():
        if "n" in found:
            return found["n"]
    return None


def plan(workload: str, subjects: list[str]) -> list[tuple[str, str, str]]:
    """(worker workload, subject, reported name) runs for a workload."""
    if workload == "loop_lag":
        names = []
        if "chronolog" in subjects:
            names = [(name, name) for name in ("chronolog", *LOOP_LAG_VARIANTS)]
        if any(s.startswith("aps") for s in subjects):
            names.append(("aps_asyncio", "aps_asyncio"))
        return [(workload, s, r) for s, r in names]
    if workload == "restart":
        return [("restart", "aps_sqlite", "aps_sqlite")] if "aps_sqlite" in subjects else []
    if workload == "memory":
        return [("memory", s, s) for s in subjects if s != "aps_sqlite"]
    if workload == "catch_up":
        return [(workload, s, s) for s in subjects if s in ("chronolog", "aps_sqlite")]
    return [(workload, s, s) for s in subjects]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer tasks")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help="comma-separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--floor-seconds", default="1.0,0.15", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        schedule_s, read_s = (float(x) for x in args.floor_seconds.split(","))
        worker_main(args.worker, Path(args.dir), args.scale, (schedule_s, read_s))
        return
    scale = 10 if args.quick else 1
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    for name in only:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    for name in subjects:
        if name not in SUBJECTS + EXTRA_SUBJECTS:
            known = ", ".join(SUBJECTS + EXTRA_SUBJECTS)
            parser.error(f"unknown subject {name!r} (known: {known})")
    machine_line()
    memory_results: dict[str, dict[str, Any]] = {}
    for workload in WORKLOADS:
        if workload not in only:
            continue
        if workload == "restart" and "memory" not in only:
            # chronolog's restart is measured at the end of its memory run.
            memory_results = {
                name: run_worker("memory", name, scale)
                for name in CHRONOLOG_SUBJECTS
                if name in subjects
            }
        results: dict[str, dict[str, Any]] = {}
        for worker_workload, subject_name, reported in plan(workload, subjects):
            floors = None
            if subject_name == "bare":  # the floors over as long as chronolog's bursts took
                ours = results.get("chronolog", {})
                floors = (ours.get("schedule_s", 1.0), ours.get("read_s", 0.15))
            results[reported] = run_worker(worker_workload, subject_name, scale, floors)
        if workload == "memory":
            memory_results = results
        if workload == "restart":
            for name in CHRONOLOG_SUBJECTS:
                if name in memory_results:
                    results[name] = memory_results[name]
        report(workload, results)


if __name__ == "__main__":
    main()
