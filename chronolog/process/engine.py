"""The host's side of ``engine = "process"``: the scheduler in a child process.

:class:`ProcessEngine` starts ``python -m chronolog.process.child`` with one end of a
socketpair, the control channel, and keeps three things in the host:

* the facade, whose calls it forwards whole (method, arguments) over a connection per
  calling event loop (:class:`LoopLink`) and whose ``Result`` it hands back;
* the host's functions, run by an ordinary :class:`~chronolog.actors.executor.Executor`
  when the scheduler process asks, with their outcomes sent back; a run committed ahead
  of its instant arrives early and is held until a timer here releases it at the instant;
* a reader thread for the control channel.

Why: the scheduler's threads (shards, store writer, projector, timer) then share neither
the host's GIL nor its cyclic garbage collector, which is what made the host's event loop
wait behind them (see ``docs/ARCHITECTURE.md``, "Engines").

If the scheduler process dies, calls in flight and later calls answer ``unavailable``;
the log keeps everything acknowledged, and a new start recovers it. If the host dies,
the scheduler process sees its control channel end and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
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
from chronolog.host_loop import PendingFutures
from chronolog.process import messages as msg
from chronolog.process.frames import ChannelClosedError, ControlChannel, FrameProtocol
from chronolog.result import ErrorInfo, Result
from chronolog.settings import Settings

log = structlog.get_logger("chronolog.process")

#: Seconds the scheduler process may take to recover and start.
START_TIMEOUT = 120.0
#: Seconds an orderly stop may take before the process is killed.
STOP_TIMEOUT = 60.0
#: The host's own bound on a facade call. The scheduler process answers every call within
#: its own timeouts (the Housekeeper's are the longest, 300 s); this only catches a process
#: that hangs.
CALL_TIMEOUT = 330.0


class ProcessEngine:
    """A scheduler process and the host's side of its channels."""

    def __init__(
        self, settings: Settings, registry: FunctionRegistry, projections_path: Path | None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.projections_path = projections_path
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: ControlChannel | None = None
        self._executor: Executor | None = None
        self._reader: threading.Thread | None = None
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLink] = (
            weakref.WeakKeyDictionary()
        )
        self._asks = itertools.count(1)
        self._answers: dict[int, list[Any]] = {}
        self._answered = threading.Condition()
        self._stopped = threading.Event()
        self._alive = False
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
        channel.send(
            msg.Start(
                settings=settings,
                functions=[_info(entry) for entry in self.registry.all()],
                projections_path=None
                if self.projections_path is None
                else str(self.projections_path),
            )
        )
        first = self._first_answer(host_end)
        if isinstance(first, msg.Failed):
            channel.close(0.0)
            self._reap(STOP_TIMEOUT)
            raise _error_of(first.error)
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
        then the host's executor."""
        channel = self._channel
        if channel is None:
            return
        if self._alive:
            with contextlib.suppress(ChannelClosedError):
                channel.send(msg.Stop())
            self._stopped.wait(STOP_TIMEOUT)
        self._alive = False
        channel.close()
        self._reap(STOP_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._releases.stop()
        if self._executor is not None:
            # Whatever still runs here was given up on by the scheduler process: its
            # execution stays open in the log and the next start recovers it.
            self._executor.shutdown(wait=False)
        self._channel = None

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
        if self._alive:
            log.error("the scheduler process is gone", pid=self.pid)
        self._alive = False
        self._stopped.set()
        with self._answered:
            self._answered.notify_all()
        for link in list(self._links.values()):
            link.end()

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
            raise _gone()
        number = next(self._asks)
        try:
            channel.send(msg.Ask(number, question, argument))
        except ChannelClosedError:
            raise _gone() from None
        with self._answered:
            if not self._answered.wait_for(
                lambda: number in self._answers or not self._alive, timeout
            ):
                raise RequestTimeoutError(f"the scheduler process did not answer {question!r}")
            if number not in self._answers:
                raise _gone()
            value = self._answers.pop(number)[0]
        if isinstance(value, ErrorInfo):
            raise _error_of(value)
        return value

    def share_function(self, entry: RegisteredFunction) -> None:
        """Tell the scheduler process about a function registered after start (it
        validates schedules against its names); returns once it knows."""
        self._ask("register", [_info(entry)], 30.0)

    def settle(self, timeout: float) -> bool:
        """Tests: wait until the scheduler process is quiet and its projections caught up."""
        return bool(self._ask("settle", timeout, timeout + 30.0))

    # --- facade calls -------------------------------------------------------------------

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Forward one facade call from the running loop; the future of its ``Result``."""
        if not self._alive:
            raise _gone()
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None or link.ended:
            self._drop_closed_loops()
            link = self._links[loop] = LoopLink(self, loop)
        return link.call(name, args, kwargs)

    def _drop_closed_loops(self) -> None:
        """Close the connections of loops that were closed (``asyncio.run`` returned): a
        link refers to its loop, so the weak dictionary alone would keep both."""
        for loop, link in list(self._links.items()):
            if loop.is_closed():
                del self._links[loop]
                link.discard()

    def _connect(self, sock: socket.socket) -> None:
        """Hand the scheduler process its end of a new facade connection."""
        channel = self._channel
        if channel is None:
            raise _gone()
        try:
            channel.send_with_fd(msg.Connect(), sock.fileno())
        except ChannelClosedError:
            raise _gone() from None


class LoopLink:
    """One event loop's connection to the scheduler process, and its calls in flight."""

    def __init__(self, engine: ProcessEngine, loop: asyncio.AbstractEventLoop) -> None:
        self.ended = False
        self._protocol = FrameProtocol(self._answered, unsendable=self._unsendable, lost=self._lost)
        self._pending = PendingFutures(loop, CALL_TIMEOUT, _no_answer)
        self._sock, theirs = socket.socketpair()
        try:
            engine._connect(theirs)
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._connecting: asyncio.Task[None] | None = loop.create_task(self._open(loop))

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.connect_accepted_socket(lambda: self._protocol, self._sock)
        except OSError as exc:
            self._sock.close()
            self._lost(exc)
        finally:
            self._connecting = None

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Send one call (with the others of this loop turn); the future of its ``Result``."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._protocol.send((self._pending.add(future), name, args, kwargs))
        return future

    def _unsendable(self, call: tuple[Any, ...], error: Exception) -> None:
        future = self._pending.pop(call[0])
        if future is not None and not future.done():
            future.set_exception(
                ValidationError(
                    f"the arguments of {call[1]} cannot be sent to the scheduler process "
                    f"({type(error).__name__}: {error})"
                )
            )

    def _answered(self, message: tuple[int, Result[Any]]) -> None:
        token, result = message
        future = self._pending.pop(token)
        if future is not None and not future.done():
            future.set_result(result)

    def _lost(self, exc: BaseException | None) -> None:
        self.ended = True
        self._pending.fail_all(_gone)

    def discard(self) -> None:
        """Close the socket of a link whose loop is closed."""
        self.ended = True
        self._sock.close()

    def end(self) -> None:
        """The scheduler process is gone (called from any thread)."""
        self.ended = True
        loop = self._pending.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._protocol.close)


def _info(entry: RegisteredFunction) -> msg.FunctionInfo:
    return msg.FunctionInfo(entry.name, entry.module_id, entry.description)


def _gone() -> ServiceUnavailableError:
    return ServiceUnavailableError("the scheduler process is not running")


def _no_answer() -> RequestTimeoutError:
    return RequestTimeoutError(f"the scheduler process did not answer within {CALL_TIMEOUT:.0f} s")


def _error_of(info: ErrorInfo) -> ChronologError:
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
