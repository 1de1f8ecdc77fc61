"""One scheduler process of ``engine = "process"``, as the host sees it.

:class:`ChildProcess` starts ``python -m chronolog.process.child`` with one end of a
socketpair, the control channel, waits until it has recovered, and then serves it from a
reader thread: runs of the host's functions go to an ordinary
:class:`~chronolog.actors.executor.Executor` (a run committed ahead of its instant arrives
early and is held until a timer here releases it at the instant, so the instant is met
without a hop between processes), their outcomes go back, and questions (``register``,
``settle``) get their answers. It ends by an orderly stop, or by being lost when the
process dies; :class:`~chronolog.process.engine.ProcessEngine` decides what then.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog

import chronolog
from chronolog.actors.executor import ExecutionRequest, Executor
from chronolog.actors.timer import Due, ReleaseDue, Timer
from chronolog.clock import SystemClock
from chronolog.domain.commands import Finish
from chronolog.errors import (
    ChronologError,
    RequestTimeoutError,
    ServiceUnavailableError,
    ValidationError,
)
from chronolog.functions import FunctionRegistry, RegisteredFunction
from chronolog.process import messages as msg
from chronolog.process.frames import ChannelClosedError, ControlChannel
from chronolog.result import ErrorInfo
from chronolog.settings import Settings

log = structlog.get_logger("chronolog.process")

#: Seconds the scheduler process may take to recover and start.
START_TIMEOUT = 120.0
#: Seconds an orderly stop may take, beyond ``stop_grace_seconds``, before the process is
#: killed.
STOP_TIMEOUT = 60.0


class ChildProcess:
    """One scheduler process: started, answering, then stopped in order or lost.

    ``on_lost(child)`` is called (from the control reader's thread) when the process
    ends without having been told to stop.
    """

    def __init__(
        self,
        settings: Settings,
        registry: FunctionRegistry,
        projections_path: Path | None,
        on_lost: Callable[[ChildProcess], None],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.projections_path = projections_path
        self.pid: int | None = None
        #: The names of the functions the process was told about at start.
        self.functions_sent: frozenset[str] = frozenset()
        self.started_at = 0.0
        self._on_lost = on_lost
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: ControlChannel | None = None
        self._executor: Executor | None = None
        self._reader: threading.Thread | None = None
        self._asks = itertools.count(1)
        self._answers: dict[int, list[Any]] = {}
        self._answered = threading.Condition()
        self._stopped = threading.Event()
        self._alive = False
        self._stopping = False
        self._lost = False
        # Runs committed ahead of their instant are held here and released by this
        # process's own timer: the instant is then met without a hop between processes.
        self._releases = Timer(SystemClock(), self._release)
        self._reported: set[str] = set()
        self._reported_lock = threading.Lock()

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler process and wait until it has recovered and answers."""
        if os.name != "posix":
            raise ValidationError("engine='process' needs a POSIX system (it passes sockets)")
        host_end, child_end = socket.socketpair()
        package_root = str(Path(chronolog.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "chronolog.process.child", str(child_end.fileno())],
                pass_fds=[child_end.fileno()],
                env=env,
                # Its own session: a Ctrl-C at the host's terminal is the host's to handle;
                # the scheduler process stops when the host tells it to (or is gone).
                start_new_session=True,
            )
        finally:
            child_end.close()
        channel = self._channel = ControlChannel(host_end)
        settings = msgspec.structs.asdict(self.settings)
        settings["engine"] = "thread"
        functions = self.registry.all()
        self.functions_sent = frozenset(entry.name for entry in functions)
        self.started_at = time.monotonic()
        channel.send(
            msg.Start(
                settings=settings,
                functions=[function_info(entry) for entry in functions],
                projections_path=None
                if self.projections_path is None
                else str(self.projections_path),
            )
        )
        first = self._first_answer(host_end)
        if isinstance(first, msg.Failed):
            channel.close(0.0)
            self._reap(STOP_TIMEOUT)
            raise error_of(first.error)
        self.pid = first.pid
        self._executor = Executor(
            self.registry,
            self._finished,
            threads=self.settings.executor_threads,
            max_result_bytes=self.settings.max_result_bytes,
            on_forget=self._forgotten,
        )
        self._releases.start()
        self._alive = True
        self._reader = threading.Thread(
            target=self._read_control, name="chronolog-process-control", daemon=True
        )
        self._reader.start()

    def _first_answer(self, sock: socket.socket) -> msg.Ready | msg.Failed:
        assert self._channel is not None and self._process is not None
        sock.settimeout(START_TIMEOUT)
        try:
            first = self._channel.receive()
        except (ChannelClosedError, TimeoutError):
            first = None
        finally:
            sock.settimeout(None)
        if not isinstance(first, msg.Ready | msg.Failed):
            self._channel.close(0.0)
            self._reap(0.0)
            raise ServiceUnavailableError(
                f"the scheduler process did not start (exit code {self._process.returncode})"
            )
        return first

    def stop(self) -> None:
        """Stop the scheduler process in order (it lets running executions end first),
        then the host's executor. After a loss, this only cleans up."""
        channel = self._channel
        if channel is None:
            return
        if self._alive:
            self._stopping = True
            with contextlib.suppress(ChannelClosedError):
                channel.send(msg.Stop())
            self._stopped.wait(self._stop_timeout)
        self._alive = False
        channel.close(0.0 if self._lost else 5.0)
        self._reap(self._stop_timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._releases.stop()
        if self._executor is not None:
            # Whatever still runs here was given up on by the scheduler process: its
            # execution stays open in the log and the next start recovers it.
            self._executor.shutdown(wait=False)
        self._channel = None

    @property
    def _stop_timeout(self) -> float:
        return self.settings.stop_grace_seconds + STOP_TIMEOUT

    def _reap(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the scheduler process did not stop; killing it", pid=process.pid)
            process.kill()
            process.wait()

    @property
    def alive(self) -> bool:
        """Whether the scheduler process is up and answering."""
        return self._alive

    # --- the control channel ------------------------------------------------------------

    def _read_control(self) -> None:
        assert self._channel is not None
        for message in self._channel.messages():
            if isinstance(message, msg.Run):
                self._run(message.request)
            elif isinstance(message, msg.Cancel):
                assert self._executor is not None
                self._executor.cancel(message.execution_id)
            elif isinstance(message, msg.Answer):
                with self._answered:
                    self._answers[message.number] = [message.value]
                    self._answered.notify_all()
            elif isinstance(message, msg.Stopped):
                self._alive = False  # the end of the channel that follows is no surprise
                self._stopped.set()
        lost = self._alive and not self._stopping
        self._alive = False
        self._stopped.set()
        with self._answered:
            self._answered.notify_all()
        if lost:
            self._lost = True
            self._on_lost(self)

    def _run(self, request: ExecutionRequest) -> None:
        assert self._executor is not None
        release_at = request.release_at
        if release_at is None or release_at <= datetime.now(UTC):
            self._executor.submit(request)
            return
        self._executor.hold(request)
        self._releases.add(release_at, ReleaseDue(request.task_id, request.execution_id))

    def _release(self, batch: Sequence[Due]) -> None:
        assert self._executor is not None
        for due in batch:
            if isinstance(due, ReleaseDue):
                self._executor.release(due.execution_id)

    def _finished(self, task_id: str, finish: Finish) -> None:
        with self._reported_lock:
            self._reported.add(finish.execution_id)
        self._tell(msg.Finished(task_id, finish))

    def _forgotten(self, execution_id: str) -> None:
        # A run that reported is forgotten by the scheduler process with its report; only
        # runs that ended without one (cancelled before they began, stopped) need saying.
        with self._reported_lock:
            if execution_id in self._reported:
                self._reported.discard(execution_id)
                return
        self._tell(msg.Forgotten(execution_id))

    def _tell(self, message: object) -> None:
        channel = self._channel
        if channel is None or not self._alive:
            return  # the run's end is lost with the process; recovery records it
        with contextlib.suppress(ChannelClosedError):
            channel.send(message)

    def _ask(self, question: str, argument: Any, timeout: float) -> Any:
        channel = self._channel
        if channel is None or not self._alive:
            raise gone()
        number = next(self._asks)
        try:
            channel.send(msg.Ask(number, question, argument))
        except ChannelClosedError:
            raise gone() from None
        with self._answered:
            if not self._answered.wait_for(
                lambda: number in self._answers or not self._alive, timeout
            ):
                raise RequestTimeoutError(f"the scheduler process did not answer {question!r}")
            if number not in self._answers:
                raise gone()
            value = self._answers.pop(number)[0]
        if isinstance(value, ErrorInfo):
            raise error_of(value)
        return value

    def share_functions(self, entries: list[RegisteredFunction]) -> None:
        """Tell the scheduler process about functions registered after it started (it
        validates schedules against their names); returns once it knows."""
        self._ask("register", [function_info(entry) for entry in entries], 30.0)

    def settle(self, timeout: float) -> bool:
        """Tests: wait until the scheduler process is quiet and its projections caught up."""
        return bool(self._ask("settle", timeout, timeout + 30.0))

    def connect(self, sock: socket.socket) -> None:
        """Hand the scheduler process its end of a new facade connection."""
        channel = self._channel
        if channel is None or not self._alive:
            raise gone()
        try:
            channel.send_with_fd(msg.Connect(), sock.fileno())
        except ChannelClosedError:
            raise gone() from None


def function_info(entry: RegisteredFunction) -> msg.FunctionInfo:
    """What the scheduler process needs to know of a host function."""
    allowed = entry.rules.allowed
    return msg.FunctionInfo(
        entry.name,
        entry.module_id,
        entry.description,
        required=sorted(entry.rules.required),
        allowed=None if allowed is None else sorted(allowed),
    )


def gone() -> ServiceUnavailableError:
    """The error of a call that cannot reach the scheduler process."""
    return ServiceUnavailableError("the scheduler process is not running")


def error_of(info: ErrorInfo) -> ChronologError:
    """The typed error an ``ErrorInfo`` names (a plain one with its code otherwise)."""
    classes: list[type[ChronologError]] = [ChronologError]
    while classes:
        cls = classes.pop()
        if cls.code == info.code:
            try:
                return cls(info.message, details=info.details)
            except TypeError:  # a class built from something else
                break
        classes.extend(cls.__subclasses__())
    error = ChronologError(info.message, details=info.details)
    error.code = info.code
    return error
