"""The HTTP API's contract: response types, query parameters and the OpenAPI 3.1 document.

Everything the document says comes from the same objects the app uses: the msgspec
response Structs (their JSON Schema via ``msgspec.json.schema_components``) and the
:data:`LIST_PARAMETERS` table, from which :mod:`chronolog.api.http` also validates requests.
So the document cannot drift from what the server accepts and answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

from chronolog import __version__
from chronolog.api.errors import ErrorEnvelope
from chronolog.projections.queries import (
    MAX_LIMIT,
    MAX_OFFSET,
    TASK_STATUSES,
    TaskRow,
    TaskSummary,
)

API_PREFIX: Final = "/api/v1/scheduler"
EVENTS_PATH: Final = f"{API_PREFIX}/events"
EVENT_PATH: Final = f"{API_PREFIX}/events/{{event_id}}"
OPENAPI_PATH: Final = f"{API_PREFIX}/openapi.json"

#: Longest ``cursor`` accepted, in characters.
MAX_CURSOR_LENGTH: Final = 2048
#: Ids of tasks and modules: what ``chronolog.task_spec.check_id`` accepts.
ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
CURSOR_PATTERN: Final = r"^[A-Za-z0-9_-]+$"

Instant = Annotated[datetime, msgspec.Meta(tz=True)]


# --- response types ---------------------------------------------------------------------------


class EventTrigger(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """When a scheduled event fires: the trigger ``kind`` and its full specification."""

    kind: Annotated[str, msgspec.Meta(description="date, interval or cron")]
    spec: Annotated[
        dict[str, Any],
        msgspec.Meta(description="The trigger's fields (run_at, every/unit, expression, zone …)"),
    ]


class ScheduledEvent(msgspec.Struct, frozen=True, gc=False):
    """One scheduled event (a task) as the read model shows it (untracked by the cyclic
    GC, like the rows it is made from: a listing makes a hundred per request)."""

    id: str
    name: str | None
    function_name: str | None
    module_id: str | None
    status: Annotated[str, msgspec.Meta(description=", ".join(sorted(TASK_STATUSES)))]
    recurring: bool | None
    trigger: EventTrigger | None
    timezone: str | None
    next_fire: Instant | None
    last_fire: Instant | None
    last_outcome: str | None
    runs: int
    successes: int
    failures: int
    paused_at: Instant | None
    pause_note: str | None
    end_reason: str | None
    ended_at: Instant | None
    created_at: Instant | None
    updated_at: Instant

    @classmethod
    def from_row(cls, row: TaskRow | TaskSummary) -> ScheduledEvent:
        """The API view of a ``tasks`` projection row (parameters and policies stay private).

        Positional (fields in the order above): a listing builds a hundred per request.
        """
        trigger = None
        if row.trigger is not None:
            spec = dict(row.trigger)
            kind = spec.pop("kind", None) or row.trigger_kind or "unknown"
            trigger = EventTrigger(kind=str(kind), spec=spec)
        return cls(
            row.task_id,
            row.name,
            row.function_name,
            row.module_id,
            row.status,
            row.recurring,
            trigger,
            row.timezone,
            row.next_fire,
            row.last_fire,
            row.last_outcome,
            row.runs,
            row.successes,
            row.failures,
            row.paused_at,
            row.pause_note,
            row.end_reason,
            row.ended_at,
            row.created_at,
            row.updated_at,
        )


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of scheduled events; ``total`` counts every match over all pages."""

    events: tuple[ScheduledEvent, ...]
    total: Annotated[int, msgspec.Meta(ge=0)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)]
    offset: Annotated[int, msgspec.Meta(ge=0)]
    next_cursor: Annotated[
        str | None,
        msgspec.Meta(description="Pass as ``cursor`` for the next page; null at the end"),
    ]


# --- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParameter:
    """One query parameter: its JSON Schema is both documented and enforced."""

    name: str
    schema: dict[str, Any]
    description: str
    filter: bool = False


LIST_PARAMETERS: Final[tuple[QueryParameter, ...]] = (
    QueryParameter(
        "status",
        {"type": "string", "enum": sorted(TASK_STATUSES)},
        "Only events in this status.",
        filter=True,
    ),
    QueryParameter(
        "module_id",
        {"type": "string", "pattern": ID_PATTERN},
        "Only events scheduled by this module.",
        filter=True,
    ),
    QueryParameter(
        "function_name",
        {"type": "string", "minLength": 1, "maxLength": 200},
        "Only events that call this registered function.",
        filter=True,
    ),
    QueryParameter(
        "recurring",
        {"type": "boolean"},
        "true: only recurring events; false: only one-shots.",
        filter=True,
    ),
    QueryParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        "Page size.",
    ),
    QueryParameter(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "Rows to skip (not together with cursor).",
    ),
    QueryParameter(
        "cursor",
        {"type": "string", "pattern": CURSOR_PATTERN, "maxLength": MAX_CURSOR_LENGTH},
        "next_cursor of the previous page; valid only with the same filters.",
    ),
)

EVENT_ID_SCHEMA: Final[dict[str, Any]] = {"type": "string", "pattern": ID_PATTERN}


# --- the document -------------------------------------------------------------------------------

_REF = "#/components/schemas/{name}"
_ERRORS: Final = {
    "400": "Bad parameter: details.parameter names it",
    "401": "Missing or wrong bearer token",
    "404": "No such scheduled event or route",
    "405": "Method not allowed",
    "500": "Internal error (never a traceback)",
    "503": "The scheduler is not running",
    "504": "The read model did not answer in time",
}


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Any],
    parameters: list[dict[str, Any]],
    errors: tuple[str, ...],
    error_ref: dict[str, Any],
) -> dict[str, Any]:
    responses = {"200": ok}
    responses.update({code: _json(error_ref, _ERRORS[code]) for code in errors})
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["scheduler"],
        "parameters": parameters,
        "responses": responses,
    }


def build_openapi(*, secured: bool = False, root_path: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API.

    ``secured`` declares the bearer-token scheme (and the 401 answers); ``root_path`` is
    where the app is mounted inside a host application, written as the server URL.
    """
    (page_ref, event_ref, error_ref), schemas = msgspec.json.schema_components(
        [EventPage, ScheduledEvent, ErrorEnvelope], ref_template=_REF
    )
    common: tuple[str, ...] = ("400",) + (("401",) if secured else ()) + ("405", "500")
    list_params = [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": p.schema,
        }
        for p in LIST_PARAMETERS
    ]
    id_param = {
        "name": "event_id",
        "in": "path",
        "required": True,
        "description": "The scheduled event's id.",
        "schema": EVENT_ID_SCHEMA,
    }
    paths = {
        EVENTS_PATH: {
            "get": _operation(
                "listScheduledEvents",
                "List scheduled events with filters and pagination",
                _json(page_ref, "One page of scheduled events"),
                list_params,
                (*common, "503", "504"),
                error_ref,
            )
        },
        EVENT_PATH: {
            "get": _operation(
                "getScheduledEvent",
                "One scheduled event",
                _json(event_ref, "The scheduled event"),
                [id_param],
                (*common, "404", "503", "504"),
                error_ref,
            )
        },
        OPENAPI_PATH: {
            "get": _operation(
                "getOpenApiDocument",
                "This document",
                {"description": "The OpenAPI document", "content": {"application/json": {}}},
                [],
                common,
                error_ref,
            )
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "chronolog scheduler API",
            "version": __version__,
            "description": "Read-only view of the scheduled events of a chronolog scheduler.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if root_path:
        document["servers"] = [{"url": root_path}]
    if secured:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}
        }
        document["security"] = [{"bearerAuth": []}]
    return document


__all__ = [
    "API_PREFIX",
    "EVENTS_PATH",
    "EVENT_PATH",
    "LIST_PARAMETERS",
    "OPENAPI_PATH",
    "EventPage",
    "EventTrigger",
    "QueryParameter",
    "ScheduledEvent",
    "build_openapi",
]
