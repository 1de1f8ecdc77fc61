"""The seven agent tools: argument Structs, their JSON Schemas, and tool listings.

Each tool's arguments are a msgspec Struct with ``forbid_unknown_fields=True`` and its
limits in ``msgspec.Meta``; the same Struct validates a call (``msgspec.convert``) and
produces the JSON Schema the model sees (``msgspec.json.schema``, with ``$defs`` inlined so
every tool's ``parameters`` stands alone). Listings come in three shapes: neutral
``{name, description, parameters}``, OpenAI ``{"type": "function", "function": {...}}``
and Anthropic ``{name, description, input_schema}``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from chronolog.events import CatchupPolicy, OverlapPolicy
from chronolog.housekeeping.model import AgeBasis
from chronolog.triggers import IntervalUnit

#: Statuses ``list_tasks`` filters on (the ``tasks`` projection's ``status`` values).
TaskStatus = Literal["scheduled", "running", "paused", "completed", "cancelled", "failed"]
#: Sort keys ``list_tasks`` accepts.
TaskSort = Literal["created_at", "next_fire", "name", "updated_at", "last_fire"]

#: The id rule of ``chronolog.task_spec.check_id``, as a JSON Schema pattern.
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"

TaskId = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        description="The task id (the `id` that schedule_task or list_tasks returned).",
    ),
]
RegistrationId = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN,
        description="A cleanup registration id (what register_cleanup returned).",
    ),
]
Note = Annotated[
    str, msgspec.Meta(max_length=2000, description="Why, in a sentence (kept in the log).")
]
#: How every date-time argument is written (appended to each one's description).
WALL_TIME_FORMAT: Final = (
    " ISO 8601, e.g. 2026-03-01T09:00:00 or 2026-03-01T09:00:00+01:00; without an offset it "
    "is wall-clock time in `timezone`."
)
CronExpression = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        description="A 5- or 6-field cron expression (or @hourly, @daily, @weekly, @monthly).",
    ),
]


class _Args(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every tool's arguments: unknown fields are an error."""


class ScheduleTaskArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``schedule_task``."""

    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=500, description="A short, human-readable task name."
        ),
    ]
    function_name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=200,
            description="The registered function the task calls (one of the names listed "
            "in this tool's description).",
        ),
    ]
    parameters: (
        Annotated[
            dict[str, Any],
            msgspec.Meta(description="Keyword arguments for the function (a JSON object)."),
        ]
        | None
    ) = None
    next_execution: (
        Annotated[
            datetime,
            msgspec.Meta(
                description="When a one-shot task runs, or the first run (the anchor) of an "
                "interval task; for cron, no run before it. Default: now." + WALL_TIME_FORMAT
            ),
        ]
        | None
    ) = None
    interval_type: (
        Annotated[
            IntervalUnit,
            msgspec.Meta(
                description="Repeat every `interval_value` of this unit. seconds, minutes and "
                "hours are elapsed time; days, weeks and months keep the wall-clock time in "
                "`timezone` across DST changes."
            ),
        ]
        | None
    ) = None
    interval_value: (
        Annotated[int, msgspec.Meta(ge=1, le=1_000_000, description="How many units between runs.")]
        | None
    ) = None
    cron_expression: (
        Annotated[
            CronExpression,
            msgspec.Meta(
                description="Run when this cron expression matches, in `timezone` "
                "(instead of interval_type)."
            ),
        ]
        | None
    ) = None
    timezone: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=64,
                description="IANA time zone such as Europe/Berlin or UTC. Default: the "
                "scheduler's default zone.",
            ),
        ]
        | None
    ) = None
    end_date: (
        Annotated[
            datetime, msgspec.Meta(description="No run after this instant." + WALL_TIME_FORMAT)
        ]
        | None
    ) = None
    max_runs: (
        Annotated[int, msgspec.Meta(ge=1, le=1_000_000, description="Stop after this many runs.")]
        | None
    ) = None
    max_retries: (
        Annotated[int, msgspec.Meta(ge=0, le=100, description="Retries after a failed run.")] | None
    ) = None
    timeout: (
        Annotated[
            float,
            msgspec.Meta(
                gt=0, le=604_800, description="Seconds a run may take before it is timed out."
            ),
        ]
        | None
    ) = None
    overlap: (
        Annotated[
            OverlapPolicy,
            msgspec.Meta(description="What a fire does while the previous run still runs."),
        ]
        | None
    ) = None
    catchup: (
        Annotated[
            CatchupPolicy,
            msgspec.Meta(description="What happens to fires missed while the scheduler was down."),
        ]
        | None
    ) = None
    idempotency_key: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                description="A key you choose for this request. Retrying with the same key "
                "returns the task the first call created instead of creating another.",
            ),
        ]
        | None
    ) = None
    preview_only: Annotated[
        bool,
        msgspec.Meta(
            description="true: schedule nothing, only return the next fire times (with DST "
            "notes) that these arguments would give."
        ),
    ] = False
    preview_count: Annotated[
        int,
        msgspec.Meta(ge=1, le=50, description="How many fire times a preview lists."),
    ] = 5


class ListTasksArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``list_tasks``."""

    status: Annotated[TaskStatus, msgspec.Meta(description="Only tasks in this status.")] | None = (
        None
    )
    function_name: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1, max_length=200, description="Only tasks calling this function."
            ),
        ]
        | None
    ) = None
    recurring: (
        Annotated[
            bool, msgspec.Meta(description="Only recurring (true) or one-shot (false) tasks.")
        ]
        | None
    ) = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200, description="Page size.")] = 20
    offset: Annotated[
        int, msgspec.Meta(ge=0, le=1_000_000, description="Tasks to skip (for paging).")
    ] = 0
    sort: Annotated[TaskSort, msgspec.Meta(description="Sort key.")] = "created_at"
    descending: Annotated[bool, msgspec.Meta(description="Sort in descending order.")] = False


class CancelTaskArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``cancel_task``."""

    task_id: TaskId
    note: Note | None = None


class PauseResumeTaskArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``pause_resume_task``."""

    task_id: TaskId
    action: Annotated[
        Literal["pause", "resume"],
        msgspec.Meta(
            description="pause: no fires until resumed; resume: continue from the "
            "next fire after now (missed fires are not run)."
        ),
    ]
    note: Annotated[Note, msgspec.Meta(description="Why (recorded with a pause).")] | None = None


class ExecuteTaskNowArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``execute_task_now``."""

    task_id: TaskId


class RegisterCleanupArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``register_cleanup``."""

    directory: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=4096,
            description="Absolute path of the directory to clean; it must lie inside one of "
            "the scheduler's allowed cleanup roots.",
        ),
    ]
    pattern: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=500,
            description="Glob of the files to consider, relative to `directory` (no '..', "
            "not absolute); `**` crosses directories when `recursive`.",
        ),
    ] = "*"
    retention_days: (
        Annotated[
            float,
            msgspec.Meta(ge=0, le=36_500, description="Remove files older than this many days."),
        ]
        | None
    ) = None
    max_files: (
        Annotated[
            int,
            msgspec.Meta(ge=0, le=100_000_000, description="Keep only the newest this many files."),
        ]
        | None
    ) = None
    max_total_bytes: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                description="Remove the oldest files while the total size exceeds this many bytes.",
            ),
        ]
        | None
    ) = None
    exclude: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=500)]],
        msgspec.Meta(max_length=100, description="Globs of files never to remove."),
    ] = []
    recursive: Annotated[bool, msgspec.Meta(description="Descend into subdirectories.")] = False
    remove_empty_dirs: Annotated[
        bool, msgspec.Meta(description="Remove directories left empty (with `recursive`).")
    ] = False
    age_basis: Annotated[AgeBasis, msgspec.Meta(description="Which file time measures age.")] = (
        "mtime"
    )
    priority: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=10_000,
            description="Lower numbers run first when several cleanups are due together.",
        ),
    ] = 100
    schedule: (
        Annotated[
            CronExpression,
            msgspec.Meta(description="When the cleanup runs (cron). Default: daily at 03:00."),
        ]
        | None
    ) = None
    description: Annotated[
        str, msgspec.Meta(max_length=2000, description="What the files are, for people.")
    ] = ""


class RunCleanupArgs(_Args, frozen=True, kw_only=True):
    """Arguments of ``run_cleanup``."""

    registration_id: (
        Annotated[
            RegistrationId,
            msgspec.Meta(
                description="The registration to run. Omit to run every "
                "registration, in priority order."
            ),
        ]
        | None
    ) = None
    dry_run: Annotated[
        bool,
        msgspec.Meta(
            description="true (the default): remove nothing, only report what would be "
            "removed. false: really delete."
        ),
    ] = True


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One tool: its name, what it does, its argument Struct, and behaviour hints."""

    name: str
    description: str
    arguments: type[_Args]
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False


TOOLS: Final[tuple[ToolSpec, ...]] = (
    ToolSpec(
        name="schedule_task",
        description=(
            "Schedule a registered function: once (next_execution), every N units "
            "(interval_type + interval_value), or by cron_expression, in an IANA timezone. "
            "Returns the task with its next fire time. Use idempotency_key so that a retry "
            "does not create a second task, and preview_only to see the fire times first."
        ),
        arguments=ScheduleTaskArgs,
        idempotent=True,
    ),
    ToolSpec(
        name="list_tasks",
        description=(
            "List scheduled tasks (id, name, function, status, trigger, next and last fire, "
            "run counts), filtered and paged; `total` counts every match."
        ),
        arguments=ListTasksArgs,
        read_only=True,
    ),
    ToolSpec(
        name="cancel_task",
        description="Cancel a task for good: it never fires again and a running execution "
        "is asked to stop.",
        arguments=CancelTaskArgs,
        destructive=True,
        idempotent=True,
    ),
    ToolSpec(
        name="pause_resume_task",
        description="Pause a task (fires are skipped until resumed) or resume a paused task.",
        arguments=PauseResumeTaskArgs,
        idempotent=True,
    ),
    ToolSpec(
        name="execute_task_now",
        description="Run a task's function once now, leaving its schedule unchanged; "
        "returns the execution id.",
        arguments=ExecuteTaskNowArgs,
    ),
    ToolSpec(
        name="register_cleanup",
        description=(
            "Register a directory with the Housekeeper: files matching `pattern` are removed "
            "by age, count or total size on a cron schedule. Only directories inside the "
            "allowed cleanup roots are accepted; registering the same directory and pattern "
            "again updates the registration."
        ),
        arguments=RegisterCleanupArgs,
        idempotent=True,
    ),
    ToolSpec(
        name="run_cleanup",
        description=(
            "Run one cleanup registration (or all) now and report the files removed. "
            "dry_run defaults to true: set it to false only to really delete."
        ),
        arguments=RunCleanupArgs,
        destructive=True,
    ),
)

#: The tools by name.
TOOLS_BY_NAME: Final[dict[str, ToolSpec]] = {tool.name: tool for tool in TOOLS}
#: The tool names, in listing order.
TOOL_NAMES: Final[tuple[str, ...]] = tuple(TOOLS_BY_NAME)


def _inline(node: Any, defs: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/X"}`` replaced by a copy of ``X``."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"recursive schema {name!r} cannot be inlined")
        return _inline(defs[name], defs, seen | {name})
    return {key: _inline(value, defs, seen) for key, value in node.items() if key != "$defs"}


def _hoist_descriptions(properties: dict[str, Any]) -> None:
    """Move a description from inside ``anyOf`` (msgspec puts it on the non-null branch of
    an optional field) up to the property, where every model looks for it."""
    for prop in properties.values():
        for branch in prop.get("anyOf", ()):
            if "description" in branch and "description" not in prop:
                prop["description"] = branch.pop("description")


@functools.cache
def _parameters(arguments: type[_Args]) -> dict[str, Any]:
    schema = msgspec.json.schema(arguments)
    inlined: dict[str, Any] = _inline(schema, schema.get("$defs", {}))
    inlined.pop("title", None)
    inlined.pop("description", None)  # the tool's description says it
    _hoist_descriptions(inlined["properties"])
    return inlined


def parameters_schema(arguments: type[_Args]) -> dict[str, Any]:
    """The self-contained JSON Schema (an object schema, no ``$ref``) of an argument Struct."""
    return copy.deepcopy(_parameters(arguments))


def tool_definitions(function_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The seven tools as neutral ``{name, description, parameters}`` dicts.

    ``function_names`` (the functions agents may schedule) are listed in
    ``schedule_task``'s description and become the ``enum`` of its ``function_name``.
    """
    names = sorted(set(function_names))
    definitions = []
    for tool in TOOLS:
        description = tool.description
        parameters = parameters_schema(tool.arguments)
        if tool.name == "schedule_task":
            if names:
                description += " Registered functions: " + ", ".join(names) + "."
                parameters["properties"]["function_name"]["enum"] = names
            else:
                description += " No functions are registered yet, so scheduling will fail."
        definitions.append(
            {"name": tool.name, "description": description, "parameters": parameters}
        )
    return definitions


def openai_tools(definitions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral definitions in the OpenAI shape: ``{"type": "function", "function": {...}}``."""
    return [
        {
            "type": "function",
            "function": {
                "name": d["name"],
                "description": d["description"],
                "parameters": d["parameters"],
            },
        }
        for d in definitions
    ]


def anthropic_tools(definitions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral definitions in the Anthropic shape: ``{name, description, input_schema}``."""
    return [
        {"name": d["name"], "description": d["description"], "input_schema": d["parameters"]}
        for d in definitions
    ]


__all__ = [
    "TOOLS",
    "TOOLS_BY_NAME",
    "TOOL_NAMES",
    "CancelTaskArgs",
    "ExecuteTaskNowArgs",
    "ListTasksArgs",
    "PauseResumeTaskArgs",
    "RegisterCleanupArgs",
    "RunCleanupArgs",
    "ScheduleTaskArgs",
    "TaskSort",
    "TaskStatus",
    "ToolSpec",
    "anthropic_tools",
    "openai_tools",
    "parameters_schema",
    "tool_definitions",
]
