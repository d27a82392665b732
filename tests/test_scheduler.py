"""Scheduler timing on a virtual clock: candle-close alignment, periods, quarantine, stop."""

from __future__ import annotations

import asyncio

from engine.clock import VirtualClock
from engine.plugins.instance import PluginInstance
from engine.scheduler import Scheduler, next_due
from engine.signals.levels import RiskSettings
from tests.support.fakes import EveryBarStrategy


def inst(name: str, tf: str = "5m", period: int | None = None) -> PluginInstance:
    s = EveryBarStrategy(EveryBarStrategy.Params(), RiskSettings(), tf)
    return PluginInstance(name, "every_bar", "test", s, ("ETH/BTC",), tf, period, 0)


def test_next_due_aligns_to_candle_close_plus_delay() -> None:
    i = inst("a", "15m")
    assert next_due(i, 1000.0, 2.0) == 1802.0
    assert next_due(i, 1802.0, 2.0) == 2702.0
    assert next_due(i, 1801.0, 2.0) == 1802.0  # close at 1800 not yet settled at 1801
    p = inst("b", period=60)
    assert next_due(p, 61.0, 0.0) == 120.0


async def test_runs_each_instance_at_its_own_closes() -> None:
    clock = VirtualClock(start=100.0)
    ran: list[tuple[float, tuple[str, ...]]] = []

    async def on_tick(now: float, due: list[PluginInstance]) -> None:
        ran.append((now, tuple(sorted(i.name for i in due))))

    a, b = inst("a", "5m"), inst("b", "15m")
    sched = Scheduler([a, b], clock, on_tick, close_delay=2.0)
    task = asyncio.create_task(sched.run())
    for _ in range(1300):  # one virtual second at a time, letting the loop react each step
        for _ in range(10):
            await asyncio.sleep(0)
        clock.advance(1)
    sched.stop()
    await asyncio.wait_for(task, 1)
    assert ran[0] == (100.0, ("a", "b"))  # catch-up run at start
    assert ran[1:] == [(302.0, ("a",)), (602.0, ("a",)), (902.0, ("a", "b")), (1202.0, ("a",))]


async def test_quarantined_instance_is_not_scheduled_and_stop_interrupts_sleep() -> None:
    clock = VirtualClock(start=0.0)
    calls: list[list[str]] = []
    ticked = asyncio.Event()

    async def on_tick(now: float, due: list[PluginInstance]) -> None:
        calls.append([i.name for i in due])
        ticked.set()

    a = inst("a")
    a.quarantined = True
    sched = Scheduler([a, inst("b")], clock, on_tick)
    task = asyncio.create_task(sched.run())
    await asyncio.wait_for(ticked.wait(), 1)
    for _ in range(10):
        await asyncio.sleep(0)
    sched.stop()  # while sleeping towards t=300: must return without waiting
    await asyncio.wait_for(task, 1)
    assert calls == [["b"]]


async def test_failing_tick_does_not_kill_the_loop() -> None:
    clock = VirtualClock(start=0.0, auto=True)
    n = 0

    async def on_tick(now: float, due: list[PluginInstance]) -> None:
        nonlocal n
        n += 1
        if n == 1:
            raise RuntimeError("engine bug")
        if n == 3:
            sched.stop()

    sched = Scheduler([inst("a")], clock, on_tick)
    await asyncio.wait_for(sched.run(), 1)
    assert n == 3 and clock.now() == 600.0
