"""An asyncio event loop of chronolog's own, run by a daemon thread.

The executor runs coroutine task functions on one; the blocking facade (``svc.sync``) and
the agent tools' ``call_sync`` run their calls on one each.
"""

from __future__ import annotations

import asyncio
import threading


def start_loop_thread(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop and the started daemon thread ``name`` that runs it until stopped
    (``loop.call_soon_threadsafe(loop.stop)``); the caller closes the loop after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    return loop, thread


__all__ = ["start_loop_thread"]
