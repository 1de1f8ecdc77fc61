"""The scheduler process's executor: runs the host's functions in the host.

The runtime talks to its executor through a narrow interface (submit, hold, release,
cancel, and what is running). In the scheduler process, :class:`RemoteExecutor` keeps
that interface: it tracks every execution itself (so ``is_running`` and ``wait_idle``
answer at once, as the runtime's decisions need) and sends each run of a host function
to the host over the control channel, where the host's own
:class:`~chronolog.actors.executor.Executor` runs it and reports back. Functions of the
scheduler process itself (the Housekeeper's ``chronolog.cleanup``) run on a local executor.

Runs committed ahead of their instant go to the host at once, with their ``release_at``:
the host holds them and starts each at its instant by a timer of its own, so the
critical path (timer wake-up, hand-off to a worker) stays inside one process, as with
the thread engine.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Collection

import structlog

from chronolog.actors.executor import STOP_CANCEL_WAIT, ExecutionRequest, Executor
from chronolog.domain.commands import Finish
from chronolog.process.frames import ChannelClosedError
from chronolog.process.messages import Cancel, Run

log = structlog.get_logger("chronolog.process")

#: Sends one message to the host (thread-safe).
SendToHost = Callable[[object], None]


class _Remote:
    """One execution of a host function, as the scheduler process knows it."""

    __slots__ = ("held", "request")

    def __init__(self, request: ExecutionRequest, *, held: bool) -> None:
        self.request = request
        self.held = held


class RemoteExecutor:
    """An executor whose runs of host functions happen in the host."""

    def __init__(
        self,
        local: Executor,
        send: SendToHost,
        on_finish: Callable[[str, Finish], None],
        local_functions: Collection[str],
    ) -> None:
        self._local = local
        self._send = send
        self._on_finish = on_finish
        self._local_functions = frozenset(local_functions)
        self._remote: dict[str, _Remote] = {}
        self._tasks: collections.Counter[str] = collections.Counter()
        self._held = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False

    # --- the runtime's side ---------------------------------------------------------------

    def submit(self, request: ExecutionRequest) -> None:
        """Start a run now: locally, or by asking the host."""
        self._take(request, held=False)

    def hold(self, request: ExecutionRequest) -> None:
        """Take a run in that starts at its ``release_at``: the host gets it now and holds
        it until then by its own timer (the instant is met without a hop between
        processes); here it counts as held until :meth:`release`."""
        self._take(request, held=True)

    def release(self, execution_id: str) -> None:
        """The instant of a held run has come (the host starts it by itself)."""
        with self._idle:
            remote = self._remote.get(execution_id)
            if remote is not None and remote.held:
                remote.held = False
                self._held -= 1
                self._idle.notify_all()
                return
        if remote is None:
            self._local.release(execution_id)

    def cancel(self, execution_id: str) -> bool:
        """Signal a run to stop (a held one then never starts)."""
        with self._lock:
            remote = self._remote.get(execution_id)
        if remote is None:
            return self._local.cancel(execution_id)
        self._tell_host(Cancel(execution_id))
        return True

    def is_task_running(self, task_id: str) -> bool:
        """Whether any run of ``task_id`` is under way (or held for its instant)."""
        with self._lock:
            if task_id in self._tasks:
                return True
        return self._local.is_task_running(task_id)

    def is_running(self, execution_id: str) -> bool:
        """Whether that run is under way (or held)."""
        with self._lock:
            if execution_id in self._remote:
                return True
        return self._local.is_running(execution_id)

    @property
    def running(self) -> int:
        """How many runs are under way or held."""
        with self._lock:
            remote = len(self._remote)
        return remote + self._local.running

    def wait_released(self, timeout: float) -> bool:
        """Block until no run is held back for its instant."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._held == 0, timeout):
                return False
        return self._local.wait_released(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing runs (held runs have not begun, so they do not count)."""
        with self._idle:
            if not self._idle.wait_for(lambda: len(self._remote) <= self._held, timeout):
                return False
        return self._local.wait_idle(timeout)

    def shutdown(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop taking runs; optionally wait for those under way in the host."""
        if self._closed:
            return
        self._closed = True
        if wait:
            self.wait_idle(timeout)
        with self._lock:
            running = [i for i, r in self._remote.items() if not r.held]
        for execution_id in running:  # still running: asked to stop, as the local ones are
            self.cancel(execution_id)
        if running:
            self.wait_idle(STOP_CANCEL_WAIT)
        with self._lock:
            held = [i for i, r in self._remote.items() if r.held]
        for execution_id in held:  # never started: the next start recovers them
            self._tell_host(Cancel(execution_id))
            self.forget(execution_id)
        self._local.shutdown(wait=wait, timeout=timeout)

    # --- the host's side ------------------------------------------------------------------

    def finished(self, task_id: str, finish: Finish) -> None:
        """The host ran a function to its end: report it, then stop counting it as
        running (in that order, as the local executor does)."""
        try:
            self._on_finish(task_id, finish)
        finally:
            self.forget(finish.execution_id)

    def forget(self, execution_id: str) -> None:
        """The run no longer counts as under way."""
        with self._idle:
            remote = self._remote.pop(execution_id, None)
            if remote is None:
                return
            task_id = remote.request.task_id
            self._tasks[task_id] -= 1
            if self._tasks[task_id] <= 0:
                del self._tasks[task_id]
            if remote.held:
                self._held -= 1
            self._idle.notify_all()

    def host_lost(self) -> None:
        """The host is gone, and the runs it had with it: none is under way any more (the
        log keeps them open; the next start records them as interrupted)."""
        with self._lock:
            started = [i for i, r in self._remote.items() if not r.held]
        for execution_id in started:
            self.forget(execution_id)

    # --- plumbing -------------------------------------------------------------------------

    def _take(self, request: ExecutionRequest, *, held: bool) -> None:
        if request.function_name in self._local_functions:
            (self._local.hold if held else self._local.submit)(request)
            return
        with self._lock:
            self._remote[request.execution_id] = _Remote(request, held=held)
            self._tasks[request.task_id] += 1
            if held:
                self._held += 1
        # Stopping, or the host gone: never started (the next start recovers it).
        if self._closed or not self._tell_host(Run(request)):
            self.forget(request.execution_id)

    def _tell_host(self, message: object) -> bool:
        try:
            self._send(message)
        except ChannelClosedError:
            log.warning("the host is gone; a run was not handed over", message=message)
            return False
        return True
