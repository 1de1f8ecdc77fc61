"""How the command line prints: tables for people, JSON for scripts, progress on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

import msgspec

_ENCODER = msgspec.json.Encoder(order="deterministic")


def to_jsonable(value: Any) -> Any:
    """Structs, datetimes and tuples as plain JSON values."""
    return msgspec.to_builtins(value, builtin_types=(), str_keys=True)


def print_json(value: Any, out: TextIO | None = None) -> None:
    """One JSON document on stdout."""
    stream = out or sys.stdout
    stream.write(_ENCODER.encode(to_jsonable(value)).decode() + "\n")


def cell(value: Any) -> str:
    """A value as table text."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def print_table(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], out: TextIO | None = None
) -> None:
    """Aligned columns with a header line."""
    stream = out or sys.stdout
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    stream.write(line.rstrip() + "\n")
    for row in text_rows:
        stream.write(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    if not text_rows:
        stream.write("(none)\n")


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        """Show ``done`` of ``total``."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            self.stream.write(
                f"\r{self.label} [{bar:<30}] {fraction:6.1%} ({done:,}/{self.total:,})"
            )
        else:
            self.stream.write(f"\r{self.label} {done:,}")
        self.stream.flush()

    def finish(self) -> None:
        """End the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
