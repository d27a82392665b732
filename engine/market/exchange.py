"""A live exchange behind ccxt, with our own rate limiting, breaker and retries.

ccxt's limiter and retries are switched off: its limiter is per client and knows nothing of
the exchange's own weight count or of Retry-After, and its retries would hide failures from
the breaker. Every call instead goes breaker → token bucket → ccxt, with the retry policy
around that, and ccxt exceptions are translated at this boundary.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import ccxt.async_support as ccxt_async
from ccxt.base import errors as cx

from engine.clock import Clock
from engine.errors import (
    BadResponse,
    CircuitOpen,
    DataUnavailable,
    ExchangePaused,
    IPBanned,
    MarketError,
    RateLimited,
    RequestError,
    TransportError,
)
from engine.market.breaker import CircuitBreaker
from engine.market.ccxt_errors import header, translate
from engine.market.ccxt_parse import to_funding, to_order_book, to_ticker, to_trades
from engine.market.limiter import TokenBucket
from engine.market.retry import Retrier, RetryPolicy
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades
from engine.market.weights import (
    USED_WEIGHT_HEADER,
    USED_WEIGHT_WINDOW_S,
    answers_array,
    ccxt_units,
    published_weight_per_minute,
    rewrite_api_urls,
    swap_depth_limit,
    weight_per_unit,
)
from engine.metrics import Metrics

T = TypeVar("T")
MarketType = Literal["spot", "swap"]

# ccxt binance's options["fetchMarkets"]["types"]: load only the market family we trade, so
# load_markets is one request rather than one per family.
_FETCH_MARKETS_TYPES = {"spot": "spot", "swap": "linear"}
# Binance bans for at least two minutes, and a ban that is cut short by a clock difference
# starts again longer; so a 418 pauses at least this long whatever its Retry-After says.
MIN_BAN_PAUSE_S = 120.0
# A 429 without Retry-After: the longest a one-minute weight window can still be full.
DEFAULT_429_PAUSE_S = 60.0
# Binance caps one trades or klines answer at 1000 rows.
_MAX_ROWS = 1000
# Most specific first: IPBanned is a RateLimited.
_OUTCOMES: tuple[tuple[type[MarketError], str], ...] = (
    (CircuitOpen, "circuit_open"),
    (ExchangePaused, "paused"),
    (IPBanned, "banned"),
    (RateLimited, "rate_limited"),
    (TransportError, "transport_error"),
    (RequestError, "request_error"),
)
# Errors raised while ccxt parses a body that is JSON but not the expected shape.
_PARSE_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)

__all__ = ["ExchangeMarket", "MarketType", "published_weight_per_minute", "rewrite_api_urls"]


class ExchangeMarket:
    """`MarketData` for one exchange and market type through one ccxt async client.

    The token bucket counts in the exchange's published weight once `load_markets` has seen
    it (Binance's exchangeInfo `rateLimits`), with capacity `rate_budget` times that per-minute
    limit; until then, and for exchanges that publish none, it counts ccxt cost units from
    ccxt's `rateLimit` (milliseconds per unit).

    A Retry-After pause shorter than `timeout_s` is waited out in the bucket; a longer one (an
    IP ban lasts minutes) makes calls fail at once with ExchangePaused, as waiting would only
    hold the tick past the time the request itself was allowed.
    """

    def __init__(
        self,
        exchange_id: str,
        market_type: MarketType,
        clock: Clock,
        metrics: Metrics,
        *,
        api_url: str | None = None,
        rate_budget: float = 0.8,
        timeout_s: float = 10,
        max_retries: int = 3,
        client: Any = None,
        rand: Callable[[], float] = random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        if market_type not in _FETCH_MARKETS_TYPES:
            raise ValueError(f"market_type must be 'spot' or 'swap', not {market_type!r}")
        if not 0 < rate_budget <= 1:
            raise ValueError("rate_budget must be in (0, 1]")
        self.exchange = exchange_id
        self._market_type = market_type
        self._clock = clock
        self._metrics = metrics
        self._budget = rate_budget
        self._timeout = timeout_s
        self._log = logger or logging.getLogger(__name__)
        self._client = client if client is not None else _new_client(exchange_id)
        self._configure(api_url)
        self._units_per_minute = 60_000.0 / (float(getattr(self._client, "rateLimit", 0) or 0) or 100.0)
        self._weight_per_unit = 1.0
        self._window_capacity: float | None = None
        capacity = rate_budget * self._units_per_minute
        self._bucket = TokenBucket(capacity, capacity / 60.0, clock, metrics, exchange_id)
        self._breaker = CircuitBreaker(exchange_id, clock, metrics)
        self._retrier = Retrier(RetryPolicy(max_retries=max_retries), clock, rand)
        self._markets: set[str] | None = None
        self._markets_lock = asyncio.Lock()

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker every call to this exchange goes through."""
        return self._breaker

    @property
    def limiter(self) -> TokenBucket:
        """The token bucket every request to this exchange spends from."""
        return self._bucket

    @property
    def market_type(self) -> MarketType:
        """Which markets symbols refer to: "spot" or "swap" (only swaps have funding rates)."""
        return self._market_type

    async def load_markets(self) -> set[str]:
        """MarketData.load_markets: always a fresh request, serialised with the lazy first load."""
        async with self._markets_lock:
            return set(await self._load_markets())

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None, limit: int
    ) -> list[list[float]]:
        """MarketData.fetch_ohlcv via limiter, breaker and retries; a malformed answer is BadResponse."""
        await self._ensure_markets()

        async def call() -> list[list[float]]:
            rows = await self._client.fetch_ohlcv(symbol, timeframe, since_ms, limit)
            self._count_reordered(symbol, timeframe)
            if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
                raise BadResponse(f"{self.exchange}: OHLCV for {symbol} {timeframe} is not a list of rows")
            return rows

        return await self._call("ohlcv", self.request_cost("ohlcv", {"limit": limit}), call)

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """MarketData.fetch_ticker via limiter, breaker and retries, parsed into a Ticker."""
        await self._ensure_markets()

        async def call() -> Ticker:
            return to_ticker(await self._client.fetch_ticker(symbol), f"{self.exchange} {symbol}")

        return await self._call("ticker", self.request_cost("ticker", {"symbol": symbol}), call)

    async def fetch_trades(self, symbol: str, limit: int) -> Trades:
        """The most recent `limit` public trades (at most 1000, the exchange's cap)."""
        await self._ensure_markets()
        limit = max(1, min(limit, _MAX_ROWS))

        async def call() -> Trades:
            raw = await self._client.fetch_trades(symbol, None, limit)
            trades, dropped = to_trades(raw, f"{self.exchange} {symbol}")
            self._count_dropped(dropped, "trades", symbol)
            return trades

        return await self._call("trades", self.request_cost("trades", {"limit": limit}), call)

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        """The best `depth` levels per side (futures are asked at the next depth they accept)."""
        await self._ensure_markets()
        depth = max(1, depth)
        limit = swap_depth_limit(depth) if self._market_type == "swap" else min(depth, 5000)

        async def call() -> OrderBook:
            raw = await self._client.fetch_order_book(symbol, limit)
            book, dropped = to_order_book(raw, depth, f"{self.exchange} {symbol}")
            self._count_dropped(dropped, "order_book", symbol)
            return book

        return await self._call("order_book", self.request_cost("order_book", {"limit": limit}), call)

    async def fetch_funding(self, symbol: str) -> Funding:
        """MarketData.fetch_funding; refused without a request on spot, which has no funding."""
        if self._market_type != "swap":
            raise DataUnavailable(
                f"{self.exchange}: funding rates exist only for perpetual swaps; this engine reads "
                f"{self._market_type} markets (set market.type = 'swap' and symbols like BTC/USDT:USDT)"
            )
        await self._ensure_markets()

        async def call() -> Funding:
            return to_funding(await self._client.fetch_funding_rate(symbol), f"{self.exchange} {symbol}")

        return await self._call("funding", self.request_cost("funding", {"symbol": symbol}), call)

    async def close(self) -> None:
        """Closes the ccxt client (and its HTTP session), injected or not: this object owns it."""
        await self._client.close()

    def status(self) -> dict[str, object]:
        """MarketData.status for /ready: breaker, exchange-imposed pause and limiter state."""
        paused_until = self._bucket.paused_until
        now = self._clock.now()
        return {
            "exchange": self.exchange,
            "market_type": self._market_type,
            "breaker": self._breaker.state,
            "paused": paused_until is not None,
            "paused_until": paused_until,
            "pause_reason": self._bucket.pause_reason,
            "pause_remaining_s": round(paused_until - now, 3) if paused_until is not None else 0.0,
            "markets_loaded": self._markets is not None,
            "markets": len(self._markets or ()),
            "limiter_tokens": round(self._bucket.tokens, 3),
            "limiter_capacity": self._bucket.capacity,
            "window_used": self._bucket.window_used,
        }

    def request_cost(self, kind: str, params: dict[str, Any]) -> float:
        """Bucket tokens for one call of `kind` ("markets", "ohlcv", ...), in the bucket's unit."""
        units = ccxt_units(self._client, self._market_type, kind, params)
        return units * self._weight_per_unit

    async def _ensure_markets(self) -> None:
        """ccxt needs the markets to turn a symbol into an exchange id; load them once, shared."""
        if self._markets is None:
            async with self._markets_lock:
                if self._markets is None:
                    await self._load_markets()

    async def _load_markets(self) -> set[str]:
        async def call() -> dict[str, Any]:
            markets = await self._client.load_markets(True)
            if not isinstance(markets, dict):
                raise BadResponse(f"{self.exchange}: markets are not a mapping")
            return markets

        markets = await self._call("markets", self.request_cost("markets", {}), call)
        self._adopt_published_limit()
        self._markets = {
            symbol
            for symbol, market in markets.items()
            if isinstance(market, dict)
            and market.get(self._market_type) is True
            and market.get("active") is not False
        }
        return self._markets

    async def _call(self, kind: str, cost: float, call: Callable[[], Awaitable[T]]) -> T:
        return await self._retrier.run(lambda: self._attempt(kind, cost, call))

    async def _attempt(self, kind: str, cost: float, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with self._breaker.guard():
                await self._bucket.acquire(cost, max_pause_wait=self._timeout)
                result = await self._invoke(kind, call)
        except MarketError as exc:
            self._metrics.exchange_requests.labels(self.exchange, kind, _outcome(exc)).inc()
            raise
        self._metrics.exchange_requests.labels(self.exchange, kind, "ok").inc()
        return result

    async def _invoke(self, kind: str, call: Callable[[], Awaitable[T]]) -> T:
        """One ccxt call, its errors translated; headers are read before anything else awaits."""
        sent_at = self._clock.now()
        try:
            result = await call()
        except cx.BaseError as exc:
            headers = self._client.last_response_headers
            error = translate(exc, self.exchange, headers, self._clock.now())
            # Only a 429/418 is sure to be an answer; after a network error the headers are stale.
            if isinstance(error, RateLimited):
                self._reconcile(headers, sent_at)
                self._pause(error)
            raise error from exc
        except _PARSE_ERRORS as exc:
            raise BadResponse(f"{self.exchange}: unusable response: {type(exc).__name__}: {exc}") from exc
        self._reconcile(self._client.last_response_headers, sent_at)
        body = self._client.last_http_response
        parsed = self._client.last_json_response
        if parsed is None and isinstance(body, str) and body.strip():
            # ccxt hands an unparsable body on as text, and parses rows out of its characters.
            raise BadResponse(f"{self.exchange}: response is not JSON: {body[:80]!r}")
        if not isinstance(parsed, list) and answers_array(str(self._client.id), self._market_type, kind):
            raise BadResponse(f"{self.exchange}: {kind} answer is not an array: {str(body)[:80]!r}")
        return result

    def _pause(self, error: RateLimited) -> None:
        """Pause every caller: until Retry-After for a 429, and at least MIN_BAN_PAUSE_S for a 418.

        The error's `retry_after` becomes the pause actually in force, so the retry policy
        (which gives up on pauses longer than its own cap) reasons about the same figure.
        """
        banned = isinstance(error, IPBanned)
        seconds = error.retry_after
        if banned:
            seconds = max(seconds or 0.0, MIN_BAN_PAUSE_S)
        elif seconds is None:
            seconds = DEFAULT_429_PAUSE_S
        error.retry_after = seconds
        self._bucket.pause_until(self._clock.now() + seconds, "banned" if banned else "rate_limited")
        self._log.warning(
            "%s: %s; every request paused for %.0f s", self.exchange, type(error).__name__, seconds
        )

    def _reconcile(self, headers: Mapping[str, str] | None, sent_at: float) -> None:
        used = header(headers, USED_WEIGHT_HEADER)
        if used is None or self._window_capacity is None:
            return
        try:
            weight = float(used)
        except ValueError:
            self._log.debug("%s: ignoring unparsable %s header %r", self.exchange, USED_WEIGHT_HEADER, used)
            return
        self._metrics.exchange_used_weight.labels(self.exchange).set(weight)
        self._bucket.reconcile(weight, USED_WEIGHT_WINDOW_S, sent_at)

    def _adopt_published_limit(self) -> None:
        """Switch the bucket to the exchange's weight units once exchangeInfo has been seen.

        ccxt does not keep exchangeInfo's `rateLimits`; the body of the last response does,
        and load_markets is a single request now that only one market family is loaded.
        """
        per_minute = published_weight_per_minute(getattr(self._client, "last_json_response", None))
        if per_minute is None or per_minute == self._window_capacity:
            return
        known = weight_per_unit(str(self._client.id), self._market_type)
        self._weight_per_unit = known if known is not None else per_minute / self._units_per_minute
        self._window_capacity = per_minute
        capacity = self._budget * per_minute
        self._bucket.resize(capacity, capacity / 60.0)
        self._reconcile(self._client.last_response_headers, self._clock.now())

    def _count_reordered(self, symbol: str, timeframe: str) -> None:
        """Count rows the exchange sent out of order, which ccxt silently sorts before we see them.

        Read from the raw answer right after the call, before anything else awaits and another
        request replaces it.
        """
        raw = self._client.last_json_response
        if not isinstance(raw, list):
            return
        opens = [row[0] for row in raw if isinstance(row, list) and row and isinstance(row[0], int | float)]
        late = sum(1 for before, after in itertools.pairwise(opens) if after < before)
        if late:
            self._metrics.candles_reordered.labels(self.exchange).inc(late)
            self._log.warning(
                "%s %s %s: %d candle(s) arrived out of order", self.exchange, symbol, timeframe, late
            )

    def _count_dropped(self, dropped: int, kind: str, symbol: str) -> None:
        if dropped:
            self._metrics.snapshot_rows_dropped.labels(self.exchange, kind).inc(dropped)
            self._log.warning("%s %s: dropped %d invalid %s row(s)", self.exchange, symbol, dropped, kind)

    def _configure(self, api_url: str | None) -> None:
        client = self._client
        client.enableRateLimit = False
        client.timeout = int(self._timeout * 1000)
        client.enableLastResponseHeaders = True
        client.enableLastJsonResponse = True
        client.options["defaultType"] = self._market_type
        client.options["maxRetriesOnFailure"] = 0
        fetch_markets = client.options.get("fetchMarkets")
        if isinstance(fetch_markets, dict) and "types" in fetch_markets:
            client.options["fetchMarkets"] = {
                **fetch_markets,
                "types": [_FETCH_MARKETS_TYPES[self._market_type]],
            }
        if api_url:
            client.urls["api"] = rewrite_api_urls(client.urls["api"], api_url)


def _outcome(exc: MarketError) -> str:
    """The `outcome` label of engine_exchange_requests_total for a failed call."""
    for cls, label in _OUTCOMES:
        if isinstance(exc, cls):
            return label
    return "error"


def _new_client(exchange_id: str) -> Any:
    cls = getattr(ccxt_async, exchange_id, None)
    if not isinstance(cls, type) or not issubclass(cls, ccxt_async.Exchange):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    return cls()
