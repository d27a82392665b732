"""Each exchange fault, end to end: real ccxt → emulator, seen through the gateway as a user would.

What a user sees is what the gateway returns (or raises, which the pipeline logs and skips),
`gateway.status()` (the market part of /ready) and the metrics; nothing here may crash, and
no broken candle may ever come out of `gateway.candles`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.errors import BadResponse, CircuitOpen, ExchangeUnavailable, NetworkError, RequestTimeout
from tests.market.conftest import ETH, KLINES, Rig
from tests.support import settle, wait_until
from tests.support.emulator import CandleFault

STEP = 300_000
SERIES = [("ETH/BTC", "5m"), ("LTC/BTC", "5m"), ("BTC/USDT", "5m"), ("ETH/BTC", "15m"), ("LTC/BTC", "1h")]


async def fail_five(rig: Rig, error: type[Exception]) -> None:
    for _ in range(5):
        with pytest.raises(error):
            await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert rig.gateway.status()["breaker"] == "open"
    assert rig.metric("engine_breaker_state") == 2


async def probe_once(rig: Rig) -> list[object]:
    """After the reset timeout, five different series at once: exactly one probe goes out."""
    rig.clock.advance(30)
    before = rig.emulator.requests[KLINES]
    results = await asyncio.gather(
        *(rig.gateway.candles(s, tf, 10) for s, tf in SERIES), return_exceptions=True
    )
    assert rig.emulator.requests[KLINES] - before == 1
    assert sum(isinstance(r, CircuitOpen) for r in results) == len(SERIES) - 1
    return [r for r in results if not isinstance(r, CircuitOpen)]


async def test_a_burst_of_500s_opens_the_breaker_and_one_probe_closes_it(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.path = KLINES
    rig.emulator.faults.fail_next_n = 100
    await fail_five(rig, ExchangeUnavailable)
    with pytest.raises(CircuitOpen):
        await rig.gateway.candles("LTC/BTC", "5m", 10)
    assert rig.emulator.requests[KLINES] == 5  # the sixth call never left the engine
    assert rig.requests("transport_error") == 5 and rig.requests("circuit_open") == 1
    # The exchange is still failing at the first probe: open again, for another timeout.
    (probe,) = await probe_once(rig)
    assert isinstance(probe, ExchangeUnavailable)
    assert rig.gateway.status()["breaker"] == "open"
    rig.emulator.faults.fail_next_n = 0
    await probe_once(rig)
    assert rig.gateway.status()["breaker"] == "closed"
    assert rig.metric("engine_breaker_state") == 0
    assert rig.metric("engine_breaker_transitions_total", state="half_open") == 2
    assert rig.metric("engine_breaker_transitions_total", state="closed") == 1
    assert len(await rig.gateway.candles("LTC/BTC", "1h", 5)) == 5


@pytest.mark.parametrize("mode", ["503", "refused"])
async def test_a_full_outage_opens_the_breaker_and_recovery_needs_one_probe(rig: Rig, mode: str) -> None:
    await rig.gateway.start()
    good = await rig.gateway.candles("ETH/BTC", "5m", 10)
    rig.clock.advance(STEP / 1000)  # the next close: the cached series needs a refresh
    if mode == "503":
        rig.emulator.faults.outage = "503"
    else:
        await rig.emulator.go_down()
    await fail_five(rig, ExchangeUnavailable if mode == "503" else NetworkError)
    status = rig.gateway.status()
    assert status["markets_loaded"] is True and status["cached_series"] == 1
    rig.emulator.faults.outage = None
    await rig.emulator.come_back()
    await probe_once(rig)
    assert rig.gateway.status()["breaker"] == "closed"
    fresh = await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert int(fresh.ts[-1]) > int(good.ts[-1])


@pytest.mark.parametrize("rig", [{"timeout_s": 0.25}], indirect=True)
async def test_slow_answers_time_out_and_the_next_ones_are_served(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.delay_s = 0.6
    for _ in range(2):
        with pytest.raises(RequestTimeout):
            await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert rig.requests("transport_error") == 2
    assert rig.gateway.status()["cached_series"] == 0
    rig.emulator.faults.delay_s = 0
    assert len(await rig.gateway.candles("ETH/BTC", "5m", 10)) == 10
    assert rig.gateway.status()["breaker"] == "closed"


@pytest.mark.parametrize("kind", ["truncated", "html", "wrong_shape"])
async def test_unparsable_answers_are_transport_errors_and_nothing_is_cached(rig: Rig, kind: str) -> None:
    await rig.gateway.start()
    rig.emulator.faults.malformed_next_n = 1
    rig.emulator.faults.malformed = kind  # type: ignore[assignment]
    with pytest.raises(BadResponse):
        await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert rig.requests("transport_error") == 1
    assert rig.gateway.status()["cached_series"] == 0
    candles = await rig.gateway.candles("ETH/BTC", "5m", 10)
    assert np.array_equal(candles.ts, ETH[2990:3000, 0].astype(np.int64))


@pytest.mark.parametrize(
    ("fault", "dropped_as", "kept"),
    [
        ("nan", "non_finite", 28),
        ("high_below_low", "high_below_body", 28),
        ("negative_volume", "negative_volume", 28),
        ("duplicate", "duplicate", 30),
        ("gap", None, 28),
        ("out_of_order", None, 30),
    ],
)
async def test_broken_candles_never_come_out_of_the_gateway(
    rig: Rig, fault: CandleFault, dropped_as: str | None, kept: int
) -> None:
    await rig.gateway.start()
    bad = [int(ETH[i, 0]) for i in (2975, 2990)]
    rig.emulator.faults.candles = dict.fromkeys(bad, fault)
    candles = await rig.gateway.candles("ETH/BTC", "5m", 30)
    assert np.isfinite(candles.rows()).all()
    assert np.all(np.diff(candles.ts) > 0)
    assert np.all(candles.high >= np.maximum(candles.open, candles.close))
    assert np.all(candles.low <= np.minimum(candles.open, candles.close)) and np.all(candles.volume >= 0)
    assert int(candles.ts[-1]) == int(ETH[2999, 0])  # the last closed one; the forming one never
    assert len(candles) == kept
    if dropped_as is not None:
        assert rig.metric("engine_candles_dropped_total", reason=dropped_as) == 2
    # Every dropped or missing row is reported as a gap in the series handed out.
    assert rig.metric("engine_candles_dropped_total", reason="gap") == 30 - kept
    # ccxt sorts what arrives out of order before the engine sees it: nothing is lost, but it shows.
    assert rig.metric("engine_candles_reordered_total") == (2 if fault == "out_of_order" else 0)
    kept_ts = set(candles.ts.tolist())
    assert kept_ts.isdisjoint(bad) if kept == 28 else set(bad) <= kept_ts


async def test_fourteen_subscribers_cause_one_klines_request_per_close(rig: Rig) -> None:
    await rig.gateway.start()
    lookbacks = [20 + 10 * i for i in range(14)]
    for lookback in lookbacks:
        rig.gateway.subscribe("ETH/BTC", "5m", lookback)
    closes = 4
    for n in range(closes):
        results = await asyncio.gather(*(rig.gateway.candles("ETH/BTC", "5m", lb) for lb in lookbacks))
        assert [len(r) for r in results] == lookbacks
        assert int(results[0].ts[-1]) == int(ETH[2999 + n, 0])
        assert rig.emulator.requests[KLINES] == n + 1
        rig.clock.advance(STEP / 1000)
    # Only the candles closed since the last refresh were asked for after the first fetch.
    limits = [int(hit.query["limit"]) for hit in rig.emulator.hits(KLINES)]
    assert limits == [max(lookbacks) + 1] + [2] * (closes - 1)
    assert rig.metric("engine_ohlcv_cache_hits_total") == 13 * closes


async def test_a_cancelled_caller_neither_crashes_nor_poisons_the_shared_fetch(rig: Rig) -> None:
    await rig.gateway.start()
    rig.emulator.faults.delay_s = 0.05
    quitter = asyncio.create_task(rig.gateway.candles("ETH/BTC", "5m", 10))
    stayer = asyncio.create_task(rig.gateway.candles("ETH/BTC", "5m", 10))
    await settle()
    await wait_until(lambda: rig.emulator.requests[KLINES] == 1)
    quitter.cancel()
    assert len(await stayer) == 10
    assert rig.emulator.requests[KLINES] == 1
    assert rig.gateway.status()["breaker"] == "closed"
