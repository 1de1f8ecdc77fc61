"""Glob patterns of cleanup rules, translated to anchored regular expressions.

``fnmatch`` cannot be used: its ``*`` crosses ``/``, so ``*.log`` would reach into every
subdirectory. Patterns are matched against the path relative to the registered directory:

- ``*`` matches any run of characters except ``/`` (dot files included, as in fnmatch);
- ``?`` matches one character except ``/``;
- ``[abc]``, ``[a-z]``, ``[!abc]`` match one character from (or not from) the set, never
  ``/``; an unclosed ``[`` is a literal;
- ``\\x`` matches ``x`` literally;
- a whole ``**`` segment matches zero or more directories (``**/*.log``, ``a/**/b``) or,
  as the last segment, everything below (``a/**``); inside a segment (``a**b``) it is an
  ordinary ``*``.

Patterns never navigate: they only filter paths the walk produced, which contain no ``.``
or ``..``. Absolute patterns and ``..`` segments are still refused, because they say the
author expected to reach outside the directory.
"""

from __future__ import annotations

import re

from chronolog.errors import UnsafePathError, ValidationError
from chronolog.limits import is_utf8

# Characters that keep a special meaning inside a regex character class.
_CLASS_SPECIAL = frozenset("\\^-[]")


def check_glob(pattern: object, *, recursive: bool, what: str = "pattern") -> str:
    """Return ``pattern`` if it is a well-formed relative glob, else raise.

    Raises :class:`UnsafePathError` for absolute patterns and ``..`` segments, and
    :class:`ValidationError` for empty, malformed or (without ``recursive``) multi-segment
    patterns, which could never match.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"{what} must be a non-empty string, got {pattern!r}")
    if "\0" in pattern:
        raise ValidationError(f"{what} {pattern!r} contains a NUL character")
    if not is_utf8(pattern):
        raise ValidationError(f"{what} {pattern!r} is not valid Unicode text (a lone surrogate)")
    if pattern.startswith("/"):
        raise UnsafePathError(f"{what} {pattern!r} is absolute; patterns are relative")
    segments = pattern.split("/")
    if ".." in segments:
        raise UnsafePathError(f"{what} {pattern!r} contains '..'")
    if "" in segments or "." in segments:
        raise ValidationError(f"{what} {pattern!r} has an empty or '.' segment")
    if len(segments) > 1 and not recursive:
        raise ValidationError(
            f"{what} {pattern!r} contains '/', which only matches with recursive=True"
        )
    return pattern


def glob_to_regex(pattern: str) -> str:
    """Translate a (checked) glob into a regex for :func:`re.fullmatch` with ``re.DOTALL``."""
    segments = pattern.split("/")
    last = len(segments) - 1
    parts: list[str] = []
    for index, segment in enumerate(segments):
        if segment == "**":
            # Zero or more whole directories; as the last segment, one or more segments.
            parts.append(".+" if index == last else "(?:.*/)?")
            continue
        parts.append(_segment_regex(segment))
        if index != last:
            parts.append("/")
    return "".join(parts)


def compile_globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled regex matching any of ``patterns`` (None when there are none)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{glob_to_regex(p)})" for p in patterns), re.DOTALL)


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            if i < n:
                out.append(re.escape(segment[i]))
                i += 1
            else:
                out.append(re.escape("\\"))
        elif char == "[":
            end = _class_end(segment, i)
            if end < 0:
                out.append(re.escape("["))
            else:
                out.append(_class_regex(segment[i:end]))
                i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _class_end(segment: str, start: int) -> int:
    """Index of the ``]`` closing a class whose body starts at ``start``, or -1."""
    j = start
    if j < len(segment) and segment[j] == "!":
        j += 1
    if j < len(segment) and segment[j] == "]":  # a leading ']' is a member, as in fnmatch
        j += 1
    end = segment.find("]", j)
    return end


def _class_regex(body: str) -> str:
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        low = body[i]
        if i + 2 < n and body[i + 1] == "-":
            high = body[i + 2]
            i += 3
            if low <= high:  # a reversed range matches nothing, as in fnmatch
                items.append(f"{_class_char(low)}-{_class_char(high)}")
        else:
            items.append(_class_char(low))
            i += 1
    members = "".join(items)
    if negate:
        return f"[^/{members}]"  # a class never matches the separator
    return f"[{members}]" if members else "(?!)"


def _class_char(char: str) -> str:
    return "\\" + char if char in _CLASS_SPECIAL else char


__all__ = ["check_glob", "compile_globs", "glob_to_regex"]
