"""Space held back on the log's disk for when that disk fills up.

When the disk under the data directory is full, no event can be appended, so nothing the
scheduler decides can happen, and that includes the Housekeeper's cleanup runs: each is
recorded before it removes anything, so the one tool that could free the disk is stopped
by it. The store therefore keeps a file of ``size`` bytes in the data directory (its
blocks allocated with ``posix_fallocate``; where a file system cannot, random bytes, which
a compressing one stores too) and deletes it the first time an append finds the disk
full, then tries that append again: the log goes on in the space it held back, long
enough for cleanups to run and for someone to notice the warning. The file is written
again once the disk has twice its size free.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

RESERVE_FILENAME = "disk-reserve"
_CHUNK = 1 << 20


def _write_random(file: BinaryIO, size: int) -> None:
    """Fill ``file`` with ``size`` random bytes (a compressing file system keeps them)."""
    written = 0
    while written < size:
        chunk = min(_CHUNK, size - written)
        file.write(os.urandom(chunk))
        written += chunk


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on the file system holding ``path``."""
    return shutil.disk_usage(path).free


class DiskReserve:
    """The reserve file ``<directory>/disk-reserve`` of ``size`` bytes (0: none)."""

    def __init__(
        self, directory: Path, size: int, free: Callable[[Path], int] | None = None
    ) -> None:
        """``free``: how free space is measured (default :func:`free_bytes`)."""
        self.path = directory / RESERVE_FILENAME
        self.size = size
        self._free = free if free is not None else free_bytes

    @property
    def held(self) -> bool:
        """Whether the whole reserve is on disk."""
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def ensure(self) -> bool:
        """Write the reserve if it is missing and the disk has twice its size free (room
        to spare: taking the last free bytes would fill the disk it protects). Returns
        whether the reserve is held; a failure to write it leaves none (it is retried
        later) and is not an error."""
        if self.size <= 0:
            return False
        if self.held:
            return True
        try:
            if self._free(self.path.parent) < 2 * self.size:
                return False
            with open(self.path, "wb") as file:
                try:
                    # Blocks allocated without writing them: fast, and counted as used.
                    os.posix_fallocate(file.fileno(), 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    _write_random(file, self.size)
                file.flush()
                os.fsync(file.fileno())
        except OSError:
            self.release()
            return False
        return True

    def short_of_room(self) -> bool:
        """Whether the disk has less free than the reserve would give back (a failure to
        write there may well be for want of space)."""
        try:
            return self._free(self.path.parent) < self.size
        except OSError:
            return False

    def release(self) -> bool:
        """Delete the reserve; True when there was one to free."""
        try:
            self.path.unlink()
        except OSError:  # none there (or not ours to remove): nothing freed
            return False
        return True
