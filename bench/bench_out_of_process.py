"""Event-loop lag with the scheduler out of the host's process: a design experiment.

Run: ``python bench/bench_out_of_process.py [--runs N]``. Prints JSON lines like the other
scripts (``bench``, ``value``, ``unit``, ``peer``, ``ratio``, ``target``).

``bench_runtime.py``'s ``loop_lag`` workload (10,000 concurrent ``schedule_event`` calls,
then 10,000 concurrent ``get_event``, and the sustained windows that keep 10,000 calls in
flight for 3 s; the same probe, harness and floors), with chronolog
running in a child process. The host keeps only a socket client: each call is one
length-prefixed msgpack frame on a ``socketpair``, the frames of a loop turn go out in one
write, and answers are handled 128 per turn. The child runs an ordinary
``SchedulerModule`` on its own event loop and answers through its facade.

This is not a chronolog feature: functions, executions and errors do not cross the
socket. It answers one question with a measurement: how much of the loop lag that the
host sees in ``bench_runtime.py`` comes from sharing one interpreter (its GIL and its
cyclic GC) with the scheduler. Peers in the same run: ``in_process`` (chronolog in the
host, ``bench_runtime.py --worker loop_lag:chronolog``) and ``bare`` (the floors alone in
an interpreter that imports no scheduler, over as long as this run's bursts took).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_runtime as runtime_bench
import msgspec

#: Frame header: the msgpack body's length.
_HEADER = struct.Struct("<I")
#: Frames handled per loop turn (as the facade's own inbox does).
FRAMES_PER_TURN = 128
#: The token of the control frames (ready, stop).
_CONTROL = -1
CALLS = 10_000


class FramedProtocol(asyncio.Protocol):
    """Length-prefixed msgpack frames over a stream socket.

    Frames sent within one loop turn go out in one write. Frames received are handed to
    ``handle`` at most :data:`FRAMES_PER_TURN` per loop turn, so a burst of answers does
    not hold the loop; reading pauses while a backlog waits.
    """

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self._handle = handle
        self._received = bytearray()
        self._frames: collections.deque[bytes] = collections.deque()
        self._outgoing: list[bytes] = []
        self._flush_armed = False
        self._drain_armed = False
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()

    def send(self, message: Any) -> None:
        """Queue one frame; it is written at the end of this loop turn."""
        body = self._encoder.encode(message)
        self._outgoing.append(_HEADER.pack(len(body)) + body)
        if not self._flush_armed and self._loop is not None:
            self._flush_armed = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued frames now."""
        self._flush_armed = False
        if self._outgoing and self._transport is not None:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing = []

    def data_received(self, data: bytes) -> None:
        self._received += data
        buffer, start, end = self._received, 0, len(self._received)
        while end - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if end - start - _HEADER.size < size:
                break
            body_start = start + _HEADER.size
            self._frames.append(bytes(buffer[body_start : body_start + size]))
            start = body_start + size
        del self._received[:start]
        assert self._transport is not None and self._loop is not None
        if len(self._frames) > 4 * FRAMES_PER_TURN:
            self._transport.pause_reading()
        if not self._drain_armed:
            self._drain_armed = True
            self._loop.call_later(0, self._drain)

    def _drain(self) -> None:
        self._drain_armed = False
        for _ in range(min(FRAMES_PER_TURN, len(self._frames))):
            self._handle(self._decoder.decode(self._frames.popleft()))
        assert self._transport is not None and self._loop is not None
        if self._frames:
            self._drain_armed = True
            self._loop.call_later(0, self._drain)
        elif not self._transport.is_reading():
            self._transport.resume_reading()


# --- the child: chronolog behind the socket ---------------------------------------------------


async def serve(fd: int, data_dir: Path) -> None:
    """Run chronolog and answer the host's calls until it says stop."""
    subject = runtime_bench.ChronologSubject(data_dir)
    await subject.start()
    svc = subject.svc
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(token: int, method: str, arguments: list[Any]) -> None:
        if method == "schedule_event":
            name, due = arguments
            scheduled = await svc.schedule_event(name, "probe", datetime.fromtimestamp(due, UTC))
            protocol.send([token, scheduled.ok, scheduled.value])
        else:
            found = await svc.get_event(arguments[0])
            protocol.send([token, found.ok, found.value.task_id if found.value else None])

    def handle(message: list[Any]) -> None:
        if message[0] == _CONTROL:
            stopping.set()
            return
        task = loop.create_task(answer(*message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    _, protocol = await loop.connect_accepted_socket(
        lambda: FramedProtocol(handle), socket.socket(fileno=fd)
    )
    protocol.send([_CONTROL, True, "ready"])
    await stopping.wait()
    await runtime_bench.stop_quietly(subject)


# --- the host: the harness and a socket client ------------------------------------------------


class RemoteScheduler:
    """The host's side: one future per call, resolved from the child's answer frames."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._last_token = 0
        self.ready: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self._waiting[_CONTROL] = self.ready
        self.protocol = FramedProtocol(self._answered)

    def _answered(self, message: list[Any]) -> None:
        token, ok, value = message
        future = self._waiting.pop(token, None)
        if future is not None and not future.done():
            future.set_result((ok, value))

    def call(self, method: str, *arguments: Any) -> asyncio.Future[tuple[bool, Any]]:
        """Send one call; the future of its (ok, value)."""
        self._last_token += 1
        future = self._loop.create_future()
        self._waiting[self._last_token] = future
        self.protocol.send([self._last_token, method, list(arguments)])
        return future

    def stop(self) -> None:
        """Ask the child to stop, now."""
        self.protocol.send([_CONTROL, "stop", []])
        self.protocol.flush()


async def measure(n: int) -> dict[str, Any]:
    """Start the child, run both bursts under the probe, stop the child."""
    host_end, child_end = socket.socketpair()
    data_dir = Path(tempfile.mkdtemp(prefix=runtime_bench.TMP_PREFIX))
    child = subprocess.Popen(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--serve",
            str(child_end.fileno()),
            str(data_dir),
        ],
        pass_fds=[child_end.fileno()],
    )
    child_end.close()
    loop = asyncio.get_running_loop()
    remote = RemoteScheduler(loop)
    try:
        await loop.connect_accepted_socket(lambda: remote.protocol, host_end)
        await asyncio.wait_for(remote.ready, 60)

        async def schedule_one(i: int) -> tuple[bool, Any]:
            spec = runtime_bench.far_future(i)
            return await remote.call("schedule_event", spec.name, spec.due)

        async def get_one(task_id: str) -> tuple[bool, Any]:
            return await remote.call("get_event", task_id)

        found: dict[str, Any] = {"n": n}
        scheduled, stats = await runtime_bench.burst(
            "schedule", n, lambda: runtime_bench.start_all(schedule_one, range(n))
        )
        ids = [value for ok, value in scheduled if ok]
        found.update(schedule_ok=len(ids), **stats)
        read, stats = await runtime_bench.burst(
            "read", n, lambda: runtime_bench.start_all(get_one, ids)
        )
        found.update(read_ok=sum(1 for ok, _ in read if ok), **stats)

        async def schedule_again(i: int, k: int) -> None:
            spec = runtime_bench.far_future(n + i * 1_000 + k)
            await remote.call("schedule_event", spec.name, spec.due)

        async def read_again(i: int, k: int) -> None:
            await remote.call("get_event", ids[i % len(ids)])

        found.update(await runtime_bench.sustained("sustained_schedule", n, schedule_again))
        found.update(await runtime_bench.sustained("sustained_read", n, read_again))
        return found
    finally:
        remote.stop()
        await asyncio.to_thread(child.wait, 60)
        host_end.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole comparison")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), Path(args.serve[1])))
        return
    runtime_bench.machine_line()
    for _ in range(args.runs):
        results = {"out_of_process": asyncio.run(measure(CALLS))}
        results["in_process"] = runtime_bench.run_worker("loop_lag", "chronolog", 1)
        ours = results["out_of_process"]
        floors = (ours.get("schedule_s", 1.0), ours.get("read_s", 0.15))
        results["bare"] = runtime_bench.run_worker("loop_lag", "bare", 1, floors)
        report(results)


def report(results: dict[str, dict[str, Any]]) -> None:
    """One line per figure: out-of-process, with in-process and bare as its peers."""
    for key, target in (
        ("schedule_p99_ms", "< 5"),
        ("schedule_max_ms", None),
        ("schedule_floor_p99_ms", None),
        ("read_p99_ms", "< 5"),
        ("read_max_ms", None),
        ("read_floor_p99_ms", None),
        ("sustained_schedule_p99_ms", "< 5"),
        ("sustained_schedule_floor_p99_ms", None),
        ("sustained_read_p99_ms", "< 5"),
        ("sustained_read_floor_p99_ms", None),
    ):
        value = results["out_of_process"].get(key)
        peers = {name: results[name].get(key) for name in ("in_process", "bare")}
        line: dict[str, Any] = {
            "bench": "out_of_process." + key.removesuffix("_ms"),
            "value": value,
            "unit": "ms",
            "peer": peers,
            "ratio": {
                name: value / theirs if value is not None and theirs else None
                for name, theirs in peers.items()
            },
            "target": target,
        }
        if target is not None:
            line["meets"] = value is not None and value < 5
        print(json.dumps(runtime_bench.rounded(line)), flush=True)
    kept = ("_s", "_samples", "_ok")
    detail = {
        name: {k: v for k, v in found.items() if "_ms" in k or k.endswith(kept)}
        for name, found in results.items()
    }
    print(
        json.dumps(runtime_bench.rounded({"bench": "out_of_process.detail", "detail": detail})),
        flush=True,
    )


if __name__ == "__main__":
    main()
