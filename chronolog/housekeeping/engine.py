"""One cleanup run: validate, lock, scan, select, remove, report."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from chronolog.clock import ensure_utc
from chronolog.errors import ValidationError
from chronolog.housekeeping.lock import exclusive_run
from chronolog.housekeeping.model import CleanupRules, RemovalReason
from chronolog.housekeeping.names import decode_cursor, encode_cursor
from chronolog.housekeeping.paths import PathArg, Target, open_target
from chronolog.housekeeping.policy import select
from chronolog.housekeeping.remove import DirectoryOpener, FileRemover, remove_empty_dirs
from chronolog.housekeeping.report import CleanupReport, ReportBuilder
from chronolog.housekeeping.rules import CompiledRules, compile_rules
from chronolog.housekeeping.walk import ScanResult, scan

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def validate_target(
    directory: PathArg,
    rules: CleanupRules,
    *,
    allowed_roots: Sequence[PathArg],
    allow_mount_roots: bool = False,
    protected: Sequence[PathArg] = (),
) -> str:
    """Check a registration without touching any file; return the normalised directory.

    Raises :class:`~chronolog.errors.UnsafePathError` when the directory or a pattern could
    reach what the Housekeeper must not delete (``/``, the home directory, a path outside
    ``allowed_roots``, a symlink on the path, a mount root, a ``protected`` directory or one
    inside it, ``..`` or absolute patterns), and :class:`~chronolog.errors.ValidationError`
    for malformed rules or a directory that does not exist or is not a directory.
    """
    compile_rules(rules)
    target = open_target(
        directory,
        allowed_roots=allowed_roots,
        allow_mount_roots=allow_mount_roots,
        protected=protected,
    )
    os.close(target.fd)
    return target.path


def run_cleanup(
    directory: PathArg,
    rules: CleanupRules,
    *,
    allowed_roots: Sequence[PathArg],
    now: datetime,
    dry_run: bool = False,
    max_files_budget: int | None = None,
    max_seconds_budget: float | None = None,
    resume_after: str | None = None,
    max_records: int = 1000,
    monotonic: Callable[[], float] = time.monotonic,
    allow_mount_roots: bool = False,
    protected: Sequence[PathArg] = (),
) -> CleanupReport:
    """Apply ``rules`` to ``directory`` once and report every file selected.

    Ages are measured against ``now`` (aware), never the wall clock. With ``dry_run``
    nothing is removed and selected files are reported as ``would_remove``.

    Budgets: the scan stops before examining more than ``max_files_budget`` regular files;
    the scan and the removals stop once ``max_seconds_budget`` seconds (on ``monotonic``)
    have passed, after at least one file, so every run makes progress. A stopped run
    returns ``resume_after``; passing it to the next run continues after that path in
    walk order. Policies applied to a partial scan select a subset of what a full scan
    would, never more.

    Raises what :func:`validate_target` raises, plus
    :class:`~chronolog.housekeeping.CleanupBusyError` when another run over the same
    directory is in progress. Problems with single files or subdirectories never raise:
    they are counted and reported.
    """
    started = monotonic()
    now = ensure_utc(now, "now")
    _check_limits(max_files_budget, max_seconds_budget, max_records)
    compiled = compile_rules(rules)
    start_after = decode_cursor(resume_after) if resume_after is not None else ()
    target = open_target(
        directory,
        allowed_roots=allowed_roots,
        allow_mount_roots=allow_mount_roots,
        protected=protected,
    )
    try:
        with exclusive_run(target):
            return _run(
                target,
                compiled,
                now=now,
                dry_run=dry_run,
                start_after=start_after,
                max_files_budget=max_files_budget,
                deadline=None if max_seconds_budget is None else started + max_seconds_budget,
                max_records=max_records,
                monotonic=monotonic,
                started=started,
            )
    finally:
        os.close(target.fd)


def _run(
    target: Target,
    compiled: CompiledRules,
    *,
    now: datetime,
    dry_run: bool,
    start_after: tuple[str, ...],
    max_files_budget: int | None,
    deadline: float | None,
    max_records: int,
    monotonic: Callable[[], float],
    started: float,
) -> CleanupReport:
    found = scan(
        target,
        compiled,
        start_after=start_after,
        max_files=max_files_budget,
        deadline=deadline,
        monotonic=monotonic,
    )
    now_ns = (now - _EPOCH) // timedelta(microseconds=1) * 1000
    reasons = select(found.files, compiled.rules, now_ns)
    report = ReportBuilder(max_records)
    for message in found.errors:
        report.error(message)
    stopped_after = found.stopped_after
    dirs_removed = 0
    writers_unchecked = 0
    if dry_run:
        for fact, why in zip(found.files, reasons, strict=True):
            if why:
                age = (now_ns - fact.ts_ns) / 1e9
                report.file(fact.rel, fact.size, age, why, "would_remove")
    else:
        stopped_after, dirs_removed, writers_unchecked = _remove(
            target, compiled, found, reasons, now_ns, deadline, monotonic, report
        )
    return report.build(
        directory=target.path,
        dry_run=dry_run,
        started_at=now,
        examined=found.examined,
        matched=len(found.files),
        dirs_removed=dirs_removed,
        duration=monotonic() - started,
        resume_after=None if stopped_after is None else encode_cursor(stopped_after),
        writers_unchecked=writers_unchecked,
    )


def _remove(
    target: Target,
    compiled: CompiledRules,
    found: ScanResult,
    reasons: list[tuple[RemovalReason, ...]],
    now_ns: int,
    deadline: float | None,
    monotonic: Callable[[], float],
    report: ReportBuilder,
) -> tuple[str | None, int, int]:
    """Remove the selected files; returns ``(stopped_after, dirs_removed, unchecked)``."""
    opener = DirectoryOpener(target.fd, found.dirs)
    remover = FileRemover(opener, len(found.dirs), compiled.basis_attr)
    stopped_after = found.stopped_after
    cut_short = False
    last_rel: str | None = None
    dirs_removed = 0
    try:
        for fact, why in zip(found.files, reasons, strict=True):
            if not why:
                continue
            if deadline is not None and last_rel is not None and monotonic() >= deadline:
                # Everything up to the last file handled is done; resume right after it.
                stopped_after, cut_short = last_rel, True
                break
            outcome, reason, freed = remover.remove(fact)
            age = (now_ns - fact.ts_ns) / 1e9
            report.file(fact.rel, fact.size, age, why, outcome, reason, freed)
            last_rel = fact.rel
        if compiled.rules.remove_empty_dirs and not cut_short:
            dirs_removed, errors = remove_empty_dirs(opener, found.dirs, remover.removed_per_dir)
            for message in errors:
                report.error(message)
    finally:
        opener.close()
    return stopped_after, dirs_removed, remover.writers_unchecked


def _check_limits(
    max_files_budget: int | None, max_seconds_budget: float | None, max_records: int
) -> None:
    if max_files_budget is not None and (
        isinstance(max_files_budget, bool)
        or not isinstance(max_files_budget, int)
        or max_files_budget < 1
    ):
        raise ValidationError(f"max_files_budget must be an integer >= 1, got {max_files_budget!r}")
    if max_seconds_budget is not None and (
        isinstance(max_seconds_budget, bool)
        or not isinstance(max_seconds_budget, int | float)
        or not math.isfinite(max_seconds_budget)
        or max_seconds_budget <= 0
    ):
        raise ValidationError(f"max_seconds_budget must be > 0, got {max_seconds_budget!r}")
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0:
        raise ValidationError(f"max_records must be an integer >= 0, got {max_records!r}")


__all__ = ["run_cleanup", "validate_target"]
