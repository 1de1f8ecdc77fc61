"""Notices when blocking code stalls the executor's asyncio loop, and says where.

Every coroutine task function shares one loop. One that calls blocking code (``time.sleep``,
a synchronous HTTP client) inside an ``async def`` holds that loop: no other coroutine runs
meanwhile, and a timeout cannot cancel it, since cancelling needs the loop. The log stays
true (the timer records the timeouts), but nothing else says why the runs stopped. While
coroutine runs are under way, a watch thread posts a no-op to the loop every second; when
one has waited :data:`STALL_SECONDS`, it logs a warning with the loop thread's current line
(the blocking call) and the runs under way, and once the loop runs again, for how long it
was held.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger("chronolog.executor")

#: Seconds between two looks at the loop while coroutine runs are under way.
WATCH_INTERVAL = 1.0
#: Seconds a posted no-op may wait before the loop counts as held by blocking code.
STALL_SECONDS = 5.0
#: Lines of the loop thread's stack the warning gives.
STACK_LINES = 6


class LoopWatch:
    """Watches ``loop`` (run by ``loop_thread``) while ``runs()`` names coroutine runs
    under way (``(task_id, execution_id)`` pairs); :meth:`stop` ends the watch thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread: threading.Thread,
        runs: Callable[[], Sequence[tuple[str, str]]],
    ) -> None:
        self._loop = loop
        self._loop_thread = loop_thread
        self._runs = runs
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="chronolog-async-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the watch (it does not wait for a held loop)."""
        self._stopped.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stopped.wait(WATCH_INTERVAL):
            if not self._runs():
                continue
            answered = threading.Event()
            posted = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed: the executor has stopped
                return
            if answered.wait(STALL_SECONDS) or self._stopped.is_set():
                continue
            log.warning(
                "a coroutine task function holds the executor's event loop with blocking "
                "code (use await, or a synchronous function, which runs on a thread): no "
                "other coroutine runs, and timeouts cannot cancel it",
                held_seconds=round(time.monotonic() - posted, 1),
                at=self._where(),
                runs=[f"{task_id}/{execution_id}" for task_id, execution_id in self._runs()],
            )
            while not answered.wait(WATCH_INTERVAL):
                if self._stopped.is_set():
                    return
            log.info(
                "the executor's event loop runs again",
                held_seconds=round(time.monotonic() - posted, 1),
            )

    def _where(self) -> list[str]:
        """The loop thread's innermost lines, innermost first: the blocking call, and the
        task function's line that led to it (a library's own lines come first)."""
        frame = sys._current_frames().get(self._loop_thread.ident or -1)
        if frame is None:
            return []
        stack = traceback.extract_stack(frame, limit=STACK_LINES)
        return [f"{line.filename}:{line.lineno} in {line.name}" for line in reversed(stack)]


__all__ = ["STALL_SECONDS", "WATCH_INTERVAL", "LoopWatch"]
