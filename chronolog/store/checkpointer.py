"""Folding the log's WAL into its database file on a thread of its own.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold: the
writer then copies the WAL into the database file and syncs it before the commit
returns, while every append and fire waits behind it (in a probe of 192,000 events
appended 16 at a time, the worst commit took 21-26 ms). Here a thread of its own runs
``PASSIVE`` checkpoints (which never block the writer) once enough has been committed,
and at least every second while anything was, so the automatic checkpoint finds little
left to copy (the worst commit of the same probe: 13-15 ms). The automatic one stays:
only a checkpoint that runs while nothing is appended can fold the whole WAL and let
it start over, and without that the WAL only grew and commits that extend the file
were 10-15 % slower.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("chronolog.store")

#: Committed events after which the checkpointer is woken at once (about 1,000 pages).
CHECKPOINT_EVENTS = 8_000

#: Seconds the checkpointer waits at most before folding what was committed meanwhile.
CHECKPOINT_INTERVAL = 1.0


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection and thread."""

    def __init__(
        self,
        path: Path,
        *,
        every_events: int | None = None,
        interval: float | None = None,
    ) -> None:
        """``every_events`` and ``interval``: :data:`CHECKPOINT_EVENTS` and
        :data:`CHECKPOINT_INTERVAL` unless given."""
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._every_events = CHECKPOINT_EVENTS if every_events is None else every_events
        self._interval = CHECKPOINT_INTERVAL if interval is None else interval
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._uncheckpointed = 0
        self._stopping = False
        self._failed = False
        #: Checkpoints run (tests and diagnostics).
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=self._run, name="chronolog-store-checkpointer", daemon=True
        )
        self._thread.start()

    def committed(self, events: int) -> None:
        """The writer committed ``events`` more; wakes the checkpointer when enough wait."""
        with self._lock:
            self._uncheckpointed += events
            due = self._uncheckpointed >= self._every_events
        if due:
            self._wake.set()

    def close(self) -> None:
        """Stop the thread (after a checkpoint in progress) and close the connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping:
                return
            with self._lock:
                waiting, self._uncheckpointed = self._uncheckpointed, 0
            if waiting:
                self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            # A full disk, say: the WAL keeps the events meanwhile, and the next round
            # tries again. Said once until a checkpoint works again.
            if not self._failed:
                log.warning("checkpointing the event log failed", error=str(exc))
            self._failed = True
            return
        self._failed = False
        self.checkpoints += 1


__all__ = ["CHECKPOINT_EVENTS", "CHECKPOINT_INTERVAL", "Checkpointer"]
