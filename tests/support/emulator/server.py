"""A Binance REST emulator on 127.0.0.1 for the real ccxt client: spot and USDⓈ-M futures.

Tests point the real ccxt client at it (`ExchangeMarket(api_url=emulator.url)`), so the HTTP,
JSON parsing and ccxt's error handling are the real ones; only the exchange is fake. Time
(which candles exist, the weight window, Retry-After and bans) comes from an injected clock,
usually the same VirtualClock the code under test uses.

Rate limiting follows Binance: each API family (spot /api/v3, futures /fapi/v1) counts request
weight per clock minute and reports it in X-MBX-USED-WEIGHT-1M on every response; past its
limit it answers 429 with Retry-After (seconds to the next minute). A request arriving during a
429's Retry-After, more than `ban_grace_s` after that 429 (so requests already in flight when it
was sent do not count), is answered 418 and bans the family for `ban_seconds`, doubling with
each ban; while banned every request gets 418 with the remaining time as Retry-After.

What tests observe: `requests` (count per path), `statuses` (count per HTTP status), `log` (one
Hit per request) and `ignored_retry_after` (requests that provoked a ban).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from engine.clock import Clock
from engine.timeframes import timeframe_seconds
from tests.support.emulator.faults import Faults, apply_candle_faults, malformed_body
from tests.support.emulator.info import exchange_info
from tests.support.emulator.markets import SAMPLE_DIR, MarketBook, fmt, market_id
from tests.support.emulator.weights import (
    FAPI_LIMIT,
    SPOT_LIMIT,
    Weight,
    fapi_weights,
    spot_weights,
    weight_of,
)

USED_WEIGHT = "X-MBX-USED-WEIGHT-1M"
SPOT_DEFAULT = ("ETH/BTC", "LTC/BTC", "BTC/USDT")
SWAP_DEFAULT = ("BTC/USDT:USDT", "ETH/USDT:USDT")
FAPI_DEPTHS = (5, 10, 20, 50, 100, 500, 1000)
MAX_BAN_S = 3 * 86_400.0


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as the emulator saw it: clock time of arrival, path, query, status answered."""

    t: float
    path: str
    query: dict[str, str]
    status: int


@dataclass
class Family:
    """One API family's markets and its own weight window, Retry-After and ban state."""

    name: str
    prefix: str
    futures: bool
    symbols: tuple[str, ...]
    limit: int
    weights: dict[str, Weight]
    used: int = 0
    window: int = -1
    retry_from: float = 0.0
    retry_until: float = 0.0
    ban_until: float = 0.0
    bans: int = 0

    def roll(self, now: float) -> None:
        window = int(now // 60)
        if window != self.window:
            self.window, self.used = window, 0


class _Reject(Exception):
    """A request Binance would answer 400 with this error code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class BinanceEmulator:
    def __init__(
        self,
        clock: Clock,
        symbols: tuple[str, ...] = SPOT_DEFAULT,
        swap_symbols: tuple[str, ...] = SWAP_DEFAULT,
        *,
        data_dir: Path = SAMPLE_DIR,
        seed: int = 7,
        weight_limit: int = SPOT_LIMIT,
        fapi_weight_limit: int = FAPI_LIMIT,
        ban_seconds: float = 120.0,
        ban_grace_s: float = 1.0,
        csv_shift_ms: int = 0,
        port: int = 0,
    ) -> None:
        self.clock = clock
        self.book = MarketBook(clock, data_dir, seed, csv_shift_ms)
        self.families = {
            "spot": Family("spot", "/api/v3", False, tuple(symbols), weight_limit, spot_weights()),
            "fapi": Family("fapi", "/fapi/v1", True, tuple(swap_symbols), fapi_weight_limit, fapi_weights()),
        }
        self.ban_seconds = ban_seconds
        self.ban_grace_s = ban_grace_s
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.log: list[Hit] = []
        self.ignored_retry_after = 0
        self.url = ""
        self._port = port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._transports: set[asyncio.Transport] = set()

    async def __aenter__(self) -> BinanceEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{family:api/v3|fapi/v1}/{endpoint:.+}", self._handle)
        # A handler still sleeping in a `delay_s` fault need not hold up the test's teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await self._site.start()
        host, port = self._runner.addresses[0][:2]
        self._port = port
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def go_down(self) -> None:
        """Full outage: stop listening and drop every open connection, so connects are refused."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def come_back(self) -> None:
        """End a `go_down()` outage: listen again on the same port."""
        if self._runner is not None and self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self._port)
            await self._site.start()

    @property
    def used_weight(self) -> int:
        """Spot weight counted in the current minute, as X-MBX-USED-WEIGHT-1M says."""
        return self.used("spot")

    def used(self, family: str) -> int:
        fam = self.families[family]
        fam.roll(self.clock.now())
        return fam.used

    def spend_weight(self, weight: int, family: str = "spot") -> None:
        """Charge weight as if another client on the same IP had made requests this minute."""
        fam = self.families[family]
        fam.roll(self.clock.now())
        fam.used += weight

    def hits(self, path: str) -> list[Hit]:
        return [hit for hit in self.log if hit.path == path]

    # --- request handling ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now()
        self.requests[request.path] += 1
        if request.transport is not None:
            self._transports.add(request.transport)
        response = await self._answer(request, now)
        self.statuses[response.status] += 1
        self.log.append(Hit(now, request.path, dict(request.query), response.status))
        return response

    async def _answer(self, request: web.Request, now: float) -> web.Response:
        faults = self.faults
        family = self.families["fapi" if request.match_info["family"] == "fapi/v1" else "spot"]
        endpoint = request.match_info["endpoint"]
        family.roll(now)
        if faults.outage == "503":
            return web.Response(
                status=503, text="Service Unavailable", headers={USED_WEIGHT: str(family.used)}
            )
        refused = self._gate(family, now)
        if refused is not None:
            return refused
        family.used += weight_of(family.weights, endpoint, request.query)
        headers = {USED_WEIGHT: str(family.used)}
        applies = faults.applies(request.path)
        if faults.delay_s and applies:
            await asyncio.sleep(faults.delay_s)
        if faults.fail_next_n > 0 and applies:
            faults.fail_next_n -= 1
            return self._fail(family, faults.fail_status, faults.retry_after, headers, now)
        if family.used > family.limit:
            return self._fail(family, 429, (family.window + 1) * 60 - now, headers, now)
        try:
            body = self._dispatch(family, endpoint, request.query)
        except _Reject as exc:
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=400, headers=headers)
        text = json.dumps(body)
        if faults.malformed_next_n > 0 and applies:
            faults.malformed_next_n -= 1
            text, content_type = malformed_body(faults.malformed, text.encode())
            return web.Response(text=text, content_type=content_type, headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    def _gate(self, family: Family, now: float) -> web.Response | None:
        """418 while banned, and a new ban for a request that ignores a 429's Retry-After."""
        headers = {USED_WEIGHT: str(family.used)}
        if family.ban_until > now:
            return self._error(418, family.ban_until - now, headers)
        if family.retry_until > now and now > family.retry_from + self.ban_grace_s:
            self.ignored_retry_after += 1
            self._ban(family, now, self.ban_seconds * 2**family.bans)
            return self._error(418, family.ban_until - now, headers)
        return None

    def _fail(
        self, family: Family, status: int, retry_after: float | None, headers: dict[str, str], now: float
    ) -> web.Response:
        if status == 429 and retry_after is not None:
            if family.retry_until <= now:
                family.retry_from = now
            family.retry_until = max(family.retry_until, now + retry_after)
        if status == 418:
            self._ban(family, now, retry_after if retry_after is not None else self.ban_seconds)
            retry_after = family.ban_until - now
        return self._error(status, retry_after, headers)

    def _ban(self, family: Family, now: float, seconds: float) -> None:
        family.ban_until = max(family.ban_until, now + min(seconds, MAX_BAN_S))
        family.bans += 1

    @staticmethod
    def _error(status: int, retry_after: float | None, headers: dict[str, str]) -> web.Response:
        if retry_after is not None:
            headers = {**headers, "Retry-After": str(max(1, math.ceil(retry_after)))}
        if status in (418, 429):
            msg = "Way too many requests; IP banned." if status == 418 else "Too many requests."
            return web.json_response({"code": -1003, "msg": msg}, status=status, headers=headers)
        if status < 500:
            return web.json_response(
                {"code": -1100, "msg": "Illegal request."}, status=status, headers=headers
            )
        return web.Response(status=status, text="Internal Server Error", headers=headers)

    # --- endpoints -----------------------------------------------------------------------------

    def _dispatch(self, family: Family, endpoint: str, q: Mapping[str, str]) -> Any:
        book, futures = self.book, family.futures
        if endpoint == "ping":
            return {}
        if endpoint == "time":
            return {"serverTime": book.now_ms()}
        if endpoint == "exchangeInfo":
            return exchange_info(family.symbols, family.limit, book.now_ms(), futures)
        if endpoint == "klines":
            return self._klines(family, q)
        if endpoint == "ticker/24hr":
            return self._each(family, q, lambda s: book.ticker_24hr(s, futures))
        if endpoint == "ticker/bookTicker":
            return self._each(family, q, lambda s: book.book_ticker(s, futures))
        if endpoint == "aggTrades":
            return book.agg_trades(self._symbol(family, q), _limit(q, 500, 1000), futures)
        if endpoint == "trades":
            return book.recent_trades(self._symbol(family, q), _limit(q, 500, 1000))
        if endpoint == "depth":
            limit = _limit(q, 500 if futures else 100, 1000 if futures else 5000)
            if futures and limit not in FAPI_DEPTHS:
                legal = ", ".join(str(d) for d in FAPI_DEPTHS)
                raise _Reject(
                    -1100, f"Illegal characters found in parameter 'limit'; legal range is '{legal}'."
                )
            return book.depth(self._symbol(family, q), limit, futures)
        if endpoint == "premiumIndex" and futures:
            return self._each(family, q, book.premium_index)
        raise _Reject(-1000, f"Unknown endpoint {family.prefix}/{endpoint}.")

    def _klines(self, family: Family, q: Mapping[str, str]) -> list[list[Any]]:
        symbol = self._symbol(family, q)
        interval = q.get("interval", "")
        try:
            step = timeframe_seconds(interval) * 1000
        except ValueError:
            raise _Reject(-1120, "Invalid interval.") from None
        limit = _limit(q, 500, 1500 if family.futures else 1000)
        start, end = _int_or_none(q, "startTime"), _int_or_none(q, "endTime")
        rows = self.book.klines(symbol, interval, start, end, limit)
        out = [_kline(row.tolist(), step) for row in rows]
        return apply_candle_faults(out, self.faults.candles)

    def _each(self, family: Family, q: Mapping[str, str], make: Any) -> Any:
        """One object for `symbol`, or a list over every symbol when none is given."""
        if "symbol" in q:
            return make(self._symbol(family, q))
        return [make(s) for s in family.symbols]

    @staticmethod
    def _symbol(family: Family, q: Mapping[str, str]) -> str:
        wanted = q.get("symbol")
        for symbol in family.symbols:
            if market_id(symbol) == wanted:
                return symbol
        raise _Reject(-1121, "Invalid symbol.")


def _limit(q: Mapping[str, str], default: int, maximum: int) -> int:
    try:
        limit = int(q.get("limit", default))
    except ValueError:
        raise _Reject(-1100, "Illegal characters found in parameter 'limit'.") from None
    if limit < 1:
        raise _Reject(-1100, "Parameter 'limit' must be positive.")
    return min(limit, maximum)


def _int_or_none(q: Mapping[str, str], name: str) -> int | None:
    if name not in q:
        return None
    try:
        return int(q[name])
    except ValueError:
        raise _Reject(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _kline(row: list[float], step: int) -> list[Any]:
    t, o, h, lo, c, v = row
    return [
        int(t),
        fmt(o),
        fmt(h),
        fmt(lo),
        fmt(c),
        fmt(v),
        int(t) + step - 1,
        fmt(v * c),
        100,
        fmt(v / 2),
        fmt(v * c / 2),
        "0",
    ]
