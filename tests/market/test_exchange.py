"""ExchangeMarket with the real ccxt binance client against the local emulator."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.errors import (
    BadResponse,
    BadSymbol,
    CircuitOpen,
    ExchangePaused,
    ExchangeUnavailable,
    IPBanned,
    RateLimited,
    RequestTimeout,
)
from engine.market.exchange import ExchangeMarket
from engine.market.source import MarketData
from engine.market.weights import published_weight_per_minute, rewrite_api_urls
from engine.metrics import Metrics
from tests.market.conftest import ETH, KLINES, NOW, Rig, fast_client
from tests.support import metric, settle, wait_until


def test_rewrite_api_urls_keeps_paths_and_leaves_other_values() -> None:
    urls = {
        "public": "https://api.binance.com/api/v3",
        "fapiPublic": "https://fapi.binance.com/fapi/v1?x=1",
        "nested": {"rest": "https://api.{hostname}/v5"},
        "weight": 3,
        "name": "not a url",
    }
    out = rewrite_api_urls(urls, "http://127.0.0.1:8123")
    assert out == {
        "public": "http://127.0.0.1:8123/api/v3",
        "fapiPublic": "http://127.0.0.1:8123/fapi/v1?x=1",
        "nested": {"rest": "http://127.0.0.1:8123/v5"},
        "weight": 3,
        "name": "not a url",
    }
    assert rewrite_api_urls(urls, "http://proxy:9/binance/")["public"] == "http://proxy:9/binance/api/v3"


async def test_client_is_configured_for_our_limiter_and_the_emulator() -> None:
    client = fast_client()
    market = ExchangeMarket(
        "binance", "swap", VirtualClock(), Metrics(), api_url="http://127.0.0.1:9", client=client
    )
    try:
        assert client.enableRateLimit is False
        assert client.options["defaultType"] == "swap"
        assert client.options["fetchMarkets"]["types"] == ["linear"]
        assert client.timeout == 10_000

        def strings(node: object) -> list[str]:
            if isinstance(node, dict):
                return [s for v in node.values() for s in strings(v)]
            return [node] if isinstance(node, str) else []

        api = strings(client.urls["api"])
        assert api and all(u.startswith("http://127.0.0.1:9/") for u in api)
        assert client.urls["api"]["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
        # Before exchangeInfo is seen the bucket counts ccxt units; Binance futures klines
        # cost depends on the limit.
        assert market.request_cost("ohlcv", {"limit": 50}) == 1
        assert market.request_cost("ohlcv", {"limit": 1000}) == 5
    finally:
        await market.close()
    spot = ExchangeMarket("binance", "spot", VirtualClock(), Metrics(), client=fast_client())
    try:
        assert spot.request_cost("ohlcv", {"limit": 1000}) == pytest.approx(0.4)
        assert spot.request_cost("markets", {}) == 4
        assert spot.limiter.capacity == pytest.approx(0.8 * 60_000 / 50)  # ccxt rateLimit 50 ms
    finally:
        await spot.close()


def test_published_weight_limit_is_read_per_minute() -> None:
    info = {
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ]
    }
    assert published_weight_per_minute(info) == 6000
    info["rateLimits"][0].update(interval="SECOND", intervalNum=10, limit=1000)
    assert published_weight_per_minute(info) == 6000
    assert published_weight_per_minute({"symbols": []}) is None
    assert published_weight_per_minute([1, 2]) is None


async def test_load_markets_is_one_request_and_sizes_the_bucket(rig: Rig) -> None:
    assert isinstance(rig.market, MarketData)
    assert await rig.market.load_markets() == {"ETH/BTC", "LTC/BTC", "BTC/USDT"}
    assert dict(rig.emulator.requests) == {"/api/v3/exchangeInfo": 1}
    status = rig.market.status()
    assert (
        status["markets_loaded"] is True and status["breaker"] == "closed" and status["paused_until"] is None
    )
    assert rig.market.limiter.capacity == pytest.approx(0.8 * 6000)
    assert rig.market.limiter.tokens == pytest.approx(4800 - 20)  # exchangeInfo weighs 20
    assert rig.requests("ok", kind="markets") == 1


async def test_fetch_ohlcv_returns_exchange_rows_and_charges_their_weight(rig: Rig) -> None:
    rows = await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert np.allclose(rows, ETH[2996:3001])  # the last one is still forming at NOW
    assert rig.emulator.requests == {"/api/v3/exchangeInfo": 1, KLINES: 1}
    assert rig.market.limiter.tokens == pytest.approx(4800 - 20 - 2)
    since = await rig.market.fetch_ohlcv("ETH/BTC", "5m", int(ETH[100, 0]), 3)
    assert [r[0] for r in since] == list(ETH[100:103, 0])
    synthetic = await rig.market.fetch_ohlcv("BTC/USDT", "1h", None, 3)
    assert len(synthetic) == 3 and all(r[0] % 3_600_000 == 0 for r in synthetic)
    assert rig.requests("ok") == 3


async def test_unknown_symbol_is_a_bad_symbol(rig: Rig) -> None:
    with pytest.raises(BadSymbol):
        await rig.market.fetch_ohlcv("XRP/BTC", "5m", None, 5)
    assert rig.requests("request_error") == 1


async def test_burst_of_500s_opens_the_breaker_after_five(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.fail_next_n = 100
    rig.emulator.faults.path = KLINES
    for _ in range(5):
        with pytest.raises(ExchangeUnavailable):
            await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert rig.market.status()["breaker"] == "open"
    with pytest.raises(CircuitOpen):
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert rig.emulator.requests[KLINES] == 5
    assert rig.requests("transport_error") == 5
    assert rig.requests("circuit_open") == 1
    assert metric(rig.metrics, "engine_breaker_state", exchange="binance") == 2
    assert metric(rig.metrics, "engine_breaker_transitions_total", exchange="binance", state="open") == 1
    # After the reset timeout one probe goes out; the exchange is back, so the breaker closes.
    rig.emulator.faults.fail_next_n = 0
    rig.clock.advance(30)
    assert len(await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)) == 5
    assert rig.market.status()["breaker"] == "closed"


@pytest.mark.parametrize("rig", [{"max_retries": 3, "auto": True}], indirect=True)
async def test_transient_500s_are_retried_with_backoff(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.fail_next_n = 2
    rig.emulator.faults.path = KLINES
    start = rig.clock.now()
    assert len(await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)) == 5
    assert rig.emulator.requests[KLINES] == 3
    assert rig.clock.now() - start == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)  # rand() = 0.5
    assert rig.requests("transport_error") == 2 and rig.requests("ok") == 1


@pytest.mark.parametrize("rig", [{"max_retries": 3}], indirect=True)
async def test_429_with_retry_after_pauses_every_caller(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.fail_next_n = 1
    rig.emulator.faults.fail_status = 429
    rig.emulator.faults.retry_after = 5
    first = asyncio.create_task(rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5))
    await wait_until(lambda: rig.market.status()["paused_until"] is not None)
    assert rig.market.status()["paused_until"] == pytest.approx(NOW + 5)
    second = asyncio.create_task(rig.market.fetch_ohlcv("LTC/BTC", "5m", None, 5))
    await settle()
    rig.clock.advance(4.9)
    await settle()
    await asyncio.sleep(0.05)  # real time for any request that should not be sent
    assert rig.emulator.requests[KLINES] == 1
    assert not first.done() and not second.done()
    rig.clock.advance(0.1)
    assert len(await first) == 5 and len(await second) == 5
    assert rig.emulator.requests[KLINES] == 3
    assert all(hit.t >= NOW + 5 for hit in rig.emulator.hits(KLINES)[1:])
    assert rig.requests("rate_limited") == 1
    assert metric(rig.metrics, "engine_exchange_paused", exchange="binance") == 0


@pytest.mark.parametrize("rig", [{"max_retries": 3}], indirect=True)
async def test_418_ban_pauses_and_later_calls_fail_fast(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.fail_next_n = 1
    rig.emulator.faults.fail_status = 418
    rig.emulator.faults.retry_after = 600
    with pytest.raises(IPBanned) as info:
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert info.value.retry_after == 600
    with pytest.raises(ExchangePaused):
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert rig.emulator.requests[KLINES] == 1
    assert rig.requests("banned") == 1 and rig.requests("paused") == 1
    assert metric(rig.metrics, "engine_exchange_paused", exchange="binance") == 1
    assert rig.market.status()["breaker"] == "closed"


async def test_malformed_json_is_a_bad_response(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.malformed_next_n = 1
    with pytest.raises(BadResponse):
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    assert rig.requests("transport_error") == 1


@pytest.mark.parametrize("rig", [{"timeout_s": 0.2}], indirect=True)
async def test_slow_answer_is_a_request_timeout(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.faults.delay_s = 0.5
    with pytest.raises(RequestTimeout):
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    rig.emulator.faults.delay_s = 0


async def test_used_weight_header_lowers_the_bucket(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.requests.clear()
    # Another client on the same IP has spent most of the minute's weight.
    rig.emulator.spend_weight(4000)
    await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    used = rig.emulator.used_weight
    assert rig.market.limiter.tokens == pytest.approx(4800 - used)
    assert rig.market.limiter.window_used == used
    assert rig.metric("engine_exchange_used_weight") == used


async def test_malformed_candle_never_reaches_gateway_output(rig: Rig) -> None:
    bad = int(ETH[2990, 0])
    rig.emulator.faults.candles = {bad: "high_below_low"}
    gateway = rig.gateway
    await gateway.start()
    candles = await gateway.candles("ETH/BTC", "5m", 30)
    assert bad not in candles.ts
    assert int(candles.ts[-1]) == int(ETH[2999, 0])
    assert ETH[3000, 0] not in candles.ts  # forming at NOW
    assert (
        metric(rig.metrics, "engine_candles_dropped_total", exchange="binance", reason="high_below_body") == 1
    )
    status = gateway.status()
    assert status["markets_loaded"] is True and status["cached_series"] == 1


async def test_exceeding_the_minute_weight_is_answered_429_until_the_next_minute(rig: Rig) -> None:
    await rig.market.load_markets()
    rig.emulator.spend_weight(6000)
    with pytest.raises(RateLimited) as info:
        await rig.market.fetch_ohlcv("ETH/BTC", "5m", None, 5)
    next_minute = (NOW // 60 + 1) * 60
    assert info.value.retry_after == pytest.approx(next_minute - NOW, abs=1)
    assert rig.market.limiter.tokens <= 0  # the used-weight header on the 429 empties our share
    assert rig.market.status()["paused_until"] == pytest.approx(NOW + info.value.retry_after)
