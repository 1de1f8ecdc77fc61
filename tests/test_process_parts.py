"""The process engine's parts without a second process: frames cut from any stream of
bytes, the control channel over a socketpair, and the scheduler process's executor
stand-in (what it tracks, what it tells the host)."""

from __future__ import annotations

import pickle
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronolog.actors.executor import ExecutionRequest, Executor
from chronolog.domain.commands import Finish
from chronolog.functions import FunctionRegistry
from chronolog.process.frames import ChannelClosedError, ControlChannel, FrameBuffer, encode
from chronolog.process.messages import Cancel, Run
from chronolog.process.remote_executor import RemoteExecutor

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

messages = st.lists(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    ),
    max_size=12,
)


@given(messages, st.lists(st.integers(min_value=1, max_value=64), max_size=40))
@settings(max_examples=150, deadline=None)
def test_frames_survive_any_cutting_of_the_stream(sent: list[Any], cuts: list[int]) -> None:
    """However the bytes arrive (one at a time, in odd chunks, all at once), the buffer
    yields exactly the frames sent, in order, and keeps an incomplete tail for later."""
    stream = b"".join(encode(m) for m in sent)
    buffer, bodies, at = FrameBuffer(), [], 0
    for size in cuts:
        bodies += buffer.feed(stream[at : at + size])
        at += size
    bodies += buffer.feed(stream[at:])
    assert [pickle.loads(b) for b in bodies] == sent
    assert buffer.feed(b"") == []


def test_control_channel_carries_batches_and_drops_only_what_cannot_pickle() -> None:
    """Messages sent from several threads all arrive; one that pickle cannot carry is
    dropped alone (its batch still goes); after close the reader sees the end, and a send
    on a closed channel is an error."""
    left, right = socket.socketpair()
    sender, receiver = ControlChannel(left), ControlChannel(right)
    right.settimeout(10)  # a message that never comes fails the test instead of hanging it
    try:

        def send(base: int) -> None:
            for i in range(200):
                sender.send(("n", base + i))

        threads = [threading.Thread(target=send, args=(k * 1000,)) for k in range(3)]
        for thread in threads:
            thread.start()
        sender.send(("bad", lambda: None))
        for thread in threads:
            thread.join()
        sender.send(("last", 0))
        assert sender.flush(10)
        got = []
        while not got or got[-1] != ("last", 0):
            got.append(receiver.receive())
        assert sorted(v for kind, v in got if kind == "n") == sorted(
            k * 1000 + i for k in range(3) for i in range(200)
        )
        assert not [m for m in got if m[0] == "bad"]
        sender.close()
        assert list(receiver.messages()) == []
        with pytest.raises(ChannelClosedError):
            sender.send(("after", 1))
    finally:
        receiver.close(0)


class _Host:
    """What the stand-in tells the host, and the runtime's finish callback."""

    def __init__(self) -> None:
        self.told: list[object] = []
        self.finished: list[tuple[str, Finish]] = []

    def tell(self, message: object) -> None:
        self.told.append(message)

    def on_finish(self, task_id: str, finish: Finish) -> None:
        self.finished.append((task_id, finish))


def _request(
    n: int, function: str = "work", *, release_in: float | None = None
) -> ExecutionRequest:
    return ExecutionRequest(
        task_id=f"t{n}",
        execution_id=f"e{n}",
        function_name=function,
        parameters={},
        nominal_time=T0,
        attempt=1,
        idempotency_key=f"t{n}:{T0.isoformat()}",
        release_at=None
        if release_in is None
        else datetime.now(UTC) + timedelta(seconds=release_in),
    )


def _stand_in(host: _Host) -> tuple[RemoteExecutor, Executor]:
    registry = FunctionRegistry()
    registry.register("local.cleanup", lambda: "cleaned")
    local = Executor(registry, host.on_finish, threads=1)
    return RemoteExecutor(local, host.tell, host.on_finish, {"local.cleanup"}), local


def test_runs_are_tracked_until_their_report_and_held_ones_until_released() -> None:
    """A run counts as running from submit (or hold) until the host's report, which reaches
    the runtime before the run stops counting; a held run is sent at once with its
    release instant and counts as held (not idle-blocking) until released."""
    host = _Host()
    executor, _ = _stand_in(host)
    try:
        executor.submit(_request(1))
        executor.hold(_request(2, release_in=60))
        assert [type(m) for m in host.told] == [Run, Run]
        assert isinstance(host.told[1], Run) and host.told[1].request.release_at is not None
        assert executor.is_running("e1") and executor.is_task_running("t2")
        assert executor.running == 2
        assert not executor.wait_released(0.01)
        assert not executor.wait_idle(0.01)  # e1 runs
        finish = Finish(execution_id="e1", outcome="succeeded", duration_seconds=0.1)
        executor.finished("t1", finish)
        assert host.finished == [("t1", finish)]
        assert not executor.is_running("e1")
        assert executor.wait_idle(0.01)  # only a held run is left: it has not begun
        executor.release("e2")
        assert executor.wait_released(0.01)
        assert not executor.wait_idle(0.01)
        executor.forget("e2")
        assert executor.wait_idle(0.01) and executor.running == 0
    finally:
        executor.shutdown(wait=False)


def test_cancel_reaches_the_host_and_unknown_ids_fall_through_to_the_local_executor() -> None:
    """Cancelling a host run (held or running) tells the host; an id the stand-in does not
    know is the local executor's (False when nobody knows it)."""
    host = _Host()
    executor, _ = _stand_in(host)
    try:
        executor.hold(_request(1, release_in=60))
        executor.submit(_request(2))
        assert executor.cancel("e1") and executor.cancel("e2")
        assert [m for m in host.told if isinstance(m, Cancel)] == [Cancel("e1"), Cancel("e2")]
        assert not executor.cancel("nobody")
    finally:
        executor.shutdown(wait=False)


def test_local_functions_run_here_and_never_reach_the_host() -> None:
    """The scheduler process's own function (the Housekeeper's cleanup) runs on the local
    executor: the host is told nothing and the report comes from here."""
    host = _Host()
    executor, _ = _stand_in(host)
    try:
        executor.submit(_request(1, "local.cleanup"))
        assert executor.wait_idle(5)
        assert host.told == []
        [(task_id, finish)] = host.finished
        assert (task_id, finish.outcome, finish.result) == ("t1", "succeeded", "cleaned")
    finally:
        executor.shutdown(wait=False)


def test_losing_the_host_forgets_started_runs_and_shutdown_cancels_held_ones() -> None:
    """When the host is gone its started runs are no longer running (the log keeps them
    open for recovery); a shutdown tells the host to drop held runs and forgets them."""
    host = _Host()
    executor, _ = _stand_in(host)
    executor.submit(_request(1))
    executor.hold(_request(2, release_in=60))
    executor.host_lost()
    assert not executor.is_running("e1") and executor.is_running("e2")
    executor.shutdown(wait=True, timeout=1)
    assert not executor.is_running("e2") and executor.running == 0
    assert Cancel("e2") in host.told
    executor.submit(_request(3))  # after shutdown: never sent, never tracked
    assert not executor.is_running("e3")
    assert not [m for m in host.told if isinstance(m, Run) and m.request.execution_id == "e3"]
