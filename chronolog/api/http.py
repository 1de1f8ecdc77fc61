"""The HTTP door: a small Starlette app over the :class:`~chronolog.service.SchedulerService`.

``create_app(service, token=...)`` returns an ASGI app that serves (under
``/api/v1/scheduler``) the list of scheduled events, one event, and the OpenAPI document.
It can run on its own (:mod:`chronolog.api.server`) or be mounted into a host's ASGI app.

Every answer that is not a 200 has the one error shape of :mod:`chronolog.api.errors`:
bad or unknown parameters (400, naming the parameter), a missing or wrong token (401),
unknown ids and routes (404), wrong methods (405), facade errors (by their code) and
unexpected exceptions (500, logged, never a traceback). Queries run on the facade's thread
pool, so the event loop stays free.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chronolog.api.errors import error_envelope, status_for
from chronolog.api.openapi import (
    EVENT_ID_SCHEMA,
    EVENT_PATH,
    EVENTS_PATH,
    LIST_PARAMETERS,
    OPENAPI_PATH,
    EventPage,
    QueryParameter,
    ScheduledEvent,
    build_openapi,
)
from chronolog.errors import ValidationError
from chronolog.projections.queries import MAX_OFFSET
from chronolog.result import ErrorInfo
from chronolog.service import SchedulerService

log = structlog.get_logger("chronolog.api.http")

JSON: Final = "application/json"
_encode = msgspec.json.encode
#: Error codes of the HTTP layer itself (the facade's codes come with its errors).
_CODE_BY_STATUS: Final = {
    400: "invalid_argument",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
}

Handler = Callable[[Request], Awaitable[Response]]
FilterValue = str | bool


# --- the error shape ----------------------------------------------------------------------------


def create_error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An HTTP response with ``{"error": {"code", "message", "details"}}`` as its JSON body."""
    body = _encode(error_envelope(code, message, dict(details or {})))
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _facade_error(error: ErrorInfo) -> Response:
    status = status_for(error.code)
    if status == 500:  # lower-layer text stays in the log, not in the answer
        log.error("facade call failed", code=error.code, message=error.message)
        return create_error_response(500, error.code, "internal error; see the server log")
    return create_error_response(status, error.code, error.message, error.details)


class BadParameter(Exception):
    """A query or path parameter is malformed, unknown, repeated or out of range."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


# --- parameters ---------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]{1,19}", re.ASCII)


def _regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA 262: "$" ends the string. Python's "$" also matches
    # before a final newline, so anchor with \Z to accept exactly what the document says.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern, re.ASCII)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def parse_value(name: str, schema: Mapping[str, Any], raw: str) -> str | int | bool:
    """Check one raw parameter value against its JSON Schema and convert it.

    Understands what the API's parameters use: ``enum``, ``pattern``, ``minLength`` and
    ``maxLength`` for strings, ``minimum``/``maximum`` for integers, and booleans spelled
    ``true`` or ``false``. Raises :class:`BadParameter` naming ``name``.
    """
    kind = schema["type"]
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise BadParameter(name, f"{name} must be true or false, got {raw!r}")
        return raw == "true"
    if kind == "integer":
        low, high = int(schema["minimum"]), int(schema["maximum"])
        if not _INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
            raise BadParameter(name, f"{name} must be an integer from {low} to {high}, got {raw!r}")
        return int(raw)
    if "enum" in schema and raw not in schema["enum"]:
        choices = ", ".join(schema["enum"])
        raise BadParameter(name, f"{name} must be one of {choices}; got {raw!r}")
    shortest, longest = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(raw) < shortest or (longest is not None and len(raw) > longest):
        size = f"{shortest} to {longest}" if longest is not None else f"at least {shortest}"
        raise BadParameter(name, f"{name} must be {size} characters long, got {len(raw)}")
    pattern = schema.get("pattern")
    if pattern is not None:
        regex = _PATTERNS.get(pattern) or _PATTERNS.setdefault(pattern, _regex(pattern))
        if not regex.search(raw):
            raise BadParameter(name, f"{name} must match {pattern}, got {raw!r}")
    return raw


def single_values(request: Request, known: Mapping[str, QueryParameter]) -> dict[str, str]:
    """The query parameters as a dict; unknown or repeated names are a :class:`BadParameter`."""
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise BadParameter(name, f"unknown query parameter {name!r} (allowed: {allowed})")
        if name in values:
            raise BadParameter(name, f"query parameter {name!r} is given more than once")
        values[name] = value
    return values


@dataclass(frozen=True)
class ListQuery:
    """A validated listing request: filters (by name) and the page wanted."""

    filters: dict[str, FilterValue]
    limit: int
    offset: int


_LIST_PARAMS: Final = {p.name: p for p in LIST_PARAMETERS}


def parse_list_query(request: Request) -> ListQuery:
    """Validate ``GET /events``'s query; a cursor stands for the offset of its filters."""
    raw = single_values(request, _LIST_PARAMS)
    parsed = {name: parse_value(name, _LIST_PARAMS[name].schema, v) for name, v in raw.items()}
    filters: dict[str, FilterValue] = {}
    for p in LIST_PARAMETERS:
        value = parsed.get(p.name)
        if p.filter and isinstance(value, str | bool):
            filters[p.name] = value
    limit = int(parsed.get("limit", _LIST_PARAMS["limit"].schema["default"]))
    offset = int(parsed.get("offset", 0))
    cursor = parsed.get("cursor")
    if cursor is not None:
        if "offset" in parsed:
            raise BadParameter("offset", "offset cannot be combined with cursor; pass one of them")
        offset = decode_cursor(str(cursor), filters)
    return ListQuery(filters=filters, limit=limit, offset=offset)


# --- cursors ------------------------------------------------------------------------------------


class _Cursor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a cursor holds: the next offset and the filters of the listing it continues."""

    o: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
    f: dict[str, FilterValue]


def encode_cursor(offset: int, filters: Mapping[str, FilterValue]) -> str:
    """An opaque cursor (unpadded base64url of JSON) for ``offset`` under ``filters``."""
    data = _encode(_Cursor(o=offset, f=dict(filters)))
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, filters: Mapping[str, FilterValue]) -> int:
    """The offset in ``cursor``; :class:`BadParameter` if it is malformed or its filters differ."""
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(data, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadParameter("cursor", "cursor is not one this API issued") from None
    if decoded.f != dict(filters):
        raise BadParameter(
            "cursor",
            "cursor belongs to a listing with other filters; repeat that listing's filters "
            "or start again without a cursor",
        )
    return decoded.o


# --- auth ---------------------------------------------------------------------------------------


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._authorized(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = create_error_response(
            401,
            "unauthorized",
            "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="chronolog"'},
        )
        await response(scope, receive, send)

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # compare_digest takes time independent of where the strings differ.
        return hmac.compare_digest(given.strip().encode("utf-8"), self._token)


# --- endpoints ----------------------------------------------------------------------------------


def _json_response(payload: msgspec.Struct) -> Response:
    return Response(_encode(payload), media_type=JSON, headers={"Cache-Control": "no-store"})


def _guarded(handler: Handler) -> Handler:
    """Turn bad parameters into 400s and unexpected exceptions into logged 500s."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BadParameter as exc:
            return create_error_response(
                400, "invalid_argument", exc.message, {"parameter": exc.parameter}
            )
        except Exception:
            log.exception("HTTP request failed", method=request.method, path=request.url.path)
            return create_error_response(500, "internal", "internal error; see the server log")

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


class _Endpoints:
    """The route handlers, bound to one facade."""

    def __init__(self, service: SchedulerService, *, secured: bool) -> None:
        self._service = service
        self._secured = secured
        self._documents: dict[str, bytes] = {}

    async def list_events(self, request: Request) -> Response:
        """``GET /events``: one page of scheduled events."""
        query = parse_list_query(request)
        recurring = query.filters.get("recurring")
        # Summaries: the answer shows neither parameters nor policies, so skip decoding them.
        result = await self._service.list_event_summaries(
            status=_text(query.filters.get("status")),
            module_id=_text(query.filters.get("module_id")),
            function_name=_text(query.filters.get("function_name")),
            recurring=recurring if isinstance(recurring, bool) else None,
            limit=query.limit,
            offset=query.offset,
        )
        if result.error is not None:
            return _facade_error(result.error)
        page = result.unwrap()
        following = page.offset + len(page.items)
        more = following < page.total and following <= MAX_OFFSET
        return _json_response(
            EventPage(
                events=tuple(ScheduledEvent.from_row(row) for row in page.items),
                total=page.total,
                limit=page.limit,
                offset=page.offset,
                next_cursor=encode_cursor(following, query.filters) if more else None,
            )
        )

    async def get_event(self, request: Request) -> Response:
        """``GET /events/{event_id}``: one scheduled event."""
        single_values(request, {})
        event_id = str(parse_value("event_id", EVENT_ID_SCHEMA, request.path_params["event_id"]))
        result = await self._service.get_event(event_id)
        if result.error is not None:
            return _facade_error(result.error)
        return _json_response(ScheduledEvent.from_row(result.unwrap()))

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: the OpenAPI document (with the mount point as its server)."""
        single_values(request, {})
        root_path = str(request.scope.get("root_path", "")).rstrip("/")
        document = self._documents.get(root_path)
        if document is None:
            document = _encode(build_openapi(secured=self._secured, root_path=root_path))
            self._documents[root_path] = document
        return Response(document, media_type=JSON)


def _text(value: FilterValue | None) -> str | None:
    return value if isinstance(value, str) else None


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 from the router, in the error shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return create_error_response(
        status, _CODE_BY_STATUS.get(status, "http_error"), message, headers=exc.headers
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    """The last resort: anything that escaped the endpoints' own guard."""
    log.error("unhandled error in the HTTP app", error=type(exc).__name__)
    return create_error_response(500, "internal", "internal error; see the server log")


def create_app(service: SchedulerService, *, token: str | None = None) -> Starlette:
    """The HTTP API as an ASGI app over ``service``.

    With ``token``, every request needs ``Authorization: Bearer <token>`` (else 401).
    Mount it anywhere in a host app (``Mount("/", app=create_app(svc))``): routes keep
    their ``/api/v1/scheduler`` prefix below the mount point.
    """
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValidationError("token must be a non-empty string or None")
    endpoints = _Endpoints(service, secured=token is not None)
    routes = [
        Route(EVENTS_PATH, _guarded(endpoints.list_events), methods=["GET"]),
        Route(EVENT_PATH, _guarded(endpoints.get_event), methods=["GET"]),
        Route(OPENAPI_PATH, _guarded(endpoints.openapi), methods=["GET"]),
    ]
    middleware = [] if token is None else [Middleware(BearerTokenMiddleware, token=token)]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    # "/events/" is a 404 in the error shape, not a redirect to "/events".
    app.router.redirect_slashes = False
    return app


__all__ = [
    "BadParameter",
    "BearerTokenMiddleware",
    "ListQuery",
    "create_app",
    "create_error_response",
    "decode_cursor",
    "encode_cursor",
    "parse_list_query",
    "parse_value",
]
