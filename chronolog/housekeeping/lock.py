"""One cleanup run at a time per directory.

Two layers: a process-wide set keyed by the directory's ``(st_dev, st_ino)`` (so two
spellings of one directory collide, and the answer does not depend on the file system
supporting ``flock``), and a non-blocking ``flock`` on the directory fd, which also keeps
out a run in another process. A second run does not wait: it raises
:class:`CleanupBusyError` and changes nothing, so the caller can record "busy" and retry
on its next schedule.
"""

from __future__ import annotations

import errno
import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from chronolog.errors import ConflictError
from chronolog.housekeeping.names import display
from chronolog.housekeeping.paths import Target

_running: set[tuple[int, int]] = set()
_running_lock = threading.Lock()


class CleanupBusyError(ConflictError):
    """Another cleanup run over the same directory is in progress; nothing was changed."""

    code = "cleanup_busy"


@contextmanager
def exclusive_run(target: Target) -> Iterator[None]:
    """Hold the per-directory run lock for ``target`` or raise :class:`CleanupBusyError`."""
    key = (target.dev, target.ino)
    with _running_lock:
        if key in _running:
            raise _busy(target, "in this process")
        _running.add(key)
    try:
        try:
            fcntl.flock(target.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise _busy(target, "in another process") from None
            # flock unsupported here (some network file systems): the set still guards
            # this process, which is the only writer we can coordinate with anyway.
        try:
            yield
        finally:
            # Closing the fd releases the flock too; unlocking first keeps it explicit.
            with suppress(OSError):
                fcntl.flock(target.fd, fcntl.LOCK_UN)
    finally:
        with _running_lock:
            _running.discard(key)


def _busy(target: Target, where: str) -> CleanupBusyError:
    return CleanupBusyError(
        f"a cleanup of {display(target.path)!r} is already running {where}",
        details={"directory": display(target.path)},
    )


__all__ = ["CleanupBusyError", "exclusive_run"]
