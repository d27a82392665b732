"""Short-lived shared snapshots: ticker, recent trades, order book, funding rate.

These change every second, so they are not kept like candles; but every strategy due at one
candle close asking for the same symbol's book must not become a burst of identical requests.
A value is served to every caller until the end of the clock second (by default) in which its
request started, callers arriving while it is being fetched wait for that one request, and a
larger answer serves a smaller ask (the last 100 of 500 trades, the top 20 of 100 levels).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from engine.clock import Clock
from engine.metrics import Metrics

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    """A fetched value, the size it was fetched at, and the clock time it stops being served."""

    size: int
    expires: float
    value: V


class SnapshotCache(Generic[V]):
    """One kind of snapshot per symbol, served for `ttl_s`-aligned slots of clock time."""

    def __init__(
        self,
        kind: str,
        exchange: str,
        clock: Clock,
        metrics: Metrics,
        ttl_s: float,
        trim: Callable[[V, int], V],
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("snapshot ttl must be > 0")
        self._kind = kind
        self._exchange = exchange
        self._clock = clock
        self._metrics = metrics
        self._ttl = ttl_s
        self._trim = trim
        self._entries: dict[str, _Entry[V]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Task[_Entry[V]]] = {}

    def __len__(self) -> int:
        now = self._clock.now()
        return sum(1 for entry in self._entries.values() if entry.expires > now)

    async def get(self, symbol: str, size: int, fetch: Callable[[int], Awaitable[V]]) -> V:
        """The snapshot of `symbol` with at least `size` rows (0 for kinds without rows)."""
        now = self._clock.now()
        entry = self._entries.get(symbol)
        if entry is not None and entry.size >= size and now < entry.expires:
            self._hit()
            return self._trim(entry.value, size)
        task = self._joinable(symbol, size)
        if task is not None:
            self._hit()
        else:
            expires = (math.floor(now / self._ttl) + 1) * self._ttl
            task = asyncio.create_task(self._fetch(symbol, size, expires, fetch))
            task.add_done_callback(partial(self._forget, (symbol, size)))
            self._inflight[(symbol, size)] = task
        # Shielded: one caller giving up must not cancel the fetch the others wait for.
        return self._trim((await asyncio.shield(task)).value, size)

    async def close(self) -> None:
        """Cancel fetches in flight and forget cached values; once, at shutdown."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()

    def _joinable(self, symbol: str, size: int) -> asyncio.Task[_Entry[V]] | None:
        """A fetch in flight for this symbol that will answer at least `size` rows."""
        for (sym, fetching), task in self._inflight.items():
            if sym == symbol and fetching >= size:
                return task
        return None

    async def _fetch(
        self, symbol: str, size: int, expires: float, fetch: Callable[[int], Awaitable[V]]
    ) -> _Entry[V]:
        entry = _Entry(size, expires, await fetch(size))
        current = self._entries.get(symbol)
        if current is None or (current.expires, current.size) <= (expires, size):
            self._entries[symbol] = entry
        return entry

    def _forget(self, key: tuple[str, int], task: asyncio.Task[_Entry[V]]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaited is not logged as lost

    def _hit(self) -> None:
        self._metrics.snapshot_cache_hits.labels(self._exchange, self._kind).inc()
