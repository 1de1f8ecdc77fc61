"""Runs task functions: synchronous ones on a bounded thread pool, coroutines on one loop.

The executor knows nothing of schedules. It is handed an :class:`ExecutionRequest` after
the execution's ``ExecutionStarted`` event is durable, runs the function with an
:class:`ExecutionContext`, and reports a :class:`~chronolog.domain.commands.Finish`
through the ``on_finish`` callback. Timeouts are decided elsewhere (the timer); here a
timed-out or cancelled execution only gets its cancellation signal.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import queue
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec
import structlog

from chronolog.actors.loop_watch import LoopWatch
from chronolog.domain.commands import Finish
from chronolog.functions import FunctionRegistry
from chronolog.loop_thread import start_loop_thread

_current: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "chronolog_execution", default=None
)
_TRACEBACK_LIMIT = 16_384
#: Seconds a stop gives the runs it asked to stop (after its grace) to end: a cancelled
#: coroutine's ``finally`` blocks run before the loop stops.
STOP_CANCEL_WAIT = 1.0
#: Seconds a run may wait for a free worker thread before a warning says that every one is
#: busy; at most one such warning per :data:`QUEUE_WARNING_EVERY` seconds.
QUEUE_WAIT_WARNING = 5.0
QUEUE_WARNING_EVERY = 60.0

log = structlog.get_logger("chronolog.executor")


def _storable_text(produce: Callable[[], str], what: str) -> str:
    """``produce()`` as text the log can store, whatever the function's objects do.

    A ``__str__`` or ``__repr__`` of the function's own may raise: a placeholder says so.
    A lone surrogate (undecodable bytes decoded with ``surrogateescape``) cannot be written
    as UTF-8: it becomes a backslash escape.
    """
    try:
        text = produce()
    except Exception as exc:
        text = f"<{what} raised {type(exc).__name__}>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _lost_a_float(value: Any, encoded: bytes) -> bool:
    """Whether ``encoded`` (JSON, holding a ``null``) wrote a NaN or an infinity of ``value``
    as ``null``: read back, it would not be what the function returned. Asked only when
    the JSON has a ``null``, which every such float leaves."""
    try:
        builtins = msgspec.to_builtins(value, str_keys=True)
        # NaN is unequal to itself, and an infinity to the None it was read back as.
        return bool(msgspec.json.decode(encoded) != builtins)
    except Exception:
        return False


#: Guards the first creation of a context's cancellation event against a concurrent cancel.
_SIGNAL_LOCK = threading.Lock()


class ExecutionContext:
    """What a running task function may know about its run.

    ``idempotency_key`` (``task_id:nominal_time``) is the same for every attempt of one
    nominal time: delivery is at-least-once, so a function with side effects can use it
    to de-duplicate. ``cancelled`` is set when the run is timed out or cancelled;
    long-running synchronous functions should check it (or ``is_cancelled``).
    """

    __slots__ = (
        "_cancelled",
        "_signal",
        "attempt",
        "execution_id",
        "idempotency_key",
        "nominal_time",
        "task_id",
    )

    def __init__(
        self,
        *,
        task_id: str,
        execution_id: str,
        idempotency_key: str,
        attempt: int,
        nominal_time: datetime,
    ) -> None:
        self.task_id = task_id
        self.execution_id = execution_id
        self.idempotency_key = idempotency_key
        self.attempt = attempt
        self.nominal_time = nominal_time
        self._cancelled = False
        # Made when a function first asks for it: a threading.Event is a condition, a lock
        # and a deque, ten objects for the cyclic GC to track, and thousands of runs a
        # second, most of which never look at it, would each pay for one.
        self._signal: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        """The cancellation signal: set when the scheduler asks this run to stop (wait on
        it, or check ``is_set()``)."""
        signal = self._signal
        if signal is None:
            with _SIGNAL_LOCK:
                signal = self._signal
                if signal is None:
                    signal = threading.Event()
                    if self._cancelled:
                        signal.set()
                    self._signal = signal
        return signal

    @property
    def is_cancelled(self) -> bool:
        """Whether the scheduler has asked this run to stop."""
        return self._cancelled

    def cancel(self) -> None:
        """Ask the run to stop (the scheduler calls this on a timeout or a cancel)."""
        with _SIGNAL_LOCK:
            self._cancelled = True
            signal = self._signal
        if signal is not None:
            signal.set()

    def __repr__(self) -> str:
        ids = f"task_id={self.task_id!r}, execution_id={self.execution_id!r}"
        return f"ExecutionContext({ids}, attempt={self.attempt})"


def current_execution() -> ExecutionContext | None:
    """The context of the execution running in this thread or task, if any."""
    return _current.get()


class ExecutionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One run to perform."""

    task_id: str
    execution_id: str
    function_name: str
    parameters: dict[str, Any]
    nominal_time: datetime
    attempt: int
    idempotency_key: str
    #: Not before this instant (a fire committed ahead of time); None: at once.
    release_at: datetime | None = None


FinishCallback = Callable[[str, Finish], None]


class ExecutionBackend(Protocol):
    """What the runtime needs of an executor: :class:`Executor` runs functions in this
    process; the scheduler process of ``engine = "process"`` has one that hands them to
    the host (:class:`chronolog.process.remote_executor.RemoteExecutor`)."""

    def submit(self, request: ExecutionRequest) -> None: ...

    def hold(self, request: ExecutionRequest) -> None: ...

    def release(self, execution_id: str) -> None: ...

    def cancel(self, execution_id: str) -> bool: ...

    def is_task_running(self, task_id: str) -> bool: ...

    def is_running(self, execution_id: str) -> bool: ...

    @property
    def running(self) -> int: ...

    def wait_released(self, timeout: float) -> bool: ...

    def wait_idle(self, timeout: float) -> bool: ...

    def shutdown(self, wait: bool = True, timeout: float = 10.0) -> None: ...


#: A run for a worker thread: its request, context, function, whether the function takes
#: ``context``, and when it was queued (``time.monotonic()``).
_Work = tuple[ExecutionRequest, "ExecutionContext", Callable[..., Any], bool, float]


class Executor:
    """The thread pool and the asyncio loop that run task functions."""

    def __init__(
        self,
        registry: FunctionRegistry,
        on_finish: FinishCallback,
        *,
        threads: int = 8,
        max_result_bytes: int = 65536,
        on_forget: Callable[[str], None] | None = None,
    ) -> None:
        self._registry = registry
        self._on_finish = on_finish
        self._on_forget = on_forget
        self._max_result_bytes = max_result_bytes
        # A plain queue and fixed threads rather than a ThreadPoolExecutor: no Future, no
        # work item and no thread-count check per call, which shows at thousands of runs
        # per second.
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pool_size = threads
        self._workers_started = 0
        self._workers_alive = 0  # changed under self._lock once the pool runs
        # Runs on a worker thread now, and those of them timed out or cancelled: a function
        # that ignores ``context.cancelled`` keeps its thread, so each such run gets a
        # stand-in worker (see :meth:`_stand_in_for`).
        self._on_worker: set[str] = set()
        self._given_up: set[str] = set()
        self._queue_warned_at = -QUEUE_WARNING_EVERY
        for _ in range(threads):
            self._start_worker()
        self._loop, self._loop_thread = start_loop_thread("chronolog-async")
        self._running: dict[str, tuple[ExecutionContext, asyncio.Task[Any] | None]] = {}
        self._running_tasks: collections.Counter[str] = collections.Counter()
        self._held: dict[str, ExecutionRequest] = {}
        self._encoder = msgspec.json.Encoder()
        self._closed = False
        self._watch = LoopWatch(self._loop, self._loop_thread, self._coroutine_runs)

    # --- submitting -----------------------------------------------------------------------

    def submit(self, request: ExecutionRequest) -> None:
        """Start running ``request``; its outcome arrives through ``on_finish``."""
        self._start(request, self._register(request, held=False))

    def hold(self, request: ExecutionRequest) -> None:
        """Take ``request`` in without starting it: it counts as running (so it can be
        cancelled, and nobody takes it for orphaned) until :meth:`release` starts it."""
        self._register(request, held=True)

    def release(self, execution_id: str) -> None:
        """Start a held execution (nothing happens if it is unknown)."""
        with self._idle:
            request = self._held.pop(execution_id, None)
            found = self._running.get(execution_id)
            if not self._held:
                self._idle.notify_all()
        if request is not None and found is not None:
            self._start(request, found[0])

    def _register(self, request: ExecutionRequest, *, held: bool) -> ExecutionContext:
        context = ExecutionContext(
            task_id=request.task_id,
            execution_id=request.execution_id,
            idempotency_key=request.idempotency_key,
            attempt=request.attempt,
            nominal_time=request.nominal_time,
        )
        with self._lock:
            self._running[request.execution_id] = (context, None)
            self._running_tasks[request.task_id] += 1
            if held:
                self._held[request.execution_id] = request
        return context

    def _start(self, request: ExecutionRequest, context: ExecutionContext) -> None:
        if context.is_cancelled or self._closed:
            # Cancelled before it began (its end is in the log already), or stopping: a
            # run never started stays open in the log and the next start recovers it.
            self._forget(request.execution_id)
            return
        try:
            entry = self._registry.get(request.function_name)
        except Exception as exc:  # the function was unregistered since scheduling
            self._report(request, context, time.perf_counter(), None, exc)
            return
        if entry.is_async:
            asyncio.run_coroutine_threadsafe(
                self._run_async(request, context, entry.function, entry.accepts_context), self._loop
            )
        else:
            work = (request, context, entry.function, entry.accepts_context, time.monotonic())
            self._work.put(work)

    def cancel(self, execution_id: str) -> bool:
        """Signal a running execution to stop; coroutines are cancelled outright. A
        function on a worker thread keeps it until it returns: another worker stands in."""
        with self._lock:
            found = self._running.get(execution_id)
            if found is None:
                return False
            context, task = found
            # Under the lock: a worker about to begin the run either sees the signal and
            # never begins it, or has begun it and gets its stand-in here.
            context.cancel()
            if execution_id in self._on_worker:
                self._stand_in_for(execution_id)
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)
        return True

    def _coroutine_runs(self) -> list[tuple[str, str]]:
        """``(task_id, execution_id)`` of the coroutine runs under way."""
        with self._lock:
            return [
                (context.task_id, execution_id)
                for execution_id, (context, task) in self._running.items()
                if task is not None
            ]

    def _warn_of_the_queue(self, waited: float) -> None:
        """Say that runs wait for a worker thread (every one busy), once in a while."""
        now = time.monotonic()
        with self._lock:
            if now - self._queue_warned_at < QUEUE_WARNING_EVERY:
                return
            self._queue_warned_at = now
            threads = self._workers_alive
        log.warning(
            "runs wait for a free executor thread: every one is busy (raise "
            "executor_threads, give long functions a timeout, or make them coroutines; "
            "get_executions(status='running') lists what runs)",
            waited_seconds=round(waited, 1),
            threads=threads,
            still_waiting=self._work.qsize(),
        )

    def _start_worker(self) -> None:
        self._workers_started += 1
        self._workers_alive += 1
        threading.Thread(
            target=self._work_loop, name=f"chronolog-exec-{self._workers_started}", daemon=True
        ).start()

    def _stand_in_for(self, execution_id: str) -> None:
        """Start a worker in place of the one running ``execution_id``, which was timed out
        or cancelled (called under ``self._lock``): without it, functions that ignore their
        cancellation signal (a call blocked on a dead connection) would take every worker
        one by one, and no other synchronous run would begin. At most as many stand-ins as
        the pool has workers; the surplus ends as its runs return. None while stopping:
        the pool is about to end."""
        if execution_id in self._given_up or self._closed:
            return
        self._given_up.add(execution_id)
        if self._workers_alive >= 2 * self._pool_size:
            log.warning(
                "every executor thread is held by a run that was timed out or cancelled and "
                "has not returned: other synchronous runs wait for one to return",
                held=len(self._given_up),
                threads=self._workers_alive,
            )
            return
        self._start_worker()

    def is_task_running(self, task_id: str) -> bool:
        """Whether any execution of ``task_id`` is running in this process."""
        with self._lock:
            return task_id in self._running_tasks

    def is_running(self, execution_id: str) -> bool:
        """Whether this process is running that execution now."""
        with self._lock:
            return execution_id in self._running

    @property
    def running(self) -> int:
        """How many executions are running now."""
        with self._lock:
            return len(self._running)

    def wait_released(self, timeout: float) -> bool:
        """Block until no execution is held back for its instant."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._held, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing runs (for tests and orderly shutdown); runs held back for
        their instant have not begun, so they do not count."""
        with self._idle:
            return self._idle.wait_for(lambda: len(self._running) <= len(self._held), timeout)

    # --- running ---------------------------------------------------------------------------

    def _call_kwargs(
        self, request: ExecutionRequest, context: ExecutionContext, accepts_context: bool
    ) -> dict[str, Any]:
        kwargs = dict(request.parameters)
        if accepts_context:
            kwargs["context"] = context
        return kwargs

    def _work_loop(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                with self._lock:
                    self._workers_alive -= 1
                return
            execution_id = work[0].execution_id
            try:
                self._run_sync(*work)
            except Exception:
                # Never lose a worker: the pool would shrink for good. (_report handles
                # whatever a function returns or raises; this is for a bug of ours.)
                log.exception("executor worker failed", execution_id=execution_id)
            with self._lock:
                self._on_worker.discard(execution_id)
                self._given_up.discard(execution_id)
                # A stand-in is no longer needed: the pool shrinks back to its size.
                if self._workers_alive - len(self._given_up) > self._pool_size:
                    self._workers_alive -= 1
                    return

    def _run_sync(
        self,
        request: ExecutionRequest,
        context: ExecutionContext,
        function: Callable[..., Any],
        accepts_context: bool,
        queued_at: float,
    ) -> None:
        waited = time.monotonic() - queued_at
        if waited > QUEUE_WAIT_WARNING:
            self._warn_of_the_queue(waited)
        with self._lock:
            cancelled = context.is_cancelled
            if not cancelled:
                self._on_worker.add(request.execution_id)
        if cancelled:
            # Timed out or cancelled while it waited for a thread: its end is in the log
            # already, and a run that never began must not begin after it.
            self._forget(request.execution_id)
            return
        token = _current.set(context)
        started = time.perf_counter()
        # Bound for the function's own structlog calls too: its log lines carry the ids.
        bound = structlog.contextvars.bind_contextvars(
            task_id=request.task_id, execution_id=request.execution_id
        )
        try:
            value = function(**self._call_kwargs(request, context, accepts_context))
            if inspect.iscoroutine(value):
                # A wrapper hid an async function from registration: nothing awaits this.
                value.close()
                raise TypeError(
                    "the function returned a coroutine, which nothing would await: register "
                    "the async def function itself (or keep its signature with "
                    "functools.wraps on an async def wrapper)"
                )
        except BaseException as exc:
            self._report(request, context, started, None, exc)
        else:
            self._report(request, context, started, value, None)
        finally:
            structlog.contextvars.reset_contextvars(**bound)
            _current.reset(token)

    async def _run_async(
        self,
        request: ExecutionRequest,
        context: ExecutionContext,
        function: Callable[..., Any],
        accepts_context: bool,
    ) -> None:
        task = asyncio.current_task()
        with self._lock:
            self._running[request.execution_id] = (context, task)
        if context.is_cancelled:  # before its coroutine was scheduled: as in _run_sync
            self._forget(request.execution_id)
            return
        token = _current.set(context)
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(
            task_id=request.task_id, execution_id=request.execution_id
        )
        try:
            value = await function(**self._call_kwargs(request, context, accepts_context))
        except asyncio.CancelledError:
            # Cancelled by a timeout or a cancellation that is already in the log.
            self._forget(request.execution_id)
        except BaseException as exc:
            self._report(request, context, started, None, exc)
        else:
            self._report(request, context, started, value, None)
        finally:
            _current.reset(token)

    def _report(
        self,
        request: ExecutionRequest,
        context: ExecutionContext,
        started: float,
        value: Any,
        error: BaseException | None,
    ) -> None:
        duration = time.perf_counter() - started
        if error is None:
            result, is_repr, truncated = self._encode_result(value)
            finish = Finish(
                execution_id=request.execution_id,
                outcome="succeeded",
                duration_seconds=duration,
                result=result,
                result_is_repr=is_repr,
                result_truncated=truncated,
            )
        else:
            text = _storable_text(lambda: "".join(traceback.format_exception(error)), "traceback")
            finish = Finish(
                execution_id=request.execution_id,
                outcome="failed",
                duration_seconds=duration,
                error_type=_storable_text(lambda: type(error).__qualname__, "type name"),
                message=_storable_text(lambda: str(error), "str()")[:4096],
                traceback=text[-_TRACEBACK_LIMIT:],
            )
        try:
            self._on_finish(request.task_id, finish)
        finally:
            self._forget(request.execution_id)

    def _forget(self, execution_id: str) -> None:
        with self._idle:
            found = self._running.pop(execution_id, None)
            if found is not None:
                task_id = found[0].task_id
                self._running_tasks[task_id] -= 1
                if self._running_tasks[task_id] <= 0:
                    del self._running_tasks[task_id]
            if len(self._running) <= len(self._held):
                self._idle.notify_all()
        if self._on_forget is not None:
            self._on_forget(execution_id)

    def _encode_result(self, value: Any) -> tuple[Any, bool, bool]:
        """The value to store, whether it is a repr, and whether it was truncated."""
        try:
            encoded = self._encoder.encode(value)
        # Anything msgspec cannot take: TypeError (a type it does not know), OverflowError,
        # UnicodeEncodeError (a lone surrogate), RecursionError (a container holding itself).
        except Exception:
            return self._repr_result(value)
        if b"null" in encoded and _lost_a_float(value, encoded):
            return self._repr_result(value)
        if len(encoded) > self._max_result_bytes:
            return encoded[: self._max_result_bytes].decode("utf-8", "ignore"), True, True
        return msgspec.json.decode(encoded), False, False

    def _repr_result(self, value: Any) -> tuple[str, bool, bool]:
        """What JSON cannot hold faithfully, stored as its repr (flagged), capped."""
        text = _storable_text(lambda: repr(value), "repr()")
        return text[: self._max_result_bytes], True, len(text) > self._max_result_bytes

    # --- stopping --------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop accepting work; optionally wait up to ``timeout`` for running executions to
        end. Those still running are then asked to stop and given :data:`STOP_CANCEL_WAIT`
        seconds: one that ends reports its outcome; one that does not (a cancelled
        coroutine, a thread that ignores the signal) stays open in the log, and the next
        start records it interrupted and retries it per policy."""
        if self._closed:
            return
        self._closed = True
        if wait:
            self.wait_idle(timeout)
        with self._lock:
            running = [each for each in self._running if each not in self._held]
        for execution_id in running:
            self.cancel(execution_id)
        if running:
            self.wait_idle(STOP_CANCEL_WAIT)
        # Runs still queued never start: their ``ExecutionStarted`` stays open in the log and
        # the next start records them as interrupted (and retries them per policy).
        while True:
            try:
                queued = self._work.get_nowait()
            except queue.Empty:
                break
            if queued is not None:
                self._forget(queued[0].execution_id)
        with self._lock:
            held, self._held = list(self._held), {}
        for execution_id in held:
            self._forget(execution_id)
        with self._lock:
            workers = self._workers_alive
        for _ in range(workers):
            self._work.put(None)
        self._watch.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        if not self._loop_thread.is_alive():
            # Closing releases the loop's self-pipe: two descriptors per stopped executor,
            # which a host that starts and stops the scheduler would otherwise collect.
            self._loop.close()
