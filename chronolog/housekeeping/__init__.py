"""The cleanup engine behind the Housekeeper: retention policies and safe deletion.

Pure of actors: :func:`run_cleanup` does one run over one directory and returns a
:class:`CleanupReport`; scheduling, registration and the event log live elsewhere.

>>> report = run_cleanup(
...     "/var/log/myapp",
...     CleanupRules(pattern="*.log", retention_days=14),
...     allowed_roots=["/var/log/myapp"],
...     now=datetime.now(UTC),
...     dry_run=True,
... )  # doctest: +SKIP
"""

from chronolog.housekeeping.engine import run_cleanup, validate_target
from chronolog.housekeeping.lock import CleanupBusyError
from chronolog.housekeeping.model import (
    AgeBasis,
    CleanupFileRecord,
    CleanupRules,
    CleanupSummary,
    FileOutcome,
    RemovalReason,
)
from chronolog.housekeeping.report import CleanupReport

__all__ = [
    "AgeBasis",
    "CleanupBusyError",
    "CleanupFileRecord",
    "CleanupReport",
    "CleanupRules",
    "CleanupSummary",
    "FileOutcome",
    "RemovalReason",
    "run_cleanup",
    "validate_target",
]
