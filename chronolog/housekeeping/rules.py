"""Checking :class:`CleanupRules` once and compiling them for the walk."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chronolog.errors import ValidationError
from chronolog.housekeeping.globs import check_glob, compile_globs
from chronolog.housekeeping.model import CleanupRules
from chronolog.limits import MAX_INT32, MAX_INT64, check_int, check_retention_days

_BASIS_ATTRS = {"mtime": "st_mtime_ns", "ctime": "st_ctime_ns", "atime": "st_atime_ns"}


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """Rules that passed :func:`compile_rules`, with their globs compiled."""

    rules: CleanupRules
    pattern: re.Pattern[str]
    exclude: re.Pattern[str] | None
    #: ``os.stat_result`` attribute holding the timestamp that decides a file's age.
    basis_attr: str


def compile_rules(rules: CleanupRules) -> CompiledRules:
    """Check every field of ``rules`` and compile its globs.

    Raises :class:`ValidationError` (or :class:`UnsafePathError` for patterns that try to
    leave the directory). Rules with no retention limit at all are refused: they could
    never remove anything, which is almost certainly a mistake in the registration.
    """
    if not isinstance(rules, CleanupRules):
        raise ValidationError(f"rules must be CleanupRules, got {type(rules).__name__}")
    if not isinstance(rules.recursive, bool) or not isinstance(rules.remove_empty_dirs, bool):
        raise ValidationError("recursive and remove_empty_dirs must be booleans")
    check_glob(rules.pattern, recursive=rules.recursive)
    if not isinstance(rules.exclude, tuple):
        raise ValidationError("exclude must be a tuple of globs")
    for pattern in rules.exclude:
        check_glob(pattern, recursive=rules.recursive, what="exclude pattern")
    if rules.age_basis not in _BASIS_ATTRS:
        raise ValidationError(f"age_basis must be one of {sorted(_BASIS_ATTRS)}")
    days = rules.retention_days
    if days is not None:
        check_retention_days(days)
    if rules.max_files is not None:
        check_int(rules.max_files, "max_files", minimum=0, maximum=MAX_INT32)
    if rules.max_total_bytes is not None:
        check_int(rules.max_total_bytes, "max_total_bytes", minimum=0, maximum=MAX_INT64)
    if days is None and rules.max_files is None and rules.max_total_bytes is None:
        raise ValidationError(
            "rules select nothing: set retention_days, max_files or max_total_bytes"
        )
    compiled = compile_globs((rules.pattern,))
    assert compiled is not None  # one pattern always compiles to a regex
    return CompiledRules(
        rules=rules,
        pattern=compiled,
        exclude=compile_globs(rules.exclude),
        basis_attr=_BASIS_ATTRS[rules.age_basis],
    )


__all__ = ["CompiledRules", "compile_rules"]
