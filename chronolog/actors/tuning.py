"""How the scheduler's threads are set for the process they run in.

With ``engine = "thread"`` the job shards, the log writer and the projector share the
host's process, and so its GIL: whatever Python they run in one stretch, the host's event
loop waits for. The scheduler process of ``engine = "process"`` runs nothing else, and its
own limit is the hand-over of that GIL between its threads. The three choices below differ
between the two for those reasons; each value was measured in ``bench/bench_runtime.py``
(figures in ``bench/RESULTS.md``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """The job shards' and the log writer's settings for one kind of process."""

    #: Most task messages a job shard decides and appends together (one round). A fire or
    #: a command that arrives during a round waits for its end.
    round_size: int
    #: How many job shards run when ``Settings.job_shards`` leaves it to the engine.
    job_shards: int
    #: Whether the log writes a commit as one statement
    #: (:class:`~chronolog.store.SQLiteEventStore`'s ``one_statement_commits``).
    one_statement_commits: bool

    def __post_init__(self) -> None:
        if self.round_size < 1:
            raise ValueError(f"round_size must be at least 1, got {self.round_size}")
        if self.job_shards < 1:
            raise ValueError(f"job_shards must be at least 1, got {self.job_shards}")


#: In the host's process (``engine = "thread"``).
#:
#: - Rounds of 32, not 64: a round's Python holds the GIL the host's loop wants. 32 against
#:   64, alternating runs: the one-shot burst's start-lag p99 4.9-9.7 ms against
#:   12.9-15.5 ms, the loop's p99 under a burst of 10,000 commands 3.6-5.7 against 4.1-5.6
#:   ms and with 10,000 kept in flight 5.4-6.1 against 7.3-7.4 ms; scheduling throughput
#:   ~12 % lower (7,500-8,400 against 8,800-10,500 tasks/s). 16 was too small: the
#:   one-shot burst backed up (p99 43-61 ms).
#: - Two shards: bursts as fast as with eight, fewer threads for the loop to wait behind.
#:   One shard let the one-shot burst fall behind (p99 20.8 against 12-15 ms).
#: - Commits through a transaction: the writer's many short GIL releases are what lets
#:   the loop, the timer and the pool threads in on time (one statement per commit made
#:   the one-shot p99 8.4-10.3 against 4.7-6.5 ms).
HOST_PROCESS = Tuning(round_size=32, job_shards=2, one_statement_commits=False)

#: In the scheduler process of ``engine = "process"``.
#:
#: - Rounds of 64: each round's answers cross to the host, and with 32 the shards fell
#:   behind in the one-shot burst (start-lag p99 34-85 ms against 2-21 ms).
#: - One shard: with two, each shard's commit waited behind the other's, and the other's
#:   Python delayed the writer's return to the GIL after its statement. Single runs of
#:   the one-shot burst alternating with two shards: p99 1.5-6.0 ms (median 3.2) against
#:   2.6-59.5 ms (median 12.5) in eight pairs, medians 6.5 against 22.6 ms in fifteen
#:   more on a disk still busy with the last run's cleanup; scheduling throughput ~6 %
#:   lower (7,130-7,450 against 7,550-7,760 tasks/s), the host's loop unchanged.
#: - One statement per commit: the writer then waits for the GIL once per commit, not
#:   once per row (one-shot p99 median 10.0 against 33.1 ms over 31 pairs).
SCHEDULER_PROCESS = Tuning(round_size=64, job_shards=1, one_statement_commits=True)
