from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.errors import BadSymbol, ExchangeUnavailable
from engine.market.gateway import MarketGateway
from engine.market.replay import ReplayMarket
from engine.metrics import Metrics
from engine.timeframes import timeframe_seconds
from tests.support import metric, settle

STEP_S = 300
STEP = STEP_S * 1000
T0 = 1_515_560_400  # a 5m boundary
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


class FakeSource:
    """An exchange-like source: candles every 5m from T0, the forming one included."""

    exchange = "fake"

    def __init__(self, clock: VirtualClock, page_cap: int = 1000) -> None:
        self.clock = clock
        self.page_cap = page_cap
        self.calls: list[tuple[str, str, int | None, int]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.corrupt: set[int] = set()
        self.closed = False

    async def load_markets(self) -> set[str]:
        return {"ETH/BTC", "LTC/BTC"}

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None, limit: int
    ) -> list[list[float]]:
        self.calls.append((symbol, timeframe, since_ms, limit))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        now_ms = int(self.clock.now() * 1000)
        step = timeframe_seconds(timeframe) * 1000
        last = now_ms // step * step
        first = max(T0 * 1000, since_ms if since_ms is not None else last - (limit - 1) * step)
        first = -(-first // step) * step
        rows = []
        for ts in range(first, last + 1, step)[: min(limit, self.page_cap)]:
            price = 1.0 + (ts - T0 * 1000) / STEP / 1000
            high = price * 0.5 if ts in self.corrupt else price * 1.01
            rows.append([float(ts), price, high, price * 0.99, price, 10.0])
        return rows

    async def close(self) -> None:
        self.closed = True

    def status(self) -> dict[str, object]:
        return {"source": "fake", "markets_loaded": True}


def setup(at: float, page_cap: int = 1000) -> tuple[MarketGateway, FakeSource, VirtualClock, Metrics]:
    clock = VirtualClock(start=at)
    source = FakeSource(clock, page_cap)
    metrics = Metrics()
    return MarketGateway(source, clock, metrics, logging.getLogger("test.gateway")), source, clock, metrics


def hits(metrics: Metrics) -> float:
    return metric(metrics, "engine_ohlcv_cache_hits_total", exchange="fake")


async def test_returns_only_closed_candles() -> None:
    now = T0 + 100 * STEP_S + 42  # 42 s into candle 100, which is forming
    gateway, source, _, _ = setup(now)
    candles = await gateway.candles("ETH/BTC", "5m", 20)
    assert len(candles) == 20
    assert int(candles.ts[-1]) == (T0 + 99 * STEP_S) * 1000
    assert np.all(candles.ts + STEP <= now * 1000)
    assert all(np.diff(candles.ts) == STEP)
    _, _, since, limit = source.calls[0]
    assert since == (T0 + 80 * STEP_S) * 1000 and limit == 21


async def test_candle_closing_exactly_now_is_closed() -> None:
    gateway, _, _, _ = setup(T0 + 100 * STEP_S)
    candles = await gateway.candles("ETH/BTC", "5m", 5)
    assert int(candles.ts[-1]) == (T0 + 99 * STEP_S) * 1000


async def test_concurrent_callers_share_one_fetch() -> None:
    gateway, source, _, metrics = setup(T0 + 100 * STEP_S + 5)
    source.gate = asyncio.Event()
    callers = [asyncio.create_task(gateway.candles("ETH/BTC", "5m", 50)) for _ in range(14)]
    await settle()
    source.gate.set()
    results = await asyncio.gather(*callers)
    assert len(source.calls) == 1
    assert all(np.array_equal(r.ts, results[0].ts) for r in results)
    assert hits(metrics) == 13


async def test_second_call_in_the_same_candle_is_a_cache_hit() -> None:
    gateway, source, clock, metrics = setup(T0 + 100 * STEP_S + 5)
    first = await gateway.candles("ETH/BTC", "5m", 50)
    clock.advance(200)
    second = await gateway.candles("ETH/BTC", "5m", 30)
    assert len(source.calls) == 1
    assert hits(metrics) == 1
    assert np.array_equal(second.ts, first.ts[-30:])


async def test_refresh_after_a_close_fetches_only_the_new_candles() -> None:
    gateway, source, clock, _ = setup(T0 + 100 * STEP_S + 5)
    before = await gateway.candles("ETH/BTC", "5m", 50)
    clock.advance(STEP_S)
    after = await gateway.candles("ETH/BTC", "5m", 50)
    assert len(source.calls) == 2
    _, _, since, limit = source.calls[1]
    assert since == int(before.ts[-1]) + STEP
    assert limit == 2  # the one new closed candle plus the forming one
    assert np.array_equal(after.ts[:-1], before.ts[1:])
    assert int(after.ts[-1]) == int(before.ts[-1]) + STEP
    clock.advance(3 * STEP_S)
    later = await gateway.candles("ETH/BTC", "5m", 50)
    assert source.calls[2][2:] == (int(after.ts[-1]) + STEP, 4)
    assert len(later) == 50 and all(np.diff(later.ts) == STEP)


async def test_cache_keeps_the_largest_subscribed_lookback_only() -> None:
    gateway, source, _, _ = setup(T0 + 500 * STEP_S + 5)
    gateway.subscribe("ETH/BTC", "5m", 30)
    gateway.subscribe("ETH/BTC", "5m", 120)
    gateway.subscribe("ETH/BTC", "5m", 60)
    candles = await gateway.candles("ETH/BTC", "5m", 10)
    assert len(candles) == 10
    assert source.calls[0][3] == 121
    assert len(await gateway.candles("ETH/BTC", "5m", 120)) == 120
    assert len(source.calls) == 1


async def test_a_larger_lookback_than_cached_refetches_the_window() -> None:
    gateway, source, _, _ = setup(T0 + 500 * STEP_S + 5)
    await gateway.candles("ETH/BTC", "5m", 10)
    candles = await gateway.candles("ETH/BTC", "5m", 200)
    assert len(candles) == 200
    assert source.calls[1][3] == 201


async def test_long_absence_refetches_the_window_instead_of_everything_missed() -> None:
    gateway, source, clock, _ = setup(T0 + 100 * STEP_S + 5)
    await gateway.candles("ETH/BTC", "5m", 10)
    clock.advance(50 * STEP_S)
    candles = await gateway.candles("ETH/BTC", "5m", 10)
    assert source.calls[1][3] == 11
    assert int(candles.ts[-1]) == (T0 + 149 * STEP_S) * 1000


async def test_long_windows_are_paged() -> None:
    gateway, source, _, _ = setup(T0 + 3000 * STEP_S + 5, page_cap=1000)
    candles = await gateway.candles("ETH/BTC", "5m", 1500)
    assert len(candles) == 1500
    assert all(np.diff(candles.ts) == STEP)
    assert len(source.calls) == 2
    assert source.calls[1][2] == int(candles.ts[999]) + STEP


async def test_short_history_returns_what_exists_without_refetching() -> None:
    gateway, source, _, _ = setup(T0 + 10 * STEP_S + 5)
    assert len(await gateway.candles("ETH/BTC", "5m", 100)) == 10
    assert len(await gateway.candles("ETH/BTC", "5m", 100)) == 10
    assert len(source.calls) == 1


async def test_invalid_candles_never_reach_the_cache(caplog: pytest.LogCaptureFixture) -> None:
    gateway, source, _, metrics = setup(T0 + 100 * STEP_S + 5)
    bad = (T0 + 95 * STEP_S) * 1000
    source.corrupt = {bad}
    with caplog.at_level(logging.WARNING):
        candles = await gateway.candles("ETH/BTC", "5m", 20)
    assert bad not in candles.ts
    assert metric(metrics, "engine_candles_dropped_total", exchange="fake", reason="high_below_body") == 1
    assert "high_below_body" in caplog.text


async def test_failure_reaches_every_waiter_and_is_not_cached() -> None:
    gateway, source, _, _ = setup(T0 + 100 * STEP_S + 5)
    source.fail_with = ExchangeUnavailable("down")
    results = await asyncio.gather(
        *(gateway.candles("ETH/BTC", "5m", 10) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ExchangeUnavailable) for r in results)
    assert len(source.calls) == 1
    source.fail_with = None
    assert len(await gateway.candles("ETH/BTC", "5m", 10)) == 10


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    gateway, source, _, _ = setup(T0 + 100 * STEP_S + 5)
    source.gate = asyncio.Event()
    quitter = asyncio.create_task(gateway.candles("ETH/BTC", "5m", 10))
    stayer = asyncio.create_task(gateway.candles("ETH/BTC", "5m", 10))
    await settle()
    quitter.cancel()
    await settle()
    source.gate.set()
    assert len(await stayer) == 10


async def test_series_are_cached_independently() -> None:
    gateway, source, _, _ = setup(T0 + 100 * STEP_S + 5)
    await asyncio.gather(gateway.candles("ETH/BTC", "5m", 10), gateway.candles("LTC/BTC", "5m", 10))
    await gateway.candles("ETH/BTC", "15m", 3)
    assert sorted((c[0], c[1]) for c in source.calls) == [
        ("ETH/BTC", "15m"),
        ("ETH/BTC", "5m"),
        ("LTC/BTC", "5m"),
    ]


async def test_start_loads_markets_and_unknown_symbols_are_refused() -> None:
    gateway, source, _, _ = setup(T0 + 100 * STEP_S)
    assert gateway.markets == frozenset()
    await gateway.start()
    assert gateway.markets == {"ETH/BTC", "LTC/BTC"}
    with pytest.raises(BadSymbol, match="XRP/BTC"):
        await gateway.candles("XRP/BTC", "5m", 10)
    assert source.calls == []


async def test_status_merges_the_source_and_close_closes_it() -> None:
    gateway, source, _, _ = setup(T0 + 100 * STEP_S + 5)
    gateway.subscribe("ETH/BTC", "5m", 10)
    await gateway.candles("ETH/BTC", "5m", 10)
    status = gateway.status()
    assert status["source"] == "fake" and status["cached_series"] == 1 and status["subscriptions"] == 1
    await gateway.close()
    assert source.closed


def test_subscribe_rejects_nonsense() -> None:
    gateway, _, _, _ = setup(T0)
    with pytest.raises(ValueError):
        gateway.subscribe("ETH/BTC", "5x", 10)
    with pytest.raises(ValueError):
        gateway.subscribe("ETH/BTC", "5m", 0)


async def test_over_replay_the_gateway_serves_closed_candles_of_any_timeframe() -> None:
    rows = np.loadtxt(SAMPLE / "binance_ETH-BTC_5m.csv", delimiter=",", skiprows=1)
    now = rows[2000, 0] / 1000 + 30
    clock = VirtualClock(start=now)
    gateway = MarketGateway(ReplayMarket(SAMPLE, "binance", clock), clock, Metrics())
    await gateway.start()
    five = await gateway.candles("ETH/BTC", "5m", 100)
    assert int(five.ts[-1]) == int(rows[1999, 0])
    assert np.array_equal(five.close, rows[1900:2000, 4])
    hour = await gateway.candles("ETH/BTC", "1h", 24)
    assert len(hour) == 24
    assert np.all(hour.ts % 3_600_000 == 0)
    assert int(hour.ts[-1]) + 3_600_000 <= now * 1000
    await gateway.close()
