"""The act phase: removing selected files and emptied directories through dir fds.

Directories are re-opened from the registered directory's fd, one ``O_NOFOLLOW``
component at a time, and each must still be the directory the scan saw (same device and
inode). A file is opened ``O_NOFOLLOW`` right before its removal and its identity
(device, inode, size, mtime, ctime and the age timestamp) compared with the scan; a file
that changed, vanished, became a link, or is open for writing is skipped. ctime guards
against a file deleted and re-created under a recycled inode number; it also changes on
rename or chmod, which merely postpones such a file to the next run.

POSIX has no "unlink this name only if it is still inode N": between the final check and
``unlinkat`` (microseconds) another process able to write in that directory could rename a
different file onto the name. Whatever is removed then is still a name *inside* the
registered directory, reached through the verified dir fd: a swap can never redirect a
removal outside it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Literal

from chronolog.housekeeping.names import display
from chronolog.housekeeping.paths import DIR_FLAGS
from chronolog.housekeeping.policy import FileFact
from chronolog.housekeeping.walk import DirInfo
from chronolog.housekeeping.writers import WriterProbe

#: Opening a file only to look at it: never follow a link, never block on a fifo, never
#: become its controlling terminal, never leak the fd. Opening does not change atime.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Outcome = Literal["removed", "skipped", "error"]


class DirectoryChangedError(Exception):
    """A directory on the path is gone, or is no longer the one the scan saw."""


class DirectoryOpener:
    """Hands out verified fds for the scan's directories, keeping the current chain open.

    Files are handled in walk order, so consecutive requests share most of their path;
    only the differing tail is closed and re-opened.
    """

    def __init__(self, root_fd: int, dirs: Sequence[DirInfo]) -> None:
        self._dirs = dirs
        self._chain: list[tuple[int, int]] = [(0, root_fd)]
        self._failed: dict[int, str] = {}

    def fd_for(self, index: int) -> int:
        """The fd of directory ``index``; raises :class:`DirectoryChangedError`."""
        if index < 0:
            raise ValueError("the registered directory has no parent here")
        chain = self._chain
        if chain[-1][0] == index:
            return chain[-1][1]
        path = self._path_to(index)
        keep = 0
        while keep < len(chain) and keep < len(path) and chain[keep][0] == path[keep]:
            keep += 1
        while len(chain) > keep:
            os.close(chain.pop()[1])
        for step in path[keep:]:
            if step in self._failed:
                raise DirectoryChangedError(self._failed[step])
            chain.append((step, self._open(step, chain[-1][1])))
        return chain[-1][1]

    def close(self) -> None:
        """Close every fd this opener opened (not the registered directory's)."""
        while len(self._chain) > 1:
            os.close(self._chain.pop()[1])

    def _path_to(self, index: int) -> list[int]:
        path = []
        while index >= 0:
            if index in self._failed:
                raise DirectoryChangedError(self._failed[index])
            path.append(index)
            index = self._dirs[index].parent
        path.reverse()
        return path

    def _open(self, index: int, parent_fd: int) -> int:
        info = self._dirs[index]
        try:
            fd = os.open(info.name, DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            reason = "directory vanished" if exc.errno == errno.ENOENT else "directory changed"
            self._failed[index] = f"{reason} ({exc.strerror})"
            raise DirectoryChangedError(self._failed[index]) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (info.dev, info.ino):
            os.close(fd)
            self._failed[index] = "directory replaced since the scan"
            raise DirectoryChangedError(self._failed[index])
        return fd


class FileRemover:
    """Re-checks and removes single files; remembers how many it removed per directory."""

    def __init__(self, opener: DirectoryOpener, dir_count: int, basis_attr: str) -> None:
        self._opener = opener
        self._basis_attr = basis_attr
        self._probe = WriterProbe()
        #: Files removed from each directory (by index), for the empty-directory pass.
        self.removed_per_dir = [0] * dir_count
        #: Files removed without knowing whether someone was writing them.
        self.writers_unchecked = 0

    def remove(self, fact: FileFact) -> tuple[Outcome, str | None, int]:
        """Remove ``fact``'s file if it is unchanged: ``(outcome, reason, bytes_freed)``."""
        try:
            dir_fd = self._opener.fd_for(fact.dir_index)
        except DirectoryChangedError as exc:
            return "skipped", str(exc), 0
        checked, st, reason = self._check(dir_fd, fact)
        if st is None:
            return ("error" if checked == "error" else "skipped"), reason, 0
        try:
            os.unlink(fact.name, dir_fd=dir_fd)
        except FileNotFoundError:
            return "skipped", "vanished before removal", 0
        except OSError as exc:
            return "error", exc.strerror or str(exc), 0
        if checked == "unknown":
            self.writers_unchecked += 1
        self.removed_per_dir[fact.dir_index] += 1
        # Another hard link keeps the data alive: unlinking this name frees nothing.
        return "removed", None, st.st_size if st.st_nlink == 1 else 0

    def _check(self, dir_fd: int, fact: FileFact) -> tuple[str, os.stat_result | None, str | None]:
        """``(writer state | "error" | "skipped", stat if removable, reason)``."""
        try:
            fd = os.open(fact.name, FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return "skipped", None, "vanished before removal"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "skipped", None, "replaced by a symbolic link"
            if exc.errno not in (errno.EACCES, errno.EPERM):
                return "error", None, exc.strerror or str(exc)
            # Not readable by us: check identity by name; writers cannot be checked.
            try:
                st = os.stat(fact.name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return "skipped", None, "vanished before removal"
            except OSError as stat_exc:
                return "error", None, stat_exc.strerror or str(stat_exc)
            if not self._same(st, fact):
                return "skipped", None, "changed since the scan"
            return "unknown", st, None
        try:
            st = os.fstat(fd)
            if not self._same(st, fact):
                return "skipped", None, "changed since the scan"
            state = self._probe.check(fd)
        finally:
            os.close(fd)
        if state == "busy":
            return "skipped", None, "open for writing by a process"
        return state, st, None

    def _same(self, st: os.stat_result, fact: FileFact) -> bool:
        return (
            stat.S_ISREG(st.st_mode)
            and st.st_ino == fact.ino
            and st.st_dev == fact.dev
            and st.st_size == fact.size
            and st.st_mtime_ns == fact.mtime_ns
            and st.st_ctime_ns == fact.ctime_ns
            and getattr(st, self._basis_attr) == fact.ts_ns
        )


def remove_empty_dirs(
    opener: DirectoryOpener, dirs: Sequence[DirInfo], removed_per_dir: Sequence[int]
) -> tuple[int, list[str]]:
    """Remove the directories below the root that the run left empty, deepest first.

    A directory qualifies when its listing at scan time is fully accounted for by files
    this run removed and subdirectories this pass removed. ``rmdir`` itself refuses a
    directory that is not empty, so a file created meanwhile is never lost. The registered
    directory (index 0) is never removed. Returns ``(removed, error messages)``.
    """
    remaining = [
        info.entries - removed for info, removed in zip(dirs, removed_per_dir, strict=True)
    ]
    removed_count = 0
    errors: list[str] = []
    # Walk order lists a parent before its children, so reversed it is children first.
    for index in range(len(dirs) - 1, 0, -1):
        if remaining[index] != 0:
            continue
        info = dirs[index]
        try:
            parent_fd = opener.fd_for(info.parent)
            st = os.stat(info.name, dir_fd=parent_fd, follow_symlinks=False)
        except (DirectoryChangedError, OSError):
            continue
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (info.dev, info.ino):
            continue
        try:
            os.rmdir(info.name, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                errors.append(f"{display(info.rel)}: cannot remove directory: {exc.strerror}")
            continue
        remaining[info.parent] -= 1
        removed_count += 1
    return removed_count, errors


__all__ = [
    "FILE_FLAGS",
    "DirectoryChangedError",
    "DirectoryOpener",
    "FileRemover",
    "Outcome",
    "remove_empty_dirs",
]
