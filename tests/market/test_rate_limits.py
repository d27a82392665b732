"""The budget, Retry-After and bans, against the emulator's own Binance-style weight accounting.

The promise tested here: the engine never provokes a 418, sends nothing while the exchange has
asked it to wait, shows the pause in `status()` and the metrics, and stays under the published
weight per minute even when one warm-up asks for far more than a minute's budget.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from engine.errors import ExchangePaused, IPBanned
from tests.market.conftest import KLINES, NOW, Rig
from tests.support import settle, wait_until
from tests.support.emulator import synthetic_symbols
from tests.support.emulator.weights import spot_weights, weight_of

NEXT_MINUTE = (NOW // 60 + 1) * 60  # NOW is 30 s into a minute
SYMBOLS = ("ETH/BTC", "LTC/BTC", "BTC/USDT")


def assert_nothing_sent_between(rig: Rig, start: float, end: float) -> None:
    inside = [hit for hit in rig.emulator.log if start < hit.t < end]
    assert inside == [], f"requests reached the exchange during its pause: {inside}"


@pytest.mark.parametrize("rig", [{"max_retries": 3}], indirect=True)
async def test_a_429_from_the_weight_limit_pauses_everyone_until_retry_after(rig: Rig) -> None:
    await rig.gateway.start()
    # Another process on this IP has used almost all of this minute's weight.
    rig.emulator.spend_weight(6000 - rig.emulator.used_weight - 3)
    calls = [asyncio.create_task(rig.gateway.candles(s, tf, 10)) for s in SYMBOLS for tf in ("5m", "1h")]
    await wait_until(lambda: rig.emulator.statuses[429] > 0 and rig.clock.pending > 0)
    await settle()
    await asyncio.sleep(0.05)  # real time for any request that should not be sent
    status = rig.gateway.status()
    assert status["paused"] is True and status["pause_reason"] == "rate_limited"
    assert status["paused_until"] == pytest.approx(NEXT_MINUTE)
    assert rig.metric("engine_exchange_paused") == 1
    sent_before_pause = len(rig.emulator.hits(KLINES))
    assert rig.emulator.statuses[429] == sent_before_pause - 1  # one fitted in the minute
    rig.clock.advance(NEXT_MINUTE - NOW - 0.5)
    await settle()
    await asyncio.sleep(0.05)
    assert len(rig.emulator.hits(KLINES)) == sent_before_pause
    rig.clock.set(NEXT_MINUTE)
    results = await asyncio.gather(*calls)
    assert all(len(c) == 10 for c in results)
    assert_nothing_sent_between(rig, NOW, NEXT_MINUTE)
    assert rig.emulator.statuses[418] == 0 and rig.emulator.ignored_retry_after == 0
    assert rig.metric("engine_exchange_paused") == 0
    assert rig.metric("engine_exchange_pauses_total", reason="rate_limited") >= 1
    assert rig.gateway.status()["breaker"] == "closed"  # a 429 says nothing about the path


@pytest.mark.parametrize(("retry_after", "pause"), [(30, 120), (None, 120), (600, 600)])
async def test_a_418_pauses_the_whole_exchange_at_least_two_minutes(
    rig: Rig, retry_after: float | None, pause: float
) -> None:
    await rig.gateway.start()
    faults = rig.emulator.faults
    faults.fail_next_n, faults.fail_status, faults.retry_after = 1, 418, retry_after
    with pytest.raises(IPBanned) as info:
        await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert info.value.retry_after == pause
    status = rig.gateway.status()
    assert status["pause_reason"] == "banned" and status["pause_remaining_s"] == pytest.approx(pause)
    assert rig.metric("engine_exchange_paused") == 1
    assert rig.metric("engine_exchange_pauses_total", reason="banned") == 1
    sent = len(rig.emulator.log)
    rig.clock.advance(pause - 20)
    for symbol in SYMBOLS:  # every kind of request fails fast, and none is sent
        with pytest.raises(ExchangePaused):
            await rig.gateway.candles(symbol, "5m", 10)
    with pytest.raises(ExchangePaused):
        await rig.gateway.ticker("BTC/USDT")
    assert len(rig.emulator.log) == sent
    assert rig.requests("paused") == 3 and rig.requests("paused", kind="ticker") == 1
    rig.clock.advance(15)
    # Within the request timeout of the end: waited out in the limiter, still nothing sent.
    waiting = asyncio.create_task(rig.gateway.candles("ETH/BTC", "5m", 10))
    await settle()
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(rig.emulator.log) == sent
    rig.clock.advance(5)
    assert len(await waiting) == 10
    assert rig.emulator.log[-1].t == NOW + pause
    assert rig.gateway.status()["paused"] is False and rig.metric("engine_exchange_paused") == 0
    assert rig.emulator.ignored_retry_after == 0 and rig.emulator.statuses[418] == 1


async def test_used_weight_header_keeps_the_engine_under_a_limit_it_underestimates(rig: Rig) -> None:
    """The exchange charges 50 for aggTrades where ccxt's table says 2; the header tells us."""
    await rig.market.load_markets()
    rig.emulator.families["spot"].limit = 300  # our share: 240 per minute
    rig.market.limiter.resize(240, 4)
    rig.emulator.families["spot"].weights["aggTrades"] = 50
    assert rig.market.request_cost("trades", {"limit": 100}) == 2
    for n in range(1, 6):
        await rig.market.fetch_trades("BTC/USDT", 100)
        used = rig.emulator.used_weight
        assert used == 20 + 50 * n
        assert rig.market.limiter.window_used == used
        assert rig.metric("engine_exchange_used_weight") == used
        assert rig.market.limiter.tokens <= 240 - used
    # 270 used: one more would be 320 > 300. The engine waits for the next minute instead.
    sixth = asyncio.create_task(rig.market.fetch_trades("BTC/USDT", 100))
    await settle()
    await asyncio.sleep(0.05)
    assert not sixth.done() and rig.emulator.requests["/api/v3/aggTrades"] == 5
    rig.clock.set(NEXT_MINUTE)
    assert len(await sixth) == 100
    assert rig.emulator.statuses[429] == 0
    assert rig.market.status()["window_used"] == 50


@pytest.mark.parametrize(
    "rig", [{"auto": True, "symbols": synthetic_symbols(50), "weight_limit": 100}], indirect=True
)
async def test_warming_50_symbols_on_a_small_budget_causes_no_429(rig: Rig) -> None:
    """50 klines requests weigh 100 on a 100-per-minute exchange: they must spread over minutes."""
    await rig.gateway.start()
    start = rig.clock.now()
    windows = await asyncio.gather(
        *(rig.gateway.candles(s, "5m", 50) for s in rig.emulator.families["spot"].symbols)
    )
    assert all(len(w) == 50 for w in windows)
    assert rig.emulator.statuses[429] == 0 and rig.emulator.statuses[418] == 0
    assert rig.emulator.requests[KLINES] == 50
    per_minute: dict[int, int] = defaultdict(int)
    weights = spot_weights()
    for hit in rig.emulator.log:
        per_minute[int(hit.t // 60)] += weight_of(weights, hit.path.rsplit("/api/v3/", 1)[1], hit.query)
    assert max(per_minute.values()) <= 80  # our 0.8 share of the published 100
    assert len(per_minute) >= 2  # spread over the exchange's minutes, not one burst into one
    assert rig.clock.now() > start


@pytest.mark.parametrize(
    "rig", [{"market_type": "swap", "auto": True, "fapi_weight_limit": 40}], indirect=True
)
async def test_futures_are_metered_in_their_own_weights(rig: Rig) -> None:
    """USDⓈ-M klines of 100-499 rows weigh 2: 30 of them overrun 40 a minute unless spaced out."""
    await rig.gateway.start()
    assert rig.market.limiter.capacity == pytest.approx(32)
    assert rig.market.request_cost("ohlcv", {"limit": 200}) == 2
    for n in range(3):
        await asyncio.gather(
            *(
                rig.gateway.candles(s, tf, 150)
                for s in ("BTC/USDT:USDT", "ETH/USDT:USDT")
                for tf in ("1m", "3m", "5m", "15m", "30m")
            )
        )
        rig.clock.advance(3600)
        assert rig.emulator.statuses[429] == 0, n
    assert rig.emulator.requests["/fapi/v1/klines"] == 30
