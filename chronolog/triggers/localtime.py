"""Naming the zone of an ``/etc/localtime`` that is a copy, not a symlink.

A container often gets its zone as a copy of a tzdata file: a Dockerfile ``COPY``, or a
Kubernetes ``hostPath`` mount of the host's ``/etc/localtime``. Such a file has no name to
read off a link; the zone it holds is found by comparing its bytes with the tzdata files
that :mod:`zoneinfo` would load. The search reads only files of the same size, and its
answer is kept until the file changes (device, inode, size or modification time).
"""

from __future__ import annotations

import importlib.resources
import os
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

#: The machine's zone file.
LOCALTIME = Path("/etc/localtime")

#: Where tzdata lists its canonical zones: one per region whose clocks have agreed since
#: 1970 (the others are links to them). ``zone.tab`` would not do: it lists one zone per
#: country, links among them (``Arctic/Longyearbyen`` for Svalbard).
_ZONE_TABLE = "zone1970.tab"

_Key = tuple[int, int, int, int]
_last: tuple[_Key, str | None] | None = None


def zone_of_copy(path: Path = LOCALTIME) -> str | None:
    """The IANA name of the zone whose tzdata file holds the same bytes as ``path``, or
    None (no such file, or no zone matches). Among identical zones (links to one another)
    a canonical one is named."""
    global _last
    try:
        info = path.stat()
    except OSError:
        return None
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if _last is not None and _last[0] == key:
        return _last[1]
    try:
        data = path.read_bytes()
    except OSError:
        return None
    found = _matching_zone(data)
    _last = (key, found)
    return found


def _matching_zone(data: bytes) -> str | None:
    names = sorted(zoneinfo.available_timezones())  # a walk of the tzdata trees: once
    for root in _tzdata_roots():
        matches = []
        for name in names:
            file = root / name
            try:
                if file.stat().st_size == len(data) and file.read_bytes() == data:
                    matches.append(name)
            except OSError:
                continue
        if matches:
            canonical = _canonical_names(root)
            preferred = [name for name in matches if name in canonical or name == "UTC"]
            return (preferred or matches)[0]
    return None


def _tzdata_roots() -> Iterator[Path]:
    """The directories :mod:`zoneinfo` loads zones from, in its order."""
    for root in zoneinfo.TZPATH:
        if os.path.isdir(root):
            yield Path(root)
    try:
        package = importlib.resources.files("tzdata").joinpath("zoneinfo")
    except ModuleNotFoundError:
        return
    if isinstance(package, Path) and package.is_dir():
        yield package


def _canonical_names(root: Path) -> frozenset[str]:
    """The zones tzdata's table under ``root`` lists (empty when it has none)."""
    try:
        lines = (root / _ZONE_TABLE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return frozenset()
    rows = (line.split("\t") for line in lines if not line.startswith("#"))
    return frozenset(fields[2] for fields in rows if len(fields) >= 3)


__all__ = ["LOCALTIME", "zone_of_copy"]
