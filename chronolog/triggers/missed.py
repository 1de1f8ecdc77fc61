"""The fires a task missed: how many, the first few and the last few, without listing all.

After downtime, a pause or a clock jump, the decider needs the nominal times whose fire
instant has passed: how many there were, the first ones (a short gap is recorded one
event each) and the last ones (``run_once`` runs the newest, ``run_all`` the newest
``catchup_limit``). Listing every one of a long gap cost a minutely task 1,440 trigger
evaluations per day of outage, so 10,000 such tasks took ~30 s of CPU to catch up after
one day. Elapsed intervals (every N seconds, minutes or hours) are a grid, so their
count is arithmetic whatever the gap. A cron's fires on the whole days that no UTC
offset change touches are counted from its fields (matching days x fires per day), and
only the days at the ends of the gap and those of DST changes are walked. Day, week and
month intervals fire at most once a day and are walked fire by fire, as is what is left
of the others, up to a limit the caller sets.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from chronolog.triggers.cron_schedule import CronPlan
from chronolog.triggers.engine import Compiled, compiled_plan, next_fire
from chronolog.triggers.interval import ElapsedIntervalPlan
from chronolog.triggers.spec import TriggerSpec


@dataclass(frozen=True, slots=True)
class Missed:
    """``count`` nominal times in order: the first ``len(head)`` and the last ``len(tail)``
    of them (the two overlap when the count is small). ``exhausted``: the walk stopped at
    its limit before reaching now, so later missed times were not examined."""

    count: int
    head: tuple[datetime, ...]
    tail: tuple[datetime, ...]
    exhausted: bool

    def at(self, index: int) -> datetime:
        """The ``index``-th missed nominal time; it must be among the first or last kept."""
        if 0 <= index < len(self.head):
            return self.head[index]
        offset = index - (self.count - len(self.tail))
        if 0 <= offset < len(self.tail) and index < self.count:
            return self.tail[offset]
        raise IndexError(f"missed time {index} of {self.count} was not kept")

    def between(self, start: int, stop: int) -> list[datetime]:
        """The missed times ``start <= index < stop`` (all of them must have been kept)."""
        return [self.at(index) for index in range(start, stop)]


def missed_since(
    spec: TriggerSpec,
    first: datetime,
    now: datetime,
    *,
    seed: str,
    runs_so_far: int,
    keep_head: int,
    keep_tail: int,
    walk_limit: int,
) -> Missed:
    """``first`` (a nominal time of ``spec`` that is due) and the nominal times after it
    whose fire instant (jitter included) is at or before ``now``, up to the first that is
    not: as :func:`next_fire` would give them one by one, with ``runs_so_far`` fires before
    ``first``. Keeps the first ``keep_head`` and the last ``keep_tail`` (each at least 1).

    Elapsed intervals skip over the bulk of a gap by arithmetic, crons over their quiet
    days; what is left (fires whose jitter may put them after ``now``, the days at the
    ends of the gap and of DST changes, other trigger kinds) is walked, at most
    ``walk_limit`` fires, after which ``exhausted`` is set.
    """
    compiled = compiled_plan(spec)
    through = _surely_due_through(compiled, now)
    keep_tail = max(keep_tail, 1)
    head: list[datetime] = [first]
    tail: deque[datetime] = deque([first], maxlen=keep_tail)
    count, nominal = 1, first
    jump, step = _grid_steps(compiled, first, through, runs_so_far)
    if jump:
        head.extend(first + index * step for index in range(1, min(jump, keep_head - 1) + 1))
        tail.extend(first + index * step for index in range(max(jump - keep_tail + 1, 1), jump + 1))
        count, nominal = count + jump, first + jump * step
    cron = compiled.plan if isinstance(compiled.plan, CronPlan) else None
    # A cron counts ahead from the first missed time and again from the first fire of
    # each new day the walk reaches (after a day that an offset change touched).
    try_span, day = cron is not None, first.astimezone(compiled.zone).date()
    walked = 0
    while True:
        upcoming = next_fire(spec, nominal, seed=seed, runs_so_far=runs_so_far + count)
        if upcoming is None or upcoming.at > now:
            return Missed(count, tuple(head), tuple(tail), exhausted=False)
        if try_span and cron is not None:
            try_span = False
            span = cron.quiet_span(nominal, through)
            if span is not None and (
                compiled.max_runs is None or runs_so_far + count + span.count < compiled.max_runs
            ):
                last = cron.last_fires(span, keep_tail)
                if last:  # (a span always has fires; an empty one would never move on)
                    if len(head) < keep_head:
                        head.extend(cron.first_fires(span, keep_head - len(head)))
                    tail.extend(last)
                    count, nominal = count + span.count, last[-1]
                    continue
        if walked >= walk_limit:
            return Missed(count, tuple(head), tuple(tail), exhausted=True)
        walked += 1
        count, nominal = count + 1, upcoming.nominal
        if len(head) < keep_head:
            head.append(nominal)
        tail.append(nominal)
        if cron is not None and upcoming.local.date() != day:
            try_span, day = True, upcoming.local.date()


def _grid_steps(
    compiled: Compiled, first: datetime, through: datetime, runs_so_far: int
) -> tuple[int, timedelta]:
    """For an elapsed interval: how many of the fires after ``first`` are surely due (up
    to ``through``, within ``max_runs``), and the step between them. ``(0, …)`` for other
    kinds, or when ``first`` is not on the interval's grid (the walk then decides)."""
    plan = compiled.plan
    if not isinstance(plan, ElapsedIntervalPlan):
        return 0, timedelta(0)
    steps = plan.steps_through(first, through)
    if compiled.max_runs is not None:
        # ``first`` is run number runs_so_far + 1; the last allowed is max_runs.
        steps = min(steps, max(compiled.max_runs - runs_so_far - 1, 0))
    return steps, plan.step


def _surely_due_through(compiled: Compiled, now: datetime) -> datetime:
    """The latest nominal time that is surely due at ``now`` and within ``end``: its fire
    instant is at most the largest jitter after it."""
    through = now - timedelta(seconds=compiled.jitter)
    return through if compiled.end is None else min(through, compiled.end)


__all__ = ["Missed", "missed_since"]
