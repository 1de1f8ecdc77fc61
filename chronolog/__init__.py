"""chronolog: an embeddable, event-sourced task scheduler and housekeeper.

Host code uses :class:`SchedulerModule` (two-phase start), finds the facade in its service
registry as ``scheduler_service`` (a :class:`SchedulerService`), and reads every answer
as a :class:`Result`.

The names below are loaded on first use, so ``import chronolog.events`` (say, in an
analyst's script) does not start pulling in the actor runtime or DuckDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronolog.errors import (
    ChronologError,
    ConcurrencyError,
    ConflictError,
    InvalidStateError,
    InvalidTriggerError,
    NotFoundError,
    StorageError,
    StoreLockedError,
    UnknownFunctionError,
    UnsafePathError,
    ValidationError,
)
from chronolog.lazy_names import lazy_getattr

if TYPE_CHECKING:
    from chronolog.actors.executor import ExecutionContext, current_execution
    from chronolog.events import Cause
    from chronolog.module import AppContext, SchedulerModule, ServiceRegistry
    from chronolog.result import ErrorInfo, Result
    from chronolog.service import SchedulerService, SyncSchedulerService
    from chronolog.settings import Settings, load_settings

__version__ = "0.1.0"

_LAZY = {
    "AppContext": "chronolog.module",
    "SchedulerModule": "chronolog.module",
    "ServiceRegistry": "chronolog.module",
    "SchedulerService": "chronolog.service",
    "SyncSchedulerService": "chronolog.service",
    "Result": "chronolog.result",
    "ErrorInfo": "chronolog.result",
    "Settings": "chronolog.settings",
    "load_settings": "chronolog.settings",
    "Cause": "chronolog.events",
    "ExecutionContext": "chronolog.actors.executor",
    "current_execution": "chronolog.actors.executor",
}

__all__ = [
    "AppContext",
    "Cause",
    "ChronologError",
    "ConcurrencyError",
    "ConflictError",
    "ErrorInfo",
    "ExecutionContext",
    "InvalidStateError",
    "InvalidTriggerError",
    "NotFoundError",
    "Result",
    "SchedulerModule",
    "SchedulerService",
    "ServiceRegistry",
    "Settings",
    "StorageError",
    "StoreLockedError",
    "SyncSchedulerService",
    "UnknownFunctionError",
    "UnsafePathError",
    "ValidationError",
    "__version__",
    "current_execution",
    "load_settings",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
