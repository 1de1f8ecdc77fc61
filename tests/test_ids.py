"""Fresh ids: the shape of a uuid4 hex, never repeated, new in a forked child."""

from __future__ import annotations

import os
import re
import threading

from chronolog.ids import new_id


def test_ids_are_32_hex_characters_and_unique_across_threads() -> None:
    """Eight threads drawing 5,000 ids each never see one twice."""
    found: list[list[str]] = [[] for _ in range(8)]

    def draw(k: int) -> None:
        found[k] = [new_id() for _ in range(5000)]

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for chunk in found for i in chunk]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_a_new_prefix() -> None:
    """After fork the child does not continue the parent's sequence."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child[:16] != new_id()[:16]
