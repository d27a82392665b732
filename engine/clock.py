"""Time, injected.

Nothing else in the engine calls `time.time()` or `asyncio.sleep()` directly: the scheduler,
cooldowns, limiter, breaker and replay all take a `Clock`, so tests move time by hand and the
offline demo runs the live code on a virtual clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time in epoch seconds plus a way to wait for it."""

    def now(self) -> float:
        """Current time, epoch seconds (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Wait until `now() >= when`."""
        ...


class RealClock:
    """The machine's clock."""

    def now(self) -> float:
        """Clock.now from the system's wall clock."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Clock.sleep on the event loop; a negative duration returns at once."""
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        """Clock.sleep_until against wall time; a deadline already past returns at once."""
        await asyncio.sleep(max(0.0, when - time.time()))


class PacedClock:
    """Virtual time that runs `speed` times faster than real time from `start`.

    Used by the paced replay demo: the same scheduler code, but a day of 5-minute candles
    passes in minutes.
    """

    def __init__(self, start: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0 for a paced clock")
        self._start = start
        self._speed = speed
        self._real0 = time.monotonic()

    def now(self) -> float:
        """Clock.now: `start` plus the real time elapsed since construction, times `speed`."""
        return self._start + (time.monotonic() - self._real0) * self._speed

    async def sleep(self, seconds: float) -> None:
        """Clock.sleep: `seconds` of virtual time take `seconds / speed` of real time."""
        await asyncio.sleep(max(0.0, seconds) / self._speed)

    async def sleep_until(self, when: float) -> None:
        """Clock.sleep_until: the virtual gap to `when`, scaled down to real time."""
        await asyncio.sleep(max(0.0, when - self.now()) / self._speed)


class VirtualClock:
    """A discrete-event clock: time moves only when told to, or when everyone is waiting.

    In manual mode (`auto=False`, for tests) `advance()` moves time and wakes the sleepers
    whose deadline has passed. In auto mode (replay "as fast as possible") a sleeper whose
    deadline is the earliest makes time jump straight to it once the loop has nothing else
    to do, so the live code path runs at CPU speed without real waiting.
    """

    def __init__(self, start: float = 0.0, *, auto: bool = False) -> None:
        self._now = float(start)
        self._auto = auto
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._stepping = False

    def now(self) -> float:
        """Clock.now: virtual time, which only `advance()` or an auto step moves."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Clock.sleep in virtual time: a `sleep_until` of now plus `seconds`."""
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        """Clock.sleep_until: park until time reaches `when`; a past deadline only yields to the loop."""
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        if self._auto and not self._stepping:
            self._stepping = True
            asyncio.get_running_loop().call_soon(self._auto_step)
        await fut

    def _auto_step(self) -> None:
        # Let every runnable task go first: only jump when the loop would otherwise idle. One
        # pending step at most, or two steps would each see the other as runnable work forever.
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        if ready:
            loop.call_soon(self._auto_step)
            return
        self._stepping = False
        self._drop_cancelled()
        if self._sleepers:
            self._wake_until(self._sleepers[0][0])
            if self._sleepers:
                self._stepping = True
                loop.call_soon(self._auto_step)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_until(self, when: float) -> None:
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._wake_until(self._now + seconds)

    def set(self, when: float) -> None:
        """Jump to an absolute time (never backwards)."""
        self._wake_until(when)

    @property
    def pending(self) -> int:
        """Number of tasks currently sleeping on this clock."""
        self._drop_cancelled()
        return sum(1 for s in self._sleepers if not s[2].done())
