"""A second process for the SQLite store tests (run as a script, never collected).

Roles (first argument):

``crash-writer DATA_DIR SEED [one-statement]``
    Appends batches of 1..50 events from several threads to several streams, each with the
    expected version, and prints one line per *acknowledged* batch, flushed:
    ``ack <stream> <batch_id> <first_pos> <last_pos> <first_version> <last_version>``.
    Each event carries its batch id, index and batch size (in ``NextFireDecided.notes``),
    so a reader can tell whether a batch is complete. Runs until killed.
``try-writer DATA_DIR``
    Tries to open the store for writing; prints ``opened`` or ``locked <message>``.
``lockstep-reader DATA_DIR``
    Opens the store read-only and, for each target position read from stdin, waits for
    it, reads the whole log and prints ``saw <last_position> <count> <gapless>``.
``appender DATA_DIR COUNT``
    Opens the store for writing, prints ``ready``, waits for a line on stdin, appends
    ``COUNT`` single events, prints ``done`` and waits for stdin to close.
"""

from __future__ import annotations

import random
import sys
import threading
from datetime import UTC, datetime, timedelta

from chronolog.errors import StoreLockedError
from chronolog.events import DomainEvent, EventMetadata, NextFireDecided, TaskCompleted
from chronolog.store import SQLiteEventStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CRASH_THREADS = 4
STREAMS_PER_THREAD = 3


def batch_events(stream: str, batch_id: str, size: int) -> list[DomainEvent]:
    """``size`` events that each name their batch, their index in it and the batch size."""
    return [
        NextFireDecided(
            task_id=stream,
            nominal_time=T0 + timedelta(microseconds=i),
            fire_at=T0,
            notes=(batch_id, str(i), str(size)),
        )
        for i in range(size)
    ]


def crash_writer(data_dir: str, seed: int, one_statement_commits: bool = False) -> None:
    store = SQLiteEventStore(data_dir, one_statement_commits=one_statement_commits)
    out_lock = threading.Lock()
    print("ready", flush=True)

    def work(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        streams = [f"crash-{k}-{s}" for s in range(STREAMS_PER_THREAD)]
        versions = {s: store.stream_version(s) for s in streams}
        n = 0
        while True:
            stream = rng.choice(streams)
            size = rng.randint(1, 50)
            batch_id = f"{seed}.{k}.{n}"
            n += 1
            stored = store.append(
                stream,
                batch_events(stream, batch_id, size),
                expected_version=versions[stream],
                metadata=EventMetadata(correlation_id=batch_id),
            )
            versions[stream] = stored[-1].stream_version
            line = (
                f"ack {stream} {batch_id} {stored[0].position} {stored[-1].position} "
                f"{stored[0].stream_version} {stored[-1].stream_version}\n"
            )
            with out_lock:
                sys.stdout.write(line)
                sys.stdout.flush()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(CRASH_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def try_writer(data_dir: str) -> None:
    try:
        store = SQLiteEventStore(data_dir)
    except StoreLockedError as exc:
        print(f"locked {exc.code} {exc}", flush=True)
        return
    store.close()
    print("opened", flush=True)


def lockstep_reader(data_dir: str) -> None:
    store = SQLiteEventStore(data_dir, read_only=True, poll_interval=0.005)
    print("ready", flush=True)
    for line in sys.stdin:
        target = int(line)
        if not store.wait_for_events(target - 1, timeout=20):
            print("timeout", flush=True)
            return
        everything = store.read_all()
        gapless = [e.position for e in everything] == list(range(1, len(everything) + 1))
        print(f"saw {store.last_position()} {len(everything)} {gapless}", flush=True)
    store.close()


def appender(data_dir: str, count: int) -> None:
    store = SQLiteEventStore(data_dir)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        store.append("peer", [TaskCompleted(task_id=f"peer-{i}", reason="one_shot")])
    print("done", flush=True)
    sys.stdin.read()
    store.close()


def main(argv: list[str]) -> None:
    role, data_dir, *rest = argv
    if role == "crash-writer":
        crash_writer(data_dir, int(rest[0]), rest[1:] == ["one-statement"])
    elif role == "try-writer":
        try_writer(data_dir)
    elif role == "lockstep-reader":
        lockstep_reader(data_dir)
    elif role == "appender":
        appender(data_dir, int(rest[0]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
