"""The Housekeeper actor: owns the cleanup registrations and runs them, one at a time.

Registrations are streams (``cleanup-<id>``); their schedules are ordinary chronolog tasks
(``cleanup-<id>`` too, calling the built-in function ``chronolog.cleanup``), so they are
listed, paused and run-now like any task and their runs appear in the execution history.
Requests wait in a priority queue: when several registrations are due together, the one
with the lowest ``priority`` number runs first.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import pykka
import structlog

from chronolog.domain import commands as cmd
from chronolog.domain.cleanup_state import CleanupState, evolve_cleanup
from chronolog.errors import ChronologError, NotFoundError, StorageError, ValidationError
from chronolog.events import (
    SCHEDULER,
    Cause,
    CleanupRegistered,
    CleanupRunCompleted,
    CleanupRunFailed,
    CleanupRunStarted,
    CleanupUnregistered,
    DomainEvent,
    EventMetadata,
    TaskDefinition,
    TaskPolicies,
)
from chronolog.housekeeping import run_cleanup, validate_target
from chronolog.housekeeping.registrations import (
    CLEANUP_FUNCTION,
    Registration,
    RunOutcome,
    cleanup_task_id,
    registration_id_for,
)
from chronolog.limits import is_utf8
from chronolog.triggers import CronTrigger, validate

if TYPE_CHECKING:
    from chronolog.actors.messages import CommandOutcome
    from chronolog.actors.runtime import Runtime

log = structlog.get_logger("chronolog.housekeeper")

#: When a registration gives no schedule: daily at 03:00 in the default zone.
DEFAULT_CLEANUP_SCHEDULE = "0 3 * * *"
CLEANUP_STREAM_PREFIX = "cleanup-"


def _require_utf8(directory: str) -> None:
    if not is_utf8(directory):
        raise ValidationError(
            "the directory's path is not valid UTF-8; register its parent or rename it",
            details={"field": "directory"},
        )


Reply = Callable[[Any], object]


class _Register(msgspec.Struct, frozen=True):
    registration: Registration
    reply: Reply


class _Unregister(msgspec.Struct, frozen=True):
    registration_id: str
    cause: Cause
    reply: Reply


class _Run(msgspec.Struct, frozen=True):
    registration_ids: list[str] | None
    dry_run: bool
    reply: Reply
    cause: Cause


class _Drain(msgspec.Struct, frozen=True):
    """Run the most urgent queued registration (sent to itself through the mailbox)."""


class _Collector:
    """Gathers the outcomes of one run request and answers once all are in."""

    def __init__(self, expected: int, reply: Reply) -> None:
        self.expected = expected
        self.outcomes: list[RunOutcome] = []
        self.reply = reply
        if expected == 0:
            reply([])

    def add(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        if len(self.outcomes) == self.expected:
            self.reply(list(self.outcomes))


class HousekeeperActor(pykka.ThreadingActor):
    """Registers, unregisters and runs cleanups; every change is an event."""

    use_daemon_thread = True

    def __init__(self, runtime: Runtime, states: dict[str, CleanupState]) -> None:
        super().__init__()
        self.runtime = runtime
        self.states = dict(states)
        self._queue: list[tuple[int, int, str, bool, Cause, _Collector]] = []
        self._seq = itertools.count()

    def on_receive(self, message: Any) -> None:
        try:
            if isinstance(message, _Register):
                self._register(message)
            elif isinstance(message, _Unregister):
                self._unregister(message)
            elif isinstance(message, _Run):
                self._enqueue(message)
            elif isinstance(message, _Drain):
                self._run_next()
        except Exception as exc:
            # A bug, or input no check foresaw. Raised out of here it would stop the actor,
            # and every later cleanup call would fail with it: answer it and go on. (The
            # state changes only after an append succeeded, so it stays consistent.)
            log.exception("housekeeper request failed", request=type(message).__name__)
            reply = getattr(message, "reply", None)
            if reply is not None:
                reply(exc)
        finally:
            self.runtime.activity.end()

    # --- registrations --------------------------------------------------------------------

    def _register(self, message: _Register) -> None:
        request = message.registration
        settings = self.runtime.settings
        try:
            directory = validate_target(
                request.directory,
                request.rules,
                allowed_roots=settings.cleanup_allowed_roots,
                allow_mount_roots=settings.cleanup_allow_mount_roots,
                protected=(settings.data_path,),
            )
            _require_utf8(directory)
            registration_id = registration_id_for(directory, request.rules.pattern)
            task_id = cleanup_task_id(registration_id)
            definition = self._task_definition(registration_id, directory, request)
            self._append(
                registration_id,
                [
                    CleanupRegistered(
                        registration_id=registration_id,
                        directory=directory,
                        rules=request.rules,
                        priority=request.priority,
                        schedule=request.schedule,
                        description=request.description,
                        module_id=request.module_id,
                        task_id=task_id,
                    )
                ],
                request.cause,
            )
        except ChronologError as exc:
            message.reply(exc)
            return

        def scheduled(outcome: CommandOutcome) -> None:
            message.reply(outcome.error if outcome.error is not None else registration_id)

        self.runtime.send(
            task_id,
            cmd.Schedule(definition=definition, recurring=True, cause=request.cause),
            metadata=EventMetadata(caused_by=request.cause),
            reply=scheduled,
        )

    def _task_definition(
        self, registration_id: str, directory: str, request: Registration
    ) -> TaskDefinition:
        trigger = validate(
            CronTrigger(
                expression=request.schedule or DEFAULT_CLEANUP_SCHEDULE,
                timezone=request.timezone,
                start=self.runtime.clock.now(),
            )
        )
        return TaskDefinition(
            name=f"Cleanup {directory} ({request.rules.pattern})",
            function_name=CLEANUP_FUNCTION,
            module_id=request.module_id or "chronolog.housekeeper",
            parameters={"registration_id": registration_id},
            trigger=trigger,
            # A cleanup that missed its time (machine off) runs once when back.
            policies=TaskPolicies(overlap="skip", catchup="run_once", misfire_grace_seconds=300.0),
        )

    def _unregister(self, message: _Unregister) -> None:
        state = self.states.get(message.registration_id)
        if state is None or not state.active:
            message.reply(NotFoundError(f"no cleanup registration {message.registration_id!r}"))
            return
        try:
            self._append(
                message.registration_id,
                [CleanupUnregistered(registration_id=message.registration_id)],
                message.cause,
            )
        except ChronologError as exc:
            message.reply(exc)
            return
        task_id = state.task_id or cleanup_task_id(message.registration_id)
        self.runtime.send(
            task_id,
            cmd.Cancel(note="cleanup unregistered", cause=message.cause),
            reply=lambda _outcome: message.reply(message.registration_id),
        )

    def _append(self, registration_id: str, events: list[DomainEvent], cause: Cause) -> None:
        state = self.states.get(registration_id) or CleanupState(registration_id=registration_id)
        envelopes = self.runtime.store.append(
            f"{CLEANUP_STREAM_PREFIX}{registration_id}",
            events,
            state.version,
            metadata=EventMetadata(caused_by=cause),
        )
        for envelope in envelopes:
            state = evolve_cleanup(state, envelope)
        self.states[registration_id] = state

    # --- runs -----------------------------------------------------------------------------

    def _enqueue(self, message: _Run) -> None:
        if message.registration_ids is None:
            wanted = [s.registration_id for s in self.states.values() if s.active]
        else:
            wanted = list(message.registration_ids)
        collector = _Collector(len(wanted), message.reply)
        for registration_id in wanted:
            state = self.states.get(registration_id)
            priority = state.priority if state is not None else 0
            heapq.heappush(
                self._queue,
                (
                    priority,
                    next(self._seq),
                    registration_id,
                    message.dry_run,
                    message.cause,
                    collector,
                ),
            )
        if wanted:
            self._drain_later()

    def _drain_later(self) -> None:
        # Via the mailbox, so requests that arrived together are all queued before the
        # first run starts: then the lowest priority number really goes first.
        self.runtime.activity.begin()
        self.actor_ref.tell(_Drain())

    def _run_next(self) -> None:
        if not self._queue:
            return
        _, _, registration_id, dry_run, cause, collector = heapq.heappop(self._queue)
        run_id = uuid.uuid4().hex
        try:
            try:
                outcome = self._run_one(registration_id, run_id, dry_run, cause)
            except Exception as exc:  # see on_receive: the caller is answered all the same
                log.exception("cleanup run failed", registration_id=registration_id)
                self._record_failure(registration_id, run_id, exc, cause)
                outcome = RunOutcome(
                    registration_id=registration_id,
                    run_id=run_id,
                    error_code="internal",
                    error=f"{type(exc).__name__}: {exc}",
                )
            collector.add(outcome)
        finally:
            if self._queue:
                self._drain_later()

    def _run_one(
        self, registration_id: str, run_id: str, dry_run: bool, cause: Cause
    ) -> RunOutcome:
        state = self.states.get(registration_id)
        if state is None or not state.active:
            return RunOutcome(
                registration_id=registration_id,
                run_id=run_id,
                error_code=NotFoundError.code,
                error=f"no cleanup registration {registration_id!r}",
            )
        settings = self.runtime.settings
        resume_after = None if dry_run else state.resume_after
        try:
            self._append(
                registration_id,
                [
                    CleanupRunStarted(
                        registration_id=registration_id,
                        run_id=run_id,
                        dry_run=dry_run,
                        resume_after=resume_after,
                    )
                ],
                cause,
            )
            report = run_cleanup(
                state.directory,
                state.rules,
                allowed_roots=settings.cleanup_allowed_roots,
                allow_mount_roots=settings.cleanup_allow_mount_roots,
                now=self.runtime.clock.now(),
                dry_run=dry_run,
                max_files_budget=settings.cleanup_max_files_per_run,
                max_seconds_budget=settings.cleanup_max_seconds_per_run,
                resume_after=resume_after,
                max_records=settings.cleanup_max_records,
                monotonic=self.runtime.clock.monotonic,
                # The log, its lock and the projections: never cleaned, whatever the rules.
                protected=(settings.data_path,),
            )
        except (ChronologError, OSError) as exc:
            code = exc.code if isinstance(exc, ChronologError) else StorageError.code
            log.warning("cleanup run failed", registration_id=registration_id, error=str(exc))
            self._record_failure(registration_id, run_id, exc, cause)
            return RunOutcome(
                registration_id=registration_id, run_id=run_id, error_code=code, error=str(exc)
            )
        self._append(
            registration_id,
            [
                CleanupRunCompleted(
                    registration_id=registration_id,
                    run_id=run_id,
                    dry_run=dry_run,
                    summary=report.summary,
                    files=report.files,
                    files_truncated=report.files_truncated,
                    resume_after=report.resume_after,
                    errors=report.errors,
                    writers_unchecked=report.writers_unchecked,
                )
            ],
            cause,
        )
        return RunOutcome(registration_id=registration_id, run_id=run_id, report=report)

    def _record_failure(
        self, registration_id: str, run_id: str, exc: Exception, cause: Cause
    ) -> None:
        """Append that the run failed, if the log takes it (a run that never started is
        recorded as failed too, so no run is left open)."""
        with contextlib.suppress(ChronologError):
            self._append(
                registration_id,
                [
                    CleanupRunFailed(
                        registration_id=registration_id,
                        run_id=run_id,
                        error_type=type(exc).__name__,
                        message=str(exc),
                    )
                ],
                cause,
            )


class Housekeeper:
    """The non-actor side: how the facade and the built-in function reach the actor."""

    def __init__(self, runtime: Runtime, states: dict[str, CleanupState]) -> None:
        self._runtime = runtime
        self._ref = HousekeeperActor.start(runtime, states)

    def _tell(self, message: Any) -> None:
        self._runtime.activity.begin()
        self._ref.tell(message)

    def register(self, registration: Registration, reply: Reply) -> None:
        """Register; ``reply`` receives the registration id or a ChronologError."""
        self._tell(_Register(registration, reply))

    def unregister(self, registration_id: str, cause: Cause, reply: Reply) -> None:
        """Unregister; ``reply`` receives the id or a ChronologError."""
        self._tell(_Unregister(registration_id, cause, reply))

    def run(
        self,
        registration_ids: list[str] | None,
        dry_run: bool,
        reply: Reply,
        cause: Cause = SCHEDULER,
    ) -> None:
        """Run registrations (all active ones when None) in priority order."""
        self._tell(_Run(registration_ids, dry_run, reply, cause))

    def stop(self) -> None:
        """Stop the actor after the run in progress."""
        self._ref.stop(block=True, timeout=60)
