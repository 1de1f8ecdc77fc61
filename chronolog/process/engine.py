"""The host's side of ``engine = "process"``: the scheduler in a child process.

:class:`ProcessEngine` keeps one :class:`~chronolog.process.child_process.ChildProcess`
running and forwards the facade's calls to it, whole (method, arguments), over a
connection per calling event loop (:class:`~chronolog.process.links.LoopLink`); the
``Result`` comes back. The host's functions run in the host (the child process asks).

Why: the scheduler's threads (shards, store writer, projector, timer) then share neither
the host's GIL nor its cyclic garbage collector, which is what made the host's event loop
wait behind them (see ``docs/ARCHITECTURE.md``, "The process engine").

If the scheduler process dies, calls in flight and later calls answer ``unavailable``
while the engine starts a new one, after a delay that doubles while processes keep dying
young: the new one recovers everything acknowledged from the log, and records the runs
the host had under way as ``interrupted`` (retried per policy; the host signals them to
stop). If the host dies, the scheduler process sees its control channel end and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import structlog

from chronolog.errors import ServiceUnavailableError
from chronolog.functions import FunctionRegistry, RegisteredFunction
from chronolog.process.child_process import ChildProcess, gone
from chronolog.process.links import LoopLink
from chronolog.settings import Settings

log = structlog.get_logger("chronolog.process")

#: Seconds before the first restart of a scheduler process that died.
RESTART_DELAY = 0.25
#: The longest wait between restarts of processes that keep dying young.
RESTART_MAX_DELAY = 30.0
#: A process that ran this long (seconds) died of something new: restart it promptly.
HEALTHY_SECONDS = 60.0


class ProcessEngine:
    """Runs the scheduler in a child process, restarts it when it dies, and forwards the
    facade's calls to it."""

    def __init__(
        self, settings: Settings, registry: FunctionRegistry, projections_path: Path | None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.projections_path = projections_path
        #: How many times a dead scheduler process was replaced.
        self.restarts = 0
        #: How many replacements failed to start (each is tried again later).
        self.failed_restarts = 0
        self._child: ChildProcess | None = None
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLink] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restarter: threading.Thread | None = None
        self._delay = RESTART_DELAY

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler process; returns once it has recovered and answers."""
        self._child = self._start_child()

    def _start_child(self) -> ChildProcess:
        child = ChildProcess(self.settings, self.registry, self.projections_path, self._lost)
        child.start()
        # Functions registered while it started were not in its first message.
        missing = [e for e in self.registry.all() if e.name not in child.functions_sent]
        if missing:
            child.share_functions(missing)
        return child

    def stop(self) -> None:
        """Stop the scheduler process in order (running executions may end first)."""
        self._stopping.set()
        restarter = self._restarter
        if restarter is not None:
            restarter.join(timeout=RESTART_MAX_DELAY + 30)
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop()

    @property
    def pid(self) -> int | None:
        """The scheduler process's pid (None while there is none)."""
        child = self._child
        return None if child is None else child.pid

    @property
    def alive(self) -> bool:
        """Whether a scheduler process is up and answering."""
        child = self._child
        return child is not None and child.alive

    # --- losing and restarting ----------------------------------------------------------

    def _lost(self, child: ChildProcess) -> None:
        """The control reader of ``child`` saw it die (called on that thread)."""
        log.error("the scheduler process is gone", pid=child.pid)
        for link in list(self._links.values()):
            if link.child is child:
                link.end()
        if self._stopping.is_set():
            return
        if time.monotonic() - child.started_at >= HEALTHY_SECONDS:
            self._delay = RESTART_DELAY
        self._restarter = threading.Thread(
            target=self._restart, args=(child,), name="chronolog-process-restart", daemon=True
        )
        self._restarter.start()

    def _restart(self, dead: ChildProcess) -> None:
        dead.stop()  # only cleans up: its runs in this process are signalled to stop
        while not self._stopping.wait(self._delay):
            delay, self._delay = self._delay, min(self._delay * 2, RESTART_MAX_DELAY)
            try:
                child = self._start_child()
            except Exception as exc:
                self.failed_restarts += 1
                log.warning(
                    "the scheduler process did not restart",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=self._delay,
                )
                continue
            with self._lock:
                if self._stopping.is_set():
                    child.stop()
                    return
                self._child = child
            self.restarts += 1
            log.warning(
                "the scheduler process was restarted",
                pid=child.pid,
                restarts=self.restarts,
                after_seconds=delay,
            )
            return

    # --- what the module and the facade ask -------------------------------------------

    def share_function(self, entry: RegisteredFunction) -> None:
        """Tell the scheduler process about a function registered after start; returns
        once it knows. Without a live process nothing is sent: the next one is told
        about every function when it starts."""
        child = self._child
        if child is None or not child.alive:
            return
        # If it died meanwhile, its successor learns every name at its start.
        with contextlib.suppress(ServiceUnavailableError):
            child.share_functions([entry])

    def settle(self, timeout: float) -> bool:
        """Tests: wait until the scheduler process is quiet and its projections caught up."""
        child = self._child
        if child is None:
            raise gone()
        return child.settle(timeout)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Forward one facade call from the running loop; the future of its ``Result``."""
        child = self._child
        if child is None or not child.alive:
            raise gone()
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None or link.ended or link.child is not child:
            self._drop_closed_loops()
            link = self._links[loop] = LoopLink(child, loop)
        return link.call(name, args, kwargs)

    def _drop_closed_loops(self) -> None:
        """Close the connections of loops that were closed (``asyncio.run`` returned): a
        link refers to its loop, so the weak dictionary alone would keep both."""
        for loop, link in list(self._links.items()):
            if loop.is_closed():
                del self._links[loop]
                link.discard()
