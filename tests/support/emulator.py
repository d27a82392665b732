"""A small Binance spot REST emulator on 127.0.0.1, enough for ccxt.async_support.binance.

Tests point the real ccxt client at it (`ExchangeMarket(api_url=emulator.url)`), so the HTTP,
JSON parsing and ccxt's error handling are the real ones; only the exchange is fake. Time
(which candles exist, the per-minute weight window) comes from an injected clock, usually the
same VirtualClock the code under test uses.

Faults are plain attributes a test sets before a call:
    fail_next_n / fail_status / retry_after / fail_path   next N requests answer an error
    malformed_next_n                                      next N answers are truncated JSON
    delay_s                                               real delay before answering (timeouts)
    bad_candles                                           open times served with high < low
`requests` counts requests per path; `log` keeps (clock time, path, query) of each.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from aiohttp import web

from engine.clock import Clock
from engine.market.candles import FloatArray
from engine.market.replay import ReplayMarket
from engine.timeframes import timeframe_seconds

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
WEIGHT_LIMIT = 6000
WEIGHTS = {"/api/v3/exchangeInfo": 20, "/api/v3/klines": 2}
USED_WEIGHT = "X-MBX-USED-WEIGHT-1M"


class BinanceEmulator:
    def __init__(
        self,
        clock: Clock,
        symbols: tuple[str, ...] = ("ETH/BTC", "LTC/BTC", "BTC/USDT"),
        data_dir: Path = SAMPLE_DIR,
        seed: int = 7,
        weight_limit: int = WEIGHT_LIMIT,
    ) -> None:
        self.clock = clock
        self.symbols = symbols
        self.seed = seed
        self.weight_limit = weight_limit
        # Symbols with a CSV in data_dir serve it (any coarser interval is resampled); the
        # others get a deterministic synthetic series that exists at any time.
        self._csv = ReplayMarket(data_dir, "binance", clock)
        self.fail_next_n = 0
        self.fail_status = 500
        self.retry_after: float | None = None
        self.fail_path: str | None = None
        self.malformed_next_n = 0
        self.delay_s = 0.0
        self.bad_candles: set[int] = set()
        self.requests: Counter[str] = Counter()
        self.log: list[tuple[float, str, dict[str, str]]] = []
        self._window = -1
        self._used = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> BinanceEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def used_weight(self) -> int:
        """Weight charged in the current minute window, as the X-MBX-USED-WEIGHT-1M header says."""
        return self._used

    def spend_weight(self, weight: int) -> None:
        """Charge weight as if another client on the same IP had made requests this minute."""
        window = int(self.clock.now() // 60)
        if window != self._window:
            self._window, self._used = window, 0
        self._used += weight

    # --- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        now = self.clock.now()
        self.requests[path] += 1
        self.log.append((now, path, dict(request.query)))
        self.spend_weight(WEIGHTS.get(path, 1))
        headers = {USED_WEIGHT: str(self._used)}
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        applies = self.fail_path is None or self.fail_path == path
        if self.fail_next_n > 0 and applies:
            self.fail_next_n -= 1
            return self._error(self.fail_status, self.retry_after, headers)
        if self._used > self.weight_limit:
            return self._error(429, 60 - now % 60, headers)
        if self.malformed_next_n > 0 and applies:
            self.malformed_next_n -= 1
            return web.Response(
                text='[[1515560100000,"0.1",', content_type="application/json", headers=headers
            )
        response: web.StreamResponse = await handler(request)
        response.headers.update(headers)
        return response

    @staticmethod
    def _error(status: int, retry_after: float | None, headers: dict[str, str]) -> web.Response:
        if retry_after is not None:
            headers = {**headers, "Retry-After": str(math.ceil(retry_after))}
        if status in (418, 429):
            msg = "Way too many requests; IP banned." if status == 418 else "Too many requests."
            return web.json_response({"code": -1003, "msg": msg}, status=status, headers=headers)
        return web.Response(status=status, text="Internal Server Error", headers=headers)

    # --- endpoints ---------------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(self.clock.now() * 1000)})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": int(self.clock.now() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": self.weight_limit,
                    },
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [_symbol_info(s) for s in self.symbols],
            }
        )

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        symbol = next((s for s in self.symbols if s.replace("/", "") == q.get("symbol")), None)
        if symbol is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        try:
            step = timeframe_seconds(q.get("interval", "")) * 1000
        except ValueError:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        limit = min(int(q.get("limit", 500)), 1000)
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
        now_ms = int(self.clock.now() * 1000)
        if symbol in self._csv.symbols:
            rows = self._csv_rows(symbol, q["interval"], start, end, limit, now_ms)
        else:
            rows = self._synthetic_rows(symbol, step, start, end, limit, now_ms)
        return web.json_response([self._kline(row, step) for row in rows])

    def _csv_rows(
        self, symbol: str, interval: str, start: int | None, end: int | None, limit: int, now_ms: int
    ) -> FloatArray:
        arr = self._csv.history(symbol, interval).rows()
        ts = arr[:, 0]
        hi = int(np.searchsorted(ts, min(now_ms, end if end is not None else now_ms), side="right"))
        if start is None:
            return arr[max(0, hi - limit) : hi]
        lo = int(np.searchsorted(ts, start, side="left"))
        return arr[lo : min(hi, lo + limit)]

    def _synthetic_rows(
        self, symbol: str, step: int, start: int | None, end: int | None, limit: int, now_ms: int
    ) -> FloatArray:
        last = min(now_ms, end if end is not None else now_ms) // step * step
        first = -(-start // step) * step if start is not None else last - (limit - 1) * step
        opens = np.arange(first, min(last, first + (limit - 1) * step) + 1, step, dtype=np.float64)
        phase = float(zlib.crc32(symbol.encode()) % 1000 + self.seed)
        o = self._price(opens, phase)
        c = self._price(np.minimum(opens + step, now_ms), phase)
        h = np.maximum(o, c) * 1.001
        lo = np.minimum(o, c) * 0.999
        v = 10.0 + 5.0 * (1.0 + np.sin(opens / 3.1e6 + phase))
        return np.column_stack([opens, o, h, lo, c, v])

    @staticmethod
    def _price(t_ms: FloatArray, phase: float) -> FloatArray:
        out: FloatArray = 100.0 * (1.0 + 0.05 * np.sin(t_ms / 2.16e7 + phase) + 0.002 * np.sin(t_ms / 4.2e5))
        return out

    def _kline(self, row: FloatArray, step: int) -> list[Any]:
        t, o, h, lo, c, v = (float(x) for x in row)
        if int(t) in self.bad_candles:
            h = lo * 0.5
        return [
            int(t),
            f"{o:.8f}",
            f"{h:.8f}",
            f"{lo:.8f}",
            f"{c:.8f}",
            f"{v:.8f}",
            int(t) + step - 1,
            f"{v * c:.8f}",
            100,
            f"{v / 2:.8f}",
            f"{v * c / 2:.8f}",
            "0",
        ]


def _symbol_info(symbol: str) -> dict[str, Any]:
    """The exchangeInfo fields ccxt's binance.parse_market reads for a spot market."""
    base, quote = symbol.split("/")
    return {
        "symbol": base + quote,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000100",
                "maxPrice": "100000.00000000",
                "tickSize": "0.00000100",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00100000",
                "maxQty": "100000.00000000",
                "stepSize": "0.00100000",
            },
        ],
        "permissions": ["SPOT"],
    }
