"""The admission line: a burst of facade calls leaves the event loop turns for others."""

from __future__ import annotations

import asyncio

from chronolog.admission import LoopAdmission


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
