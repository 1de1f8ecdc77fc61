"""One event loop's connection to the scheduler process, and its calls in flight.

Each event loop of the host that calls the facade gets a socketpair of its own; the far
end travels to the scheduler process over the control channel. Calls are futures under
integer tokens (:class:`~chronolog.host_loop.PendingFutures`: no timer per call); the
:class:`~chronolog.process.frames.FrameProtocol` batches them per loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from chronolog.errors import RequestTimeoutError, ValidationError
from chronolog.host_loop import PendingFutures
from chronolog.process.child_process import ChildProcess, gone
from chronolog.process.frames import FrameProtocol
from chronolog.result import Result

#: The host's own bound on a facade call. The scheduler process answers every call within
#: its own timeouts (the Housekeeper's are the longest, 300 s); this only catches a process
#: that hangs.
CALL_TIMEOUT = 330.0


class LoopLink:
    """One event loop's connection to the scheduler process, and its calls in flight."""

    def __init__(self, child: ChildProcess, loop: asyncio.AbstractEventLoop) -> None:
        #: The scheduler process this connection reaches (a restarted one needs a new link).
        self.child = child
        self.ended = False
        self._protocol = FrameProtocol(self._answered, unsendable=self._unsendable, lost=self._lost)
        self._pending = PendingFutures(loop, CALL_TIMEOUT, _no_answer)
        self._sock, theirs = socket.socketpair()
        try:
            child.connect(theirs)
        except BaseException:
            self._sock.close()
            raise
        finally:
            theirs.close()
        self._connecting: asyncio.Task[None] | None = loop.create_task(self._open(loop))

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.connect_accepted_socket(lambda: self._protocol, self._sock)
        except OSError as exc:
            self._sock.close()
            self._lost(exc)
        finally:
            self._connecting = None

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Send one call (with the others of this loop turn); the future of its ``Result``."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._protocol.send((self._pending.add(future), name, args, kwargs))
        return future

    def _unsendable(self, call: tuple[Any, ...], error: Exception) -> None:
        future = self._pending.pop(call[0])
        if future is not None and not future.done():
            future.set_exception(
                ValidationError(
                    f"the arguments of {call[1]} cannot be sent to the scheduler process "
                    f"({type(error).__name__}: {error})"
                )
            )

    def _answered(self, message: tuple[int, Result[Any]]) -> None:
        token, result = message
        future = self._pending.pop(token)
        if future is not None and not future.done():
            future.set_result(result)

    def _lost(self, exc: BaseException | None) -> None:
        self.ended = True
        self._pending.fail_all(gone)

    def discard(self) -> None:
        """Close the socket of a link whose loop is closed."""
        self.ended = True
        self._sock.close()

    def end(self) -> None:
        """The scheduler process is gone (called from any thread)."""
        self.ended = True
        loop = self._pending.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._protocol.close)


def _no_answer() -> RequestTimeoutError:
    return RequestTimeoutError(f"the scheduler process did not answer within {CALL_TIMEOUT:.0f} s")
