"""Is another process writing this file? Asked through a Linux read lease.

``fcntl(fd, F_SETLEASE, F_RDLCK)`` on an ``O_RDONLY`` fd fails with ``EAGAIN`` while any
process has the file open for writing (a writable ``mmap`` counts too); we take the lease
and drop it at once. Taking a lease needs the file's owner or ``CAP_LEASE``; on other
platforms, file systems without leases (some network and FUSE file systems), or without
the privilege, the answer is ``"unknown"`` and the caller proceeds (and counts the file as
unchecked). A file opened for writing *after* the check is not detected: no cheap check
can close that window.

The hazard this module exists to contain: if a writer opens the file during the
microseconds we hold the lease, the kernel signals the lease holder, by default with
SIGIO, whose default action terminates the process. So before taking a lease we route the
notification (``F_SETSIG``) to SIGURG, whose default action is to ignore it. If the host
application handles SIGURG itself, we fall back to SIGIO only when the host handles or
ignores SIGIO, and otherwise do not take leases at all.
"""

from __future__ import annotations

import errno
import fcntl
import signal
from contextlib import suppress
from typing import Literal

WriterState = Literal["free", "busy", "unknown"]

_F_SETLEASE: int | None = getattr(fcntl, "F_SETLEASE", None)
_F_SETSIG: int | None = getattr(fcntl, "F_SETSIG", None)
_F_RDLCK: int = getattr(fcntl, "F_RDLCK", 0)
_F_UNLCK: int = getattr(fcntl, "F_UNLCK", 2)
_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})


def lease_signal() -> int | None:
    """The signal number for ``F_SETSIG`` that cannot kill us (0 = SIGIO), or None."""
    if _F_SETLEASE is None or _F_SETSIG is None:
        return None
    sigurg = getattr(signal, "SIGURG", None)
    if sigurg is not None and signal.getsignal(sigurg) in (signal.SIG_DFL, signal.SIG_IGN):
        return int(sigurg)
    sigio = getattr(signal, "SIGIO", None)
    if sigio is not None and signal.getsignal(sigio) not in (signal.SIG_DFL, None):
        return 0  # the host handles or ignores SIGIO, so the plain notification is safe
    return None


class WriterProbe:
    """Checks whether any process (this one included) has a file open for writing.

    Create one per run: it reads the signal dispositions once.
    """

    __slots__ = ("_signal",)

    def __init__(self) -> None:
        self._signal = lease_signal()

    @property
    def enabled(self) -> bool:
        """Whether leases will be tried at all on this platform and process."""
        return self._signal is not None

    def check(self, fd: int) -> WriterState:
        """``"busy"`` if any process has ``fd``'s file open for writing.

        ``fd`` must be an ``O_RDONLY`` descriptor of a regular file.
        """
        if self._signal is None or _F_SETLEASE is None or _F_SETSIG is None:
            return "unknown"
        try:
            fcntl.fcntl(fd, _F_SETSIG, self._signal)
            fcntl.fcntl(fd, _F_SETLEASE, _F_RDLCK)
        except OSError as exc:
            return "busy" if exc.errno in _BUSY else "unknown"
        with suppress(OSError):  # closing the fd releases the lease anyway
            fcntl.fcntl(fd, _F_SETLEASE, _F_UNLCK)
        return "free"


__all__ = ["WriterProbe", "WriterState", "lease_signal"]
