"""Telling a process from a fork of it.

``os.fork()`` (a pre-forking server such as gunicorn with ``--preload``, multiprocessing's
``fork`` start method) copies a started scheduler's objects into the child but none of its
threads: no job shard, log writer, projector or timer runs there, and its files, sockets
and locks are shared with the parent. A call answered there would wait for threads that do
not exist, and closing those files there could unlock the parent's data directory or write
into its databases. So the module notes the :func:`generation` it was started in; a
different one means "this is a fork", and the fork leaves the parent's scheduler alone.
"""

from __future__ import annotations

import os

_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    """How many forks separate this process from the one that imported chronolog: equal
    numbers, same process."""
    return _generation


def forked_message(pid: int) -> str:
    """What a call in a fork of the process that started a scheduler is told."""
    return (
        f"this scheduler was started in process {pid}, and this process is a fork of it, "
        "where the scheduler's threads do not run: start chronolog in each process after "
        "forking (a pre-forking server's post-fork hook), with a data_dir of its own, "
        "or call the process that started it"
    )


__all__ = ["forked_message", "generation"]
