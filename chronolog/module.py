"""The host-facing module: a minimal service registry and the two-phase start.

Phase 1, :meth:`SchedulerModule.register`, puts the facade into the host's registry as
``scheduler_service`` so other modules can register their functions. Phase 2,
:meth:`SchedulerModule.start`, opens the log and the projections, recovers every task and
starts the actors. A host framework with its own registry passes any object that has
``register_service`` and ``get_service``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from chronolog import forks
from chronolog.clock import Clock, SystemClock
from chronolog.errors import (
    NotFoundError,
    ServiceUnavailableError,
    StoreClosedError,
    ValidationError,
)
from chronolog.functions import FunctionRegistry, RegisteredFunction
from chronolog.housekeeping.registrations import CLEANUP_FUNCTION, make_cleanup_function
from chronolog.logs import configure_logging
from chronolog.service import SchedulerService
from chronolog.settings import Settings, check_settings

# The thread engine's parts (pykka, DuckDB, the SQLite store) are imported when that engine
# starts: a host whose scheduler runs in a child process never loads them, which keeps
# its memory and its garbage collector's full passes small.
if TYPE_CHECKING:
    from chronolog.actors.executor import ExecutionBackend, FinishCallback
    from chronolog.actors.housekeeper import Housekeeper
    from chronolog.actors.runtime import Runtime
    from chronolog.actors.tuning import Tuning
    from chronolog.process.engine import ProcessEngine
    from chronolog.projections import Projector
    from chronolog.store import EventStore
    from chronolog.store.snapshots import SnapshotFile

log = structlog.get_logger("chronolog.module")

SERVICE_NAME = "scheduler_service"
PROJECTIONS_FILENAME = "projections.duckdb"
#: After the projector fails, it follows the log again after this many seconds, doubling
#: with each failure in a row up to :data:`PROJECTOR_RETRY_MAX`.
PROJECTOR_RETRY_FIRST = 0.5
PROJECTOR_RETRY_MAX = 30.0
#: Readers waiting for their own writes wait out a projector retry this soon (a passing
#: error costs them that wait); a later retry means the projector keeps failing: the
#: failure is noted, and a reader then asks for one try (at most one per this many
#: seconds) and fails with the reason if it fails, instead of at its 30 s timeout.
READS_WAIT_FOR_RETRY = 1.0


def projector_retry_delay(in_a_row: int) -> float:
    """The pause after the projector's ``in_a_row``-th failure in a row (seconds)."""
    # The exponent is capped: a float overflows past 2 ** 1023, some days of failures in.
    return min(PROJECTOR_RETRY_FIRST * 2.0 ** min(in_a_row - 1, 16), PROJECTOR_RETRY_MAX)


def _with_absolute_data_dir(settings: Settings) -> Settings:
    """``settings`` with ``data_dir`` made absolute against the working directory of now: a
    host that changes its own later must not move the scheduler's files."""
    path = Path(settings.data_dir)
    return settings if path.is_absolute() else settings.replace(data_dir=str(path.absolute()))


@runtime_checkable
class ServiceRegistry(Protocol):
    """What chronolog needs from a host's service registry."""

    def register_service(self, name: str, service: Any) -> None: ...

    def get_service(self, name: str) -> Any: ...


class AppContext:
    """The smallest service registry: names to objects."""

    def __init__(self) -> None:
        self._services: dict[str, Any] = {}
        self._lock = threading.Lock()

    def register_service(self, name: str, service: Any) -> None:
        """Make ``service`` available as ``name`` (a second registration replaces it)."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"service name must be a non-empty string, got {name!r}")
        with self._lock:
            self._services[name] = service

    def get_service(self, name: str) -> Any:
        """The service registered as ``name``; :class:`NotFoundError` when there is none."""
        with self._lock:
            try:
                return self._services[name]
            except KeyError:
                known = ", ".join(sorted(self._services)) or "none"
                raise NotFoundError(f"no service {name!r} (registered: {known})") from None

    def has_service(self, name: str) -> bool:
        """Whether ``name`` is registered."""
        with self._lock:
            return name in self._services


class SchedulerModule:
    """chronolog as a module of a host application."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        store: EventStore | None = None,
        projections_path: str | Path | None = None,
        fire_timers: bool = True,
        executor_factory: Callable[[FinishCallback], ExecutionBackend] | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        """``fire_timers=False`` starts a maintenance instance: commands and queries work,
        but nothing fires on its own (the command line uses it on a stopped scheduler's
        data directory). ``executor_factory`` replaces the executor that runs functions,
        and ``tuning`` the job shards' and the log writer's settings for the host's
        process (:data:`~chronolog.actors.tuning.HOST_PROCESS`); the scheduler process of
        ``engine = "process"`` sets both.

        ``engine = "process"`` in the settings runs the scheduler in a child process; it
        has its own clock and store, so it takes neither ``clock`` nor ``store``, and is
        not for a maintenance instance.
        """
        self.settings = _with_absolute_data_dir(check_settings(settings or Settings()))
        if self.settings.engine == "process" and (
            clock is not None or store is not None or not fire_timers
        ):
            raise ValidationError(
                "engine='process' runs the scheduler in a child process with its own clock "
                "and store: pass neither clock nor store, nor fire_timers=False "
                "(use engine='thread' for that)"
            )
        self.clock: Clock = clock or SystemClock()
        self.registry = FunctionRegistry()
        self.registry.register(
            CLEANUP_FUNCTION,
            make_cleanup_function(self._require_housekeeper),
            module_id="chronolog.housekeeper",
        )
        self.service = SchedulerService(self)
        self._store = store
        self._owns_store = store is None
        self._snapshots: SnapshotFile | None = None
        # Absolute now, like data_dir: a replacement scheduler process starts later. (":memory:"
        # is DuckDB's name for a database in memory.)
        self._projections_path = (
            Path(projections_path).absolute()
            if projections_path is not None and str(projections_path) != ":memory:"
            else projections_path
        )
        self._runtime: Runtime | None = None
        #: (pid, fork generation) of the process that last started the scheduler.
        self._started_in = (os.getpid(), forks.generation())
        self._projector: Projector | None = None
        self._projector_stop = threading.Event()
        self._projector_thread: threading.Thread | None = None
        #: How often the projector failed and started again since the module started.
        self.projector_failures = 0
        self._registered = False
        self._fire_timers = fire_timers
        self._executor_factory = executor_factory
        self._tuning = tuning
        self._engine: ProcessEngine | None = None

    # --- phase 1 --------------------------------------------------------------------------

    def register(self, app: ServiceRegistry) -> SchedulerService:
        """Phase 1: register the facade as ``scheduler_service`` in ``app``."""
        if not isinstance(app, ServiceRegistry):
            raise ValidationError(
                "app must have register_service(name, service) and get_service(name)"
            )
        app.register_service(SERVICE_NAME, self.service)
        self._registered = True
        return self.service

    # --- phase 2 --------------------------------------------------------------------------

    async def start(self) -> None:
        """Phase 2: open storage and projections, recover, start the actors.

        The blocking work runs in a worker thread so the host's event loop stays free.
        """
        await asyncio.to_thread(self.start_blocking)

    def start_blocking(self) -> None:
        """Phase 2 for hosts without an event loop."""
        if self.forked:
            raise self.forked_error()
        if self._runtime is not None or self._engine is not None:
            return
        # Noted before anything starts: a fork made while it starts is a fork too.
        self._started_in = (os.getpid(), forks.generation())
        configure_logging(self.settings.log_format, self.settings.log_level)
        if self.settings.engine == "process":
            self._start_process()
            return
        from chronolog.actors.recovery import FINGERPRINT
        from chronolog.actors.runtime import Runtime
        from chronolog.actors.tuning import HOST_PROCESS
        from chronolog.projections import Projector
        from chronolog.store import SQLiteEventStore
        from chronolog.store.snapshots import SNAPSHOTS_FILENAME, open_snapshots

        tuning = HOST_PROCESS if self._tuning is None else self._tuning
        data_dir = self.settings.data_path
        if self._store is None:
            self._store = SQLiteEventStore(
                data_dir,
                synchronous=self.settings.sqlite_synchronous,
                clock=self.clock,
                reserve_bytes=self.settings.disk_reserve_bytes,
                one_statement_commits=tuning.one_statement_commits,
            )
        path = self._projections_path
        if path is None and self._owns_store:
            path = data_dir / PROJECTIONS_FILENAME
        try:
            if self._owns_store:
                self._snapshots = open_snapshots(data_dir / SNAPSHOTS_FILENAME, FINGERPRINT)
            self._projector = Projector(
                self._store, path, memory_limit=self.settings.projections_memory_limit
            )
            self._projector.catch_up()
            runtime = Runtime(
                self.settings,
                self._store,
                self.registry,
                clock=self.clock,
                fire_timers=self._fire_timers,
                executor_factory=self._executor_factory,
                tuning=tuning,
                snapshots=self._snapshots,
            )
            runtime.start()
        except BaseException:
            self._close_storage()
            raise
        self._runtime = runtime
        self._projector_stop.clear()
        self._projector_thread = threading.Thread(
            target=self._follow_log,
            args=(self._projector,),
            name="chronolog-projector",
            daemon=True,
        )
        self._projector_thread.start()

    def _follow_log(self, projector: Projector) -> None:
        """The projector's thread: follow the log until stopped. A failure (a DuckDB error,
        a full disk) is logged and the projector starts again from its checkpoint, after a
        wait that doubles with each failure in a row; without that, the projections would
        stay frozen until a restart and every read of one's own writes would time out."""
        stop = self._projector_stop
        in_a_row = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                projector.run_until_stopped(stop)
                return
            except StoreClosedError:
                return
            except Exception as exc:
                self.projector_failures += 1
                # After a long healthy stretch a failure is the first in a row again.
                healthy = time.monotonic() - started >= PROJECTOR_RETRY_MAX
                in_a_row = 1 if healthy else in_a_row + 1
                delay = projector_retry_delay(in_a_row)
                if delay > READS_WAIT_FOR_RETRY:
                    # Cleared by the next batch the projector applies.
                    projector.note_failure(f"{exc} (it tries again within {delay:g} s)")
                log.exception(
                    "the projector failed; it follows the log again after a pause",
                    retry_in_seconds=delay,
                    failures=self.projector_failures,
                )
                projector.pause_after_failure(delay, READS_WAIT_FOR_RETRY, stop)

    def _start_process(self) -> None:
        from chronolog.process.engine import ProcessEngine  # only this engine needs it

        path = self._projections_path
        engine = ProcessEngine(self.settings, self.registry, None if path is None else Path(path))
        engine.start()
        self._engine = engine

    async def stop(self) -> None:
        """Stop the actors (waiting briefly for running executions) and close storage."""
        await asyncio.to_thread(self.stop_blocking)

    def stop_blocking(self) -> None:
        """:meth:`stop` for hosts without an event loop.

        In a fork of the process that started the scheduler this changes nothing: the
        files, sockets and locks it would close are the parent's too.
        """
        if self.forked:
            log.warning(
                "stop() in a fork of the process that started the scheduler: left alone",
                started_in=self._started_in[0],
            )
            return
        if self._engine is not None:
            self._engine.stop()
            self._engine = None
        if self._runtime is not None:
            self._runtime.stop()
            self._runtime = None
        self.service.close()
        self._projector_stop.set()
        if self._store is not None:
            self._store.wake_waiters()  # the projector's wait sees the stop at once
        if self._projector is not None:
            self._projector.wake()  # and so does its pause after a failure
        if self._projector_thread is not None:
            self._projector_thread.join(timeout=30)
            self._projector_thread = None
        self._close_storage()

    def _close_storage(self) -> None:
        if self._snapshots is not None:
            self._snapshots.close()
            self._snapshots = None
        if self._projector is not None:
            self._projector.close()
            self._projector = None
        if self._store is not None and self._owns_store:
            self._store.close()
            self._store = None

    # --- access ---------------------------------------------------------------------------

    @property
    def forked(self) -> bool:
        """Whether the scheduler runs, started by a process this one is a fork of (where
        none of its threads run; see :mod:`chronolog.forks`). A module that was not
        running when the process forked may be started in the fork."""
        running = self._runtime is not None or self._engine is not None
        return running and self._started_in[1] != forks.generation()

    def forked_error(self) -> ServiceUnavailableError:
        """What a call made in a fork (see :attr:`forked`) is answered."""
        return ServiceUnavailableError(forks.forked_message(self._started_in[0]))

    @property
    def runtime(self) -> Runtime | None:
        """The running runtime (None before start and after stop)."""
        return self._runtime

    @property
    def engine(self) -> ProcessEngine | None:
        """The scheduler process's engine while one runs (``engine = "process"``)."""
        return self._engine

    def require_runtime(self) -> Runtime:
        """The runtime, or :class:`ServiceUnavailableError` when not started (or when it
        runs in a child process, ``engine = "process"``)."""
        if self._engine is not None:
            raise ServiceUnavailableError(
                "the scheduler runs in its own process (engine='process'); use the facade"
            )
        if self._runtime is None or not self._runtime.running:
            raise ServiceUnavailableError(
                "the scheduler is not started: await module.start() first"
            )
        return self._runtime

    def _require_housekeeper(self) -> Housekeeper:
        housekeeper = self.require_runtime().housekeeper
        if housekeeper is None:
            raise ServiceUnavailableError("the Housekeeper is not running")
        return housekeeper

    def require_projector(self) -> Projector:
        """The projector, or :class:`ServiceUnavailableError` when not started."""
        if self._engine is not None:
            raise ServiceUnavailableError(
                "the projections belong to the scheduler process (engine='process'); use the facade"
            )
        if self._projector is None:
            raise ServiceUnavailableError(
                "the scheduler is not started: await module.start() first"
            )
        return self._projector

    def settle(self, timeout: float = 10.0) -> bool:
        """Tests: wait until the runtime is quiet and the projections have caught up."""
        if self._engine is not None:
            return self._engine.settle(timeout)
        runtime = self.require_runtime()
        if not runtime.settle(timeout):
            return False
        projector = self.require_projector()
        return projector.wait_for_position(runtime.store.last_position(), timeout)

    def function_registered(self, entry: RegisteredFunction) -> None:
        """Called by the facade after a function was registered: a scheduler process
        learns its name before the call returns (it validates schedules against it)."""
        if self._engine is not None:
            self._engine.share_function(entry)

    async def __aenter__(self) -> SchedulerModule:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
