"""Folding the log into every stream's state, from a snapshot, and keeping that snapshot fresh.

A start needs the state of every task and cleanup registration (to arm the timer, find
runs the process died in, seed the shards). :class:`FoldedStreams` folds envelopes into
those states; :func:`load_snapshot` starts it from the snapshot file
(:mod:`chronolog.store.snapshots`) so that only the log's tail is folded, and a
:class:`Snapshotter` thread folds new events into the file while the scheduler runs, so
the tail stays short (at most :data:`SNAPSHOT_EVERY_EVENTS` plus what one look's interval
brings). Job actors that are loaded again fold their stream from their saved state too
(:func:`task_state`).

Replaying from a snapshot gives exactly the state a fold of the whole log gives: a state
is the fold of its stream's events up to its version, the encoding round-trips
(msgspec's MessagePack for these frozen structs), and events a state already holds are
skipped by version. ``FINGERPRINT`` names the states' shape; change
:data:`SNAPSHOT_FORMAT` whenever what a fold produces changes without its shape changing
(a fix in ``evolve_task``), so old snapshots are dropped rather than trusted.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from chronolog import gil
from chronolog.actors.housekeeper import CLEANUP_STREAM_PREFIX
from chronolog.actors.job_actor import TASK_STREAM_PREFIX, task_stream
from chronolog.domain.cleanup_state import CleanupState, evolve_cleanup
from chronolog.domain.task_state import TaskState, evolve_task
from chronolog.errors import ChronologError
from chronolog.events import Envelope
from chronolog.store import EventStore
from chronolog.store.snapshots import Anchor, SnapshotFile, StateRow

log = structlog.get_logger("chronolog.runtime")

#: Bump when a fold's result changes for the same events without the states' shape
#: changing: snapshots made before are then dropped.
SNAPSHOT_FORMAT = 1

FINGERPRINT = (
    f"{SNAPSHOT_FORMAT}:"
    + hashlib.sha256(
        msgspec.json.encode(msgspec.json.schema_components((TaskState, CleanupState)))
    ).hexdigest()
)

#: Events read from the log per page, at start and by the snapshotter.
RECOVERY_PAGE = 20_000
#: The snapshotter saves once the log is this many events past the file.
SNAPSHOT_EVERY_EVENTS = 100_000
#: Seconds between the snapshotter's looks at the log.
SNAPSHOT_CHECK_SECONDS = 10.0
#: Events the snapshotter folds per transaction; it hands the GIL over between pages, so
#: its work reaches the fires and the host's loop as short stretches.
SNAPSHOT_PAGE = 2_000
#: The longest a stop spends bringing the file up to the log (seconds); what is left over
#: is folded by the next start. A stop has the GIL to itself, so it takes larger pages
#: (a stream's row is then written once for more of its events), but not much larger:
#: folding 100,000 one-event streams took 2.6 s in pages of 20,000 with an 88 MiB bump
#: of memory, 1.9 s and 25 MiB in pages of 5,000; 200,000 events over 2,000 streams,
#: 1.3 s and 41 MiB against 1.9 s and 15 MiB.
STOP_SNAPSHOT_SECONDS = 1.0
STOP_SNAPSHOT_PAGE = 5_000

_ENCODER = msgspec.msgpack.Encoder()
_TASK_DECODER = msgspec.msgpack.Decoder(TaskState)
_CLEANUP_DECODER = msgspec.msgpack.Decoder(CleanupState)


@dataclass
class FoldedStreams:
    """Every task's and cleanup registration's state, folded up to ``position``."""

    position: int = 0
    tasks: dict[str, TaskState] = field(default_factory=dict)
    cleanups: dict[str, CleanupState] = field(default_factory=dict)

    def fold(self, envelopes: Sequence[Envelope], touched: set[str] | None = None) -> None:
        """Fold ``envelopes`` (the log's next ones, in position order); events a state
        already holds are skipped. ``touched`` collects the stream ids folded into."""
        tasks, cleanups = self.tasks, self.cleanups
        task_prefix, cleanup_prefix = TASK_STREAM_PREFIX, CLEANUP_STREAM_PREFIX
        for envelope in envelopes:
            stream = envelope.stream_id
            if stream.startswith(task_prefix):
                task_id = stream[len(task_prefix) :]
                task = tasks.get(task_id)
                if task is None:
                    task = TaskState(task_id=task_id)
                elif envelope.stream_version <= task.version:
                    continue
                tasks[task_id] = evolve_task(task, envelope)
            elif stream.startswith(cleanup_prefix):
                registration_id = stream[len(cleanup_prefix) :]
                cleanup = cleanups.get(registration_id)
                if cleanup is None:
                    cleanup = CleanupState(registration_id=registration_id)
                elif envelope.stream_version <= cleanup.version:
                    continue
                cleanups[registration_id] = evolve_cleanup(cleanup, envelope)
            else:
                continue
            if touched is not None:
                touched.add(stream)
        if envelopes:
            self.position = max(self.position, envelopes[-1].position)

    def state(self, stream: str) -> TaskState | CleanupState:
        """The state of ``stream`` (a task's or a cleanup registration's)."""
        if stream.startswith(TASK_STREAM_PREFIX):
            return self.tasks[stream[len(TASK_STREAM_PREFIX) :]]
        return self.cleanups[stream[len(CLEANUP_STREAM_PREFIX) :]]

    def put(self, stream: str, state: TaskState | CleanupState) -> None:
        """Set the state of ``stream``."""
        if isinstance(state, TaskState):
            self.tasks[stream[len(TASK_STREAM_PREFIX) :]] = state
        else:
            self.cleanups[stream[len(CLEANUP_STREAM_PREFIX) :]] = state

    def add_row(self, row: StateRow) -> None:
        """Take one saved state (raises ``msgspec`` errors for bytes of another shape)."""
        if row.stream_id.startswith(TASK_STREAM_PREFIX):
            self.put(row.stream_id, _TASK_DECODER.decode(row.state))
        elif row.stream_id.startswith(CLEANUP_STREAM_PREFIX):
            self.put(row.stream_id, _CLEANUP_DECODER.decode(row.state))

    def rows(self, streams: Iterable[str]) -> list[StateRow]:
        """The encoded states of ``streams``."""
        rows = []
        for stream in streams:
            state = self.state(stream)
            rows.append(StateRow(stream, state.version, _ENCODER.encode(state)))
        return rows


def fold_log(
    store: EventStore,
    folded: FoldedStreams,
    touched: set[str] | None = None,
    *,
    page: int = RECOVERY_PAGE,
    until: int | None = None,
) -> Anchor | None:
    """Fold the log's events after ``folded.position`` (up to ``until``) into ``folded``;
    the anchor of the last event folded, or None when there was none."""
    anchor = None
    while until is None or folded.position < until:
        limit = page if until is None else min(page, until - folded.position)
        envelopes = store.read_all(folded.position + 1, limit=limit)
        if not envelopes:
            break
        folded.fold(envelopes, touched)
        last = envelopes[-1]
        anchor = Anchor(last.stream_id, last.stream_version)
    return anchor


def load_snapshot(snapshots: SnapshotFile, store: EventStore) -> FoldedStreams:
    """The states saved in ``snapshots``, if they were folded from ``store``'s log; else
    nothing (and the file is emptied)."""
    position, anchor = snapshots.position()
    if position == 0:
        return FoldedStreams()
    at = store.read_all(position, limit=1)
    if (
        anchor is None
        or not at
        or at[0].position != position
        or anchor
        != (
            at[0].stream_id,
            at[0].stream_version,
        )
    ):
        log.warning(
            "the state snapshots do not match this event log; folding the whole log",
            snapshot_position=position,
        )
        snapshots.reset()
        return FoldedStreams()
    folded = FoldedStreams(position=position)
    try:
        for row in snapshots.rows():
            folded.add_row(row)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("a state snapshot does not decode; folding the whole log", error=str(exc))
        snapshots.reset()
        return FoldedStreams()
    return folded


def task_state(store: EventStore, snapshots: SnapshotFile | None, task_id: str) -> TaskState:
    """A task's state: its saved state (if any) with the stream's later events folded in."""
    stream_id = task_stream(task_id)
    state = TaskState(task_id=task_id)
    if snapshots is not None:
        row = snapshots.row(stream_id)
        if row is not None:
            try:
                state = _TASK_DECODER.decode(row.state)
            except (msgspec.DecodeError, msgspec.ValidationError):
                state = TaskState(task_id=task_id)
    return functools.reduce(
        evolve_task, store.read_stream(stream_id, from_version=state.version + 1), state
    )


class Snapshotter:
    """Folds the log into the snapshot file on a thread of its own, once the log is
    ``every_events`` past it; :meth:`stop` brings the file up to the log (within a time
    budget) so the next start folds little."""

    def __init__(
        self,
        snapshots: SnapshotFile,
        store: EventStore,
        *,
        every_events: int = SNAPSHOT_EVERY_EVENTS,
        check_seconds: float = SNAPSHOT_CHECK_SECONDS,
        page: int = SNAPSHOT_PAGE,
    ) -> None:
        self.snapshots = snapshots
        self.store = store
        self.every_events = every_events
        self.check_seconds = check_seconds
        self.page = page
        self.position = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered: tuple[FoldedStreams, set[str], Anchor] | None = None

    def seed(self, recovered: FoldedStreams, touched: set[str], anchor: Anchor | None) -> None:
        """Take the states a start folded: ``touched`` names the streams it folded events
        into after the file's position, ``anchor`` the last of those events. The thread
        saves them at its first look (a stop before that, at once)."""
        self.position = recovered.position
        if anchor is not None and touched:
            # Only the touched streams' states are kept until then, not every state.
            kept = FoldedStreams(position=recovered.position)
            for stream in touched:
                kept.put(stream, recovered.state(stream))
            self._recovered = (kept, touched, anchor)

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="chronolog-snapshotter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # The start's fold is saved at the first look, not at once: the fires due right
            # after a start do not share the GIL with it.
            while not self._stop.wait(self.check_seconds):
                self._save_seed()
                if self.store.last_position() - self.position >= self.every_events:
                    self.catch_up()
        except ChronologError as exc:  # the store closed under it, or a full disk
            log.info("the snapshotter stopped", reason=str(exc))
        except Exception:
            log.exception("the snapshotter failed; the next start folds more of the log")

    def _save_seed(self) -> None:
        """Save the states the start folded, if not yet done: the file's position may not
        move past theirs before they are in it."""
        recovered = self._recovered
        if recovered is not None:
            folded, touched, anchor = recovered
            self._save(folded.position, anchor, folded.rows(touched))
            # Dropped only once saved: a failed save is tried again by the next catch-up.
            self._recovered = None

    def catch_up(self, deadline: float | None = None, page: int | None = None) -> None:
        """Fold the log's new events into the file, a page (default: ``self.page``) per
        transaction, until it is up to the log or ``deadline`` (monotonic) has passed."""
        self._save_seed()
        while not self._stop.is_set() or deadline is not None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            envelopes = self.store.read_all(self.position + 1, limit=page or self.page)
            if not envelopes:
                return
            touched: set[str] = set()
            folded = FoldedStreams(position=self.position)
            for row in self.snapshots.rows_for({e.stream_id for e in envelopes}).values():
                folded.add_row(row)
            folded.fold(envelopes, touched)
            last = envelopes[-1]
            anchor = Anchor(last.stream_id, last.stream_version)
            self._save(last.position, anchor, folded.rows(touched))
            gil.let_others_run()

    def _save(self, position: int, anchor: Anchor, rows: list[StateRow]) -> None:
        self.snapshots.save(position, anchor, rows)
        self.position = position

    def stop(self, budget: float = STOP_SNAPSHOT_SECONDS) -> None:
        """End the thread, then bring the file up to the log for at most ``budget``
        seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if budget > 0:
            try:
                self.catch_up(deadline=time.monotonic() + budget, page=STOP_SNAPSHOT_PAGE)
            except Exception as exc:  # a cache: the next start folds more of the log
                log.warning("the last state snapshot was not saved", error=str(exc))


__all__ = [
    "FINGERPRINT",
    "SNAPSHOT_EVERY_EVENTS",
    "TASK_STREAM_PREFIX",
    "FoldedStreams",
    "Snapshotter",
    "fold_log",
    "load_snapshot",
    "task_state",
]
