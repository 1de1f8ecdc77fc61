"""``SchedulerService``: the one facade host code talks to.

Every method is async, validates its input, and returns a :class:`~chronolog.result.Result`
instead of raising. Commands travel to the task's job actor as messages; the reply comes
back through the loop's reply box (see :mod:`chronolog.host_loop`; awaiting a pykka future
would block the loop). Queries read the projections after the projector has applied
everything this service wrote (read-your-writes): the task board on the caller's loop when
it can answer at once, DuckDB on a small thread pool otherwise. ``svc.sync`` offers the
same methods, blocking, for hosts without an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, get_args

import msgspec
import structlog

from chronolog.actors.messages import CommandOutcome
from chronolog.domain import commands as cmd
from chronolog.domain.task_state import TaskState
from chronolog.errors import (
    ChronologError,
    InvalidStateError,
    NotFoundError,
    RequestTimeoutError,
    ServiceUnavailableError,
    StorageError,
    ValidationError,
    projections_failing,
)
from chronolog.events import Cause, CauseKind, EventMetadata, TaskDefinition
from chronolog.host_loop import (
    BOARD_READS_PER_TURN,
    PROCESS_BOARD_READS_PER_TURN,
    LoopAdmission,
    PositionWaiter,
    Reply,
    replies_of,
)
from chronolog.housekeeping.registrations import (
    CLEANUP_FUNCTION,
    CLEANUP_TASK_PREFIX,
    Registration,
    RunOutcome,
    is_cleanup_task,
)
from chronolog.ids import new_id
from chronolog.limits import MAX_INT32, check_int, check_text
from chronolog.loop_thread import start_loop_thread
from chronolog.result import ErrorInfo, Result
from chronolog.task_spec import (
    ScheduleRequest,
    apply_changes,
    build_cleanup_rules,
    build_definition,
    check_id,
    request_from_definition,
    resolve_zone,
)
from chronolog.triggers import Fire, preview

# DuckDB's queries and the Housekeeper actor are imported where they are used: a host
# whose scheduler runs in a child process forwards every call and never loads them.
if TYPE_CHECKING:
    import duckdb

    from chronolog.actors.housekeeper import Housekeeper
    from chronolog.module import SchedulerModule
    from chronolog.projections import Projector, queries

log = structlog.get_logger("chronolog.service")

T = TypeVar("T")

#: How long a facade call waits for the scheduler to answer (seconds).
REPLY_TIMEOUT = 30.0


#: Spreads bursts of calls over loop turns (see chronolog.host_loop): commands cost tens
#: of microseconds of loop time each, reads from the task board a few.
_admission = LoopAdmission()
_board_admission = LoopAdmission(per_turn=BOARD_READS_PER_TURN)


def dedicate_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Admit facade calls on ``loop`` as a loop that runs nothing else (the scheduler
    process's): task-board reads :data:`~chronolog.host_loop.PROCESS_BOARD_READS_PER_TURN`
    a turn."""
    _board_admission.set_per_turn(loop, PROCESS_BOARD_READS_PER_TURN)


def _as_result(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[Result[T]]]:
    """Turn a coroutine that raises into one that returns a ``Result``."""
    return _facade_call(method, _admission)


# gc=False: it only carries the future out of the method that sent the command (the call
# unpacks it at once), and never refers to itself.
class _Sent(msgspec.Struct, Generic[T], frozen=True, gc=False):
    """A command on its way to its job actor: the future of the outcome, and what the call
    returns once the outcome is settled: ``value``, or ``finish(outcome)``."""

    outcome: asyncio.Future[CommandOutcome]
    value: T | None = None
    finish: Callable[[CommandOutcome], T] | None = None


def _as_command(method: Callable[..., _Sent[T]]) -> Callable[..., Awaitable[Result[T]]]:
    """Turn a plain method that validates and sends a command into a facade call.

    Why not a coroutine like the queries: thousands of commands may be in flight at once,
    and each is then one small coroutine and the future of its answer. A coroutine method
    awaited by the wrapper would keep a second coroutine per call, its frame holding every
    argument (``schedule_event`` has 27), for the host's cyclic GC to walk in every
    collection while the answer is on its way.
    """
    return _facade_call(method, _admission, sends=True)


def _as_board_read(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[Result[T]]]:
    """:func:`_as_result` for reads the task board answers on the loop: a burst of them
    is let in more per turn, so they finish about as fast as they come."""
    return _facade_call(method, _board_admission)


#: The names of the facade's calls (what a scheduler process answers for the host).
FACADE_CALLS: set[str] = set()


def _facade_call(
    method: Callable[..., Any], line: LoopAdmission, *, sends: bool = False
) -> Callable[..., Awaitable[Result[T]]]:
    """The wrapper of a facade method: forwarded whole to a scheduler process, else let in
    by ``line``, run, and its outcome or error returned as a ``Result``. ``sends``: the
    method returns a :class:`_Sent` to await, else it is a coroutine function."""
    name = method.__name__
    FACADE_CALLS.add(name)

    @functools.wraps(method)
    async def wrapper(self: SchedulerService, *args: Any, **kwargs: Any) -> Result[T]:
        if self._module.forked:
            return Result.failure(self._module.forked_error())
        engine = self._module.engine
        if engine is not None:
            # The scheduler runs in a child process: the call goes there whole. No line:
            # sending costs the loop a few microseconds, and the connection spreads a
            # burst's sending and answers over loop turns itself.
            try:
                forwarded: Result[T] = await engine.call(name, args, kwargs)
            except ChronologError as exc:
                return Result.failure(exc)
            return forwarded
        admitted = line.admit()
        if admitted is not None:
            await admitted
            del admitted
        try:
            # Not Result.success(await ...): that would keep the bound classmethod on the
            # coroutine's stack (a GC-tracked object) for as long as the call is in flight.
            if sends:
                sent: _Sent[T] = method(self, *args, **kwargs)
                # While the answer is awaited, the frame holds the future and the value only.
                del args, kwargs
                future, returned, finish = sent.outcome, sent.value, sent.finish
                del sent
                outcome = self._settle(await future)
                value = finish(outcome) if finish is not None else cast("T", returned)
            else:
                value = await method(self, *args, **kwargs)
        except ChronologError as exc:
            return Result.failure(exc)
        except TypeError as exc:  # wrong keyword arguments from the caller
            return Result.failure(ValidationError(str(exc)))
        except Exception as exc:  # never leak a lower layer's exception
            log.exception("facade call failed", method=method.__name__)
            return Result.failure(
                ErrorInfo(code="internal", message=f"{type(exc).__name__}: {exc}")
            )
        return Result.success(value)

    # What help() and inspect show: the method's parameters, and the Result it answers (a
    # command method's own return, a _Sent, is the wrapper's business).
    wrapper.__signature__ = _result_signature(method)  # type: ignore[attr-defined]
    return wrapper


def _result_signature(method: Callable[..., Any]) -> inspect.Signature:
    """``method``'s signature returning ``Result[...]`` of what it produces."""
    signature = inspect.signature(method)
    returned = signature.return_annotation  # a string: annotations are postponed here
    if isinstance(returned, str):
        if returned.startswith("_Sent[") and returned.endswith("]"):
            returned = returned[len("_Sent[") : -1]
        return signature.replace(return_annotation=f"Result[{returned}]")
    return signature


def _started_execution(outcome: CommandOutcome) -> str:
    """The id of the execution a run-now command started."""
    for envelope in outcome.envelopes:
        execution_id = getattr(envelope.event, "execution_id", None)
        if execution_id is not None:
            return str(execution_id)
    raise ServiceUnavailableError("the run was not started")


class SchedulerService:
    """The facade, registered in the host's registry as ``scheduler_service``."""

    def __init__(self, module: SchedulerModule) -> None:
        self._module = module
        self._written = 0
        self._written_lock = threading.Lock()
        self._queries: concurrent.futures.ThreadPoolExecutor | None = None
        self._catch_up: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PositionWaiter] = (
            weakref.WeakKeyDictionary()
        )
        self._board_waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[asyncio.Future[None]]
        ] = weakref.WeakKeyDictionary()
        self._local = threading.local()
        self._sync: SyncSchedulerService | None = None

    # --- functions ------------------------------------------------------------------------

    def register_function(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        module_id: str | None = None,
        description: str = "",
    ) -> None:
        """Let tasks call ``function`` by ``name`` (re-registering replaces it).

        Raises :class:`~chronolog.errors.ValidationError` for a bad name or a non-callable:
        registration is part of the host's start-up code, where failing loudly is right.
        The built-in ``chronolog.cleanup`` cannot be replaced (the Housekeeper's tasks call
        it).
        """
        if name == CLEANUP_FUNCTION:
            raise ValidationError(
                f"{CLEANUP_FUNCTION!r} is chronolog's own (the Housekeeper's tasks call it); "
                "register your function under another name"
            )
        entry = self._module.registry.register(
            name, function, module_id=module_id, description=description
        )
        self._module.function_registered(entry)

    def registered_functions(self) -> list[str]:
        """Names tasks may use."""
        return self._module.registry.names()

    def validate_schedule(self, request: ScheduleRequest) -> tuple[TaskDefinition, bool]:
        """Check a schedule request without sending it: the definition it would create and
        whether it recurs. Raises the same typed errors ``schedule_event`` returns; nothing
        is appended (dry runs and previews use it)."""
        return build_definition(request, self._module.settings, self._module.registry, self.now())

    def now(self) -> datetime:
        """The scheduler's current time (its clock, which tests may fake)."""
        return self._module.clock.now()

    # --- commands -------------------------------------------------------------------------

    @_as_command
    def schedule_event(
        self,
        name: str,
        function_name: str,
        next_execution: datetime | None = None,
        recurring: bool = False,
        interval_type: str | None = None,
        interval_value: int | None = None,
        *,
        cron_expression: str | None = None,
        timezone: str | None = None,
        end_date: datetime | None = None,
        max_runs: int | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        timeout: float | None = None,
        overlap: str | None = None,
        max_concurrent: int | None = None,
        catchup: str | None = None,
        catchup_limit: int | None = None,
        misfire_grace: float | None = None,
        jitter: float | None = None,
        nonexistent: str | None = None,
        ambiguous: str | None = None,
        month_end: str | None = None,
        module_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        caused_by: Cause | None = None,
    ) -> _Sent[str]:
        """Schedule a task and return its id (the *scheduled event* id).

        Runs once at ``next_execution`` (default: now), every ``interval_value``
        ``interval_type`` from it when ``recurring``, or by ``cron_expression`` in
        ``timezone``. A naive ``next_execution`` is read in the task's zone. Passing an
        existing ``event_id`` is an idempotent upsert: the same spec again changes nothing,
        another spec updates the task.
        """
        request = ScheduleRequest(
            name=name,
            function_name=function_name,
            next_execution=next_execution,
            recurring=recurring,
            interval_type=interval_type,
            interval_value=interval_value,
            cron_expression=cron_expression,
            timezone=timezone,
            end_date=end_date,
            max_runs=max_runs,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            timeout=timeout,
            overlap=overlap,
            max_concurrent=max_concurrent,
            catchup=catchup,
            catchup_limit=catchup_limit,
            misfire_grace=misfire_grace,
            jitter=jitter,
            nonexistent=nonexistent,
            ambiguous=ambiguous,
            month_end=month_end,
            module_id=module_id,
            parameters=dict(parameters) if parameters is not None else None,
        )
        task_id = new_id() if event_id is None else check_id(event_id)
        if event_id is not None and is_cleanup_task(task_id):
            raise ValidationError(
                f"event ids beginning with {CLEANUP_TASK_PREFIX!r} belong to the Housekeeper's "
                "tasks (register_cleanup makes them); choose another id",
                details={"field": "event_id"},
            )
        _not_the_cleanup_function(function_name)
        definition, is_recurring = self.validate_schedule(request)
        command = cmd.Schedule(
            definition=definition, recurring=is_recurring, cause=_cause(caused_by)
        )
        sent = self._send(task_id, command, caused_by, new_task=event_id is None)
        return _Sent(sent, task_id)

    @_as_command
    def update_event(
        self, event_id: str, *, caused_by: Cause | None = None, **changes: Any
    ) -> _Sent[str]:
        """Change some of a task's fields (the names ``schedule_event`` takes)."""
        _not_a_cleanup_task(
            event_id, "change", "register_cleanup (the same directory and pattern updates it)"
        )
        if "function_name" in changes:
            _not_the_cleanup_function(changes["function_name"])
        state = self._load(event_id)
        assert state.definition is not None
        request = apply_changes(request_from_definition(state.definition), changes)
        definition, is_recurring = self.validate_schedule(request)
        command = cmd.Update(definition=definition, recurring=is_recurring, cause=_cause(caused_by))
        return _Sent(self._send(event_id, command, caused_by), event_id)

    @_as_command
    def cancel_event(
        self, event_id: str, note: str | None = None, *, caused_by: Cause | None = None
    ) -> _Sent[str]:
        """Cancel a task: it never fires again; running executions are signalled to stop."""
        _not_a_cleanup_task(event_id, "cancel", "unregister_cleanup")
        command = cmd.Cancel(note=_note(note), cause=_cause(caused_by))
        return _Sent(self._send(check_id(event_id), command, caused_by), event_id)

    @_as_command
    def pause_event(
        self, event_id: str, note: str | None = None, *, caused_by: Cause | None = None
    ) -> _Sent[str]:
        """Pause a task, with an optional note saying why (kept in the log)."""
        command = cmd.Pause(note=_note(note), cause=_cause(caused_by))
        return _Sent(self._send(check_id(event_id), command, caused_by), event_id)

    @_as_command
    def resume_event(self, event_id: str, *, caused_by: Cause | None = None) -> _Sent[str]:
        """Resume a paused task from its next fire after now."""
        command = cmd.Resume(cause=_cause(caused_by))
        return _Sent(self._send(check_id(event_id), command, caused_by), event_id)

    @_as_command
    def execute_now(self, event_id: str, *, caused_by: Cause | None = None) -> _Sent[str]:
        """Run the task once now, leaving its schedule alone; returns the execution id."""
        command = cmd.RunNow(cause=_cause(caused_by))
        sent = self._send(check_id(event_id), command, caused_by)
        return _Sent(sent, finish=_started_execution)

    # --- queries --------------------------------------------------------------------------

    @_as_board_read
    async def get_event(self, event_id: str) -> queries.TaskRow:
        """One task as the projections show it.

        From the projector's task board, on this loop (a dictionary look-up), once the
        projector has applied what this facade wrote (awaited on the loop too). The first
        reads wait for the board to be loaded, by one job on the query pool for all of them.
        """
        check_id(event_id)
        projector = self._module.require_projector()
        written = self._written
        catching_up = self._catching_up(projector, written)
        if catching_up is not None:
            await catching_up
        ready, row = projector.get_task_if_ready(event_id, written)
        if not ready:
            await self._board_loading(projector)
            ready, row = projector.get_task_if_ready(event_id, written)
        if not ready:  # the load failed or the board was reset: read once DuckDB has the write
            row = await self._read(lambda projector: projector.get_task(event_id))
        if row is None:
            raise NotFoundError(f"no scheduled event {event_id!r}", details={"event_id": event_id})
        return row

    @_as_board_read
    async def list_events(
        self,
        status: str | None = None,
        module_id: str | None = None,
        function_name: str | None = None,
        recurring: bool | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str = "created_at",
        descending: bool = False,
    ) -> queries.Page[queries.TaskRow]:
        """Tasks with filters and pagination; ``total`` counts every match.

        Answered from the projector's in-memory task board (the ``tasks`` projection kept
        in memory too), so a page costs microseconds however the list is paged. When the
        board can answer at once it does so on the caller's loop: handing a sub-millisecond
        read to the query pool would cost more (a thread hop, and a wait for the GIL while
        the loop is busy) than the read itself.
        """
        from chronolog.projections import queries

        query = queries.task_query(
            status=status,
            module_id=module_id,
            function_name=function_name,
            recurring=recurring,
            sort=sort,
            descending=descending,
            limit=limit,
            offset=offset,
        )
        return await self._list_tasks(query, queries.task_row)

    @_as_board_read
    async def list_event_summaries(
        self,
        status: str | None = None,
        module_id: str | None = None,
        function_name: str | None = None,
        recurring: bool | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str = "created_at",
        descending: bool = False,
    ) -> queries.Page[queries.TaskSummary]:
        """:meth:`list_events` without each task's ``parameters`` and ``policies``: what a
        list view shows, at about half the cost per row (the HTTP listing uses it)."""
        from chronolog.projections import queries

        query = queries.task_query(
            status=status,
            module_id=module_id,
            function_name=function_name,
            recurring=recurring,
            sort=sort,
            descending=descending,
            limit=limit,
            offset=offset,
        )
        return await self._list_tasks(query, queries.task_summary)

    async def _list_tasks(
        self, query: queries.TaskQuery, row: Callable[[tuple[Any, ...]], T]
    ) -> queries.Page[T]:
        """A task-list page from the projector's board (at once on this loop if it can)."""
        projector = self._module.require_projector()
        written = self._written
        catching_up = self._catching_up(projector, written)
        if catching_up is not None:
            await catching_up
        page = projector.list_tasks_if_ready(query, row, written)
        if page is not None:
            return page
        # A view to build, or a board to load: on the pool.
        return await self._read(lambda projector: projector.list_tasks(query, row), board=True)

    @_as_result
    async def get_executions(
        self,
        event_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> queries.Page[queries.ExecutionRow]:
        """Execution history, newest first, optionally for one task or status."""
        from chronolog.projections import queries

        if event_id is not None:
            check_id(event_id)
        return await self._query(
            lambda conn: queries.list_executions(
                conn,
                task_id=event_id,
                status=status,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        )

    @_as_result
    async def get_stats(self, event_id: str) -> queries.TaskStats:
        """Runs, success rate and p50/p95 durations of one task."""
        from chronolog.projections import queries

        check_id(event_id)
        return await self._query(lambda conn: queries.task_stats(conn, event_id))

    @_as_result
    async def explain_event(self, event_id: str) -> list[queries.Decision]:
        """Every decision about the task, in order, each with a sentence saying why."""
        from chronolog.projections import queries

        check_id(event_id)
        decisions = await self._query(lambda conn: queries.explain(conn, event_id))
        if not decisions:
            raise NotFoundError(f"no scheduled event {event_id!r}", details={"event_id": event_id})
        return decisions

    @_as_result
    async def preview_event(self, event_id: str, count: int = 10) -> list[Fire]:
        """The task's next fire instants from now, each with its wall time and DST notes."""
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
            raise ValidationError(f"count must be an integer from 1 to 1000, got {count!r}")
        state = self._load(event_id)
        if state.lifecycle != "active" or state.definition is None:
            return []
        now = self.now()
        after = now if state.last_nominal is None else max(now, state.last_nominal)
        return preview(
            state.definition.trigger, after, count, seed=event_id, runs_so_far=state.fires
        )

    # --- housekeeping ---------------------------------------------------------------------

    @_as_result
    async def register_cleanup(
        self,
        directory: str,
        pattern: str = "*",
        retention_days: float | None = None,
        max_files: int | None = None,
        max_total_bytes: int | None = None,
        exclude: Sequence[str] = (),
        recursive: bool = False,
        remove_empty_dirs: bool = False,
        priority: int = 100,
        schedule: str | None = None,
        description: str = "",
        module_id: str | None = None,
        *,
        age_basis: str = "mtime",
        caused_by: Cause | None = None,
    ) -> str:
        """Register a directory with the Housekeeper and return the registration id.

        Files matching ``pattern`` (a glob relative to ``directory``; ``**`` crosses
        directories when ``recursive``) are removed when older than ``retention_days``,
        beyond the newest ``max_files``, or (oldest first) while their total exceeds
        ``max_total_bytes``. ``schedule`` is a cron expression (default: daily at 03:00);
        the registration becomes an ordinary task. Registering the same directory and
        pattern again updates the registration.
        """
        rules = build_cleanup_rules(
            pattern=pattern,
            retention_days=retention_days,
            max_files=max_files,
            max_total_bytes=max_total_bytes,
            exclude=exclude,
            recursive=recursive,
            remove_empty_dirs=remove_empty_dirs,
            age_basis=age_basis,
        )
        check_int(priority, "priority", minimum=-MAX_INT32, maximum=MAX_INT32)
        if schedule is not None:
            check_text(schedule, "schedule", max_length=200)
        if module_id is not None:
            check_id(module_id, "module_id")
        if not isinstance(directory, str) or not directory:
            raise ValidationError(
                "directory must be a non-empty path string", details={"field": "directory"}
            )
        registration = Registration(
            directory=directory,
            rules=rules,
            priority=priority,
            schedule=schedule,
            description=_note(description, "description") or "",
            module_id=module_id,
            timezone=resolve_zone(None, self._module.settings),
            cause=_cause(caused_by),
        )
        answer = await self._ask_housekeeper(
            lambda reply: self._housekeeper().register(registration, reply)
        )
        return str(answer)

    @_as_result
    async def unregister_cleanup(
        self, registration_id: str, *, caused_by: Cause | None = None
    ) -> str:
        """Remove a registration (its task is cancelled; no file is touched)."""
        check_id(registration_id, "registration_id")
        answer = await self._ask_housekeeper(
            lambda reply: self._housekeeper().unregister(registration_id, _cause(caused_by), reply)
        )
        return str(answer)

    @_as_result
    async def list_cleanups(self, include_inactive: bool = False) -> list[queries.CleanupRow]:
        """Cleanup registrations with their rules and last run."""
        from chronolog.projections import queries

        return await self._query(
            lambda conn: queries.list_cleanups(conn, include_inactive=include_inactive)
        )

    @_as_result
    async def run_cleanup(
        self,
        registration_id: str | None = None,
        dry_run: bool = False,
        *,
        caused_by: Cause | None = None,
    ) -> list[RunOutcome]:
        """Run one registration (or all, in priority order) now and return the reports.

        With ``dry_run`` nothing is removed: the reports list what would be.
        """
        ids = None if registration_id is None else [check_id(registration_id, "registration_id")]
        if not isinstance(dry_run, bool):
            raise ValidationError("dry_run must be true or false", details={"field": "dry_run"})
        outcomes: list[RunOutcome] = await self._ask_housekeeper(
            lambda reply: self._housekeeper().run(ids, dry_run, reply, _cause(caused_by))
        )
        if (
            registration_id is not None
            and outcomes
            and outcomes[0].error_code == NotFoundError.code
        ):
            raise NotFoundError(outcomes[0].error or "no such registration")
        return outcomes

    def _housekeeper(self) -> Housekeeper:
        housekeeper = self._module.require_runtime().housekeeper
        if housekeeper is None:
            raise ServiceUnavailableError("the Housekeeper is not running")
        return housekeeper

    async def _ask_housekeeper(self, send: Callable[[Reply], object]) -> Any:
        """Ask the Housekeeper (a run may take long: ten times the usual timeout)."""
        loop = asyncio.get_running_loop()
        answer = await replies_of(loop, REPLY_TIMEOUT * 10, "the Housekeeper").ask(send)
        if isinstance(answer, Exception):  # a ChronologError, or what the actor hit
            raise answer
        self._note_written(self._module.require_runtime().store.last_position())
        return answer

    def _note_written(self, position: int) -> None:
        """Remember the newest log position this facade caused (queries wait for it)."""
        with self._written_lock:
            self._written = max(self._written, position)

    # --- plumbing -------------------------------------------------------------------------

    @property
    def sync(self) -> SyncSchedulerService:
        """The same methods, blocking, for code without an event loop."""
        if self._sync is None:
            self._sync = SyncSchedulerService(self)
        return self._sync

    @property
    def _started(self) -> bool:
        """Whether the module runs (either engine)."""
        return self._module.runtime is not None or self._module.engine is not None

    def _load(self, event_id: str) -> TaskState:
        """The task's state, replayed from its stream (the log is the truth)."""
        check_id(event_id)
        runtime = self._module.require_runtime()
        state = runtime.task_state(event_id)
        if not state.exists:
            raise NotFoundError(f"no scheduled event {event_id!r}", details={"event_id": event_id})
        return state

    def _send(
        self,
        task_id: str,
        command: cmd.Command,
        caused_by: Cause | None,
        *,
        new_task: bool = False,
    ) -> asyncio.Future[CommandOutcome]:
        """Send a command to the task's job actor; the future of its outcome (settle it with
        :meth:`_settle`).

        A plain function, not a coroutine: while the answer is awaited, a call holds its
        own coroutine and this future, and the job actor holds a :class:`Reply`.
        """
        runtime = self._module.require_runtime()
        metadata = EventMetadata(correlation_id=new_id(), caused_by=_cause(caused_by))
        box = replies_of(asyncio.get_running_loop(), REPLY_TIMEOUT, "the scheduler")
        return box.ask(
            lambda reply: runtime.send(
                task_id, command, metadata=metadata, reply=reply, new_task=new_task
            )
        )

    def _settle(self, outcome: CommandOutcome) -> CommandOutcome:
        """The outcome of a command: raise its error, or note what it wrote."""
        if outcome.error is not None:
            raise outcome.error
        self._note_written(outcome.last_position)
        return outcome

    def _catching_up(self, projector: Projector, written: int) -> asyncio.Future[None] | None:
        """None when the projector's task board has applied ``written`` (what this facade
        wrote), else a future that is done when it has (awaited on this loop, not on a
        pool thread). The board gets a live batch before DuckDB commits it."""
        board = projector.board_positions
        if board.position >= written:
            return None
        loop = asyncio.get_running_loop()
        waiter = self._catch_up.get(loop)
        if waiter is None or waiter.source is not board:
            waiter = self._catch_up[loop] = PositionWaiter(
                loop, board, REPLY_TIMEOUT, _projections_late, projections_failing
            )
        return waiter.wait(written)

    def _board_loading(self, projector: Projector) -> asyncio.Future[None]:
        """A future done when a load of the projector's task board has ended: one load on
        the query pool for all the callers on this loop, each awaiting a future of its own.
        Done even when the load failed (the caller then reads on the pool, which reports
        the error)."""
        loop = asyncio.get_running_loop()
        waiting = self._board_waiting.get(loop)
        if waiting is None:
            loading = loop.run_in_executor(self._query_pool(), projector.load_board)
            loading.add_done_callback(functools.partial(self._board_loaded, loop))
            waiting = self._board_waiting[loop] = []
        future: asyncio.Future[None] = loop.create_future()
        waiting.append(future)
        return future

    def _board_loaded(self, loop: asyncio.AbstractEventLoop, loading: asyncio.Future[None]) -> None:
        if not loading.cancelled():
            loading.exception()  # retrieved: the callers read on the pool and see it there
        for future in self._board_waiting.pop(loop, ()):
            if not future.done():
                future.set_result(None)

    async def _query(self, run: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a DuckDB query on the projections (see :meth:`_read`)."""
        return await self._read(lambda projector: run(self._cursor(projector)))

    async def _read(self, run: Callable[[Projector], T], *, board: bool = False) -> T:
        """Run a read of the projections on the query pool, after the projector has applied
        what this facade wrote (read-your-writes). ``board``: a read of the task board
        alone, which needs no wait for DuckDB while the board holds that write already."""
        projector = self._module.require_projector()
        written = self._written

        def answer() -> T:
            if board and projector.board_covers(written):
                found = run(projector)
                # Still so: the board was not reset meanwhile (a failed commit does that).
                if projector.board_covers(written):
                    return found
            if projector.position < written and not projector.wait_for_position(
                written, REPLY_TIMEOUT, fail_fast=True
            ):
                raise _projections_late()
            return run(projector)

        def job() -> T:
            generation = projector.generation
            try:
                return answer()
            except StorageError as exc:
                # A database that refuses all work is opened again, and read once more.
                if not projector.reopen_after(exc, generation):
                    raise
            return answer()

        return await asyncio.get_running_loop().run_in_executor(self._query_pool(), job)

    def _cursor(self, projector: Projector) -> duckdb.DuckDBPyConnection:
        """This query thread's cursor on the projections."""
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        made_for = getattr(self._local, "made_for", None)
        if cursor is None or made_for != (projector, projector.generation):
            if cursor is not None:
                # Made before the database was opened again: whatever closing it says of
                # the old database is of no use.
                with contextlib.suppress(Exception):
                    cursor.close()
            cursor = projector.reader()
            self._local.cursor = cursor
            self._local.made_for = (projector, projector.generation)
        return cursor

    def _query_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._queries is None:
            self._queries = concurrent.futures.ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="chronolog-query"
            )
        return self._queries

    def close(self) -> None:
        """Release the query threads (called by the module on stop)."""
        if self._queries is not None:
            self._queries.shutdown(wait=True)
            self._queries = None
        if self._sync is not None:
            self._sync.close()  # kept: a reference a host holds works after a new start


def _projections_late() -> RequestTimeoutError:
    return RequestTimeoutError("the projections did not catch up in time")


_CAUSE_KINDS = frozenset(get_args(CauseKind))


def _not_a_cleanup_task(event_id: object, action: str, instead: str) -> None:
    """A registration's task is the Housekeeper's: changed behind its back, the
    registration would stay active with a task that no longer runs it. (Pausing, resuming
    and running it now are fine.)"""
    if isinstance(event_id, str) and is_cleanup_task(event_id):
        raise InvalidStateError(
            f"task {event_id!r} runs a cleanup registration: {action} it with {instead}",
            details={"task_id": event_id},
        )


def _not_the_cleanup_function(function_name: object) -> None:
    if function_name == CLEANUP_FUNCTION:
        raise ValidationError(
            f"{CLEANUP_FUNCTION!r} runs the Housekeeper's registrations on their schedules; "
            "register a directory with register_cleanup instead",
            details={"field": "function_name"},
        )


def _cause(caused_by: Cause | None) -> Cause:
    if caused_by is None:
        return Cause(kind="host")
    if not isinstance(caused_by, Cause):
        raise ValidationError("caused_by must be a chronolog.events.Cause")
    # A Struct's constructor checks no types: the kind and id are checked here.
    if caused_by.kind not in _CAUSE_KINDS:
        raise ValidationError(
            f"caused_by.kind must be one of {', '.join(sorted(_CAUSE_KINDS))}, "
            f"got {caused_by.kind!r}",
            details={"field": "caused_by"},
        )
    if caused_by.id is not None:
        check_text(caused_by.id, "caused_by.id", max_length=200)
    return caused_by


def _note(note: str | None, field: str = "note") -> str | None:
    if note is not None:
        check_text(note, field, max_length=2000, allow_empty=True)
    return note


class SyncSchedulerService:
    """Blocking twins of the facade's methods, run on a private event-loop thread.

    The thread starts on the first call and ends when the module stops; a reference kept
    across a stop and a new start keeps working (a call made while stopped answers
    ``unavailable`` at once, as the async method does, and leaves no thread behind).
    """

    def __init__(self, service: SchedulerService) -> None:
        self._service = service
        # Guards the loop's replacement: a call submits its coroutine under it, so close()
        # sees every call submitted before it and waits for their answers.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._service, name)
        if not asyncio.iscoroutinefunction(method):
            return method  # type: ignore[no-any-return]

        def call(*args: Any, **kwargs: Any) -> Any:
            module = self._service._module
            if module.forked:  # the private loop's thread, if any, is the parent's
                return Result.failure(module.forked_error())
            with self._lock:
                loop = self._started_loop()
                future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)
            try:
                return future.result(REPLY_TIMEOUT + 5)
            finally:
                if not self._service._started:
                    self.close()  # stopped: no thread is kept for calls that cannot be served

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        # A thread that is not alive is a parent's, copied by a fork: start another.
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            self._loop, self._thread = start_loop_thread("chronolog-sync")
        return self._loop

    def close(self) -> None:
        """Let the calls in flight answer, then stop and close the private loop."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            if pending:
                await asyncio.wait(pending, timeout=REPLY_TIMEOUT)
            loop.stop()

        asyncio.run_coroutine_threadsafe(finish(), loop)
        thread.join(timeout=REPLY_TIMEOUT + 5)
        if not thread.is_alive():
            loop.close()  # its selector and self-pipe are file descriptors
