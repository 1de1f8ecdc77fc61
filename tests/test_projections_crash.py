"""A projector killed with SIGKILL mid-batch, again and again, loses and repeats nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from test_projections_helpers import table_contents

from chronolog.projections import Projector
from chronolog.projections.synthetic import synthetic_log
from chronolog.store import SQLiteEventStore

#: The child: project the log into the DuckDB file in small batches, then say so.
_CHILD = """
import sys
from chronolog.projections import Projector
from chronolog.store import SQLiteEventStore

store = SQLiteEventStore(sys.argv[1], read_only=True)
projector = Projector(store, sys.argv[2], batch_size=700, cache_rows=300)
print("start", projector.position, flush=True)
projector.catch_up()
print("done", projector.position, flush=True)
projector.close()
"""

EVENTS = 40_000


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("crash") / "data"
    store = SQLiteEventStore(data, synchronous="OFF")
    try:
        for append in synthetic_log(events=EVENTS, tasks=300, cleanups=3, seed=21):
            store.append(append.stream_id, append.events, metadata=append.metadata)
    finally:
        store.close()
    return data


def _spawn(log_dir: Path, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(log_dir), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoint(db: Path) -> int:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute("SELECT position FROM projection_meta").fetchone()
        return 0 if row is None else int(row[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_mid_batch_neither_loses_nor_repeats(log_dir: Path, tmp_path: Path) -> None:
    """Five kills at random moments; the restarted projector ends exactly at the log's end,
    with one row per execution and the same tables as a clean rebuild."""
    db = tmp_path / "projections.duckdb"
    rng = random.Random(7)
    checkpoints = []
    for _ in range(5):
        child = _spawn(log_dir, db)
        line = child.stdout.readline() if child.stdout else ""
        assert line.startswith("start"), child.stderr.read() if child.stderr else line
        # Short enough that five runs (~1.25 s of projecting on average) end well before
        # the 40,000 events do on a fast machine (0.05-0.6 s let the fifth run finish).
        time.sleep(rng.uniform(0.05, 0.45))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        checkpoints.append(_checkpoint(db))
    print("checkpoints after each kill:", checkpoints)
    assert checkpoints == sorted(checkpoints)
    assert 0 < checkpoints[-1] < EVENTS, "the kills should land mid-projection"

    child = _spawn(log_dir, db)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.split()[-2:] == ["done", str(EVENTS)]

    conn = duckdb.connect(str(db), read_only=True)
    try:
        assert conn.execute("SELECT position FROM projection_meta").fetchone() == (EVENTS,)
        executions = conn.execute("SELECT count(*), count(DISTINCT execution_id) FROM executions")
        total, distinct = executions.fetchone()  # type: ignore[misc]
        assert total == distinct > 0
        events = conn.execute(
            "SELECT count(*), count(DISTINCT position), max(position) FROM events"
        )
        assert events.fetchone() == (EVENTS, EVENTS, EVENTS)
        killed_and_restarted = table_contents(conn)
    finally:
        conn.close()

    store = SQLiteEventStore(log_dir, read_only=True)
    try:
        with Projector(store, tmp_path / "clean.duckdb") as clean:
            clean.rebuild()
            assert table_contents(clean.reader()) == killed_and_restarted
    finally:
        store.close()
