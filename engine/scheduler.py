"""When each plugin instance runs, and the loop that runs them.

Instances run on each candle close of their timeframe (plus a small settle delay live, so the
exchange has finalised the candle) or every `period` seconds aligned to the epoch. Time comes
from the injected Clock: the same loop drives live trading hours and a replay at 300x.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

from engine.clock import Clock
from engine.plugins.instance import PluginInstance
from engine.timeframes import next_close

log = logging.getLogger("engine.scheduler")

TickHandler = Callable[[float, list[PluginInstance]], Awaitable[None]]


def next_due(inst: PluginInstance, after: float, close_delay: float) -> float:
    """First run time strictly after `after`."""
    if inst.period is None:
        return next_close(after - close_delay, inst.timeframe) + close_delay
    return (math.floor(after / inst.period) + 1) * float(inst.period)


class Scheduler:
    """Sleeps until the earliest due instance, runs every instance due then, repeats."""

    def __init__(
        self,
        instances: Sequence[PluginInstance],
        clock: Clock,
        on_tick: TickHandler,
        *,
        close_delay: float = 0.0,
        run_at_start: bool = True,
    ) -> None:
        self.instances = list(instances)
        self.clock = clock
        self.on_tick = on_tick
        self.close_delay = close_delay
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self.ticks = 0
        self.last_tick: float | None = None
        now = clock.now()
        for inst in self.instances:
            inst.next_due = now if run_at_start else next_due(inst, now, close_delay)

    def stop(self) -> None:
        """Ask `run()` to return; wakes a sleeping loop but never interrupts a tick in progress."""
        self._stop.set()

    def set_instances(self, instances: Sequence[PluginInstance]) -> None:
        """Swap the instance set (a reload): kept objects keep their schedule, new ones run now."""
        known = {id(i) for i in self.instances}
        now = self.clock.now()
        for inst in instances:
            if id(inst) not in known:
                inst.next_due = now
        self.instances = list(instances)
        self._changed.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` has been requested."""
        return self._stop.is_set()

    def due(self, now: float) -> list[PluginInstance]:
        """Instances to run at `now`; quarantined ones never come due."""
        return [i for i in self.instances if i.next_due <= now and not i.quarantined]

    def earliest(self) -> float | None:
        """The next due time over instances not quarantined; None when none is left to run."""
        live = [i.next_due for i in self.instances if not i.quarantined]
        return min(live) if live else None

    async def _sleep_until(self, when: float) -> bool:
        """Sleep on the clock; False if a stop request or an instance change interrupted it."""
        self._changed.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep_until(when))
        stopper = asyncio.ensure_future(self._stop.wait())
        changer = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, stopper, changer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, stopper, changer):
                if not t.done():
                    t.cancel()
        return sleeper.done() and not self._stop.is_set()

    async def run_once(self) -> list[PluginInstance]:
        """Wait for the next due time and run that tick; returns the instances that ran."""
        when = self.earliest()
        if when is None:
            await self._stop.wait()
            return []
        if not await self._sleep_until(when):
            return []
        now = self.clock.now()
        due = self.due(now)
        if due:
            try:
                await self.on_tick(now, due)
            except Exception:
                # The tick handler isolates plugins and sinks itself; anything reaching here
                # is an engine bug, logged loudly, and the loop keeps its schedule.
                log.exception("tick at t=%.0f failed", now)
            self.ticks += 1
            self.last_tick = now
        for inst in due:
            inst.next_due = next_due(inst, now, self.close_delay)
        return due

    async def run(self) -> None:
        """Run ticks until `stop()`."""
        while not self._stop.is_set():
            await self.run_once()
