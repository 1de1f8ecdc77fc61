"""The scheduler process of ``engine = "process"``: ``python -m chronolog.process.child FD``.

The host starts it with one end of a socketpair (``FD``), the control channel, and sends
the settings and the names of its functions. This process then runs an ordinary
thread-engine :class:`~chronolog.module.SchedulerModule` (the log, the projections, the
shards, the timer, the projector and the Housekeeper) whose executor hands runs of host
functions back to the host (:class:`~chronolog.process.remote_executor.RemoteExecutor`).

Facade calls arrive on connections of their own, one per event loop of the host that
calls (each connection's socket comes over the control channel); each call runs the same
facade method here, on this process's event loop, and its ``Result`` goes back.

It stops when the host says so, and also when the control channel ends or its parent
changes: a host that dies takes its running functions with it, and this process must not
outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import structlog

from chronolog.actors.executor import Executor, FinishCallback
from chronolog.actors.tuning import SCHEDULER_PROCESS
from chronolog.errors import ChronologError
from chronolog.functions import CallRules
from chronolog.housekeeping.registrations import CLEANUP_FUNCTION
from chronolog.module import AppContext, SchedulerModule
from chronolog.process import messages as msg
from chronolog.process.frames import ChannelClosedError, ControlChannel, FrameProtocol
from chronolog.process.remote_executor import RemoteExecutor
from chronolog.result import ErrorInfo, Result
from chronolog.service import FACADE_CALLS, SchedulerService, dedicate_loop
from chronolog.settings import Settings

log = structlog.get_logger("chronolog.process")

#: Threads of the local executor (only the Housekeeper's cleanup function runs here).
_LOCAL_THREADS = 2
#: How often the scheduler process checks that its host is still its parent (seconds).
HOST_CHECK_SECONDS = 1.0


def _runs_in_host(**_: Any) -> None:
    """A host function: the host runs it (this stand-in only names it here)."""
    raise RuntimeError("host functions run in the host process")


class SchedulerProcess:
    """The scheduler process: the module, its facade, and both kinds of channel."""

    def __init__(self, channel: ControlChannel, start: msg.Start) -> None:
        self.channel = channel
        settings = msgspec.convert(start.settings, Settings)
        if settings.log_format == "logging":
            # The host's logging handlers are in the host process; this one writes JSON
            # lines to the stderr it shares with the host.
            settings = msgspec.structs.replace(settings, log_format="json")
        projections = None if start.projections_path is None else Path(start.projections_path)
        self.module = SchedulerModule(
            settings,
            projections_path=projections,
            executor_factory=self._make_executor,
            tuning=SCHEDULER_PROCESS,
        )
        self.module.register(AppContext())
        self.register(start.functions)
        self.executor: RemoteExecutor | None = None
        self.loop = asyncio.new_event_loop()
        dedicate_loop(self.loop)
        self._calls: set[asyncio.Task[None]] = set()
        self._stopping = threading.Event()

    @property
    def service(self) -> SchedulerService:
        return self.module.service

    def _make_executor(self, on_finish: FinishCallback) -> RemoteExecutor:
        settings = self.module.settings
        local = Executor(
            self.module.registry,
            on_finish,
            threads=_LOCAL_THREADS,
            max_result_bytes=settings.max_result_bytes,
        )
        self.executor = RemoteExecutor(local, self.channel.send, on_finish, {CLEANUP_FUNCTION})
        return self.executor

    def register(self, functions: list[msg.FunctionInfo]) -> None:
        """Name the host's functions here, so schedules that use them validate."""
        for function in functions:
            if function.name == CLEANUP_FUNCTION:
                continue  # this process's own
            allowed = function.allowed
            self.module.registry.register(
                function.name,
                _runs_in_host,
                module_id=function.module_id,
                description=function.description or "-",
                rules=CallRules(
                    frozenset(function.required), None if allowed is None else frozenset(allowed)
                ),
            )

    # --- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the module, answer until told to stop (or the host is gone)."""
        try:
            self.module.start_blocking()
        except Exception as exc:
            self.channel.send(msg.Failed(error=_error_info(exc)))
            return 1
        self.channel.send(msg.Ready(pid=os.getpid()))
        reader = threading.Thread(target=self._read_control, name="chronolog-control", daemon=True)
        reader.start()
        watchdog = threading.Thread(
            target=self._watch_host, args=(os.getppid(),), name="chronolog-host-watch", daemon=True
        )
        watchdog.start()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
        return 0

    def _read_control(self) -> None:
        for message in self.channel.messages():
            if isinstance(message, msg.Connect):
                fd = self.channel.take_fd()
                self.loop.call_soon_threadsafe(self._open_connection, fd)
            elif isinstance(message, msg.Finished):
                assert self.executor is not None
                self.executor.finished(message.task_id, message.finish)
            elif isinstance(message, msg.Forgotten):
                assert self.executor is not None
                self.executor.forget(message.execution_id)
            elif isinstance(message, msg.Ask):
                # Off this thread: settling waits for runs whose reports come through it.
                threading.Thread(target=self._answer, args=(message,), daemon=True).start()
            elif isinstance(message, msg.Stop):
                self._stop_soon()
        # The host is gone (or closed the channel after "stopped"): so are its runs.
        if self.executor is not None:
            self.executor.host_lost()
        self._stop_soon()

    def _watch_host(self, host_pid: int) -> None:
        """The control channel ends when the host dies, unless a process the host forked
        (a ``multiprocessing`` worker, say) still holds the host's end of it; the parent
        pid changing says the host is gone in that case too."""
        while not self._stopping.wait(HOST_CHECK_SECONDS):
            if os.getppid() != host_pid:
                log.warning("the host process is gone", host_pid=host_pid)
                if self.executor is not None:
                    self.executor.host_lost()
                self._stop_soon()
                return

    def _answer(self, ask: msg.Ask) -> None:
        try:
            value: Any = self._question(ask)
        except Exception as exc:
            value = _error_info(exc)
        with contextlib.suppress(ChannelClosedError):
            self.channel.send(msg.Answer(number=ask.number, value=value))

    def _question(self, ask: msg.Ask) -> Any:
        if ask.question == "register":
            self.register(ask.argument)
            return None
        if ask.question == "settle":
            return self.module.settle(float(ask.argument))
        raise ValueError(f"unknown question {ask.question!r}")

    def _stop_soon(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        threading.Thread(target=self._stop, name="chronolog-stop", daemon=True).start()

    def _stop(self) -> None:
        try:
            self.module.stop_blocking()
        finally:
            with contextlib.suppress(ChannelClosedError):
                self.channel.send(msg.Stopped())
            self.loop.call_soon_threadsafe(self.loop.stop)

    # --- facade calls -----------------------------------------------------------------------

    def _open_connection(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        protocol = FrameProtocol(
            lambda call: self._start_call(protocol, call),
            unsendable=lambda answer, error: protocol.send(_unsendable(answer, error)),
        )
        connecting = self.loop.create_task(self._connect(protocol, sock))
        self._calls.add(connecting)
        connecting.add_done_callback(self._calls.discard)

    def _start_call(self, protocol: FrameProtocol, call: tuple[Any, ...]) -> None:
        task = self.loop.create_task(self._call(protocol, *call))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _connect(self, protocol: FrameProtocol, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError as exc:
            log.warning("a facade connection could not be opened", error=str(exc))
            sock.close()

    async def _call(
        self,
        protocol: FrameProtocol,
        token: int,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        if name not in FACADE_CALLS:
            result: Result[Any] = Result.failure(
                ErrorInfo(code="validation_error", message=f"no facade call {name!r}")
            )
        else:
            result = await getattr(self.service, name)(*args, **kwargs)
        protocol.send((token, result))


def _unsendable(answer: tuple[int, Result[Any]], error: Exception) -> tuple[int, Result[Any]]:
    """What the host gets instead of an answer pickle cannot carry."""
    text = f"the answer cannot reach the host: {type(error).__name__}: {error}"
    return answer[0], Result.failure(ErrorInfo(code="internal", message=text))


def _error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, ChronologError):
        return ErrorInfo.from_exception(exc)
    return ErrorInfo(code="internal", message=f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    """Serve the host that passed the control channel's descriptor as ``argv[0]``."""
    channel = ControlChannel(socket.socket(fileno=int(argv[0])))
    try:
        start = channel.receive()
    except ChannelClosedError:
        return 1
    if not isinstance(start, msg.Start):
        return 2
    try:
        return SchedulerProcess(channel, start).run()
    finally:
        channel.close()  # after what is queued (Stopped, Failed) was written


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
