"""Crash safety of the SQLite store: a writer killed at random moments loses nothing it
acknowledged and never leaves half a batch behind.

SIGKILL ends the process but not the machine, so this proves atomicity and recovery of the
log (WAL replay, lock release by the kernel), not durability across power loss, which is
what ``synchronous=FULL`` adds on top.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest

from chronolog.events import Envelope, EventMetadata, NextFireDecided
from chronolog.store import SQLiteEventStore

WORKER = Path(__file__).with_name("_store_worker.py")
ROUNDS = 24
#: Rounds rotate over a few data directories so that re-checking a whole log stays quick.
DATA_DIRS = 3
SEED = 20260101


class Ack(NamedTuple):
    """One batch the writer process reported as appended."""

    stream: str
    batch_id: str
    first_position: int
    last_position: int
    first_version: int
    last_version: int


def _parse_acks(lines: list[bytes]) -> list[Ack]:
    acks = []
    for raw in lines:
        if not raw.endswith(b"\n") or not raw.startswith(b"ack "):
            continue  # the line the kill cut short was never fully acknowledged
        _, stream, batch_id, *numbers = raw.decode().split()
        first_pos, last_pos, first_ver, last_ver = map(int, numbers)
        acks.append(Ack(stream, batch_id, first_pos, last_pos, first_ver, last_ver))
    return acks


def _run_and_kill(data_dir: Path, round_no: int, delay: float) -> list[Ack]:
    """Start a crash writer, let it append for ``delay`` seconds, SIGKILL it, return its acks.

    Odd rounds write with ``one_statement_commits`` (each data directory sees both ways)."""
    mode = ["one-statement"] if round_no % 2 else []
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "crash-writer", str(data_dir), str(round_no), *mode],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw)
            if raw == b"ready\n":
                ready.set()
        ready.set()

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert ready.wait(30), "the writer process never opened the store"
        time.sleep(delay)  # the random crash moment: what this test is about
        assert proc.poll() is None, "the writer died on its own"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
    assert proc.returncode == -signal.SIGKILL
    return _parse_acks(lines)


def _batch_of(envelope: Envelope) -> tuple[str, int, int]:
    event = envelope.event
    assert isinstance(event, NextFireDecided)
    batch_id, index, size = event.notes
    return batch_id, int(index), int(size)


def _check_log(store: SQLiteEventStore, acked: dict[str, Ack]) -> int:
    """Assert the log is whole and holds every acknowledged batch; return its batch count."""
    log = store.read_all()
    assert [e.position for e in log] == list(range(1, len(log) + 1)), "positions have gaps"
    assert store.last_position() == len(log)

    by_stream: dict[str, list[int]] = defaultdict(list)
    batches: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in log:
        by_stream[envelope.stream_id].append(envelope.stream_version)
        batch_id, _, _ = _batch_of(envelope)
        assert envelope.metadata.correlation_id == batch_id
        batches[batch_id].append(envelope)
    for stream, versions in by_stream.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream} versions have gaps"

    for batch_id, members in batches.items():
        size = _batch_of(members[0])[2]
        assert [_batch_of(e)[1] for e in members] == list(range(size)), (
            f"batch {batch_id} is partly visible: {len(members)} of {size} events"
        )
        first, last = members[0], members[-1]
        assert [e.position for e in members] == list(range(first.position, last.position + 1))
        assert {e.stream_id for e in members} == {first.stream_id}

    for ack in acked.values():
        found = batches.get(ack.batch_id)
        assert found is not None, f"acknowledged batch {ack.batch_id} was lost"
        assert (
            found[0].stream_id,
            found[0].position,
            found[-1].position,
            found[0].stream_version,
            found[-1].stream_version,
        ) == (
            ack.stream,
            ack.first_position,
            ack.last_position,
            ack.first_version,
            ack.last_version,
        )
    return len(batches)


class TestCrashSafety:
    def test_sigkilled_writer_keeps_every_acknowledged_batch_whole(self, tmp_path: Path) -> None:
        """After each of many SIGKILLs at random moments, the reopened log holds every
        acknowledged batch in order, gapless, and no batch only partly."""
        rng = random.Random(SEED)
        acked: list[dict[str, Ack]] = [{} for _ in range(DATA_DIRS)]
        rounds_with_acks = 0
        for round_no in range(ROUNDS):
            data_dir = tmp_path / f"log{round_no % DATA_DIRS}"
            acks = _run_and_kill(data_dir, round_no, rng.uniform(0.0, 0.25))
            rounds_with_acks += bool(acks)
            known = acked[round_no % DATA_DIRS]
            known.update((ack.batch_id, ack) for ack in acks)
            # Reopening for writing also proves the dead process's lock is gone.
            with SQLiteEventStore(data_dir) as store:
                assert _check_log(store, known) >= len(known)
        # Killed mid-stream often enough to mean something.
        assert rounds_with_acks >= ROUNDS * 2 // 3
        assert sum(map(len, acked)) >= 100


class TestCrashChecker:
    """The checker above must be able to fail, or the crash test proves nothing."""

    def _log_with_batches(self, data_dir: Path) -> list[Ack]:
        from _store_worker import batch_events

        acks = []
        with SQLiteEventStore(data_dir) as store:
            for n, size in enumerate((3, 5)):
                stored = store.append(
                    "s",
                    batch_events("s", f"b{n}", size),
                    metadata=EventMetadata(correlation_id=f"b{n}"),
                )
                acks.append(
                    Ack(
                        "s",
                        f"b{n}",
                        stored[0].position,
                        stored[-1].position,
                        stored[0].stream_version,
                        stored[-1].stream_version,
                    )
                )
        return acks

    def test_checker_detects_a_partly_visible_batch(self, tmp_path: Path) -> None:
        """A batch missing its last event is reported even though positions stay gapless."""
        self._log_with_batches(tmp_path)
        with sqlite3.connect(tmp_path / "events.sqlite3") as conn:
            conn.execute("DELETE FROM events WHERE position = (SELECT MAX(position) FROM events)")
        with SQLiteEventStore(tmp_path) as store, pytest.raises(AssertionError, match="partly"):
            _check_log(store, {})

    def test_checker_detects_a_lost_acknowledged_batch(self, tmp_path: Path) -> None:
        """An acknowledged batch that is not in the log is reported as lost."""
        acks = self._log_with_batches(tmp_path)
        ghost = acks[-1]._replace(batch_id="ghost")
        with SQLiteEventStore(tmp_path) as store, pytest.raises(AssertionError, match="lost"):
            _check_log(store, {a.batch_id: a for a in [*acks, ghost]})
