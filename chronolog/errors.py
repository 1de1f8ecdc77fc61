"""One error tree for everything chronolog raises.

Every public entry point raises (or, in the service layer, returns) a subclass of
:class:`ChronologError`. Each class carries a stable machine-readable ``code`` that the
service ``Result``, the HTTP error shape and the agent dispatcher all reuse, so a caller
can branch on ``error.code`` without importing the class.

Lower layers (sqlite3, DuckDB, pykka, the filesystem) never leak through: the place that
talks to them maps their exceptions onto this tree.
"""

from __future__ import annotations

from typing import Any


class ChronologError(Exception):
    """Root of every error chronolog raises."""

    code: str = "chronolog_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


# --- bad input -------------------------------------------------------------------------


class ValidationError(ChronologError):
    """The caller's input is malformed or out of range; nothing was changed."""

    code = "invalid_argument"


class InvalidTriggerError(ValidationError):
    """A trigger specification cannot produce a valid schedule."""

    code = "invalid_trigger"


class UnsafePathError(ValidationError):
    """A cleanup directory or pattern would reach outside what chronolog may delete."""

    code = "unsafe_path"


class UnknownFunctionError(ValidationError):
    """A task names a function that was never registered."""

    code = "unknown_function"


# --- state -----------------------------------------------------------------------------


class NotFoundError(ChronologError):
    """The named task, execution or registration does not exist."""

    code = "not_found"


class ConflictError(ChronologError):
    """The request is well-formed but contradicts the current state."""

    code = "conflict"


class InvalidStateError(ConflictError):
    """The command is not allowed in the entity's current state (e.g. resuming a cancelled task)."""

    code = "invalid_state"


class ConcurrencyError(ConflictError):
    """An append expected a stream version that is no longer current; nothing was written."""

    code = "version_conflict"

    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not the expected {expected}",
            details={"stream_id": stream_id, "expected": expected, "actual": actual},
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


# --- storage ---------------------------------------------------------------------------


class StorageError(ChronologError):
    """The event log or a projection could not be read or written."""

    code = "storage_error"


def projections_failing(reason: str) -> StorageError:
    """The error of a read that needs what the failing projector has not applied yet."""
    return StorageError(
        f"the projections cannot catch up with the log: {reason}",
        details={"projector_failure": reason},
    )


class StoreLockedError(StorageError):
    """Another process already has the data directory open for writing."""

    code = "store_locked"


class StoreClosedError(StorageError):
    """The store was used after ``close()``."""

    code = "store_closed"


class ReadOnlyStoreError(StorageError):
    """An append was attempted on a store opened read-only."""

    code = "read_only"


class EventCodecError(StorageError):
    """An event could not be encoded, or a stored record could not be decoded."""

    code = "codec_error"


class UnknownEventTypeError(EventCodecError):
    """A stored record names an event type this version of chronolog does not know."""

    code = "unknown_event_type"


# --- runtime ---------------------------------------------------------------------------


class ServiceUnavailableError(ChronologError):
    """The scheduler is not started, or is shutting down."""

    code = "unavailable"


class RequestTimeoutError(ChronologError):
    """A request to the scheduler did not complete in time."""

    code = "timeout"


__all__ = [
    "ChronologError",
    "ConcurrencyError",
    "ConflictError",
    "EventCodecError",
    "InvalidStateError",
    "InvalidTriggerError",
    "NotFoundError",
    "ReadOnlyStoreError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "StorageError",
    "StoreClosedError",
    "StoreLockedError",
    "UnknownEventTypeError",
    "UnknownFunctionError",
    "UnsafePathError",
    "ValidationError",
]
