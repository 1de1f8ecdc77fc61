"""One error shape for every door: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

import msgspec

from chronolog.errors import ChronologError
from chronolog.result import ErrorInfo

#: HTTP status for each error code; anything unlisted is a 500.
STATUS_BY_CODE: dict[str, int] = {
    "invalid_argument": 400,
    "invalid_trigger": 400,
    "unsafe_path": 400,
    "unknown_function": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "invalid_state": 409,
    "version_conflict": 409,
    "cleanup_busy": 409,
    "unavailable": 503,
    "timeout": 504,
}


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error answer."""

    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """``{"error": {...}}``: what an HTTP error response or an agent error result holds."""

    error: ErrorBody


def error_envelope(code: str, message: str, details: dict[str, Any] | None = None) -> ErrorEnvelope:
    """The error shape as a Struct (encode it with msgspec)."""
    return ErrorEnvelope(error=ErrorBody(code=code, message=message, details=dict(details or {})))


def envelope_from(error: ErrorInfo | ChronologError) -> ErrorEnvelope:
    """The error shape for a facade error or a chronolog exception."""
    info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
    return error_envelope(info.code, info.message, info.details)


def status_for(code: str) -> int:
    """The HTTP status that goes with an error code."""
    return STATUS_BY_CODE.get(code, 500)
