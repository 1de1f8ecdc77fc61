"""Length-prefixed pickle frames between the host and its scheduler process.

Both ends are this package, on one machine, over sockets only the two processes hold (a
``socketpair`` made by the host), so pickle is safe here and carries every value the
facade takes or returns (msgspec structs, datetimes, errors) without a schema of its own.

Two kinds of channel use the frames:

* :class:`ControlChannel`, blocking, one per scheduler process: start-up, function runs and their
  outcomes, new connections (their socket travels as ``SCM_RIGHTS`` ancillary data), stop.
  Any thread may send; one thread reads.
* :class:`FrameProtocol`, an asyncio protocol, one per event loop that calls the facade:
  the facade calls and their results, in batches: the messages of one loop turn travel
  as one frame, and messages received are handled at most :data:`MESSAGES_PER_TURN` per
  loop turn, so a burst of answers does not hold the loop.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import structlog

log = structlog.get_logger("chronolog.process")

#: Frame header: the pickled body's length.
HEADER = struct.Struct("<I")
#: Messages sent, and messages handled, per loop turn and connection: each answer handled
#: wakes a caller that then finishes its call (microseconds each), so a burst of 10,000
#: would hold the loop for tens of milliseconds.
MESSAGES_PER_TURN = 64
#: How long the control channel's writer waits for more frames to join a write (seconds):
#: fewer, larger writes, so fewer wake-ups that each want the GIL (runs are sent when
#: committed, 100 ms ahead of their instant by default, so this costs them nothing).
WRITE_DELAY = 0.0005
#: Bytes read from a socket at a time.
_READ_SIZE = 256 * 1024
#: Most descriptors one read of the control channel can carry.
_MAX_FDS = 16


def encode(message: Any) -> bytes:
    """One frame: header and pickled body."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def encode_batch(batch: list[Any], unsendable: Callable[[Any, Exception], None]) -> bytes:
    """One frame carrying ``batch`` as a list; a message pickle cannot carry is left out
    and handed to ``unsendable(message, error)``, and the rest still go."""
    try:
        return encode(batch)
    except Exception:
        kept = []
        for message in batch:
            try:
                pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                unsendable(message, exc)
            else:
                kept.append(message)
        return encode(kept)


def _report_unsendable(message: Any, error: Exception) -> None:
    """A control message is always this package's own: one that cannot pickle is a bug,
    said here, and the channel goes on."""
    log.error(
        "a control message cannot be sent",
        message=repr(message)[:200],
        error=f"{type(error).__name__}: {error}",
    )


class FrameBuffer:
    """Bytes received so far, cut into whole frame bodies."""

    def __init__(self) -> None:
        self._received = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; the bodies of the frames it completed, in order."""
        self._received += data
        buffer, start, end = self._received, 0, len(self._received)
        bodies: list[bytes] = []
        while end - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            body_start = start + HEADER.size
            if end - body_start < size:
                break
            bodies.append(bytes(buffer[body_start : body_start + size]))
            start = body_start + size
        del self._received[:start]
        return bodies


class ChannelClosedError(ConnectionError):
    """The other process closed the channel (or died)."""


class ControlChannel:
    """A blocking frame channel: any thread sends, one thread reads.

    Sending only queues the message; a thread of the channel's own pickles whatever is
    queued as one list, one frame, and writes it in one system call. A thread that wrote
    itself would give the GIL up in the call and then wait to get it back, up to the 5 ms
    switch interval while other threads run Python: the timer thread releasing a batch of
    50 due runs one write at a time was a quarter of a second late by the last. And the
    senders are busy threads (job shards committing fires) whose time pickling took.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._send_lock = threading.Lock()
        self._buffer = FrameBuffer()
        self._received: collections.deque[Any] = collections.deque()
        self._fds: collections.deque[int] = collections.deque()
        self._outbox: list[Any] = []
        self._unsent = 0  # messages queued or being written
        self._queued = threading.Condition()
        self._failure: str | None = None
        self.closed = False
        self._writer = threading.Thread(
            target=self._write_queued, name="chronolog-channel-writer", daemon=True
        )
        self._writer.start()

    def send(self, message: Any) -> None:
        """Queue one message for the writer (it must pickle: messages are this package's);
        :class:`ChannelClosedError` when the channel is closed or a write failed (the
        other end is gone)."""
        with self._queued:
            if self._failure is not None or self.closed:
                raise ChannelClosedError(self._failure or "the channel is closed")
            self._outbox.append(message)
            self._unsent += 1
            if len(self._outbox) == 1:
                self._queued.notify_all()

    def _write_queued(self) -> None:
        while True:
            with self._queued:
                while not self._outbox and not self.closed:
                    self._queued.wait()
                if not self._outbox:
                    return
            time.sleep(WRITE_DELAY)  # let more messages join this write
            with self._queued:
                batch, self._outbox = self._outbox, []
            frame = encode_batch(batch, _report_unsendable)
            try:
                with self._send_lock:
                    self._sock.sendall(frame)
            except OSError as exc:
                with self._queued:
                    self._failure = str(exc) or "the other process closed the channel"
                    self._outbox.clear()
                    self._unsent = 0
                    self._queued.notify_all()
                return
            with self._queued:
                self._unsent -= len(batch)
                if self._unsent == 0:
                    self._queued.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued frame was written (or could not be)."""
        with self._queued:
            return self._queued.wait_for(lambda: self._unsent == 0, timeout)

    def send_with_fd(self, message: Any, fd: int) -> None:
        """Send one message with a file descriptor attached (the other end gets a copy), now
        and from this thread: the descriptor has to travel with this frame's bytes."""
        frame = encode([message])
        try:
            with self._send_lock:
                sent = self._sock.sendmsg(
                    [frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                )
                if sent < len(frame):
                    self._sock.sendall(frame[sent:])
        except OSError as exc:
            raise ChannelClosedError(str(exc)) from exc

    def receive(self) -> Any:
        """The next message (blocking); :class:`ChannelClosedError` at the end."""
        while not self._received:
            self._read()
        return self._received.popleft()

    def take_fd(self) -> int:
        """A descriptor that arrived with the frames read so far (oldest first)."""
        return self._fds.popleft()

    def _read(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(
                _READ_SIZE, socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
            )
        except OSError as exc:
            raise ChannelClosedError(str(exc)) from exc
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)
        if not data:
            raise ChannelClosedError("the other process closed the channel")
        for body in self._buffer.feed(data):
            self._received.extend(pickle.loads(body))

    def messages(self) -> Iterator[Any]:
        """Every message until the channel closes."""
        while True:
            try:
                yield self.receive()
            except ChannelClosedError:
                return

    def close(self, flush_timeout: float = 5.0) -> None:
        """Write what is queued (waiting up to ``flush_timeout``), then close this end (the
        other end's reads then end)."""
        self.flush(flush_timeout)
        with self._queued:
            self.closed = True
            self._queued.notify_all()
        self._writer.join(timeout=flush_timeout)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class FrameProtocol(asyncio.Protocol):
    """Batches of messages over a stream socket on an event loop.

    Messages sent within one loop turn go out together, pickled as one list in one frame
    (one ``pickle.dumps`` for the batch costs far less per message than one each), at most
    :data:`MESSAGES_PER_TURN` per turn. ``unsendable(message, error)`` is called for a
    message pickle cannot carry (the rest of its batch still goes). ``handle(message)``
    gets each message received, at most :data:`MESSAGES_PER_TURN` per loop turn (reading
    pauses while a backlog waits); ``lost(error)`` is called once when the connection
    ends. Messages sent before the connection is made wait for it. Use it on its loop only.
    """

    def __init__(
        self,
        handle: Callable[[Any], None],
        *,
        unsendable: Callable[[Any, Exception], None],
        lost: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._handle = handle
        self._unsendable = unsendable
        self._lost = lost
        self._buffer = FrameBuffer()
        self._bodies: collections.deque[bytes] = collections.deque()
        self._received: collections.deque[Any] = collections.deque()
        self._outgoing: list[Any] = []
        self._flush_armed = False
        self._drain_armed = False
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.is_lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports are not asyncio classes.
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if self._outgoing:
            self._arm_flush(soon=True)

    def send(self, message: Any) -> None:
        """Queue one message; it goes out at the end of this loop turn (or a later one,
        when many are queued)."""
        self._outgoing.append(message)
        if not self._flush_armed and self._loop is not None:
            self._arm_flush(soon=True)

    def _arm_flush(self, *, soon: bool) -> None:
        assert self._loop is not None
        self._flush_armed = True
        if soon:
            self._loop.call_soon(self.flush)
        else:  # call_later(0): after the callbacks already due in the next turn
            self._loop.call_later(0, self.flush)

    def flush(self) -> None:
        """Write one batch of the queued messages now."""
        self._flush_armed = False
        if not self._outgoing or self._transport is None or self.is_lost:
            return
        batch = self._outgoing[:MESSAGES_PER_TURN]
        del self._outgoing[:MESSAGES_PER_TURN]
        self._transport.write(encode_batch(batch, self._unsendable))
        if self._outgoing:
            self._arm_flush(soon=False)

    def data_received(self, data: bytes) -> None:
        # Kept pickled until handled: one read can bring hundreds of answers, and
        # unpickling them all here would hold the loop as long as handling them would.
        self._bodies.extend(self._buffer.feed(data))
        assert self._transport is not None and self._loop is not None
        if len(self._bodies) > 4:
            self._transport.pause_reading()
        if self._bodies and not self._drain_armed:
            self._drain_armed = True
            # call_later(0), not call_soon: runs after the callbacks already due this turn.
            self._loop.call_later(0, self._drain)

    def _drain(self) -> None:
        self._drain_armed = False
        received, bodies, handle = self._received, self._bodies, self._handle
        for _ in range(MESSAGES_PER_TURN):
            if not received:
                if not bodies:
                    break
                received.extend(pickle.loads(bodies.popleft()))
                continue
            handle(received.popleft())
        if self._transport is None or self._loop is None:
            return
        if received or bodies:
            self._drain_armed = True
            self._loop.call_later(0, self._drain)
        elif not self.is_lost and not self._transport.is_reading():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_lost = True
        while self._bodies:  # answers that arrived before the end still count
            self._received.extend(pickle.loads(self._bodies.popleft()))
        while self._received:
            self._handle(self._received.popleft())
        if self._lost is not None:
            self._lost(exc)

    def close(self) -> None:
        """Close the connection (queued messages are written first)."""
        while self._outgoing and self._transport is not None and not self.is_lost:
            self.flush()
        if self._transport is not None:
            self._transport.close()
