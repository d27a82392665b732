"""The emulator's own protocol, over plain HTTP: what the engine tests rely on it to do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine.clock import VirtualClock
from tests.market.conftest import ETH, NOW
from tests.support.emulator import USED_WEIGHT, BinanceEmulator

STEP = 300_000


class Client:
    def __init__(self, emulator: BinanceEmulator, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.session = session

    async def get(self, path: str, **query: Any) -> tuple[int, dict[str, str], Any]:
        params = {k: str(v) for k, v in query.items()}
        async with self.session.get(self.emulator.url + path, params=params) as response:
            text = await response.text()
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = text
            return response.status, dict(response.headers), body


@pytest.fixture
async def http() -> AsyncIterator[Client]:
    clock = VirtualClock(start=NOW)
    async with BinanceEmulator(clock) as emulator, aiohttp.ClientSession() as session:
        yield Client(emulator, session)


@pytest.mark.parametrize(
    ("path", "query", "weight"),
    [
        ("/api/v3/exchangeInfo", {}, 20),
        ("/api/v3/klines", {"symbol": "ETHBTC", "interval": "5m", "limit": 1000}, 2),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": 100}, 5),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": 500}, 25),
        ("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}, 2),
        ("/api/v3/ticker/24hr", {}, 80),
        ("/api/v3/aggTrades", {"symbol": "BTCUSDT"}, 2),
        ("/fapi/v1/exchangeInfo", {}, 1),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 99}, 1),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}, 5),
        ("/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": 1000}, 20),
        ("/fapi/v1/aggTrades", {"symbol": "BTCUSDT"}, 20),
        ("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, 1),
    ],
)
async def test_weights_per_endpoint_and_limit_in_the_header(
    http: Client, path: str, query: dict[str, Any], weight: int
) -> None:
    status, headers, _ = await http.get(path, **query)
    assert status == 200
    assert headers[USED_WEIGHT] == str(weight)
    status, headers, _ = await http.get(path, **query)
    assert headers[USED_WEIGHT] == str(2 * weight)


async def test_families_count_separately_and_errors_carry_the_header_too(http: Client) -> None:
    await http.get("/api/v3/klines", symbol="ETHBTC", interval="5m")
    status, headers, body = await http.get("/fapi/v1/klines", symbol="NOPE", interval="5m")
    assert status == 400 and body["code"] == -1121
    assert headers[USED_WEIGHT] == "5"  # futures klines at the default limit of 500
    assert http.emulator.used("spot") == 2 and http.emulator.used("fapi") == 5
    status, headers, body = await http.get("/fapi/v1/depth", symbol="BTCUSDT", limit=7)
    assert status == 400 and "legal range" in body["msg"]
    http.emulator.faults.fail_next_n = 1
    status, headers, _ = await http.get("/api/v3/ping")
    assert status == 500 and USED_WEIGHT in headers


async def test_429_until_the_minute_then_418_for_ignoring_it(http: Client) -> None:
    emulator, clock = http.emulator, http.emulator.clock
    assert isinstance(clock, VirtualClock)
    emulator.spend_weight(6000)
    status, headers, body = await http.get("/api/v3/ping")
    next_minute = (NOW // 60 + 1) * 60
    assert status == 429 and body["code"] == -1003
    assert int(headers["Retry-After"]) == pytest.approx(next_minute - NOW, abs=1)
    # Still in flight when the 429 was sent: answered 429 again, not a ban.
    assert (await http.get("/api/v3/ping"))[0] == 429
    clock.advance(2)
    status, headers, _ = await http.get("/api/v3/ping")
    assert status == 418 and headers["Retry-After"] == "120"
    assert emulator.ignored_retry_after == 1
    assert (await http.get("/fapi/v1/ping"))[0] == 200  # futures are metered apart
    clock.advance(100)
    status, headers, _ = await http.get("/api/v3/ping")
    assert status == 418 and headers["Retry-After"] == "20"
    clock.advance(20)
    assert (await http.get("/api/v3/ping"))[0] == 200
    assert emulator.statuses[418] == 2 and emulator.statuses[429] == 2


async def test_injected_418_bans_for_its_retry_after(http: Client) -> None:
    faults = http.emulator.faults
    faults.fail_next_n, faults.fail_status, faults.retry_after = 1, 418, 30
    assert (await http.get("/api/v3/ping"))[0] == 418
    status, headers, _ = await http.get("/api/v3/time")
    assert status == 418 and headers["Retry-After"] == "30"


async def test_the_weight_window_resets_each_minute(http: Client) -> None:
    await http.get("/api/v3/exchangeInfo")
    assert http.emulator.used_weight == 20
    clock = http.emulator.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(60)
    assert http.emulator.used_weight == 0


async def test_candle_faults_damage_exactly_the_rows_asked_for(http: Client) -> None:
    t = [int(ETH[2990 + i, 0]) for i in range(6)]
    http.emulator.faults.candles = {t[1]: "nan", t[2]: "gap", t[3]: "duplicate", t[4]: "out_of_order"}
    _, _, rows = await http.get("/api/v3/klines", symbol="ETHBTC", interval="5m", startTime=t[0], limit=6)
    assert [r[0] for r in rows] == [t[0], t[1], t[3], t[3], t[5], t[4]]
    assert rows[1][4] == "NaN"


@pytest.mark.parametrize("kind", ["truncated", "html", "wrong_shape"])
async def test_malformed_answers(http: Client, kind: str) -> None:
    http.emulator.faults.malformed_next_n = 1
    http.emulator.faults.malformed = kind  # type: ignore[assignment]
    status, _, body = await http.get("/api/v3/klines", symbol="ETHBTC", interval="5m", limit=5)
    assert status == 200 and not isinstance(body, list)
    assert isinstance((await http.get("/api/v3/klines", symbol="ETHBTC", interval="5m", limit=5))[2], list)


async def test_outages_503_and_refused(http: Client) -> None:
    http.emulator.faults.outage = "503"
    assert (await http.get("/api/v3/ping"))[0] == 503
    http.emulator.faults.outage = None
    await http.emulator.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get("/api/v3/ping")
    await http.emulator.come_back()
    assert (await http.get("/api/v3/ping"))[0] == 200


async def test_snapshot_endpoints_answer_deterministic_data(http: Client) -> None:
    _, _, spot = await http.get("/api/v3/ticker/24hr", symbol="BTCUSDT")
    _, _, perp = await http.get("/fapi/v1/ticker/24hr", symbol="BTCUSDT")
    assert spot["lastPrice"] == perp["lastPrice"] and "bidPrice" in spot and "bidPrice" not in perp
    _, _, trades = await http.get("/fapi/v1/aggTrades", symbol="BTCUSDT", limit=3)
    assert [t["T"] for t in trades] == sorted(t["T"] for t in trades) and trades[-1]["T"] <= NOW * 1000
    _, _, book = await http.get("/fapi/v1/depth", symbol="ETHUSDT", limit=5)
    assert len(book["bids"]) == 5 and float(book["bids"][0][0]) < float(book["asks"][0][0])
    _, _, funding = await http.get("/fapi/v1/premiumIndex", symbol="BTCUSDT")
    assert funding["nextFundingTime"] % (8 * 3_600_000) == 0
    _, _, every = await http.get("/fapi/v1/premiumIndex")
    assert [f["symbol"] for f in every] == ["BTCUSDT", "ETHUSDT"]
