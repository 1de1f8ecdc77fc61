"""The scan: a sorted, fd-relative walk that collects facts about matching files.

Every directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd,
so a directory swapped for a symlink mid-walk makes the open fail instead of leading the
walk elsewhere. Symlinks are never followed (``DirEntry`` answers with
``follow_symlinks=False``), and a directory on another device is not entered.

Entries are visited depth first in sorted name order, so the walk order is the order of
relative paths compared component by component. That makes a resume cursor ("everything
up to this path is done") meaningful from one run to the next.
"""

from __future__ import annotations

import os
import stat
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec

from chronolog.housekeeping.names import display
from chronolog.housekeeping.paths import DIR_FLAGS, Target
from chronolog.housekeeping.policy import FileFact
from chronolog.housekeeping.rules import CompiledRules

_by_name = attrgetter("name")


class DirInfo(msgspec.Struct, frozen=True, gc=False):
    """One directory the walk entered; index 0 is the registered directory itself."""

    #: Index of the parent directory (-1 for the registered directory).
    parent: int
    name: str
    #: Path relative to the registered directory ('' for the directory itself).
    rel: str
    dev: int
    ino: int
    #: Number of entries in its listing (of any type, including ones the walk skipped).
    entries: int


@dataclass(slots=True)
class ScanResult:
    """What one scan found."""

    files: list[FileFact] = field(default_factory=list)
    dirs: list[DirInfo] = field(default_factory=list)
    #: Regular files visited (matching or not); what the file budget counts.
    examined: int = 0
    errors: list[str] = field(default_factory=list)
    #: When a budget stopped the scan: the relative path of the last file examined.
    stopped_after: str | None = None


@dataclass(slots=True)
class _Frame:
    fd: int
    dir_index: int
    prefix: str
    entries: list[os.DirEntry[str]]
    pos: int = 0
    #: Index of the entry to enter with the cursor still active (-1: none).
    cursor_entry: int = -1
    depth: int = 0


def scan(
    target: Target,
    rules: CompiledRules,
    *,
    start_after: tuple[str, ...] = (),
    max_files: int | None = None,
    deadline: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """Walk ``target`` and return the facts of the files matching ``rules``.

    Only paths after ``start_after`` (in walk order) are visited. The scan stops before
    examining another file once ``max_files`` files were examined or ``deadline`` (on the
    ``monotonic`` clock) has passed; it always examines at least one file, so a resumed run
    makes progress. Errors on single entries are collected, never raised.
    """
    result = ScanResult()
    try:
        entries = _listing(target.fd)
    except OSError as exc:
        result.errors.append(f".: cannot list: {exc.strerror}")
        entries = []
    result.dirs.append(DirInfo(-1, "", "", target.dev, target.ino, len(entries)))
    frame = _Frame(target.fd, 0, "", entries)
    _apply_cursor(frame, start_after)
    stack: list[_Frame] = []
    try:
        _walk(frame, stack, target, rules, start_after, max_files, deadline, monotonic, result)
    finally:
        for open_frame in stack:
            if open_frame.fd != target.fd:
                os.close(open_frame.fd)
    return result


def _walk(
    frame: _Frame,
    stack: list[_Frame],
    target: Target,
    rules: CompiledRules,
    start_after: tuple[str, ...],
    max_files: int | None,
    deadline: float | None,
    monotonic: Callable[[], float],
    result: ScanResult,
) -> None:
    # The hot loop: locals only, one fstatat per matching file, no stat for the rest.
    recursive = rules.rules.recursive
    match = rules.pattern.fullmatch
    exclude = rules.exclude.fullmatch if rules.exclude is not None else None
    basis_attr = rules.basis_attr
    root_dev = target.dev
    files = result.files
    errors = result.errors
    limit = max_files if max_files is not None else -1
    examined = 0
    last_rel = ""
    stack.append(frame)
    while stack:
        frame = stack[-1]
        if frame.pos >= len(frame.entries):
            stack.pop()
            if frame.fd != target.fd:
                os.close(frame.fd)
            continue
        index = frame.pos
        entry = frame.entries[index]
        frame.pos = index + 1
        name = entry.name
        rel = frame.prefix + name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file(follow_symlinks=False)
        except OSError:  # vanished between listing and lstat (d_type unknown)
            continue
        if is_dir:
            if recursive and (exclude is None or not exclude(rel)):
                child = _enter(frame, entry, rel, target, result)
                if child is not None:
                    if index == frame.cursor_entry:
                        _apply_cursor(child, start_after)
                    stack.append(child)
            continue
        if not is_file:
            continue  # symlinks, fifos, sockets, devices: never touched
        if examined == limit or (deadline is not None and examined and monotonic() >= deadline):
            result.stopped_after = last_rel
            break
        examined += 1
        last_rel = rel
        if match(rel) is None or (exclude is not None and exclude(rel) is not None):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"{display(rel)}: cannot stat: {exc.strerror}")
            continue
        if st.st_dev != root_dev or not stat.S_ISREG(st.st_mode):
            continue  # a bind-mounted file, or replaced since the listing
        files.append(
            FileFact(
                rel,
                frame.dir_index,
                name,
                st.st_dev,
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                getattr(st, basis_attr),
            )
        )
    result.examined = examined


def _enter(
    frame: _Frame, entry: os.DirEntry[str], rel: str, target: Target, result: ScanResult
) -> _Frame | None:
    """Open and list a subdirectory, or record why not."""
    try:
        fd = os.open(entry.name, DIR_FLAGS, dir_fd=frame.fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # ELOOP/ENOTDIR: it became a symlink or a file after the listing.
        result.errors.append(f"{display(rel)}: cannot enter directory: {exc.strerror}")
        return None
    try:
        st = os.fstat(fd)
        if st.st_dev != target.dev or (st.st_dev, st.st_ino) in target.skip:
            os.close(fd)  # another file system mounted here, or a protected directory
            return None
        entries = _listing(fd)
    except OSError as exc:
        os.close(fd)
        result.errors.append(f"{display(rel)}: cannot list directory: {exc.strerror}")
        return None
    result.dirs.append(
        DirInfo(frame.dir_index, entry.name, rel, st.st_dev, st.st_ino, len(entries))
    )
    return _Frame(fd, len(result.dirs) - 1, rel + "/", entries, depth=frame.depth + 1)


def _listing(fd: int) -> list[os.DirEntry[str]]:
    # scandir duplicates the fd for reading; the entries keep using ``fd`` for their
    # fstatat calls, so it must stay open while they are used.
    with os.scandir(fd) as it:
        entries = list(it)
    entries.sort(key=_by_name)
    return entries


def _apply_cursor(frame: _Frame, start_after: tuple[str, ...]) -> None:
    """Position ``frame`` just after the cursor (its components at this depth)."""
    depth = frame.depth
    if depth >= len(start_after):
        return
    wanted = start_after[depth]
    names = [entry.name for entry in frame.entries]
    pos = bisect_left(names, wanted)
    if pos < len(names) and names[pos] == wanted:
        try:
            is_dir = frame.entries[pos].is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        last = depth == len(start_after) - 1
        if is_dir and not last:
            frame.cursor_entry = pos  # the cursor lies inside: enter it with the cursor
        elif not is_dir:
            pos += 1  # the cursor file itself, or a file sorting before the cursor path
        # a directory named like the cursor *file* sorts after it: visit it whole
    frame.pos = pos


__all__ = ["DirInfo", "ScanResult", "scan"]
