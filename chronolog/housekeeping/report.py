"""The result of one cleanup run, and the bounded accumulator that builds it."""

from __future__ import annotations

from datetime import datetime

import msgspec

from chronolog.clock import AwareDatetime
from chronolog.housekeeping.model import (
    CleanupFileRecord,
    CleanupSummary,
    FileOutcome,
    RemovalReason,
)
from chronolog.housekeeping.names import display_path


class CleanupReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one run over one directory did (or, with ``dry_run``, would do).

    ``files`` lists the selected files in walk order, at most ``max_records`` of them
    (``files_truncated`` says when more were selected); ``summary`` always counts them all.
    ``errors`` holds messages for per-file and per-directory problems, bounded likewise.
    ``resume_after`` is set when a budget stopped the run: pass it to the next run to go on
    from there. ``writers_unchecked`` counts removed files for which the platform could
    not tell whether another process had them open for writing.
    """

    directory: str
    dry_run: bool
    started_at: AwareDatetime
    summary: CleanupSummary
    files: tuple[CleanupFileRecord, ...] = ()
    files_truncated: bool = False
    errors: tuple[str, ...] = ()
    errors_truncated: bool = False
    resume_after: str | None = None
    writers_unchecked: int = 0


class ReportBuilder:
    """Counts everything and keeps at most ``max_records`` file records and errors."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.records: list[CleanupFileRecord] = []
        self.files_truncated = False
        self.errors: list[str] = []
        self.errors_truncated = False
        self.error_count = 0
        self.selected = 0
        self.bytes_selected = 0
        self.removed = 0
        self.bytes_freed = 0
        self.skipped = 0

    def file(
        self,
        rel: str,
        size: int,
        age_seconds: float,
        reasons: tuple[RemovalReason, ...],
        outcome: FileOutcome,
        reason: str | None = None,
        freed: int = 0,
    ) -> None:
        """Account for one selected file."""
        self.selected += 1
        self.bytes_selected += size
        if outcome == "removed":
            self.removed += 1
            self.bytes_freed += freed
        elif outcome == "skipped":
            self.skipped += 1
        elif outcome == "error":
            self.error(f"{display_path(rel)[0]}: {reason}")
        if len(self.records) < self.max_records:
            path, lossy = display_path(rel)
            self.records.append(
                CleanupFileRecord(
                    path=path,
                    size=size,
                    age_seconds=age_seconds,
                    reasons=reasons,
                    outcome=outcome,
                    error=reason,
                    path_is_lossy=lossy,
                )
            )
        else:
            self.files_truncated = True

    def error(self, message: str) -> None:
        """Account for one problem that did not stop the run."""
        self.error_count += 1
        if len(self.errors) < self.max_records:
            self.errors.append(message)
        else:
            self.errors_truncated = True

    def build(
        self,
        *,
        directory: str,
        dry_run: bool,
        started_at: datetime,
        examined: int,
        matched: int,
        dirs_removed: int,
        duration: float,
        resume_after: str | None,
        writers_unchecked: int,
    ) -> CleanupReport:
        """The finished report."""
        summary = CleanupSummary(
            files_examined=examined,
            files_matched=matched,
            files_selected=self.selected,
            files_removed=self.removed,
            bytes_freed=self.bytes_freed,
            dirs_removed=dirs_removed,
            errors=self.error_count,
            skipped=self.skipped,
            duration_seconds=duration,
            budget_exhausted=resume_after is not None,
            bytes_selected=self.bytes_selected,
        )
        return CleanupReport(
            directory=display_path(directory)[0],
            dry_run=dry_run,
            started_at=started_at,
            summary=summary,
            files=tuple(self.records),
            files_truncated=self.files_truncated,
            errors=tuple(self.errors),
            errors_truncated=self.errors_truncated,
            resume_after=resume_after,
            writers_unchecked=writers_unchecked,
        )


__all__ = ["CleanupReport", "ReportBuilder"]
