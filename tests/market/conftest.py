"""The rig most market tests use: the real ccxt client, the emulator on loopback, one virtual clock.

`rig` is parametrised indirectly with a dict of options, e.g.
`@pytest.mark.parametrize("rig", [{"market_type": "swap", "max_retries": 3}], indirect=True)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.market.exchange import ExchangeMarket
from engine.market.gateway import MarketGateway
from engine.metrics import Metrics
from tests.support import metric
from tests.support.emulator import SPOT_DEFAULT, SWAP_DEFAULT, BinanceEmulator

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
ETH = np.loadtxt(SAMPLE / "binance_ETH-BTC_5m.csv", delimiter=",", skiprows=1)
NOW = ETH[3000, 0] / 1000 + 90  # 90 s into candle 3000 of the ETH/BTC sample
KLINES = "/api/v3/klines"
FAPI_KLINES = "/fapi/v1/klines"


def fast_client() -> Any:
    """A ccxt binance client that does not sleep 250 ms on close (that wait is for TLS, not loopback)."""
    return ccxt_async.binance({"timeout_on_exit": 0})


@dataclass
class Rig:
    emulator: BinanceEmulator
    market: ExchangeMarket
    gateway: MarketGateway
    clock: VirtualClock
    metrics: Metrics

    def requests(self, outcome: str, kind: str = "ohlcv") -> float:
        return metric(
            self.metrics, "engine_exchange_requests_total", exchange="binance", kind=kind, outcome=outcome
        )

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.metrics, name, exchange="binance", **labels)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    options: dict[str, Any] = getattr(request, "param", {})
    clock = VirtualClock(start=options.get("now", NOW), auto=options.get("auto", False))
    metrics = Metrics()
    emulator = BinanceEmulator(
        clock,
        options.get("symbols", SPOT_DEFAULT),
        options.get("swap_symbols", SWAP_DEFAULT),
        weight_limit=options.get("weight_limit", 6000),
        fapi_weight_limit=options.get("fapi_weight_limit", 2400),
    )
    async with emulator:
        market = ExchangeMarket(
            "binance",
            options.get("market_type", "spot"),
            clock,
            metrics,
            api_url=emulator.url,
            max_retries=options.get("max_retries", 0),
            timeout_s=options.get("timeout_s", 10),
            rate_budget=options.get("rate_budget", 0.8),
            client=fast_client(),
            rand=lambda: 0.5,
        )
        gateway = MarketGateway(market, clock, metrics)
        try:
            yield Rig(emulator, market, gateway, clock, metrics)
        finally:
            await gateway.close()
