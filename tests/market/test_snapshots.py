"""Ticker, trades, order book and funding through the gateway: spot and USDⓈ-M, real ccxt."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.errors import BadResponse, BadSymbol, DataUnavailable
from engine.market.ccxt_parse import to_funding, to_order_book, to_ticker, to_trades
from engine.market.gateway import MarketGateway
from engine.market.replay import ReplayMarket
from engine.metrics import Metrics
from tests.market.conftest import NOW, SAMPLE, Rig
from tests.support import settle, wait_until

SWAP = {"market_type": "swap"}


async def test_spot_snapshots_are_the_exchange_figures_and_charge_their_weight(rig: Rig) -> None:
    await rig.gateway.start()
    book = rig.emulator.book
    ticker = await rig.gateway.ticker("BTC/USDT")
    assert ticker.last == pytest.approx(book.last_price("BTC/USDT"), rel=1e-8)
    assert ticker.bid is not None and ticker.ask is not None and ticker.bid < ticker.last < ticker.ask
    assert ticker.ts_ms == int(NOW * 1000)
    trades = await rig.gateway.trades("BTC/USDT", 200)
    assert len(trades) == 200 and np.all(np.diff(trades.ts) > 0) and int(trades.ts[-1]) <= NOW * 1000
    assert trades.buyer_taker.any() and not trades.buyer_taker.all()
    depth = await rig.gateway.order_book("ETH/BTC", 20)
    assert depth.bids.shape == (20, 2) and depth.asks.shape == (20, 2)
    assert np.all(np.diff(depth.bids[:, 0]) < 0) and np.all(np.diff(depth.asks[:, 0]) > 0)
    assert depth.bids[0, 0] < depth.asks[0, 0]
    # 20 exchangeInfo + 2 ticker + 2 aggTrades + 5 depth(20), and the bucket charged the same.
    assert rig.emulator.used_weight == 29
    assert rig.market.limiter.window_used == 29
    for kind in ("ticker", "trades", "order_book"):
        assert rig.requests("ok", kind=kind) == 1
    with pytest.raises(DataUnavailable, match="perpetual swaps"):
        await rig.gateway.funding("BTC/USDT")
    with pytest.raises(BadSymbol):
        await rig.gateway.ticker("XRP/BTC")
    assert len(rig.emulator.log) == 4


@pytest.mark.parametrize("rig", [SWAP], indirect=True)
async def test_swap_markets_serve_candles_and_every_snapshot_kind(rig: Rig) -> None:
    await rig.gateway.start()
    assert rig.gateway.markets == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
    assert rig.market.limiter.capacity == pytest.approx(0.8 * 2400)
    candles = await rig.gateway.candles("BTC/USDT:USDT", "1h", 24)
    assert len(candles) == 24 and int(candles.ts[-1]) + 3_600_000 <= NOW * 1000
    ticker = await rig.gateway.ticker("BTC/USDT:USDT")
    assert ticker.last > 0 and ticker.bid is None and ticker.ask is None  # futures 24hr has no book
    trades = await rig.gateway.trades("ETH/USDT:USDT", 50)
    assert len(trades) == 50
    depth = await rig.gateway.order_book("BTC/USDT:USDT", 7)
    assert depth.bids.shape == (7, 2)
    assert rig.emulator.hits("/fapi/v1/depth")[0].query["limit"] == "10"  # the next depth futures accept
    funding = await rig.gateway.funding("BTC/USDT:USDT")
    assert funding.rate == pytest.approx(rig.emulator.book.funding_rate("BTC/USDT:USDT"))
    assert funding.next_funding_ms is not None and funding.next_funding_ms % (8 * 3_600_000) == 0
    # exchangeInfo 1, klines(25) 1, ticker 1, aggTrades 20, depth(10) 2, premiumIndex 1
    assert rig.emulator.used("fapi") == 26 and rig.market.limiter.window_used == 26
    assert rig.emulator.requests["/api/v3/exchangeInfo"] == 0


async def test_identical_snapshot_requests_share_one_fetch_within_a_second(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.delay_s = 0.02  # keep the first request in flight while the others arrive
    books = await asyncio.gather(*(rig.gateway.order_book("BTC/USDT", d) for d in (50, 10, 50, 20)))
    tickers = await asyncio.gather(*(rig.gateway.ticker("BTC/USDT") for _ in range(14)))
    assert rig.emulator.requests["/api/v3/depth"] == 1
    assert rig.emulator.requests["/api/v3/ticker/24hr"] == 1
    assert [b.bids.shape[0] for b in books] == [50, 10, 50, 20]
    assert np.array_equal(books[1].bids, books[0].bids[:10])
    assert all(t == tickers[0] for t in tickers)
    await rig.gateway.trades("BTC/USDT", 500)
    small = await rig.gateway.trades("BTC/USDT", 100)  # served from the 500
    assert len(small) == 100 and rig.emulator.requests["/api/v3/aggTrades"] == 1
    assert rig.metric("engine_snapshot_cache_hits_total", kind="ticker") == 13
    assert rig.metric("engine_snapshot_cache_hits_total", kind="trades") == 1
    assert rig.gateway.status()["cached_snapshots"] == 3
    rig.clock.advance(0.4)  # NOW is x.0: still the same second
    await rig.gateway.ticker("BTC/USDT")
    assert rig.emulator.requests["/api/v3/ticker/24hr"] == 1
    rig.clock.advance(0.6)
    await rig.gateway.ticker("BTC/USDT")
    await rig.gateway.order_book("BTC/USDT", 100)  # deeper than cached: fetched
    assert rig.emulator.requests["/api/v3/ticker/24hr"] == 2
    assert rig.emulator.requests["/api/v3/depth"] == 2


async def test_a_broken_snapshot_is_a_transport_error_and_is_not_cached(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.malformed_next_n = 1
    with pytest.raises(BadResponse):
        await rig.gateway.ticker("BTC/USDT")
    rig.emulator.faults.malformed_next_n = 1
    rig.emulator.faults.malformed = "wrong_shape"
    with pytest.raises(BadResponse):
        await rig.gateway.trades("BTC/USDT", 10)
    assert rig.requests("transport_error", kind="ticker") == 1
    assert rig.requests("transport_error", kind="trades") == 1
    assert (await rig.gateway.ticker("BTC/USDT")).last > 0
    assert len(await rig.gateway.trades("BTC/USDT", 10)) == 10


async def test_a_failed_snapshot_reaches_every_waiter_then_is_retried(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.fail_next_n = 1
    rig.emulator.faults.delay_s = 0.02
    results = await asyncio.gather(
        *(rig.gateway.ticker("BTC/USDT") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    assert rig.emulator.requests["/api/v3/ticker/24hr"] == 1
    assert (await rig.gateway.ticker("BTC/USDT")).last > 0


async def test_a_cancelled_snapshot_caller_does_not_cancel_the_others(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.delay_s = 0.05
    quitter = asyncio.create_task(rig.gateway.ticker("BTC/USDT"))
    stayer = asyncio.create_task(rig.gateway.ticker("BTC/USDT"))
    await settle()
    await wait_until(lambda: rig.emulator.requests["/api/v3/ticker/24hr"] == 1)
    quitter.cancel()
    assert (await stayer).last > 0


async def test_replay_has_no_snapshots_and_says_why() -> None:
    clock = VirtualClock(start=NOW)
    gateway = MarketGateway(ReplayMarket(SAMPLE, "binance", clock), clock, Metrics())
    await gateway.start()
    calls = [
        gateway.ticker("ETH/BTC"),
        gateway.trades("ETH/BTC", 10),
        gateway.order_book("ETH/BTC", 10),
        gateway.funding("ETH/BTC"),
    ]
    for call, kind in zip(calls, ("ticker", "recent trades", "order book", "funding rate"), strict=True):
        with pytest.raises(DataUnavailable, match=f"candles only: no {kind} for ETH/BTC"):
            await call
    await gateway.close()


def test_parsers_drop_broken_rows_and_refuse_unusable_snapshots() -> None:
    trades, dropped = to_trades(
        [
            {"timestamp": 2, "price": 10.0, "amount": 1.0, "side": "sell"},
            {"timestamp": 1, "price": 9.0, "amount": 2.0, "side": "buy"},
            {"timestamp": 3, "price": math.nan, "amount": 1.0, "side": "buy"},
            {"timestamp": 4, "price": 9.5, "amount": -1.0, "side": "buy"},
            "junk",
        ],
        "x",
    )
    assert dropped == 3 and trades.ts.tolist() == [1, 2] and trades.buyer_taker.tolist() == [True, False]
    book, dropped = to_order_book(
        {"bids": [[9, 1], [10, 2], ["NaN", 1]], "asks": [[11, 1]], "timestamp": 5}, 5, "x"
    )
    assert dropped == 1 and book.bids[:, 0].tolist() == [10, 9]
    with pytest.raises(BadResponse, match="crossed"):
        to_order_book({"bids": [[12, 1]], "asks": [[11, 1]]}, 5, "x")
    with pytest.raises(BadResponse, match="no levels"):
        to_order_book({"bids": [], "asks": []}, 5, "x")
    with pytest.raises(BadResponse, match="last price"):
        to_ticker({"last": math.nan, "timestamp": 1}, "x")
    assert to_ticker({"last": 5.0, "bid": None, "ask": 0, "timestamp": 1}, "x").ask is None
    with pytest.raises(BadResponse, match="funding"):
        to_funding({"fundingRate": None, "timestamp": 1}, "x")
    assert (
        to_funding({"fundingRate": -0.0001, "timestamp": 1, "fundingTimestamp": None}, "x").next_funding_ms
        is None
    )
