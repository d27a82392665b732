"""Closed candles and market snapshots for the scheduler, fetched as little as possible.

Many strategy instances watch the same (symbol, timeframe) and all become due at the same
candle close. The gateway turns that burst into one request per series: it keeps the last
`lookback` closed candles of each series, fetches only the candles that closed since the last
refresh, and lets concurrent callers share the one fetch in flight. Tickers, trades, order books
and funding rates go through the same source (so the same limiter and breaker), shared for a
second of clock time (see snapcache.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from engine.clock import Clock
from engine.errors import BadSymbol
from engine.market.candles import Candles
from engine.market.snapcache import SnapshotCache
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades
from engine.market.source import MarketData
from engine.market.validate import validate_rows
from engine.metrics import Metrics
from engine.timeframes import last_close, timeframe_seconds

Key = tuple[str, str]
T = TypeVar("T")
# Binance and most exchanges cap one OHLCV request at 1000 rows; longer ranges are paged.
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class _Series:
    """Cached closed candles of one (symbol, timeframe).

    `boundary_ms` is the candle close this series is complete up to; `need` is the lookback
    it was fetched for.
    """

    candles: Candles
    boundary_ms: int
    need: int


class MarketGateway:
    """Serves `candles()` from a per-series cache, and snapshots from a per-second one, over any
    `MarketData` source."""

    def __init__(
        self,
        source: MarketData,
        clock: Clock,
        metrics: Metrics,
        logger: logging.Logger | None = None,
        *,
        snapshot_ttl_s: float = 1.0,
    ) -> None:
        self.exchange = source.exchange
        self._source = source
        self._clock = clock
        self._metrics = metrics
        self._log = logger or logging.getLogger(__name__)
        self._needs: dict[Key, int] = {}
        self._cache: dict[Key, _Series] = {}
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._markets: frozenset[str] = frozenset()
        ex, ttl = self.exchange, snapshot_ttl_s
        self._tickers = SnapshotCache[Ticker]("ticker", ex, clock, metrics, ttl, _whole)
        self._trades = SnapshotCache[Trades]("trades", ex, clock, metrics, ttl, _last_trades)
        self._books = SnapshotCache[OrderBook]("order_book", ex, clock, metrics, ttl, _top_levels)
        self._funding = SnapshotCache[Funding]("funding", ex, clock, metrics, ttl, _whole)

    @property
    def markets(self) -> frozenset[str]:
        """Symbols the source offers; empty until `start()`."""
        return self._markets

    def subscribe(self, symbol: str, timeframe: str, lookback: int) -> None:
        """Declare that `lookback` closed candles of this series will be asked for.

        The cache keeps the largest lookback declared for a series and no more.
        """
        timeframe_seconds(timeframe)
        if lookback < 1:
            raise ValueError(f"lookback must be >= 1, got {lookback}")
        key = (symbol, timeframe)
        self._needs[key] = max(self._needs.get(key, 0), lookback)

    async def start(self) -> None:
        """Load the source's markets once, so an unknown symbol fails fast rather than at the exchange."""
        self._markets = frozenset(await self._source.load_markets())

    async def candles(self, symbol: str, timeframe: str, lookback: int) -> Candles:
        """The last `lookback` candles closed at the clock's now (fewer if history is shorter).

        A lookback above what was subscribed becomes the series' new size, since a caller
        that asks once will ask again at the next close.
        """
        self._check_symbol(symbol)
        self.subscribe(symbol, timeframe, lookback)
        key = (symbol, timeframe)
        boundary = int(last_close(self._clock.now(), timeframe) * 1000)
        fetched = False
        while True:
            entry = self._cache.get(key)
            if entry is not None and entry.boundary_ms >= boundary and entry.need >= lookback:
                if not fetched:
                    self._metrics.cache_hits.labels(self.exchange).inc()
                return entry.candles.tail(lookback)
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._refresh(key, boundary))
                task.add_done_callback(partial(self._forget, key))
                self._inflight[key] = task
                fetched = True
            # Shielded: one caller giving up must not cancel the fetch the others wait for.
            await asyncio.shield(task)

    async def ticker(self, symbol: str) -> Ticker:
        """Last price and top of book, at most one request per symbol per clock second."""
        self._check_symbol(symbol)
        return await self._tickers.get(symbol, 0, lambda _: self._source.fetch_ticker(symbol))

    async def trades(self, symbol: str, limit: int) -> Trades:
        """The most recent `limit` public trades, oldest first."""
        self._check_symbol(symbol)
        _positive("limit", limit)
        return await self._trades.get(symbol, limit, partial(self._source.fetch_trades, symbol))

    async def order_book(self, symbol: str, depth: int) -> OrderBook:
        """The best `depth` levels of each side."""
        self._check_symbol(symbol)
        _positive("depth", depth)
        return await self._books.get(symbol, depth, partial(self._source.fetch_order_book, symbol))

    async def funding(self, symbol: str) -> Funding:
        """Current funding rate of a perpetual swap (DataUnavailable for spot and replay)."""
        self._check_symbol(symbol)
        return await self._funding.get(symbol, 0, lambda _: self._source.fetch_funding(symbol))

    def status(self) -> dict[str, object]:
        """The source's status plus cache sizes, for /ready."""
        return {
            **self._source.status(),
            "cached_series": len(self._cache),
            "subscriptions": len(self._needs),
            "cached_snapshots": sum(len(c) for c in self._snapshot_caches()),
        }

    async def close(self) -> None:
        """Cancel fetches in flight, close the snapshot caches, then the source; once, at shutdown."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for cache in self._snapshot_caches():
            await cache.close()
        await self._source.close()

    def _snapshot_caches(self) -> tuple[SnapshotCache[Any], ...]:
        return (self._tickers, self._trades, self._books, self._funding)

    def _check_symbol(self, symbol: str) -> None:
        if self._markets and symbol not in self._markets:
            raise BadSymbol(f"{self.exchange}: {symbol} is not a market")

    def _forget(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaited is not logged as lost

    async def _refresh(self, key: Key, boundary: int) -> None:
        """Bring the series up to `boundary`: only the new candles if the cache can be extended."""
        symbol, timeframe = key
        step = timeframe_seconds(timeframe) * 1000
        need = self._needs[key]
        newest_closed = boundary - step
        entry = self._cache.get(key)
        if entry is not None and entry.need >= need and len(entry.candles):
            last = int(entry.candles.ts[-1])
            missing = (newest_closed - last) // step
            if missing <= 0:
                candles = entry.candles
            elif missing <= need:
                fresh = await self._fetch(symbol, timeframe, last + step, missing + 1, newest_closed, last)
                candles = entry.candles.concat(fresh).tail(need)
            else:
                candles = await self._fetch_window(symbol, timeframe, need, newest_closed)
        else:
            candles = await self._fetch_window(symbol, timeframe, need, newest_closed)
        self._cache[key] = _Series(candles, boundary, need)

    async def _fetch_window(self, symbol: str, timeframe: str, need: int, newest_closed: int) -> Candles:
        step = timeframe_seconds(timeframe) * 1000
        since = newest_closed - (need - 1) * step
        return (await self._fetch(symbol, timeframe, since, need + 1, newest_closed, None)).tail(need)

    async def _fetch(
        self, symbol: str, timeframe: str, since: int, count: int, newest_closed: int, after_ms: int | None
    ) -> Candles:
        """Validated closed candles from `since`, paging until `newest_closed` is reached.

        A full page that stops short of it (the exchange's row cap, or a broken answer whose
        duplicate rows pushed real ones past `limit`) is followed by a request for exactly what
        is still missing. A short page means the exchange has nothing newer yet, and a page
        without progress ends the loop, so a broken exchange costs a bounded number of requests.
        """
        step = timeframe_seconds(timeframe) * 1000
        rows: list[list[float]] = []
        cursor = since
        pages_left = count // _PAGE + 2
        while pages_left > 0:
            limit = min(count, _PAGE)
            page = await self._source.fetch_ohlcv(symbol, timeframe, cursor, limit)
            rows.extend(page)
            newest = _newest_ts(page)
            if newest is None or newest >= newest_closed or newest < cursor or len(page) < limit:
                break
            pages_left -= 1
            cursor = newest + step
            count = (newest_closed - newest) // step + 1  # what is missing, and the forming one
        candles = validate_rows(
            rows, self.exchange, symbol, timeframe, self._metrics, self._log, after_ms=after_ms
        )
        now_ms = int(self._clock.now() * 1000)
        closed = int(np.searchsorted(candles.ts, now_ms - step, side="right"))
        return candles.slice(0, closed)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _whole(value: T, _size: int) -> T:
    """Tickers and funding rates have no rows to trim."""
    return value


def _last_trades(trades: Trades, n: int) -> Trades:
    if len(trades) <= n:
        return trades
    return Trades(trades.ts[-n:], trades.price[-n:], trades.amount[-n:], trades.buyer_taker[-n:])


def _top_levels(book: OrderBook, depth: int) -> OrderBook:
    if book.bids.shape[0] <= depth and book.asks.shape[0] <= depth:
        return book
    return OrderBook(book.bids[:depth], book.asks[:depth], book.ts_ms)


def _newest_ts(page: list[list[float]]) -> int | None:
    """Latest numeric open time in a page, ignoring rows too broken to have one."""
    newest: int | None = None
    for row in page:
        try:
            ts = int(row[0])
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        newest = ts if newest is None else max(newest, ts)
    return newest
