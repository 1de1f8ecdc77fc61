"""The facade as host code uses it: real SQLite log and DuckDB projections on disk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import inspect
import json
import os
import threading
import time
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_projections_helpers import invalidate

from chronolog import AppContext, Cause, SchedulerModule, SchedulerService, Settings, service
from chronolog import module as module_module
from chronolog.actors.messages import CommandOutcome
from chronolog.actors.tuning import HOST_PROCESS, SCHEDULER_PROCESS, Tuning
from chronolog.api.agent import AgentDispatcher
from chronolog.errors import NotFoundError, StoreLockedError, ValidationError
from chronolog.events import ExecutionSkipped
from chronolog.functions import CallRules, FunctionRegistry
from chronolog.host_loop import BOARD_READS_PER_TURN, PROCESS_BOARD_READS_PER_TURN
from chronolog.process import child
from chronolog.process import messages as msg
from chronolog.projections import writer
from chronolog.store import SQLiteEventStore
from chronolog.testing import FakeClock
from chronolog.triggers import CronTrigger, next_fire

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def backup_database(compress: bool = False) -> str:
    return f"backup compress={compress}"


def failing_job() -> None:
    raise OSError("disk full")


class Host:
    """A host application with chronolog as one of its modules, on a fake clock."""

    def __init__(self, data_dir: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.app = AppContext()
        self.module = SchedulerModule(
            Settings(data_dir=str(data_dir), default_timezone="UTC"), clock=clock
        )
        self.module.register(self.app)

    @property
    def svc(self) -> SchedulerService:
        service: SchedulerService = self.app.get_service("scheduler_service")
        return service

    def register(self) -> None:
        self.svc.register_function("backup_database", backup_database, module_id="core.database")
        self.svc.register_function("failing_job", failing_job, module_id="core.jobs")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        assert self.module.settle(10)

    def log_size(self) -> int:
        runtime = self.module.require_runtime()
        return runtime.store.last_position()


@pytest.fixture
def host(tmp_path: Path, clock: FakeClock) -> Iterator[Host]:
    h = Host(tmp_path / "data", clock)
    h.register()
    h.module.start_blocking()
    yield h
    h.module.stop_blocking()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


class TestPublicApi:
    def test_the_documented_example_works(self, tmp_path: Path) -> None:
        """The README's host example runs as written, on the real clock."""

        async def main() -> str:
            app = AppContext()
            module = SchedulerModule(Settings(data_dir=str(tmp_path / "data")))
            module.register(app)
            await module.start()
            svc = app.get_service("scheduler_service")
            svc.register_function("backup_database", backup_database, module_id="core.database")
            r = await svc.schedule_event(
                name="Daily backup",
                function_name="backup_database",
                next_execution=datetime.now(UTC) + timedelta(days=1),
                recurring=True,
                interval_type="days",
                interval_value=1,
                module_id="core.database",
                parameters={"compress": True},
            )
            assert r.ok, r.error
            listed = await svc.list_events(module_id="core.database")
            await module.stop()
            assert listed.unwrap().total == 1
            return str(r.value)

        assert len(_run(main())) == 32

    def test_a_host_registry_of_its_own_and_async_with(self, tmp_path: Path) -> None:
        """Any object with register_service and get_service takes the facade; the module
        works as an async context manager, and a second start is a no-op."""

        class HostRegistry:
            def __init__(self) -> None:
                self.services: dict[str, Any] = {}

            def register_service(self, name: str, service: Any) -> None:
                self.services[name] = service

            def get_service(self, name: str) -> Any:
                return self.services[name]

        async def main() -> int:
            registry = HostRegistry()
            module = SchedulerModule(Settings(data_dir=str(tmp_path / "data")))
            module.register(registry)
            async with module:
                await module.start()
                svc = registry.get_service("scheduler_service")
                svc.register_function("backup_database", backup_database)
                r = await svc.schedule_event(
                    name="x",
                    function_name="backup_database",
                    next_execution=datetime.now(UTC) + timedelta(days=1),
                )
                assert r.ok, r.error
                total = (await svc.list_events()).unwrap().total
            assert (await svc.get_event(r.value)).error.code == "unavailable"
            return total

        assert _run(main()) == 1

    def test_a_relative_data_dir_stays_put_when_the_host_changes_directory(
        self, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``data_dir`` is relative by default: it names a directory of the working
        directory the module was made in. A host that changes directory afterwards (a
        daemon moving to "/", a tool entering a work folder) moves nothing: the log's new
        read connections, the projector's staged rows and a reopened database all stay in
        the data directory, and nothing is made in the new working directory."""
        home, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
        home.mkdir()
        elsewhere.mkdir()
        monkeypatch.chdir(home)
        # Every batch through the JSON reader, so its rows are staged on disk.
        monkeypatch.setattr(writer, "APPENDER_MAX_ROWS", 0)
        module = SchedulerModule(Settings(data_dir="data", default_timezone="UTC"), clock=clock)
        app = AppContext()
        module.register(app)
        assert module.settings.data_dir == str(home / "data")
        module.start_blocking()
        try:
            monkeypatch.chdir(elsewhere)
            svc = app.get_service("scheduler_service").sync
            svc.register_function("backup_database", backup_database)
            for i in range(3):
                r = svc.schedule_event(
                    name=f"t{i}",
                    function_name="backup_database",
                    next_execution=clock.now() + timedelta(minutes=1),
                )
                assert r.ok, r.error
            clock.advance(120)
            assert module.settle(10)
            assert svc.list_events().unwrap().total == 3
            assert svc.get_executions().unwrap().total == 3
            runtime = module.require_runtime()
            # More read connections than the pool keeps: new ones are opened after the move.
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                reads = list(pool.map(lambda _: len(runtime.store.read_all()), range(64)))
            assert set(reads) == {runtime.store.last_position()}
            assert module.projector_failures == 0
        finally:
            module.stop_blocking()
        assert list(elsewhere.iterdir()) == []
        assert (home / "data" / "events.sqlite3").is_file()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
    def test_a_fork_of_the_process_leaves_its_scheduler_alone(self, tmp_path: Path) -> None:
        """A pre-forking server (gunicorn --preload) forks after the scheduler started:
        the fork has its objects but none of its threads. Its calls answer `unavailable`
        at once, saying why, instead of timing out after 30 s (a blocking call raised a
        bare TimeoutError); its stop, even closing its copy of the store, leaves the
        parent's lock, files and scheduler as they were."""
        data = tmp_path / "data"
        module = SchedulerModule(Settings(data_dir=str(data), log_level="warning"))
        app = AppContext()
        module.register(app)
        module.start_blocking()
        svc = app.get_service("scheduler_service")
        svc.register_function("backup_database", backup_database)
        later = datetime.now(UTC) + timedelta(days=1)
        # The agent tools' blocking calls run on a loop thread of their own, started here.
        agent = AgentDispatcher(svc)
        assert agent.call_sync("list_tasks", {})["ok"]
        try:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the fork: report over the pipe, never return into pytest
                try:
                    began = time.monotonic()
                    blocking = svc.sync.schedule_event("in fork", "backup_database", later)
                    awaited = asyncio.run(svc.list_events())
                    tool = agent.call_sync("list_tasks", {}, timeout=60)
                    module.stop_blocking()
                    module.require_runtime().store.close()
                    report = {
                        "codes": [blocking.error.code, awaited.error.code, tool["error"]["code"]],
                        "message": awaited.error.message,
                        "seconds": time.monotonic() - began,
                    }
                    os.write(write_end, json.dumps(report).encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            os.waitpid(pid, 0)
            with os.fdopen(read_end) as pipe:
                report = json.loads(pipe.read())
            assert report["codes"] == ["unavailable", "unavailable", "unavailable"]
            assert f"started in process {os.getpid()}" in report["message"]
            assert report["seconds"] < 5
            with pytest.raises(StoreLockedError):
                SQLiteEventStore(data)
            assert svc.sync.schedule_event("in parent", "backup_database", later).ok
            assert svc.sync.list_events().unwrap().total == 1
        finally:
            module.stop_blocking()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
    def test_a_module_stopped_before_the_fork_starts_again_in_the_fork(
        self, tmp_path: Path
    ) -> None:
        """Started and stopped before the fork, started again in it (a post-fork hook):
        the fork's own scheduler, which answers."""
        module = SchedulerModule(Settings(data_dir=str(tmp_path / "data"), log_level="warning"))
        app = AppContext()
        module.register(app)
        module.start_blocking()
        module.stop_blocking()
        svc = app.get_service("scheduler_service")
        svc.register_function("backup_database", backup_database)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                module.start_blocking()
                later = datetime.now(UTC) + timedelta(days=1)
                scheduled = svc.sync.schedule_event("in fork", "backup_database", later).ok
                total = svc.sync.list_events().unwrap().total
                module.stop_blocking()
                os.write(write_end, json.dumps([scheduled, total]).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end) as pipe:
            assert json.loads(pipe.read()) == [True, 1]

    def test_the_registry_refuses_what_it_cannot_hold(self, tmp_path: Path) -> None:
        """A registry without the two methods is refused; AppContext names what it has."""
        module = SchedulerModule(Settings(data_dir=str(tmp_path / "data")))
        with pytest.raises(ValidationError, match="register_service"):
            module.register(object())  # type: ignore[arg-type]
        app = AppContext()
        with pytest.raises(ValidationError, match="non-empty string"):
            app.register_service("", object())
        module.register(app)
        assert app.has_service("scheduler_service")
        with pytest.raises(NotFoundError, match=r"registered: scheduler_service"):
            app.get_service("housekeeper")

    def test_a_task_is_listed_as_soon_as_schedule_returns(self, host: Host) -> None:
        """Read-your-writes: the projection has the task when schedule_event has returned."""
        svc = host.svc.sync
        for i in range(20):
            r = svc.schedule_event(
                name=f"t{i}",
                function_name="backup_database",
                next_execution=host.clock.now() + timedelta(hours=1),
            )
            assert r.ok
            page = svc.list_events(limit=1000).unwrap()
            assert page.total == i + 1

    def test_runs_and_history(self, host: Host) -> None:
        """A one-shot runs at its time; history and stats read from DuckDB."""
        svc = host.svc.sync
        run_at = host.clock.now() + timedelta(minutes=1)
        event_id = svc.schedule_event(
            name="once",
            function_name="backup_database",
            next_execution=run_at,
            parameters={"compress": True},
        ).unwrap()
        host.advance(60)
        task = svc.get_event(event_id).unwrap()
        assert task.status == "completed"
        assert task.runs == 1
        history = svc.get_executions(event_id=event_id).unwrap()
        assert [row.status for row in history.items] == ["succeeded"]
        assert history.items[0].result == "backup compress=True"

    def test_failures_retry_and_end_failed(self, host: Host) -> None:
        """Retries follow the policy and a one-shot that never succeeds ends failed."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="bad",
            function_name="failing_job",
            next_execution=host.clock.now(),
            max_retries=2,
            retry_backoff=1,
        ).unwrap()
        for _ in range(5):
            host.advance(10)
        task = svc.get_event(event_id).unwrap()
        assert task.status == "failed"
        failed = svc.get_executions(event_id=event_id, status="failed").unwrap()
        assert failed.total == 3
        assert failed.items[0].error_type == "OSError"

    def test_pause_resume_cancel_and_explain(self, host: Host) -> None:
        """Pausing keeps a note and who paused; explain tells the story in order."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="every 5",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(minutes=5),
            recurring=True,
            interval_type="minutes",
            interval_value=5,
        ).unwrap()
        host.advance(300)
        assert svc.pause_event(
            event_id, note="maintenance window", caused_by=Cause(kind="agent", id="ops-bot")
        ).ok
        host.advance(900)
        paused = svc.get_event(event_id).unwrap()
        assert paused.status == "paused" and paused.pause_note == "maintenance window"
        assert paused.runs == 1
        assert svc.resume_event(event_id).ok
        host.advance(300)
        assert svc.get_event(event_id).unwrap().runs == 2
        assert svc.cancel_event(event_id).ok
        host.advance(3600)
        assert svc.get_event(event_id).unwrap().status == "cancelled"
        story = svc.explain_event(event_id).unwrap()
        text = " | ".join(f"{d.sentence} ({d.caused_by})" for d in story)
        assert "maintenance window" in text and "ops-bot" in text

    def test_execute_now_leaves_the_schedule_alone(self, host: Host) -> None:
        """A manual run happens now and the next fire does not move."""
        svc = host.svc.sync
        first = host.clock.now() + timedelta(hours=1)
        event_id = svc.schedule_event(
            name="hourly",
            function_name="backup_database",
            next_execution=first,
            recurring=True,
            interval_type="hours",
            interval_value=1,
        ).unwrap()
        execution_id = svc.execute_now(event_id).unwrap()
        assert host.module.settle(10)
        task = svc.get_event(event_id).unwrap()
        assert task.runs == 1 and task.next_fire == first
        history = svc.get_executions(event_id=event_id).unwrap()
        assert history.items[0].execution_id == execution_id
        assert history.items[0].reason == "manual"

    def test_idempotent_upsert_by_event_id(self, host: Host) -> None:
        """The same id and spec twice is a no-op; another spec updates the task."""
        svc = host.svc.sync
        spec = dict(
            name="nightly",
            function_name="backup_database",
            cron_expression="0 2 * * *",
            timezone="Europe/Berlin",
            event_id="nightly-backup",
        )
        assert svc.schedule_event(**spec).unwrap() == "nightly-backup"
        size = host.log_size()
        assert svc.schedule_event(**spec).ok
        assert host.log_size() == size
        assert svc.schedule_event(**{**spec, "cron_expression": "0 3 * * *"}).ok
        assert host.log_size() > size
        assert svc.get_event("nightly-backup").unwrap().next_fire.astimezone(UTC).hour in (1, 2)

    def test_naive_next_execution_is_read_in_the_task_zone(self, host: Host) -> None:
        """09:00 naive in America/New_York is 14:00 UTC in winter."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="ny",
            function_name="backup_database",
            next_execution=datetime(2026, 12, 1, 9, 0),
            timezone="America/New_York",
        ).unwrap()
        fires = svc.preview_event(event_id, 1).unwrap()
        assert fires[0].nominal == datetime(2026, 12, 1, 14, 0, tzinfo=UTC)

    def test_naive_time_in_a_dst_gap_runs_after_the_gap(self, host: Host) -> None:
        """A naive 02:30 on Berlin's spring-forward day means 03:00 local, as the DST rules say."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="gap",
            function_name="backup_database",
            next_execution=datetime(2027, 3, 28, 2, 30),
            timezone="Europe/Berlin",
        ).unwrap()
        fires = svc.preview_event(event_id, 1).unwrap()
        assert fires[0].nominal == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)

    def test_preview_notes_dst_rules(self, host: Host) -> None:
        """A daily 02:30 in Berlin notes the spring-forward day."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="0230",
            function_name="backup_database",
            cron_expression="30 2 * * *",
            timezone="Europe/Berlin",
        ).unwrap()
        fires = svc.preview_event(event_id, 40).unwrap()
        noted = [f for f in fires if f.notes]
        assert noted and "does not exist" in noted[0].notes[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_starting_and_stopping_leaks_no_descriptors(tmp_path: Path) -> None:
    """A host may start and stop the module many times: each stop closes what the start
    opened (the executor's event loop kept its epoll and self-pipe until collected: three
    descriptors per cycle). The garbage collector is off, so nothing is closed by it."""
    counts = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(4):
            module = SchedulerModule(Settings(data_dir=str(tmp_path / "data")))
            app = AppContext()
            module.register(app)
            module.start_blocking()
            # The blocking facade's private loop is closed at stop too.
            assert app.get_service("scheduler_service").sync.list_events().ok
            module.stop_blocking()
            counts.append(len(os.listdir("/proc/self/fd")))
    finally:
        gc.enable()
    assert counts[1:] == [counts[0]] * 3, counts


def test_a_kept_blocking_facade_outlives_a_restart(tmp_path: Path) -> None:
    """A host keeps ``svc.sync`` once. Stopped, it answers ``unavailable`` at once (as the
    async facade does; its private loop was stopped under it, so calls waited 35 s for a
    TimeoutError) and keeps no thread for it; started again, it works."""
    module = SchedulerModule(Settings(data_dir=str(tmp_path / "data")))
    app = AppContext()
    svc: SchedulerService = module.register(app)
    svc.register_function("backup_database", backup_database)
    blocking = svc.sync
    module.start_blocking()
    try:
        assert blocking.list_events().unwrap().total == 0
        module.stop_blocking()
        done = concurrent.futures.Future[Any]()
        threading.Thread(
            target=lambda: done.set_result(blocking.list_events()), daemon=True
        ).start()
        stopped = done.result(5)
        assert stopped.error is not None and stopped.error.code == "unavailable"
        # Nor is a thread kept for calls made while stopped (one stayed until a next stop).
        assert not [t for t in threading.enumerate() if t.name == "chronolog-sync"]
        module.start_blocking()
        r = blocking.schedule_event(
            name="after restart",
            function_name="backup_database",
            next_execution=datetime.now(UTC) + timedelta(days=1),
        )
        assert r.ok, r.error
        assert blocking.get_event(r.value).unwrap().name == "after restart"
    finally:
        module.stop_blocking()


def test_a_day_down_is_caught_up_with_one_skip_event_per_task(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Minutely tasks of a scheduler that was down for a day: at the next start each runs
    once (``catchup=run_once``) and records the 1,439 fires it missed as one event, which
    the task's ``skips`` counts in full. (Listed one event each, up to 1,000 per task, an
    hour's outage of 10,000 such tasks wrote 600,000 events before anything else ran.)"""
    first = Host(tmp_path / "data", clock)
    first.register()
    first.module.start_blocking()
    ids = [
        first.svc.sync.schedule_event(
            name=f"minutely {n}",
            function_name="backup_database",
            next_execution=clock.now() + timedelta(seconds=30),
            recurring=True,
            interval_type="minutes",
            interval_value=1,
        ).unwrap()
        for n in range(3)
    ]
    first.module.stop_blocking()
    clock.advance(timedelta(days=1))
    again = Host(tmp_path / "data", clock)
    again.register()
    again.module.start_blocking()
    try:
        assert again.module.settle(10)
        runtime = again.module.require_runtime()
        for event_id in ids:
            stream = runtime.store.read_stream(f"task-{event_id}")
            kinds = [type(e.event).__name__ for e in stream]
            [skip] = [e.event for e in stream if isinstance(e.event, ExecutionSkipped)]
            assert (skip.count, skip.reason, skip.policy) == (1_439, "misfire", "catchup=run_once")
            assert kinds.count("ExecutionStarted") == 1
            assert len(kinds) <= 8, kinds
            task = again.svc.sync.get_event(event_id).unwrap()
            assert (task.skips, task.runs) == (1_439, 1)
            [run] = again.svc.sync.get_executions(event_id=event_id).unwrap().items
            assert run.reason == "catch_up"
    finally:
        again.module.stop_blocking()


def failing_projector(host: Host) -> Any:
    """The host's projector, once it has noted a failure (waited for up to 10 s)."""
    projector = host.module.require_projector()
    deadline = time.monotonic() + 10
    while projector.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert projector.failure is not None
    return projector


class TestUpdate:
    @staticmethod
    def hourly(host: Host) -> str:
        event_id: str = host.svc.sync.schedule_event(
            name="hourly",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(hours=1),
            recurring=True,
            interval_type="hours",
            interval_value=1,
            parameters={"compress": False},
            max_retries=3,
        ).unwrap()
        return event_id

    def test_changes_the_fields_given_and_keeps_the_rest(self, host: Host) -> None:
        """Only the named fields change; the next run uses them."""
        svc = host.svc.sync
        event_id = self.hourly(host)
        before = svc.get_event(event_id).unwrap()
        assert svc.update_event(event_id, name="renamed", parameters={"compress": True}).ok
        task = svc.get_event(event_id).unwrap()
        assert (task.name, task.parameters) == ("renamed", {"compress": True})
        assert (task.trigger, task.policies, task.next_fire) == (
            before.trigger,
            before.policies,
            before.next_fire,
        )
        host.advance(3600)
        runs = svc.get_executions(event_id=event_id).unwrap().items
        assert [run.result for run in runs] == ["backup compress=True"]

    def test_a_trigger_of_another_kind_replaces_the_old_one(self, host: Host) -> None:
        """A cron expression makes an interval task a cron task (not an error for giving
        both), an interval makes it an interval task again, and recurring=False alone a
        one-shot at its next_execution."""
        svc = host.svc.sync
        event_id = self.hourly(host)
        first = svc.get_event(event_id).unwrap().next_fire
        assert first is not None

        assert svc.update_event(event_id, cron_expression="30 2 * * *").ok
        task = svc.get_event(event_id).unwrap()
        assert (task.trigger_kind, task.recurring) == ("cron", True)
        fires = svc.preview_event(event_id, 2).unwrap()
        assert [(fire.at.hour, fire.at.minute) for fire in fires] == [(2, 30), (2, 30)]

        assert svc.update_event(event_id, interval_type="days", interval_value=2).ok
        task = svc.get_event(event_id).unwrap()
        assert task.trigger_kind == "interval" and task.trigger is not None
        assert (task.trigger["every"], task.trigger["unit"]) == (2, "days")
        fires = svc.preview_event(event_id, 2).unwrap()
        assert [fire.at for fire in fires] == [first, first + timedelta(days=2)]

        assert svc.update_event(event_id, recurring=False).ok
        task = svc.get_event(event_id).unwrap()
        assert (task.trigger_kind, task.recurring) == ("date", False)
        assert [fire.at for fire in svc.preview_event(event_id, 5).unwrap()] == [first]

    @pytest.mark.parametrize(
        ("changes", "code"),
        [
            ({"interval_value": 0}, "invalid_trigger"),
            ({"cron_expression": "61 * * * *"}, "invalid_trigger"),
            ({"cron_expression": "0 3 * * *", "interval_type": "days"}, "invalid_argument"),
            ({"timeout": -1}, "invalid_argument"),
            ({"function_name": "nope"}, "unknown_function"),
            ({"nonsense": 1}, "invalid_argument"),
            ({"recurring": "yes"}, "invalid_argument"),
            ({"timeout": float("inf")}, "invalid_argument"),
            ({"next_execution": datetime(1, 1, 1, tzinfo=UTC)}, "invalid_argument"),
            ({"name": "\ud800"}, "invalid_argument"),
        ],
    )
    def test_a_bad_update_changes_nothing(
        self, host: Host, changes: dict[str, Any], code: str
    ) -> None:
        svc = host.svc.sync
        event_id = self.hourly(host)
        task = svc.get_event(event_id).unwrap()
        before = host.log_size()
        r = svc.update_event(event_id, **changes)
        assert r.error is not None and r.error.code == code, r.error
        assert host.log_size() == before
        assert svc.get_event(event_id).unwrap() == task

    def test_unknown_and_cancelled_tasks(self, host: Host) -> None:
        svc = host.svc.sync
        assert svc.update_event("missing", name="x").error.code == "not_found"
        event_id = self.hourly(host)
        assert svc.cancel_event(event_id).ok
        before = host.log_size()
        assert svc.update_event(event_id, name="x").error.code == "invalid_state"
        assert host.log_size() == before


class TestTuning:
    def test_the_default_engine_uses_the_host_tuning_and_a_module_may_set_another(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """The job shards' round, their number and the log's commits follow the module's
        tuning: the host's process by default, or the one it is given."""
        own = Tuning(round_size=5, job_shards=3, one_statement_commits=True)
        for tuning, expected in ((None, HOST_PROCESS), (own, own)):
            module = SchedulerModule(
                Settings(data_dir=str(tmp_path / f"data-{expected.round_size}")),
                clock=clock,
                tuning=tuning,
            )
            module.register(AppContext())
            module.start_blocking()
            try:
                runtime = module.require_runtime()
                assert runtime.tuning == expected
                assert runtime.shard_count == expected.job_shards
                store = runtime.store
                assert isinstance(store, SQLiteEventStore)
                assert store.one_statement_commits is expected.one_statement_commits
            finally:
                module.stop_blocking()

    @pytest.mark.parametrize("tuning", [HOST_PROCESS, SCHEDULER_PROCESS])
    def test_job_shards_in_the_settings_beat_the_tuning(
        self, tmp_path: Path, clock: FakeClock, tuning: Tuning
    ) -> None:
        """``Settings.job_shards`` left at None is the engine's choice; a number is kept."""
        for shards in (None, 4):
            module = SchedulerModule(
                Settings(data_dir=str(tmp_path / f"data-{shards}"), job_shards=shards),
                clock=clock,
                tuning=tuning,
            )
            module.register(AppContext())
            module.start_blocking()
            try:
                expected = tuning.job_shards if shards is None else shards
                assert module.require_runtime().shard_count == expected
            finally:
                module.stop_blocking()

    @pytest.mark.parametrize(
        ("field", "value"), [("round_size", 0), ("job_shards", 0), ("job_shards", -2)]
    )
    def test_a_tuning_below_one_is_refused(self, field: str, value: int) -> None:
        with pytest.raises(ValueError, match=field):
            dataclasses.replace(HOST_PROCESS, **{field: value})

    def test_the_scheduler_process_uses_its_own_tuning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The scheduler process of engine="process" asks for SCHEDULER_PROCESS: rounds of
        64, one shard, one-statement commits of its log."""
        made: dict[str, Any] = {}
        real = child.SchedulerModule

        def spy(*args: Any, **kwargs: Any) -> SchedulerModule:
            made.update(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(child, "SchedulerModule", spy)
        start = msg.Start(
            settings={"data_dir": str(tmp_path / "data")}, functions=[], projections_path=None
        )
        process = child.SchedulerProcess(typing.cast(Any, None), start)
        process.loop.close()
        assert made["tuning"] is SCHEDULER_PROCESS
        assert SCHEDULER_PROCESS != HOST_PROCESS

    def test_the_scheduler_process_loop_takes_more_reads_per_turn(self, tmp_path: Path) -> None:
        """Its loop runs nothing but the facade: task-board reads are let in
        PROCESS_BOARD_READS_PER_TURN a turn there, BOARD_READS_PER_TURN elsewhere."""
        start = msg.Start(
            settings={"data_dir": str(tmp_path / "data")}, functions=[], projections_path=None
        )
        process = child.SchedulerProcess(typing.cast(Any, None), start)

        async def first_turn() -> int:
            waiting = [service._board_admission.admit() for _ in range(200)]
            return sum(1 for future in waiting if future is None)

        try:
            assert process.loop.run_until_complete(first_turn()) == PROCESS_BOARD_READS_PER_TURN
        finally:
            process.loop.close()
        assert asyncio.run(first_turn()) == BOARD_READS_PER_TURN < PROCESS_BOARD_READS_PER_TURN


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "code"),
        [
            ({"function_name": "nope"}, "unknown_function"),
            ({"timezone": "Mars/Olympus"}, "invalid_trigger"),
            ({"cron_expression": "0 0 30 2 *"}, "invalid_trigger"),
            (
                {"recurring": True, "interval_type": "fortnights", "interval_value": 1},
                "invalid_argument",
            ),
            (
                {"recurring": True, "interval_type": "minutes", "interval_value": 0},
                "invalid_trigger",
            ),
            ({"parameters": {"when": datetime(2026, 1, 1)}}, "invalid_argument"),
            ({"event_id": "../etc"}, "invalid_argument"),
            ({"overlap": "sometimes"}, "invalid_argument"),
            ({"max_retries": -1}, "invalid_argument"),
            ({"name": ""}, "invalid_argument"),
            ({"parameters": {"compress": True, "level": 9}}, "invalid_argument"),
            ({"function_name": "failing_job", "parameters": {"disk": "/"}}, "invalid_argument"),
            # Values of the right type that nothing downstream could represent: a deadline
            # past datetime's range, an INTEGER column, UTF-8 text in the log.
            ({"timeout": float("inf")}, "invalid_argument"),
            ({"timeout": 1e18}, "invalid_argument"),
            ({"retry_backoff": float("inf")}, "invalid_argument"),
            ({"misfire_grace": float("nan")}, "invalid_argument"),
            ({"max_retries": 10**6}, "invalid_argument"),
            ({"max_concurrent": 2**40}, "invalid_argument"),
            ({"catchup_limit": 10**30}, "invalid_argument"),
            ({"jitter": 1e300}, "invalid_trigger"),
            (
                {
                    "recurring": True,
                    "interval_type": "hours",
                    "interval_value": 1,
                    "max_runs": 2**31,
                },
                "invalid_trigger",
            ),
            ({"name": "half a \ud800 surrogate"}, "invalid_argument"),
            ({"recurring": 2}, "invalid_argument"),
            ({"month_end": "sometimes"}, "invalid_argument"),
            # Instants whose arithmetic (a zone's offset, the commit lead) would leave
            # datetime's range: the job actor could not act on them.
            ({"next_execution": datetime(1, 1, 1, tzinfo=UTC)}, "invalid_argument"),
            (
                {"next_execution": datetime(9999, 12, 31, 23), "timezone": "Pacific/Pago_Pago"},
                "invalid_argument",
            ),
            ({"end_date": datetime(9999, 12, 31, 23, 59, tzinfo=UTC)}, "invalid_argument"),
            ({"parameters": {"compress": "\udcff"}}, "invalid_argument"),
        ],
    )
    def test_bad_schedule_requests_change_nothing(
        self, host: Host, kwargs: dict[str, Any], code: str
    ) -> None:
        """Each bad request returns a typed error and appends nothing."""
        svc = host.svc.sync
        before = host.log_size()
        request = {"name": "x", "function_name": "backup_database", **kwargs}
        r = svc.schedule_event(**request)
        assert not r.ok and r.error is not None
        assert r.error.code == code, r.error
        assert r.error.message
        assert host.log_size() == before

    @pytest.mark.parametrize(
        ("method", "kwargs", "code"),
        [
            ("register_cleanup", {"priority": "high"}, "invalid_argument"),
            ("register_cleanup", {"directory": ""}, "invalid_argument"),
            ("register_cleanup", {"module_id": "no spaces allowed"}, "invalid_argument"),
            ("register_cleanup", {"retention_days": -1}, "invalid_argument"),
            ("run_cleanup", {"dry_run": "yes"}, "invalid_argument"),
            ("run_cleanup", {"registration_id": "missing"}, "not_found"),
            ("explain_event", {"event_id": "missing"}, "not_found"),
            ("preview_event", {"count": 0}, "invalid_argument"),
            ("preview_event", {"count": True}, "invalid_argument"),
            ("pause_event", {"note": "x" * 2001}, "invalid_argument"),
            ("schedule_event", {"caused_by": "an agent"}, "invalid_argument"),
            ("schedule_event", {"no_such_option": 1}, "invalid_argument"),
            ("pause_event", {"note": "\ud800"}, "invalid_argument"),
            ("pause_event", {"caused_by": Cause(kind="robot")}, "invalid_argument"),  # type: ignore[arg-type]
            ("pause_event", {"caused_by": Cause(kind="agent", id="\ud800")}, "invalid_argument"),
            ("pause_event", {"caused_by": Cause(kind="agent", id="a" * 201)}, "invalid_argument"),
            ("register_cleanup", {"priority": 2**40}, "invalid_argument"),
            ("register_cleanup", {"max_total_bytes": 2**64}, "invalid_argument"),
            ("register_cleanup", {"max_files": 2**31}, "invalid_argument"),
            ("register_cleanup", {"retention_days": float("inf")}, "invalid_argument"),
            ("register_cleanup", {"pattern": "*.\udcff"}, "invalid_argument"),
            ("register_cleanup", {"exclude": ["\ud800"]}, "invalid_argument"),
            ("register_cleanup", {"description": "\ud800"}, "invalid_argument"),
            ("register_cleanup", {"schedule": "0 3 * * *\ud800"}, "invalid_argument"),
            ("list_events", {"module_id": "\udcff"}, "invalid_argument"),
            ("get_executions", {"status": "\udcff"}, "invalid_argument"),
            # DuckDB's OFFSET is 64-bit: beyond that a storage error, before the bound.
            ("get_executions", {"offset": 2**63}, "invalid_argument"),
            ("list_events", {"offset": 10**30}, "invalid_argument"),
        ],
    )
    def test_bad_calls_to_other_methods_change_nothing(
        self, host: Host, tmp_path: Path, method: str, kwargs: dict[str, Any], code: str
    ) -> None:
        """The facade's other entry points validate too: a typed error, nothing appended."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="x",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(days=1),
        ).unwrap()
        defaults: dict[str, dict[str, Any]] = {
            "register_cleanup": {
                "directory": str(tmp_path),
                "pattern": "*.log",
                "retention_days": 1,
            },
            "run_cleanup": {},
            "explain_event": {},
            "preview_event": {"event_id": event_id},
            "pause_event": {"event_id": event_id},
            "schedule_event": {"name": "y", "function_name": "backup_database"},
            "list_events": {},
            "get_executions": {"event_id": event_id},
        }
        before = host.log_size()
        r = getattr(svc, method)(**{**defaults[method], **kwargs})
        assert r.error is not None, r
        assert r.error.code == code, r.error
        assert r.error.message
        assert host.log_size() == before

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"recurring": True, "interval_type": "hours", "interval_value": 0}, "interval_value"),
            ({"recurring": True, "interval_type": "days", "interval_value": 1.5}, "interval_value"),
            (
                {"recurring": True, "interval_type": "months", "interval_value": 10**6},
                "interval_value",
            ),
            ({"recurring": True, "interval_type": "days", "end_date": -1}, "end_date"),
            ({"end_date": -1}, "end_date"),
            ({"cron_expression": "0 3 * * *", "end_date": -1}, "end_date"),
            (
                {
                    "cron_expression": "0 3 * * *",
                    "timezone": "UTC",
                    "end_date": "before-first-fire",
                },
                "end_date",
            ),
            ({"cron_expression": "61 * * * *"}, "cron_expression"),
            ({"cron_expression": "0 3 * * *", "interval_type": "days"}, "interval_type"),
            ({"jitter": -1}, "jitter"),
            ({"timeout": -5}, "timeout"),
            ({"retry_backoff": -1}, "retry_backoff"),
            ({"misfire_grace": "soon"}, "misfire_grace"),
        ],
    )
    def test_errors_name_the_parameter_the_caller_passed(
        self, host: Host, kwargs: dict[str, Any], field: str
    ) -> None:
        """An error says which of schedule_event's own parameters is wrong (interval_value,
        not the trigger's ``every``), in ``details["field"]`` and in its message, and
        appends nothing. ``end_date: -1`` stands for a day before next_execution;
        ``"before-first-fire"``, with no next_execution, for a moment after now but before
        the cron expression's first fire (a task that could never run)."""
        svc = host.svc.sync
        before = host.log_size()
        first = host.clock.now() + timedelta(days=1)
        request: dict[str, Any] = {"name": "x", "function_name": "backup_database"}
        if "cron_expression" not in kwargs:
            request["next_execution"] = first
        request.update(kwargs)
        if kwargs.get("end_date") == -1:
            request["end_date"] = first - timedelta(days=1)
            if "cron_expression" in kwargs:
                request["next_execution"] = first
        if kwargs.get("end_date") == "before-first-fire":
            cron = CronTrigger(expression=kwargs["cron_expression"], timezone="UTC")
            first_fire = next_fire(cron, host.clock.now())
            assert first_fire is not None
            request["end_date"] = first_fire.nominal - timedelta(seconds=1)
        if request.get("recurring") and "interval_value" not in kwargs:
            request["interval_value"] = 1
        r = svc.schedule_event(**request)
        assert r.error is not None
        assert r.error.details.get("field") == field, r.error
        assert field in r.error.message or field.replace("_", " ") in r.error.message, r.error
        for internal in ("every", "jitter_seconds", "timeout_seconds", "run_at", "start "):
            assert internal not in r.error.message, r.error.message
        assert host.log_size() == before

    @pytest.mark.parametrize("zone", ["Europe/Berln", ["Europe/Berlin"], 5])
    def test_a_misspelt_zone_gets_the_close_names(self, host: Host, zone: Any) -> None:
        """The facade checks the zone first, and says what the trigger check would: the
        close names, if there are any."""
        r = host.svc.sync.schedule_event(
            name="x", function_name="backup_database", cron_expression="0 3 * * *", timezone=zone
        )
        assert r.error is not None and r.error.code == "invalid_trigger"
        assert r.error.details == {"field": "timezone"}
        assert ("did you mean 'Europe/Berlin'" in r.error.message) == isinstance(zone, str)

    def test_unknown_ids_and_forbidden_transitions(self, host: Host) -> None:
        """Unknown ids are not_found; commanding a cancelled task is invalid_state."""
        svc = host.svc.sync
        assert svc.get_event("missing").error.code == "not_found"
        assert svc.pause_event("missing").error.code == "not_found"
        event_id = svc.schedule_event(
            name="x",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(days=1),
        ).unwrap()
        assert svc.cancel_event(event_id).ok
        before = host.log_size()
        for call in (svc.pause_event, svc.resume_event, svc.execute_now):
            r = call(event_id)
            assert r.error is not None and r.error.code == "invalid_state"
        assert host.log_size() == before

    def test_running_now_a_function_nobody_registered_is_refused(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """A host started without a function its tasks name (renamed in a new release,
        say): ``execute_now`` answers ``unknown_function``, as ``schedule_event`` would,
        and writes nothing."""
        first = Host(tmp_path / "data", clock)
        first.register()
        first.module.start_blocking()
        event_id = first.svc.sync.schedule_event(
            name="x",
            function_name="backup_database",
            next_execution=clock.now() + timedelta(days=1),
        ).unwrap()
        first.module.stop_blocking()
        second = Host(tmp_path / "data", clock)
        second.module.start_blocking()  # nothing registered this time
        try:
            before = second.log_size()
            r = second.svc.sync.execute_now(event_id)
            assert r.error is not None and r.error.code == "unknown_function", r
            assert "backup_database" in r.error.message
            assert second.log_size() == before
            assert not second.svc.sync.get_executions(event_id=event_id).unwrap().items
        finally:
            second.module.stop_blocking()

    def test_calls_before_start_are_unavailable(self, tmp_path: Path) -> None:
        """A facade whose module has not started answers with 'unavailable'."""
        h = Host(tmp_path, FakeClock())
        h.register()
        r = h.svc.sync.schedule_event(name="x", function_name="backup_database")
        assert r.error is not None and r.error.code == "unavailable"


#: Numbers of every kind and size, for fields that take a number.
_ANY_NUMBER = st.one_of(
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63, 10_000, 10_001, 3_162_240_000]),
)
#: Text with anything in it, lone surrogates included.
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)


class TestAnyValue:
    """Whatever value a caller passes, the answer is a task that works or a typed error,
    and an error appends nothing. Before the bounds in ``limits.py``, ``timeout=1e18``
    was accepted and its job actor failed on every load, and a lone surrogate in a note
    surfaced as a codec error from the log."""

    _NUMBER_FIELDS = (
        "timeout",
        "retry_backoff",
        "misfire_grace",
        "jitter",
        "max_retries",
        "max_concurrent",
        "catchup_limit",
        "max_runs",
        "interval_value",
    )

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        field=st.sampled_from(_NUMBER_FIELDS),
        value=_ANY_NUMBER,
        name=_ANY_TEXT,
        note=_ANY_TEXT,
        when=st.one_of(
            st.none(), st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.timezones()))
        ),
    )
    def test_a_task_that_works_or_a_typed_error(
        self, host: Host, field: str, value: object, name: str, note: str, when: datetime | None
    ) -> None:
        svc = host.svc.sync
        before = host.log_size()
        r = svc.schedule_event(
            name=f"task {name}",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(hours=1) if when is None else when,
            timezone="UTC",
            recurring=True,
            interval_type="hours",
            **{"interval_value": 1, field: value},
        )
        if r.error is not None:
            assert r.error.code in ("invalid_argument", "invalid_trigger"), r.error
            assert host.log_size() == before
            return
        # The job actor loads the new task to act on a command: it must be able to.
        paused = svc.pause_event(r.unwrap(), note=note)
        if paused.error is not None and paused.error.code == "invalid_state":
            assert svc.get_event(r.unwrap()).unwrap().status == "completed"  # max_runs used up
        elif paused.error is not None:
            assert paused.error.code == "invalid_argument", paused.error
            assert paused.error.details == {"field": "note"}
        assert svc.preview_event(r.unwrap(), 2).ok
        assert svc.cancel_event(r.unwrap()).ok


class TestEventLoop:
    def test_a_new_projection_needs_no_board_load(self, host: Host) -> None:
        """On a new data directory the task board starts complete: the first read is a
        look-up on the loop, not a load."""

        async def main() -> None:
            created = await host.svc.schedule_event(
                name="a", function_name="backup_database", next_execution=host.clock.now()
            )
            projector = host.module.require_projector()
            assert projector.get_task_if_ready(created.unwrap())[0]

        _run(main())

    def test_the_first_reads_share_one_load_of_the_task_board(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """Many reads arriving before the board of a reopened projection is loaded wait on
        the loop for one load on the query pool, instead of each taking a query thread."""
        first = Host(tmp_path / "data", clock)
        first.register()
        first.module.start_blocking()
        task_id = first.svc.sync.schedule_event(
            name="a", function_name="backup_database", next_execution=clock.now()
        ).unwrap()
        assert first.svc.sync.get_event(task_id).ok  # projected: the reopened board has rows
        first.module.stop_blocking()
        host = Host(tmp_path / "data", clock)
        host.register()
        host.module.start_blocking()

        async def main() -> None:
            svc = host.svc
            projector = host.module.require_projector()
            assert not projector.get_task_if_ready(task_id)[0]  # not loaded yet
            loads = 0
            load_board = projector.load_board

            def counting_load() -> None:
                nonlocal loads
                loads += 1
                load_board()

            async def no_pool(run: Any) -> Any:
                raise AssertionError("the read went to the query pool")

            projector.load_board = counting_load  # type: ignore[method-assign]
            svc._read = no_pool  # type: ignore[method-assign]
            results = await asyncio.gather(*(svc.get_event(task_id) for _ in range(200)))
            assert all(r.unwrap().name == "a" for r in results)
            assert loads == 1

        try:
            _run(main())
        finally:
            host.module.stop_blocking()

    def test_a_task_read_does_not_wait_for_the_duckdb_commit(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """get_event and list_events read the task board, which has a write once the
        projector has folded it; a history query waits for DuckDB to have it too."""
        svc = host.svc.sync
        # Not due: no execution of it may reach the projector once the commit is held.
        first = svc.schedule_event(
            name="a",
            function_name="backup_database",
            next_execution=host.clock.now() + timedelta(days=1),
        ).unwrap()
        assert svc.get_event(first).ok  # the task board is loaded now
        # And its own commit is done: only the next write's commit is held below.
        assert host.module.require_projector().wait_for_position(host.log_size(), 10)
        gate = threading.Event()
        original = writer.commit

        def held(conn: Any, batch: writer.PreparedBatch, db_path: Path | None = None) -> None:
            assert gate.wait(30)
            original(conn, batch, db_path)

        monkeypatch.setattr(writer, "commit", held)
        history: concurrent.futures.Future[Any] | None = None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                second = svc.schedule_event(
                    name="b", function_name="backup_database", next_execution=host.clock.now()
                ).unwrap()
                assert svc.get_event(second).unwrap().name == "b"
                assert svc.list_events().unwrap().total == 2
                history = pool.submit(svc.get_executions, event_id=second)
                time.sleep(0.2)
                assert not history.done()
            finally:
                gate.set()
            assert history.result(timeout=30).ok

    def test_a_failed_projector_follows_the_log_again(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A DuckDB commit that fails (a full disk) is logged and the projector starts again
        from its checkpoint: the reads that waited for it are answered, nothing is lost."""
        monkeypatch.setattr(module_module, "PROJECTOR_RETRY_FIRST", 0.01)
        original = writer.commit
        failures_left = [2]

        def flaky(conn: Any, batch: writer.PreparedBatch, db_path: Path | None = None) -> None:
            if failures_left[0]:
                failures_left[0] -= 1
                raise duckdb.IOException("No space left on device")
            original(conn, batch, db_path)

        monkeypatch.setattr(writer, "commit", flaky)
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="x", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        assert svc.get_event(event_id).unwrap().name == "x"
        host.advance(1)
        history = svc.get_executions(event_id=event_id).unwrap()
        assert [run.status for run in history.items] == ["succeeded"]
        assert host.module.projector_failures == 2

    def test_a_database_duckdb_refuses_is_opened_again_for_a_reader(self, host: Host) -> None:
        """After a fatal DuckDB error (a checkpoint on a full disk) every statement on the
        database fails until it is opened again. An idle projector has nothing to apply:
        the first read that meets the refusal opens it again and answers."""
        svc = host.svc.sync
        event_id = svc.schedule_event(
            name="x", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        host.advance(1)
        history = svc.get_executions(event_id=event_id).unwrap()
        assert [run.status for run in history.items] == ["succeeded"]
        invalidate(host.module.require_projector())
        assert svc.get_executions(event_id=event_id).unwrap() == history
        assert svc.list_events().unwrap().total == 1
        assert host.module.require_projector().generation == 1

    def test_a_database_duckdb_refuses_is_opened_again_by_the_projector(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the projector meets the refusal first, its next try opens the database
        again: the new task and its run reach the reads, none of them fails."""
        monkeypatch.setattr(module_module, "PROJECTOR_RETRY_FIRST", 0.01)
        svc = host.svc.sync
        first = svc.schedule_event(
            name="a", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        assert svc.get_event(first).ok
        invalidate(host.module.require_projector())
        second = svc.schedule_event(
            name="b", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        host.advance(1)
        assert svc.get_event(second).unwrap().name == "b"
        for event_id in (first, second):
            runs = svc.get_executions(event_id=event_id).unwrap().items
            assert [run.status for run in runs] == ["succeeded"]
        assert host.module.projector_failures >= 1

    def test_the_projectors_pause_doubles_up_to_its_cap_for_ever(self) -> None:
        """Failing for days (a thousand failures in a row and more) keeps the pause at its
        cap: the doubling once overflowed a float and ended the projector's thread."""
        delays = [module_module.projector_retry_delay(n) for n in (1, 2, 3, 1_100, 10**6)]
        assert delays == [0.5, 1.0, 2.0, 30.0, 30.0]

    def test_reads_fail_fast_while_the_projector_keeps_failing(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A projector that keeps failing (retried seconds later: a full disk) makes the
        reads that need what it has not applied fail with the reason, after the one try
        each asks for, not after their 30 s timeout. Commands still work: the log takes
        them. The first read once the cause is gone gets its try, and reads."""
        # A retry as far off as a long-failing projector's: reads bring it forward.
        monkeypatch.setattr(module_module, "PROJECTOR_RETRY_FIRST", 20.0)
        original = writer.commit
        disk_full = threading.Event()
        disk_full.set()

        def failing(conn: Any, batch: writer.PreparedBatch, db_path: Path | None = None) -> None:
            if disk_full.is_set():
                raise duckdb.IOException("No space left on device")
            original(conn, batch, db_path)

        svc = host.svc.sync
        first = svc.schedule_event(
            name="a", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        assert svc.get_event(first).ok
        monkeypatch.setattr(writer, "commit", failing)
        second = svc.schedule_event(
            name="b", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        projector = failing_projector(host)
        assert "No space left" in str(projector.failure)
        for read in (
            lambda: svc.get_event(second),
            lambda: svc.list_events(),
            lambda: svc.get_executions(event_id=first),
        ):
            started = time.monotonic()
            r = read()
            assert time.monotonic() - started < 5
            assert r.error is not None and r.error.code == "storage_error", r
            assert "No space left on device" in r.error.message
        disk_full.clear()  # space is freed: the next read asks for a try now and gets it
        assert svc.get_event(second).unwrap().name == "b"
        assert projector.failure is None
        assert svc.list_events().unwrap().total == 2

    def test_stopping_does_not_wait_out_the_projectors_pause(
        self, host: Host, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A projector pausing after a failure stops as soon as the module does."""
        monkeypatch.setattr(module_module, "PROJECTOR_RETRY_FIRST", 20.0)

        def failing(conn: Any, batch: writer.PreparedBatch, db_path: Path | None = None) -> None:
            raise duckdb.IOException("No space left on device")

        monkeypatch.setattr(writer, "commit", failing)
        host.svc.sync.schedule_event(
            name="a", function_name="backup_database", next_execution=host.clock.now()
        ).unwrap()
        failing_projector(host)
        started = time.monotonic()
        host.module.stop_blocking()
        assert time.monotonic() - started < 5

    def test_a_read_waits_for_the_projector_on_the_loop(self, host: Host) -> None:
        """A read that must see a write the projector has not applied yet waits on the
        caller's loop (not on a query thread) and answers once the projector gets there."""

        async def main() -> None:
            svc = host.svc
            created = await svc.schedule_event(
                name="a",
                function_name="backup_database",
                next_execution=host.clock.now() + timedelta(days=1),
            )
            task_id = created.unwrap()
            assert (await svc.get_event(task_id)).ok  # the task board is loaded now

            async def no_pool(run: Any) -> Any:
                raise AssertionError("the read went to the query pool")

            svc._read = no_pool  # type: ignore[method-assign]
            projector = host.module.require_projector()
            # As if this facade wrote the next event (the board may be ahead of DuckDB).
            svc._note_written(projector.board_position + 1)
            reading = asyncio.ensure_future(svc.get_event(task_id))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not reading.done()
            await svc.pause_event(task_id)  # the next event: the projector applies it
            result = await asyncio.wait_for(reading, timeout=10)
            assert result.unwrap().name == "a"

        _run(main())

    def test_facade_calls_show_their_parameters_and_result(self) -> None:
        """help() and inspect see each call's own parameters and the Result it answers."""
        schedule = inspect.signature(SchedulerService.schedule_event)
        assert list(schedule.parameters)[:3] == ["self", "name", "function_name"]
        assert schedule.return_annotation == "Result[str]"
        assert inspect.signature(SchedulerService.pause_event).return_annotation == "Result[str]"
        read = inspect.signature(SchedulerService.get_event)
        assert read.return_annotation == "Result[queries.TaskRow]"
        assert inspect.iscoroutinefunction(SchedulerService.schedule_event)

    def test_a_command_in_flight_is_one_coroutine_without_its_arguments(self, host: Host) -> None:
        """While its answer is on its way, a command is one coroutine whose frame holds
        neither the call's arguments nor another coroutine: thousands in flight then cost
        the host's cyclic GC little."""

        async def main() -> None:
            svc = host.svc
            answer: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
            sent: list[str] = []

            def held_send(task_id: str, *args: Any, **kwargs: Any) -> Any:
                sent.append(task_id)
                return answer

            svc._send = held_send  # type: ignore[method-assign]
            parameters = {"compress": "x" * 100}
            calling = asyncio.ensure_future(
                svc.schedule_event(
                    name="a",
                    function_name="backup_database",
                    next_execution=host.clock.now() + timedelta(days=1),
                    parameters=parameters,
                )
            )
            for _ in range(5):
                await asyncio.sleep(0)
            assert sent and not calling.done()
            call = calling.get_coro()
            assert isinstance(call, types.CoroutineType)
            assert not asyncio.iscoroutine(call.cr_await)  # it awaits the answer itself
            assert call.cr_frame is not None
            held = call.cr_frame.f_locals
            assert not set(held) & {"args", "kwargs", "sent"}
            assert all(value is not parameters for value in held.values())
            answer.set_result(CommandOutcome())
            assert (await calling).unwrap() == sent[0]

        _run(main())

    def test_loop_stays_responsive_under_many_calls(self, tmp_path: Path, clock: FakeClock) -> None:
        """10,000 concurrent facade calls leave the event loop turning throughout."""

        async def main() -> list[float]:
            h = Host(tmp_path / "data", clock)
            h.register()
            await h.module.start()
            stalls: list[float] = []
            stop = asyncio.Event()

            async def probe() -> None:
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.001)
                    stalls.append(time.perf_counter() - before - 0.001)

            prober = asyncio.create_task(probe())
            await asyncio.sleep(0.01)
            results = await asyncio.gather(
                *(
                    h.svc.schedule_event(
                        name=f"t{i}",
                        function_name="backup_database",
                        next_execution=clock.now() + timedelta(days=1),
                    )
                    for i in range(10_000)
                )
            )
            stop.set()
            await prober
            await h.module.stop()
            assert all(r.ok for r in results)
            return stalls

        stalls = sorted(_run(main()))
        # A facade that blocked the loop, or took the whole burst in one loop turn, would
        # give a handful of samples and a stall of seconds. Generous bounds: CI is shared.
        assert len(stalls) > 100
        assert stalls[len(stalls) // 2] < 0.005
        assert stalls[-1] < 0.5


class TestParameters:
    """A task's parameters must fit its function: a mistake is refused when it is
    scheduled, not found at every run."""

    def test_the_error_says_what_is_missing_and_what_the_function_takes(self) -> None:
        def report(
            day: str, *, recipients: list[str], fmt: str = "pdf", context: Any = None
        ) -> None:
            """A function with required, optional and keyword-only parameters."""

        entry = FunctionRegistry().register("report", report)
        entry.check_call({"day": "mon", "recipients": []})
        entry.check_call({"day": "mon", "recipients": [], "fmt": "html"})
        with pytest.raises(ValidationError) as caught:
            entry.check_call({"day": "mon", "format": "html"})
        error = caught.value
        assert error.details == {"field": "parameters", "function_name": "report"}
        assert error.message == (
            "parameters do not fit 'report': missing recipients; not taken: format "
            "(it takes day, fmt, recipients)"
        )
        with pytest.raises(ValidationError, match="context \\(chronolog passes it\\)"):
            entry.check_call({"day": "mon", "recipients": [], "context": 1})

    def test_a_function_with_keyword_arguments_takes_any_name(self) -> None:
        def anything(**options: Any) -> None:
            """Takes any keyword."""

        entry = FunctionRegistry().register("anything", anything)
        assert entry.rules == CallRules(required=frozenset(), allowed=None)
        entry.check_call({"a": 1, "b": 2})

    def test_positional_only_parameters_cannot_be_given(self) -> None:
        """A positional-only parameter can only be passed by position, which a run never
        does: without a default the function is refused at registration, with one it
        keeps its default and naming it is refused when scheduling."""

        def positional(path: str, /, depth: int = 1) -> None: ...

        def defaulted(path: str = "/", /, depth: int = 1) -> None: ...

        with pytest.raises(ValidationError, match="takes path positionally only"):
            FunctionRegistry().register("positional", positional)
        entry = FunctionRegistry().register("defaulted", defaulted)
        with pytest.raises(ValidationError, match=r"not taken: path \(it takes depth\)"):
            entry.check_call({"path": "/tmp"})
