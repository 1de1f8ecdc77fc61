"""The Function Call System: AI-agent tools over the :class:`SchedulerService` facade.

:class:`AgentDispatcher` lists the seven tools (see :mod:`chronolog.api.agent_schemas`)
and runs a model's tool calls. Every call answers a JSON-able dict and never raises::

    {"ok": true, "result": {...}}
    {"ok": false, "error": {"code": "invalid_argument", "message": "...", "details": {...}}}

Arguments are validated against the tool's Struct before anything reaches the facade; the
facade then applies the same rules as for host code (only registered functions, only
cleanups inside the allowed roots), and every change is recorded as caused by
``Cause(kind="agent", id=agent_id)``. A call that answers an error has changed nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import structlog

from chronolog.api.agent_schemas import (
    TOOL_NAMES,
    TOOLS_BY_NAME,
    CancelTaskArgs,
    ExecuteTaskNowArgs,
    ListTasksArgs,
    PauseResumeTaskArgs,
    RegisterCleanupArgs,
    RunCleanupArgs,
    ScheduleTaskArgs,
    ToolSpec,
    anthropic_tools,
    openai_tools,
    tool_definitions,
)
from chronolog.api.errors import envelope_from, error_envelope
from chronolog.errors import (
    ChronologError,
    ConflictError,
    NotFoundError,
    UnknownFunctionError,
    ValidationError,
)
from chronolog.events import Cause
from chronolog.housekeeping.registrations import RunOutcome, cleanup_task_id
from chronolog.loop_thread import start_loop_thread
from chronolog.projections.rows import TaskRow
from chronolog.result import ErrorInfo, Result, ResultError
from chronolog.service import REPLY_TIMEOUT
from chronolog.task_spec import ScheduleRequest, check_id
from chronolog.triggers import DateTrigger, Fire, preview, rule_applications

if TYPE_CHECKING:
    from chronolog.service import SchedulerService

log = structlog.get_logger("chronolog.api.agent")

T = TypeVar("T")

#: Largest accepted arguments object, as JSON (bytes).
MAX_ARGUMENT_BYTES: Final = 256 * 1024
#: Function names with this prefix are chronolog's own; agents can neither see nor use them.
INTERNAL_PREFIX: Final = "chronolog."
#: Files and error messages listed per cleanup run in a tool result.
MAX_LISTED_FILES: Final = 20
MAX_LISTED_ERRORS: Final = 10
#: Upcoming DST or month-end notes a preview lists.
MAX_RULE_NOTES: Final = 10
#: How long ``call_sync`` waits (a cleanup run may take the Housekeeper's full budget).
SYNC_TIMEOUT: Final = REPLY_TIMEOUT * 10 + 5

_ONE_US = timedelta(microseconds=1)
_ENCODER = msgspec.json.Encoder()


def idempotent_task_id(agent_id: str, key: str) -> str:
    """The task id an ``idempotency_key`` stands for: ``agent-`` + 24 hex digits.

    Derived from the agent id and the key, so the same agent retrying with the same key
    names the same task, and two agents never collide.
    """
    digest = hashlib.sha256(f"{agent_id}\x00{key}".encode()).hexdigest()
    return f"agent-{digest[:24]}"


def agent_error(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer: ``{"ok": false, "error": {code, message, details}}``."""
    envelope = msgspec.to_builtins(error_envelope(code, message, _jsonable(details or {})))
    return {"ok": False, **envelope}


class AgentDispatcher:
    """Lists the agent tools and runs tool calls against a :class:`SchedulerService`."""

    def __init__(self, service: SchedulerService, *, agent_id: str = "agent") -> None:
        check_id(agent_id, "agent_id")
        self.service = service
        self.agent_id = agent_id
        self._cause = Cause(kind="agent", id=agent_id)
        self._handlers: dict[str, Callable[[Any], Awaitable[dict[str, Any]]]] = {
            "schedule_task": self._schedule_task,
            "list_tasks": self._list_tasks,
            "cancel_task": self._cancel_task,
            "pause_resume_task": self._pause_resume_task,
            "execute_task_now": self._execute_task_now,
            "register_cleanup": self._register_cleanup,
            "run_cleanup": self._run_cleanup,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- listings -------------------------------------------------------------------------

    def function_names(self) -> list[str]:
        """The registered functions agents may schedule (chronolog's own are left out)."""
        return [n for n in self.service.registered_functions() if not n.startswith(INTERNAL_PREFIX)]

    def tool_definitions(self) -> list[dict[str, Any]]:
        """The tools as neutral ``{name, description, parameters}`` dicts, built now."""
        return tool_definitions(self.function_names())

    def openai_tools(self) -> list[dict[str, Any]]:
        """The tools for OpenAI-style APIs: ``{"type": "function", "function": {...}}``."""
        return openai_tools(self.tool_definitions())

    def anthropic_tools(self) -> list[dict[str, Any]]:
        """The tools for Anthropic-style APIs: ``{name, description, input_schema}``."""
        return anthropic_tools(self.tool_definitions())

    # --- calls ----------------------------------------------------------------------------

    async def call(self, name: object, arguments: object = None) -> dict[str, Any]:
        """Run the tool ``name`` with ``arguments`` (a dict, a JSON text, or None for ``{}``).

        Answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``; never
        raises for any input.
        """
        try:
            tool = TOOLS_BY_NAME.get(name) if isinstance(name, str) else None
            if tool is None:
                return agent_error(
                    NotFoundError.code,
                    f"no tool named {_shorten(name)}; the tools are {', '.join(TOOL_NAMES)}",
                    {"tool": _shorten(name), "tools": list(TOOL_NAMES)},
                )
            args = decode_arguments(tool, arguments)
            result = await self._handlers[tool.name](args)
            return {"ok": True, "result": _jsonable(result)}
        except ResultError as exc:
            return _error_answer(exc.info)
        except ChronologError as exc:
            return _error_answer(ErrorInfo.from_exception(exc))
        except Exception as exc:  # a bug below us must not take the agent loop down
            log.exception("agent tool call failed", tool=_shorten(name))
            return agent_error("internal", f"internal error: {type(exc).__name__}")

    def call_sync(
        self, name: object, arguments: object = None, *, timeout: float = SYNC_TIMEOUT
    ) -> dict[str, Any]:
        """:meth:`call` for code without an event loop (runs on a private loop thread)."""
        try:
            loop = self._sync_loop()
            if threading.current_thread() is self._thread:
                return agent_error("internal", "call_sync was called from its own loop thread")
            future = asyncio.run_coroutine_threadsafe(self.call(name, arguments), loop)
            try:
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                return agent_error("timeout", f"the tool call did not finish within {timeout} s")
        except Exception as exc:
            log.exception("agent sync call failed")
            return agent_error("internal", f"internal error: {type(exc).__name__}")

    def close(self) -> None:
        """Stop the private loop of :meth:`call_sync` (if it was started)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A thread that is not alive here is a parent's, copied by a fork (threads do
            # not survive one): its loop would never run the call, so start another.
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                self._loop, self._thread = start_loop_thread("chronolog-agent")
            return self._loop

    # --- tools ----------------------------------------------------------------------------

    async def _schedule_task(self, args: ScheduleTaskArgs) -> dict[str, Any]:
        if args.function_name.startswith(INTERNAL_PREFIX):
            raise UnknownFunctionError(
                f"{args.function_name!r} is internal to chronolog; agents may schedule "
                f"{', '.join(self.function_names()) or 'no function yet'}",
                details={"function_name": args.function_name},
            )
        request = _schedule_request(args)
        task_id = (
            None
            if args.idempotency_key is None
            else idempotent_task_id(self.agent_id, args.idempotency_key)
        )
        if args.preview_only:
            return self._preview(request, args.preview_count, task_id or "")
        if task_id is not None:
            existing = await self.service.get_event(task_id)
            if existing.ok:
                return await self._retried(args, _value(existing), task_id)
            if existing.error is not None and existing.error.code != NotFoundError.code:
                raise ResultError(existing.error)
        scheduled = await self.service.schedule_event(
            **msgspec.structs.asdict(request), event_id=task_id, caused_by=self._cause
        )
        task_id = scheduled.unwrap()
        return {"created": True, **await self._task_with_fires(task_id)}

    async def _retried(self, args: ScheduleTaskArgs, row: TaskRow, task_id: str) -> dict[str, Any]:
        """A retry with a known key: the first call's task, unless the key is reused."""
        if row.name != args.name or row.function_name != args.function_name:
            raise ConflictError(
                f"idempotency_key {args.idempotency_key!r} was already used for task "
                f"{task_id!r} ({row.name!r} calling {row.function_name!r}); use a new key",
                details={"task_id": task_id},
            )
        return {"created": False, **await self._task_with_fires(task_id)}

    async def _task_with_fires(self, task_id: str) -> dict[str, Any]:
        row = _value(await self.service.get_event(task_id))
        fires = await self.service.preview_event(task_id, 3)
        return {"task": task_view(row), "next_fires": [fire_view(f) for f in fires.value or []]}

    def _preview(self, request: ScheduleRequest, count: int, seed: str) -> dict[str, Any]:
        """The fires the request would give; nothing is sent, nothing is appended."""
        now = self.service.now()
        definition, recurring = self.service.validate_schedule(request)
        trigger = definition.trigger
        after = trigger.run_at - _ONE_US if isinstance(trigger, DateTrigger) else now - _ONE_US
        fires = preview(trigger, after, count, seed=seed)
        rules = rule_applications(trigger, now, seed=seed)
        notes = [note for fire in rules for note in fire.notes][:MAX_RULE_NOTES]
        return {
            "preview_only": True,
            "scheduled": False,
            "recurring": recurring,
            "timezone": trigger.timezone,
            "trigger": trigger_view(msgspec.to_builtins(trigger)),
            "next_fires": [fire_view(f) for f in fires],
            "dst_notes": notes,
        }

    async def _list_tasks(self, args: ListTasksArgs) -> dict[str, Any]:
        page = _value(
            await self.service.list_events(
                status=args.status,
                function_name=args.function_name,
                recurring=args.recurring,
                limit=args.limit,
                offset=args.offset,
                sort=args.sort,
                descending=args.descending,
            )
        )
        return {
            "tasks": [task_view(row) for row in page.items],
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
            "has_more": page.has_more,
        }

    async def _cancel_task(self, args: CancelTaskArgs) -> dict[str, Any]:
        (await self.service.cancel_event(args.task_id, args.note, caused_by=self._cause)).unwrap()
        return {"task": task_view(_value(await self.service.get_event(args.task_id)))}

    async def _pause_resume_task(self, args: PauseResumeTaskArgs) -> dict[str, Any]:
        if args.action == "pause":
            done = await self.service.pause_event(args.task_id, args.note, caused_by=self._cause)
        else:
            done = await self.service.resume_event(args.task_id, caused_by=self._cause)
        done.unwrap()
        return {"task": task_view(_value(await self.service.get_event(args.task_id)))}

    async def _execute_task_now(self, args: ExecuteTaskNowArgs) -> dict[str, Any]:
        execution_id = (
            await self.service.execute_now(args.task_id, caused_by=self._cause)
        ).unwrap()
        return {"task_id": args.task_id, "execution_id": execution_id}

    async def _register_cleanup(self, args: RegisterCleanupArgs) -> dict[str, Any]:
        registration_id = (
            await self.service.register_cleanup(
                directory=args.directory,
                pattern=args.pattern,
                retention_days=args.retention_days,
                max_files=args.max_files,
                max_total_bytes=args.max_total_bytes,
                exclude=tuple(args.exclude),
                recursive=args.recursive,
                remove_empty_dirs=args.remove_empty_dirs,
                priority=args.priority,
                schedule=args.schedule,
                description=args.description,
                age_basis=args.age_basis,
                caused_by=self._cause,
            )
        ).unwrap()
        task_id = cleanup_task_id(registration_id)
        task = await self.service.get_event(task_id)
        return {
            "registration_id": registration_id,
            "task_id": task_id,
            "next_run": _iso(task.value.next_fire) if task.value is not None else None,
        }

    async def _run_cleanup(self, args: RunCleanupArgs) -> dict[str, Any]:
        outcomes = _value(
            await self.service.run_cleanup(
                args.registration_id, args.dry_run, caused_by=self._cause
            )
        )
        if args.registration_id is not None and outcomes and outcomes[0].error_code:
            first = outcomes[0]
            raise ResultError(
                ErrorInfo(
                    code=first.error_code or "internal",
                    message=first.error or "the cleanup run failed",
                    details={"registration_id": first.registration_id, "run_id": first.run_id},
                )
            )
        return {"dry_run": args.dry_run, "runs": [run_view(o) for o in outcomes]}


# --- arguments ------------------------------------------------------------------------------


def decode_arguments(tool: ToolSpec, arguments: object) -> Any:
    """The tool's argument Struct from a JSON object (or its text); ValidationError if bad."""
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str | bytes | bytearray):
        if len(arguments) > MAX_ARGUMENT_BYTES:
            raise _invalid(tool, f"arguments are larger than {MAX_ARGUMENT_BYTES} bytes")
        try:
            arguments = msgspec.json.decode(arguments)
        except msgspec.DecodeError as exc:
            raise _invalid(tool, f"arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise _invalid(tool, f"arguments must be a JSON object, got {_json_type_name(arguments)}")
    try:
        size = len(_ENCODER.encode(arguments))
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        raise _invalid(tool, "arguments must contain only JSON values") from None
    if size > MAX_ARGUMENT_BYTES:
        raise _invalid(tool, f"arguments are larger than {MAX_ARGUMENT_BYTES} bytes")
    try:
        return msgspec.convert(arguments, tool.arguments)
    except msgspec.ValidationError as exc:
        raise _invalid(tool, str(exc), _field_of(str(exc))) from None


def _invalid(tool: ToolSpec, problem: str, field: str | None = None) -> ValidationError:
    details: dict[str, Any] = {"tool": tool.name}
    if field is not None:
        details["field"] = field
        if field not in tool.arguments.__struct_fields__:
            details["allowed_fields"] = list(tool.arguments.__struct_fields__)
    return ValidationError(f"invalid arguments for {tool.name}: {problem}", details=details)


def _field_of(message: str) -> str | None:
    # msgspec says "... - at `$.field[0]`" or "Object contains unknown field `name`".
    for marker in ("`$.", "unknown field `", "missing required field `"):
        if marker in message:
            rest = message.split(marker, 1)[1]
            return rest.split("`", 1)[0].split("[", 1)[0].split(".", 1)[0]
    return None


def _schedule_request(args: ScheduleTaskArgs) -> ScheduleRequest:
    return ScheduleRequest(
        name=args.name,
        function_name=args.function_name,
        next_execution=args.next_execution,
        # an interval_value without interval_type must be an error, not a silent one-shot
        recurring=args.interval_type is not None or args.interval_value is not None,
        interval_type=args.interval_type,
        interval_value=args.interval_value,
        cron_expression=args.cron_expression,
        timezone=args.timezone,
        end_date=args.end_date,
        max_runs=args.max_runs,
        max_retries=args.max_retries,
        timeout=args.timeout,
        overlap=args.overlap,
        catchup=args.catchup,
        parameters=args.parameters,
    )


# --- results --------------------------------------------------------------------------------

_TRIGGER_KEYS = ("kind", "run_at", "every", "unit", "expression", "start", "end", "max_runs")


def task_view(row: TaskRow) -> dict[str, Any]:
    """A task as agents see it: the fields that answer "what, when, how did it go"."""
    return {
        "id": row.task_id,
        "name": row.name,
        "function_name": row.function_name,
        "status": row.status,
        "recurring": row.recurring,
        "trigger": trigger_view(row.trigger),
        "timezone": row.timezone,
        "next_fire": _iso(row.next_fire),
        "last_fire": _iso(row.last_fire),
        "last_outcome": row.last_outcome,
        "runs": row.runs,
        "failures": row.failures,
        "parameters": row.parameters,
        "pause_note": row.pause_note,
        "end_reason": row.end_reason,
    }


def trigger_view(trigger: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trigger's defining fields (kind, run time / interval / cron; end, max runs)."""
    if trigger is None:
        return None
    return {key: trigger[key] for key in _TRIGGER_KEYS if trigger.get(key) is not None}


def fire_view(fire: Fire) -> dict[str, Any]:
    """One fire: the instant (UTC), the wall time in the task's zone, and any DST notes."""
    return {"at": _iso(fire.at), "local": fire.local.isoformat(), "notes": list(fire.notes)}


def run_view(outcome: RunOutcome) -> dict[str, Any]:
    """One cleanup run: totals and the first files, or why it could not run."""
    view: dict[str, Any] = {"registration_id": outcome.registration_id, "run_id": outcome.run_id}
    if outcome.report is None:
        view["error"] = {"code": outcome.error_code, "message": outcome.error}
        return view
    report = outcome.report
    view["directory"] = report.directory
    view["summary"] = msgspec.to_builtins(report.summary)
    view["files"] = [
        {
            "path": f.path,
            "size": f.size,
            "age_days": round(f.age_seconds / 86400, 2),
            "reasons": list(f.reasons),
            "outcome": f.outcome,
        }
        for f in report.files[:MAX_LISTED_FILES]
    ]
    view["files_truncated"] = report.files_truncated or len(report.files) > MAX_LISTED_FILES
    view["errors"] = list(report.errors[:MAX_LISTED_ERRORS])
    return view


def _iso(value: datetime | None) -> str | None:
    """An instant as RFC 3339 UTC text with ``Z``, as msgspec writes the stored triggers."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _value(result: Result[T]) -> T:
    value = result.unwrap()
    assert value is not None
    return value


def _error_answer(info: ErrorInfo) -> dict[str, Any]:
    return {"ok": False, **msgspec.to_builtins(envelope_from(_jsonable_info(info)))}


def _jsonable_info(info: ErrorInfo) -> ErrorInfo:
    return ErrorInfo(code=info.code, message=info.message, details=_jsonable(info.details))


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (datetimes as ISO text; anything odd as its repr)."""
    try:
        return msgspec.to_builtins(value, str_keys=True)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(value)[:1000]


def _shorten(value: object, limit: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _json_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


__all__ = [
    "INTERNAL_PREFIX",
    "MAX_ARGUMENT_BYTES",
    "AgentDispatcher",
    "agent_error",
    "decode_arguments",
    "fire_view",
    "idempotent_task_id",
    "run_view",
    "task_view",
    "trigger_view",
]
