"""Data shared by the cleanup engine, the cleanup domain events and the projections.

These are plain frozen msgspec Structs with no behaviour, so that ``chronolog.events`` can
embed them without importing the filesystem engine.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: Which file timestamp decides a file's age.
AgeBasis = Literal["mtime", "ctime", "atime"]

#: Why a file was selected for removal.
RemovalReason = Literal["age", "count", "size"]

#: What happened to one selected file.
FileOutcome = Literal["removed", "would_remove", "skipped", "error"]


class CleanupRules(msgspec.Struct, frozen=True, kw_only=True):
    """What a cleanup registration removes from its directory.

    ``pattern`` and ``exclude`` are globs relative to the registered directory; ``*`` does
    not cross ``/`` (``**`` does, with ``recursive``). The three retention limits combine:
    a file is removed when any of them selects it.
    """

    pattern: str = "*"
    retention_days: float | None = None
    max_files: int | None = None
    max_total_bytes: int | None = None
    exclude: tuple[str, ...] = ()
    recursive: bool = False
    remove_empty_dirs: bool = False
    age_basis: AgeBasis = "mtime"


class CleanupFileRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One file a run removed, would remove, or failed to remove.

    ``path`` is relative to the registered directory; a name that is not valid UTF-8 is
    given with surrogate escapes replaced by ``\\x..`` sequences (``path_is_lossy``).
    """

    path: str
    size: int
    age_seconds: float
    reasons: tuple[RemovalReason, ...]
    outcome: FileOutcome
    error: str | None = None
    path_is_lossy: bool = False


class CleanupSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The totals of one run over one registration."""

    files_examined: int = 0
    files_matched: int = 0
    files_selected: int = 0
    files_removed: int = 0
    bytes_freed: int = 0
    dirs_removed: int = 0
    errors: int = 0
    skipped: int = 0
    duration_seconds: float = 0.0
    budget_exhausted: bool = False
    #: Total size of the selected files (what a dry run would free, before hard links).
    bytes_selected: int = 0


__all__ = [
    "AgeBasis",
    "CleanupFileRecord",
    "CleanupRules",
    "CleanupSummary",
    "FileOutcome",
    "RemovalReason",
]
