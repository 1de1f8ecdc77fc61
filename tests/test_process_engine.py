"""The process engine (``Settings(engine="process")``): the scheduler in a child process.

The host keeps the facade (each call is forwarded whole to the scheduler process and its
``Result`` comes back) and runs its own registered functions; the child runs the log, the
projections, the actors, the timer and the Housekeeper. Everything here is real: a real
child process, real SQLite and DuckDB files under ``tmp_path``, and real signals for the
crash cases.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chronolog import AppContext, SchedulerModule, SchedulerService, Settings
from chronolog.actors.executor import ExecutionContext
from chronolog.errors import ServiceUnavailableError, StoreLockedError, ValidationError
from chronolog.process.engine import ProcessEngine
from chronolog.projections.rows import ExecutionRow
from chronolog.result import Result
from chronolog.settings import load_settings
from chronolog.store.memory import InMemoryEventStore
from chronolog.testing import FakeClock

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="engine='process' needs a POSIX system"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_process_host_worker.py")
LIGHT_HOST = Path(__file__).with_name("_process_light_host.py")
HAS_PROC = Path("/proc/self/stat").exists()


# --- helpers ---------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a new event loop; a call that never answers fails it in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _later() -> datetime:
    """An instant far enough ahead that nothing fires during the tests."""
    return datetime.now(UTC) + timedelta(days=1)


def _new_module(data_dir: Path, engine: str = "process", **settings: Any) -> SchedulerModule:
    """A module registered in a fresh AppContext (not started)."""
    module = SchedulerModule(
        Settings(data_dir=str(data_dir), engine=engine, log_level="error", **settings)  # type: ignore[arg-type]
    )
    module.register(AppContext())
    return module


async def _settle(module: SchedulerModule, timeout: float = 10.0) -> None:
    assert await asyncio.to_thread(module.settle, timeout), "the scheduler did not settle"


async def _wait(event: threading.Event, timeout: float = 10.0) -> bool:
    return await asyncio.to_thread(event.wait, timeout)


async def _total(svc: SchedulerService) -> int:
    return (await svc.list_events(limit=1)).unwrap().total


async def _executions(svc: SchedulerService, task_id: str) -> list[ExecutionRow]:
    """The task's executions, oldest attempt first."""
    rows = (await svc.get_executions(task_id)).unwrap().items
    return sorted(rows, key=lambda row: (row.attempt or 0, row.position))


def _engine_of(module: SchedulerModule) -> ProcessEngine | None:
    """The module's engine (a call, so a type checker does not keep an earlier narrowing)."""
    return module.engine


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited: no such process, or a zombie (an orphan's new parent
    may be slow to reap it, or not reap at all)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # the pid was reused by someone else's process
        return True
    if not HAS_PROC:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    return state in ("Z", "X")


def _wait_exited(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _children() -> set[int]:
    """The pids whose parent is this process (zombies included)."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.add(int(entry.name))
    return found


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line the subprocess prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line from the worker within {timeout} s (got {data!r})"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"the worker exited (code {proc.poll()}) after printing {data!r}"
            data += chunk
    return data.split(b"\n", 1)[0].decode()


class Run:
    """One run of a probe function, as the function itself saw it."""

    def __init__(self, pid: int, context: ExecutionContext, outcome: str, seconds: float) -> None:
        self.pid = pid
        self.context = context
        self.outcome = outcome
        self.seconds = seconds


class Probe:
    """The host's functions for the shared module; each run records itself under the
    ``key`` parameter its test passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, list[Run]] = collections.defaultdict(list)
        self._events: dict[tuple[str, str], threading.Event] = {}

    def event(self, kind: str, key: str) -> threading.Event:
        """The ``started`` or ``finished`` signal of the runs under ``key``."""
        with self._lock:
            return self._events.setdefault((kind, key), threading.Event())

    def _record(self, key: str, context: ExecutionContext, outcome: str, began: float) -> None:
        run = Run(os.getpid(), context, outcome, time.monotonic() - began)
        with self._lock:
            self.runs[key].append(run)

    def register(self, svc: SchedulerService) -> None:
        svc.register_function("probe.echo", self.echo, module_id="tests")
        svc.register_function("probe.fail", self.fail, module_id="tests")
        svc.register_function("probe.block", self.block, module_id="tests")
        svc.register_function("probe.sleepy", self.sleepy, module_id="tests")

    def echo(self, key: str, context: ExecutionContext) -> dict[str, Any]:
        self._record(key, context, "returned", time.monotonic())
        return {"key": key, "pid": os.getpid()}

    def fail(self, key: str, context: ExecutionContext) -> None:
        self._record(key, context, "raised", time.monotonic())
        raise ValueError(f"broken on purpose ({key}, attempt {context.attempt})")

    def block(self, key: str, context: ExecutionContext) -> str:
        """Waits up to 10 s for its cancellation signal."""
        began = time.monotonic()
        self.event("started", key).set()
        cancelled = context.cancelled.wait(10)
        self._record(key, context, "cancelled" if cancelled else "not cancelled", began)
        self.event("finished", key).set()
        return "released"

    async def sleepy(self, key: str, context: ExecutionContext) -> str:
        """Awaits a 30 s sleep; records whether it was cancelled."""
        began = time.monotonic()
        self.event("started", key).set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self._record(key, context, "CancelledError", began)
            self.event("finished", key).set()
            raise
        self._record(key, context, "slept", began)
        self.event("finished", key).set()
        return "slept"


class Host:
    """A host application whose scheduler runs in a child process."""

    def __init__(self, data_dir: Path, cleanup_root: Path) -> None:
        self.data_dir = data_dir
        self.cleanup_root = cleanup_root
        self.app = AppContext()
        self.module = SchedulerModule(
            Settings(
                data_dir=str(data_dir),
                engine="process",
                log_level="error",
                cleanup_allowed_roots=(str(cleanup_root),),
            )
        )
        self.module.register(self.app)
        self.svc: SchedulerService = self.app.get_service("scheduler_service")
        self.probe = Probe()
        self.probe.register(self.svc)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """One started process-engine module shared by the tests that leave it running."""
    base = tmp_path_factory.mktemp("process-engine")
    h = Host(base / "data", base / "cleanup")
    h.cleanup_root.mkdir()
    h.module.start_blocking()
    try:
        yield h
    finally:
        h.module.stop_blocking()


@pytest.fixture(scope="module")
def thread_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerService]:
    """The facade of a thread-engine module with the same functions (for comparisons)."""
    module = _new_module(tmp_path_factory.mktemp("thread-twin") / "data", engine="thread")
    Probe().register(module.service)
    module.start_blocking()
    try:
        yield module.service
    finally:
        module.stop_blocking()


# --- running host functions ------------------------------------------------------------------


def test_a_host_function_runs_in_the_host_with_its_context(host: Host) -> None:
    """A registered function runs in the host's process (not the scheduler process), gets
    its ExecutionContext (idempotency key ``task_id:nominal``), and its outcome comes back:
    the execution is ``succeeded`` with the returned value, the one-shot task completed."""

    async def main() -> tuple[str, list[ExecutionRow], Any]:
        r = await host.svc.schedule_event(
            "here", "probe.echo", datetime.now(UTC), parameters={"key": "in-host"}
        )
        task_id = r.unwrap()
        await _settle(host.module)
        rows = await _executions(host.svc, task_id)
        task = (await host.svc.get_event(task_id)).unwrap()
        return task_id, rows, task

    task_id, rows, task = _run(main())
    engine = host.module.engine
    assert engine is not None and engine.alive and engine.pid is not None
    [run] = host.probe.runs["in-host"]
    assert run.pid == os.getpid()
    assert run.pid != engine.pid
    context = run.context
    assert isinstance(context, ExecutionContext)
    assert context.task_id == task_id
    assert context.attempt == 1
    assert context.idempotency_key == f"{task_id}:{context.nominal_time.isoformat()}"
    [row] = rows
    assert row.status == "succeeded"
    assert row.result == {"key": "in-host", "pid": os.getpid()}
    assert row.execution_id == context.execution_id
    assert row.idempotency_key == context.idempotency_key
    assert task.status == "completed"
    assert (task.runs, task.successes, task.failures) == (1, 1, 0)


BadCall = Callable[[SchedulerService], Awaitable[Result[Any]]]
BAD_CALLS: list[tuple[str, BadCall, str]] = [
    ("unknown function", lambda s: s.schedule_event("x", "no.such.function"), "unknown_function"),
    (
        "bad timezone",
        lambda s: s.schedule_event(
            "x", "probe.echo", recurring=True, cron_expression="0 3 * * *", timezone="Mars/Base"
        ),
        "invalid_trigger",
    ),
    (
        "bad interval type",
        lambda s: s.schedule_event(
            "x", "probe.echo", recurring=True, interval_type="fortnights", interval_value=1
        ),
        "invalid_argument",
    ),
    (
        "zero interval",
        lambda s: s.schedule_event(
            "x", "probe.echo", recurring=True, interval_type="days", interval_value=0
        ),
        "invalid_trigger",
    ),
    ("unknown keyword", lambda s: s.schedule_event("x", "probe.echo", bogus=1), "invalid_argument"),
    (
        "parameters the host function does not take",
        lambda s: s.schedule_event("x", "probe.echo", parameters={"nope": 1}),
        "invalid_argument",
    ),
    ("get unknown id", lambda s: s.get_event("no-such-task"), "not_found"),
    ("cancel unknown id", lambda s: s.cancel_event("no-such-task"), "not_found"),
    ("malformed id", lambda s: s.get_event("not an id!"), "invalid_argument"),
]


@pytest.mark.parametrize(
    ("call", "code"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_gives_the_thread_engines_error_and_appends_nothing(
    host: Host, thread_twin: SchedulerService, call: BadCall, code: str
) -> None:
    """Bad input through the forwarded facade is a Result error with the same code as on the
    thread engine (not an exception), and nothing is appended."""

    async def main() -> tuple[int, Result[Any], int, Result[Any]]:
        before = await _total(host.svc)
        forwarded = await call(host.svc)
        after = await _total(host.svc)
        local = await call(thread_twin)
        return before, forwarded, after, local

    before, forwarded, after, local = _run(main())
    assert not forwarded.ok and forwarded.error is not None
    assert local.error is not None
    assert (forwarded.error.code, local.error.code) == (code, code)
    assert after == before


def test_a_function_registered_after_start_can_be_scheduled_at_once(host: Host) -> None:
    """register_function after start returns only once the scheduler process knows the
    name: a schedule right after it validates, and the function runs in the host."""
    ran: list[int] = []

    def registered_late() -> str:
        ran.append(os.getpid())
        return "late"

    async def main() -> list[ExecutionRow]:
        host.svc.register_function("late.registered", registered_late)
        r = await host.svc.schedule_event("late", "late.registered", datetime.now(UTC))
        task_id = r.unwrap()
        await _settle(host.module)
        return await _executions(host.svc, task_id)

    [row] = _run(main())
    assert (row.status, row.result) == ("succeeded", "late")
    assert ran == [os.getpid()]


def test_a_failing_function_is_retried_and_both_failures_are_recorded(host: Host) -> None:
    """max_retries=1: a function that raises runs twice (attempts 1 and 2, same idempotency
    key); both executions are ``failed`` with the error's type and message, and the task
    ends ``failed``."""

    async def main() -> tuple[list[ExecutionRow], str]:
        r = await host.svc.schedule_event(
            "fails",
            "probe.fail",
            datetime.now(UTC),
            max_retries=1,
            retry_backoff=0.05,
            parameters={"key": "fails"},
        )
        task_id = r.unwrap()
        deadline = time.monotonic() + 15
        while True:  # the retry is due a little after the first failure: settle until done
            await _settle(host.module)
            rows = await _executions(host.svc, task_id)
            status = (await host.svc.get_event(task_id)).unwrap().status
            if len(rows) == 2 and status not in ("scheduled", "running"):
                return rows, status
            assert time.monotonic() < deadline, (rows, status)
            await asyncio.sleep(0.02)

    rows, status = _run(main())
    assert [row.attempt for row in rows] == [1, 2]
    assert [row.status for row in rows] == ["failed", "failed"]
    for row in rows:
        assert row.error_type == "ValueError"
        assert row.error_message == f"broken on purpose (fails, attempt {row.attempt})"
    assert rows[0].idempotency_key == rows[1].idempotency_key
    assert status == "failed"
    runs = host.probe.runs["fails"]
    assert [run.context.attempt for run in runs] == [1, 2]
    assert {run.pid for run in runs} == {os.getpid()}


# --- cancellation and timeouts ---------------------------------------------------------------


def test_cancelling_a_task_signals_its_running_function_in_the_host(host: Host) -> None:
    """cancel_event reaches the host: a sync function waiting on ``context.cancelled`` sees
    it set (long before its 10 s wait ends); the execution is ``cancelled``, and what the
    function returned after that comes back as its late result (as on the thread engine)."""
    started, finished = (
        host.probe.event("started", "cancel"),
        host.probe.event("finished", "cancel"),
    )

    async def main() -> tuple[list[ExecutionRow], str]:
        r = await host.svc.schedule_event(
            "blocks", "probe.block", datetime.now(UTC), parameters={"key": "cancel"}
        )
        task_id = r.unwrap()
        assert await _wait(started), "the function did not start"
        assert not finished.is_set()
        (await host.svc.cancel_event(task_id)).unwrap()
        assert await _wait(finished, 5), "the function did not see its cancellation"
        await _settle(host.module)
        task = (await host.svc.get_event(task_id)).unwrap()
        return await _executions(host.svc, task_id), task.status

    rows, status = _run(main())
    [run] = host.probe.runs["cancel"]
    assert run.outcome == "cancelled"
    assert run.seconds < 5
    [row] = rows
    assert row.status == "cancelled"
    assert (row.late_outcome, row.late_result) == ("succeeded", "released")
    assert status == "cancelled"


def test_a_timed_out_coroutine_is_cancelled_in_the_host(host: Host) -> None:
    """An async function past its timeout (0.2 s) is cancelled in the host (it sees
    CancelledError, long before its 30 s sleep ends); the execution is ``timed_out`` and the
    one-shot task ends ``failed``."""
    finished = host.probe.event("finished", "timeout")

    async def main() -> tuple[list[ExecutionRow], str]:
        r = await host.svc.schedule_event(
            "sleeps", "probe.sleepy", datetime.now(UTC), timeout=0.2, parameters={"key": "timeout"}
        )
        task_id = r.unwrap()
        assert await _wait(finished), "the coroutine was not cancelled"
        await _settle(host.module)
        task = (await host.svc.get_event(task_id)).unwrap()
        return await _executions(host.svc, task_id), task.status

    rows, status = _run(main())
    [run] = host.probe.runs["timeout"]
    assert run.outcome == "CancelledError"
    assert run.pid == os.getpid()
    assert run.seconds < 5
    assert [row.status for row in rows] == ["timed_out"]
    assert status == "failed"


# --- calling the facade ----------------------------------------------------------------------


def test_sync_facade_and_concurrent_event_loops(host: Host) -> None:
    """``svc.sync`` works over the process engine, and two threads with an event loop each
    can call the facade at the same time (200 schedules each): every call succeeds, with
    distinct ids, and the task count grows by exactly what was acknowledged."""
    sync = host.svc.sync
    before = sync.list_events(limit=1).unwrap().total
    one = sync.schedule_event("sync one", "probe.echo", _later(), parameters={"key": "sync"})
    assert one.ok, one.error
    assert sync.get_event(one.value).unwrap().status == "scheduled"

    barrier = threading.Barrier(2)

    def burst(tag: str) -> list[Result[str]]:
        async def main() -> list[Result[str]]:
            await asyncio.to_thread(barrier.wait, 10)  # both loops call at the same time
            return await asyncio.gather(
                *(
                    host.svc.schedule_event(
                        f"{tag}-{i}", "probe.echo", _later(), parameters={"key": tag}
                    )
                    for i in range(200)
                )
            )

        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bursts = [pool.submit(burst, tag) for tag in ("a", "b")]
        results = [r for b in bursts for r in b.result(timeout=60)]
    assert [r.error for r in results if not r.ok] == []
    assert len({r.value for r in results}) == 400
    assert sync.list_events(limit=1).unwrap().total == before + 401


def test_arguments_pickle_cannot_carry_are_a_result_error(host: Host) -> None:
    """A call whose arguments cannot be sent (a lambda) answers a Result error, appends
    nothing, and the calls sent in the same loop turn and after it still work."""

    async def main() -> tuple[int, list[Result[str]], int, Result[Any]]:
        before = await _total(host.svc)
        lone = await host.svc.schedule_event("lambda", "probe.echo", parameters={"f": lambda: 1})
        together = await asyncio.gather(
            host.svc.schedule_event("ok-1", "probe.echo", _later(), parameters={"key": "p"}),
            host.svc.schedule_event("bad", "probe.echo", _later(), parameters={"f": lambda: 2}),
            host.svc.schedule_event("ok-2", "probe.echo", _later(), parameters={"key": "p"}),
        )
        after = await _total(host.svc)
        looked_up = await host.svc.get_event(together[2].value or "missing")
        return before, [lone, *together], after, looked_up

    before, (lone, ok1, bad, ok2), after, looked_up = _run(main())
    for failed in (lone, bad):
        assert not failed.ok and failed.error is not None
        assert failed.error.code == "invalid_argument"
    assert ok1.ok and ok2.ok
    assert after == before + 2
    assert looked_up.unwrap().name == "ok-2"


def test_thread_engine_internals_are_unavailable(host: Host) -> None:
    """require_runtime and require_projector raise ServiceUnavailableError while the
    process engine runs (the runtime and the projections live in the child)."""
    assert host.module.engine is not None and host.module.engine.alive
    assert host.module.runtime is None
    with pytest.raises(ServiceUnavailableError):
        host.module.require_runtime()
    with pytest.raises(ServiceUnavailableError):
        host.module.require_projector()


# --- housekeeping ----------------------------------------------------------------------------


def test_housekeeping_runs_in_the_scheduler_process(host: Host) -> None:
    """register_cleanup and run_cleanup work through the process engine: a dry run lists
    the old files and removes nothing; a real run removes exactly them."""
    logs = host.cleanup_root / "logs"
    logs.mkdir()
    old = time.time() - 10 * 86_400
    for name in ("old-1.log", "old-2.log", "old.txt", "new.log"):
        (logs / name).write_text(name)
    for name in ("old-1.log", "old-2.log", "old.txt"):
        os.utime(logs / name, (old, old))

    async def main() -> tuple[Any, set[str], Any]:
        registration = (
            await host.svc.register_cleanup(str(logs), "*.log", retention_days=1)
        ).unwrap()
        [dry] = (await host.svc.run_cleanup(registration, dry_run=True)).unwrap()
        after_dry = set(os.listdir(logs))
        [real] = (await host.svc.run_cleanup(registration)).unwrap()
        return dry, after_dry, real

    dry, after_dry, real = _run(main())
    assert dry.error is None and dry.report is not None
    assert dry.report.dry_run
    assert {(f.path, f.outcome) for f in dry.report.files} == {
        ("old-1.log", "would_remove"),
        ("old-2.log", "would_remove"),
    }
    assert dry.report.summary.files_removed == 0
    assert after_dry == {"old-1.log", "old-2.log", "old.txt", "new.log"}
    assert real.error is None and real.report is not None
    assert {(f.path, f.outcome) for f in real.report.files} == {
        ("old-1.log", "removed"),
        ("old-2.log", "removed"),
    }
    assert set(os.listdir(logs)) == {"old.txt", "new.log"}


# --- start failures --------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PROC, reason="lists child processes through /proc")
def test_a_locked_data_dir_fails_start_typed_and_leaves_no_process(host: Host) -> None:
    """A second process-engine module on a data dir in use: start raises StoreLockedError
    (``store_locked``), the module has no engine, its child process is gone (reaped), and
    the first module keeps working."""
    before = _children()
    second = _new_module(host.data_dir)
    try:
        with pytest.raises(StoreLockedError) as raised:
            second.start_blocking()
        assert raised.value.code == "store_locked"
        assert second.engine is None
        assert _children() == before
    finally:
        second.stop_blocking()
    assert host.svc.sync.list_events(limit=1).ok


@pytest.mark.parametrize(
    "source",
    [{"overrides": {"engine": "bogus"}}, {"environ": {"CHRONOLOG_ENGINE": "bogus"}}],
    ids=["override", "environment"],
)
def test_an_unknown_engine_is_a_validation_error(source: dict[str, Any]) -> None:
    """``engine`` accepts only ``thread`` and ``process``; anything else is a
    ValidationError naming the key."""
    source.setdefault("environ", {})
    with pytest.raises(ValidationError) as raised:
        load_settings(**source)
    assert raised.value.details["key"] == "engine"
    assert load_settings(overrides={"engine": "process"}, environ={}).engine == "process"


@pytest.mark.parametrize(
    "extra",
    [
        {"clock": FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))},
        {"store": InMemoryEventStore()},
        {"fire_timers": False},
    ],
    ids=["clock", "store", "no-timers"],
)
def test_the_process_engine_refuses_a_clock_store_or_maintenance_mode(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    """The child has its own clock and store: passing either (or fire_timers=False) with
    engine='process' is a ValidationError at construction."""
    with pytest.raises(ValidationError):
        SchedulerModule(Settings(data_dir=str(tmp_path / "data"), engine="process"), **extra)


# --- stopping and crashing -------------------------------------------------------------------


def test_orderly_stop_lets_a_running_host_function_finish(tmp_path: Path) -> None:
    """stop() while a host function runs waits for it: the function ends before stop
    returns and its execution is recorded ``succeeded`` (not interrupted)."""
    data = tmp_path / "data"
    started, stop_requested, finished = threading.Event(), threading.Event(), threading.Event()

    def finishes_late() -> str:
        started.set()
        stop_requested.wait(10)
        time.sleep(0.3)  # its own work, still under way when the stop arrives
        finished.set()
        return "finished"

    async def first_life() -> tuple[str, float]:
        module = _new_module(data)
        module.service.register_function("finishes_late", finishes_late)
        await module.start()
        r = await module.service.schedule_event("late", "finishes_late", datetime.now(UTC))
        assert await _wait(started), "the function did not start"
        stop_requested.set()
        began = time.monotonic()
        await module.stop()
        return r.unwrap(), time.monotonic() - began

    async def second_life(task_id: str) -> list[ExecutionRow]:
        module = _new_module(data)
        module.service.register_function("finishes_late", lambda: "again")
        await module.start()
        try:
            await _settle(module)
            return await _executions(module.service, task_id)
        finally:
            await module.stop()

    task_id, stop_seconds = _run(first_life())
    assert finished.is_set(), "stop returned before the function ended"
    assert stop_seconds < 10
    [row] = _run(second_life(task_id))
    assert (row.status, row.result) == ("succeeded", "finished")


def test_the_scheduler_process_keeps_state_snapshots_for_its_next_start(tmp_path: Path) -> None:
    """The scheduler process folds the log into the state snapshot file as the thread
    engine does: after a stop the file is up to the log, and the next start (which folds
    from it) answers as the last one did."""
    from chronolog.actors.recovery import FINGERPRINT
    from chronolog.store import SQLiteEventStore
    from chronolog.store.snapshots import SNAPSHOTS_FILENAME, SnapshotFile

    data = tmp_path / "data"

    async def life(schedule: bool) -> dict[str, Any]:
        module = _new_module(data)
        module.service.register_function("noop", lambda: None)
        await module.start()
        try:
            if schedule:
                for i in range(5):
                    r = await module.service.schedule_event(f"t{i}", "noop", _later())
                    assert r.ok, r.error
            listed = await module.service.list_events()
            return {row.task_id: row for row in listed.unwrap().items}
        finally:
            await module.stop()

    before = _run(life(True))
    with SQLiteEventStore(data, read_only=True) as store:
        last = store.last_position()
    snapshots = SnapshotFile(data / SNAPSHOTS_FILENAME, FINGERPRINT)
    try:
        assert last > 0 and snapshots.position()[0] == last
    finally:
        snapshots.close()
    assert _run(life(False)) == before


def test_a_stop_asks_host_runs_still_going_after_its_grace_to_stop(tmp_path: Path) -> None:
    """``stop_grace_seconds`` holds for the process engine too: after it, the host's
    coroutine is cancelled (its ``finally`` runs) and its thread sees
    ``context.cancelled``; the thread's own outcome is recorded, the coroutine's run is
    interrupted at the next start."""
    data = tmp_path / "data"
    cleaned_up, signalled = threading.Event(), threading.Event()

    async def sleeper() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned_up.set()

    def patient(context: ExecutionContext) -> str:
        if context.cancelled.wait(60):
            signalled.set()
        return "signalled"

    async def first_life() -> tuple[dict[str, str], float]:
        module = _new_module(data, stop_grace_seconds=0.2)
        svc = module.service
        svc.register_function("sleeper", sleeper)
        svc.register_function("patient", patient)
        await module.start()
        ids = {}
        for name in ("sleeper", "patient"):
            ids[name] = (await svc.schedule_event(name, name, _later())).unwrap()
            assert (await svc.execute_now(ids[name])).ok
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = [row for i in ids.values() for row in await _executions(svc, i)]
            if len(rows) == 2 and all(row.status == "running" for row in rows):
                break
            await asyncio.sleep(0.02)
        began = time.monotonic()
        await module.stop()
        return ids, time.monotonic() - began

    async def second_life(ids: dict[str, str]) -> dict[str, list[str]]:
        module = _new_module(data)
        module.service.register_function("sleeper", sleeper)
        module.service.register_function("patient", patient)
        await module.start()
        try:
            await _settle(module)
            return {
                name: [row.status for row in await _executions(module.service, task_id)]
                for name, task_id in ids.items()
            }
        finally:
            await module.stop()

    ids, stop_seconds = _run(first_life())
    assert stop_seconds < 10
    assert cleaned_up.is_set() and signalled.is_set()
    assert _run(second_life(ids)) == {"sleeper": ["interrupted"], "patient": ["succeeded"]}


def test_a_killed_scheduler_process_is_replaced_and_recovers(tmp_path: Path) -> None:
    """SIGKILL the scheduler process while the host runs a function: calls answer a Result
    error ``unavailable`` until the engine has started a new scheduler process (a new pid,
    ``restarts == 1``), which recovers every acknowledged task from the log, records the
    run that was under way ``interrupted`` and retries it per policy; the old run in the
    host is signalled to stop. Stop still returns promptly."""
    data = tmp_path / "data"
    started, signalled, retried = threading.Event(), threading.Event(), threading.Event()

    def hold(context: ExecutionContext) -> str:
        if context.attempt > 1:
            retried.set()
            return "retried"
        started.set()
        if context.cancelled.wait(30):
            signalled.set()
        return "released"

    async def life() -> tuple[list[Any], int, list[ExecutionRow], list[str], int, float]:
        module = _new_module(data)
        svc = module.service
        svc.register_function("hold", hold)
        svc.register_function("quick", lambda: "ok")
        await module.start()
        try:
            acked = [
                (await svc.schedule_event(f"later-{i}", "quick", _later())).unwrap()
                for i in range(5)
            ]
            running = (
                await svc.schedule_event(
                    "held", "hold", datetime.now(UTC), max_retries=1, retry_backoff=0.05
                )
            ).unwrap()
            acked.append(running)
            assert await _wait(started), "the function did not start"
            engine = _engine_of(module)
            assert engine is not None and engine.pid is not None
            first_pid = engine.pid
            os.kill(first_pid, signal.SIGKILL)
            codes: list[str] = []
            deadline = time.monotonic() + 20
            while engine.pid == first_pid or not engine.alive:
                assert time.monotonic() < deadline, "no new scheduler process"
                listed = await svc.list_events(limit=1)
                if not listed.ok:
                    assert listed.error is not None
                    codes.append(listed.error.code)
                await asyncio.sleep(0.01)
            assert await _wait(signalled), "the old run was not signalled to stop"
            assert await _wait(retried), "the interrupted run was not retried"
            await _settle(module)
            tasks = [await svc.get_event(task_id) for task_id in acked]
            return (
                tasks,
                await _total(svc),
                await _executions(svc, running),
                codes,
                engine.restarts,
                0.0,
            )
        finally:
            began = time.monotonic()
            await module.stop()
            stop_seconds = time.monotonic() - began
            assert stop_seconds < 10
            assert _engine_of(module) is None

    tasks, total, rows, codes, restarts, _ = _run(life())
    assert restarts == 1
    assert set(codes) <= {"unavailable"}
    assert [t.error for t in tasks if not t.ok] == []
    assert total == 6
    assert [(row.attempt, row.status) for row in rows] == [(1, "interrupted"), (2, "succeeded")]
    assert rows[1].result == "retried"


def test_a_replacement_that_cannot_start_is_retried_until_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the data directory is held by another scheduler (a thread-engine module in
    this process), replacements of a killed scheduler process fail to start; the engine
    keeps trying with growing delays and answers ``unavailable`` meanwhile, and once the
    directory is free a replacement starts and answers."""
    data = tmp_path / "data"
    # The first replacement waits long enough for the blocker to take the directory.
    monkeypatch.setattr("chronolog.process.engine.RESTART_DELAY", 1.0)

    async def life() -> tuple[int, int, str]:
        module = _new_module(data)
        module.service.register_function("quick", lambda: "ok")
        await module.start()
        try:
            task_id = (await module.service.schedule_event("later", "quick", _later())).unwrap()
            engine = _engine_of(module)
            assert engine is not None and engine.pid is not None
            blocker = _new_module(data, engine="thread")
            os.kill(engine.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while True:  # the lock is free once the killed process is gone
                try:
                    await blocker.start()
                    break
                except StoreLockedError:
                    assert time.monotonic() < deadline, "the killed process kept its lock"
                    await asyncio.sleep(0.01)
            try:
                deadline = time.monotonic() + 20
                while engine.failed_restarts == 0:  # a replacement tried and failed
                    assert time.monotonic() < deadline, "no replacement was tried"
                    await asyncio.sleep(0.05)
                refused = await module.service.get_event(task_id)
                assert not refused.ok and refused.error is not None
                assert refused.error.code == "unavailable"
                restarts_while_blocked = engine.restarts
            finally:
                await blocker.stop()
            deadline = time.monotonic() + 20
            while not (found := await module.service.get_event(task_id)).ok:
                assert time.monotonic() < deadline, "no replacement after the lock was freed"
                await asyncio.sleep(0.05)
            return restarts_while_blocked, engine.restarts, found.unwrap().task_id
        finally:
            await module.stop()

    blocked, restarts, found = _run(life())
    assert (blocked, restarts) == (0, 1)
    assert found


@pytest.mark.parametrize("fork_holder", [False, True], ids=["alone", "forked-holder"])
def test_a_killed_host_takes_its_scheduler_process_with_it(
    tmp_path: Path, fork_holder: bool
) -> None:
    """SIGKILL the host while its function runs: the scheduler process sees its control
    channel end and exits within seconds; the run it had handed over is then recorded
    ``interrupted`` by the next start. Also when a process the host forked still holds the
    host's end of the channel (no end of file then): the parent pid changing tells."""
    data = tmp_path / "data"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [sys.executable, str(WORKER), str(data)]
    if fork_holder:
        command.append("--fork-holder")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    child = holder = None
    try:
        words = _read_line(proc, 60).split()
        assert words[0] == "PIDS", words
        child, host_pid = int(words[1]), int(words[2])
        if fork_holder:
            holder = int(words[3])
            assert not _exited(holder)
        assert host_pid == proc.pid and child != proc.pid
        assert not _exited(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _wait_exited(child, 15), "the scheduler process outlived its host"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in (child, holder):
            if pid is not None and not _exited(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()

    async def next_start() -> list[ExecutionRow]:
        module = _new_module(data, engine="thread")
        module.service.register_function("hold", lambda: "again")
        await module.start()
        try:
            await _settle(module)
            return await _executions(module.service, "held")
        finally:
            await module.stop()

    assert [row.status for row in _run(next_start())] == ["interrupted"]


def test_the_host_loads_neither_duckdb_nor_the_actor_runtime(tmp_path: Path) -> None:
    """A host whose scheduler runs in a child process imports only the facade's side:
    after every kind of call (commands, board and DuckDB reads, housekeeping, agent
    tools) neither DuckDB nor pykka is loaded in it (they cost it ~18 MiB of memory and
    a quarter of every full garbage-collector pass)."""
    cleanup = tmp_path / "logs"
    cleanup.mkdir()
    done = subprocess.run(
        [sys.executable, str(LIGHT_HOST), str(tmp_path / "data"), str(cleanup)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LOADED"], done.stdout
