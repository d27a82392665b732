"""The virtual clock: manual advance for tests, auto-advance for replay at full speed."""

from __future__ import annotations

import asyncio

from engine.clock import VirtualClock


async def test_auto_clock_jumps_to_the_earliest_sleeper_with_many_sleepers() -> None:
    clock = VirtualClock(100.0, auto=True)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, until: float) -> None:
        await clock.sleep_until(until)
        woke.append((name, clock.now()))

    await asyncio.wait_for(
        asyncio.gather(sleeper("c", 400.0), sleeper("a", 200.0), sleeper("b", 300.0), sleeper("a2", 200.0)),
        timeout=2,
    )
    assert woke == [("a", 200.0), ("a2", 200.0), ("b", 300.0), ("c", 400.0)]


async def test_manual_clock_only_moves_when_told() -> None:
    clock = VirtualClock(0.0)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.advance(9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(1)
    await asyncio.wait_for(task, 1)
    assert clock.now() == 10.0 and clock.pending == 0
