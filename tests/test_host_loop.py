"""Sharing the host's loop: admission of bursts, and answers posted from other threads."""

from __future__ import annotations

import asyncio
import threading

from chronolog.host_loop import LoopAdmission, inbox_of


def test_a_burst_is_admitted_in_turns_and_timers_run_between() -> None:
    """1,000 simultaneous callers enter 32 per turn; a timer due meanwhile is not held up."""

    async def main() -> tuple[list[int], list[int]]:
        admission = LoopAdmission(per_turn=32)
        entered: list[int] = []
        timer_saw: list[int] = []

        async def caller(i: int) -> None:
            await admission.enter()
            entered.append(i)

        loop = asyncio.get_running_loop()
        loop.call_later(0, lambda: timer_saw.append(len(entered)))
        await asyncio.gather(*(caller(i) for i in range(1000)))
        return entered, timer_saw

    entered, timer_saw = asyncio.run(main())
    assert entered == list(range(1000))  # first come, first served
    assert timer_saw and timer_saw[0] <= 64  # the timer ran after at most two turns


def test_a_cancelled_waiter_is_skipped() -> None:
    """A caller cancelled while waiting in line does not take a place in a turn."""

    async def main() -> list[int]:
        admission = LoopAdmission(per_turn=1)
        entered: list[int] = []

        async def caller(i: int) -> None:
            await admission.enter()
            entered.append(i)

        first = asyncio.ensure_future(caller(0))
        second = asyncio.ensure_future(caller(1))
        third = asyncio.ensure_future(caller(2))
        await asyncio.sleep(0)
        second.cancel()
        await asyncio.gather(first, third, return_exceptions=True)
        return entered

    assert asyncio.run(main()) == [0, 2]


def test_each_event_loop_has_its_own_line() -> None:
    """Two loops (the host's and the sync facade's, say) do not wait on each other."""
    admission = LoopAdmission(per_turn=1)

    async def burst() -> int:
        await asyncio.gather(*(admission.enter() for _ in range(10)))
        return 10

    assert asyncio.run(burst()) == 10
    assert asyncio.run(burst()) == 10


def test_answers_from_many_threads_arrive_in_order_with_few_wake_ups() -> None:
    """4 threads post 2,000 answers each; all arrive, each thread's in its order, and the
    loop is woken far fewer times than there are answers."""

    async def main() -> tuple[dict[int, list[int]], int]:
        loop = asyncio.get_running_loop()
        inbox = inbox_of(loop)
        wakes = 0
        original = loop.call_soon_threadsafe

        def counting(*args: object) -> object:
            nonlocal wakes
            wakes += 1
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        got: dict[int, list[int]] = {k: [] for k in range(4)}
        done = asyncio.Event()

        def record(item: tuple[int, int]) -> None:
            got[item[0]].append(item[1])
            if sum(len(v) for v in got.values()) == 8000:
                done.set()

        def produce(k: int) -> None:
            for i in range(2000):
                inbox.post(record, (k, i))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.wait_for(done.wait(), 10)
        for thread in threads:
            thread.join()
        return got, wakes

    got, wakes = asyncio.run(main())
    assert all(values == list(range(2000)) for values in got.values())
    assert wakes < 8000
