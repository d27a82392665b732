"""A live exchange behind ccxt, with our own rate limiting, breaker and retries.

ccxt's limiter and retries are switched off: its limiter is per client and knows nothing of
the exchange's own weight count or of Retry-After, and its retries would hide failures from
the breaker. Every call instead goes breaker → token bucket → ccxt, with the retry policy
around that, and ccxt exceptions are translated at this boundary.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt_async
from ccxt.base import errors as cx

from engine.clock import Clock
from engine.errors import (
    BadResponse,
    CircuitOpen,
    ExchangePaused,
    IPBanned,
    MarketError,
    RateLimited,
    RequestError,
    TransportError,
)
from engine.market.breaker import CircuitBreaker
from engine.market.ccxt_errors import header, translate
from engine.market.limiter import TokenBucket
from engine.market.retry import Retrier, RetryPolicy
from engine.metrics import Metrics

T = TypeVar("T")
MarketType = Literal["spot", "swap"]

# Which ccxt implicit endpoint each of our calls ends up on, so its declared cost (and
# Binance's limit-dependent klines cost) is charged before the call. Exchanges not listed are
# charged ccxt's default cost of one unit.
_ENDPOINTS: dict[tuple[str, str], dict[str, str]] = {
    ("binance", "spot"): {"markets": "publicGetExchangeInfo", "ohlcv": "publicGetKlines"},
    ("binance", "swap"): {"markets": "fapiPublicGetExchangeInfo", "ohlcv": "fapiPublicGetKlines"},
}
# ccxt binance's options["fetchMarkets"]["types"]: load only the market family we trade, so
# load_markets is one request rather than one per family.
_FETCH_MARKETS_TYPES = {"spot": "spot", "swap": "linear"}
_USED_WEIGHT = "X-MBX-USED-WEIGHT-1M"
_INTERVAL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
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


def rewrite_api_urls(urls: object, api_url: str) -> Any:
    """Every URL string in ccxt's nested `urls["api"]`, with scheme and host from `api_url`.

    The path is kept (and put after any path `api_url` has), so one emulator or proxy serves
    every API family: https://fapi.binance.com/fapi/v1 → http://127.0.0.1:8000/fapi/v1.
    """
    if isinstance(urls, dict):
        return {key: rewrite_api_urls(value, api_url) for key, value in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        target = urlsplit(api_url)
        parts = urlsplit(urls)
        path = target.path.rstrip("/") + parts.path
        return urlunsplit((target.scheme, target.netloc, path, parts.query, parts.fragment))
    return urls


def published_weight_per_minute(payload: object) -> float | None:
    """The REQUEST_WEIGHT limit per minute from a Binance-style exchangeInfo body, if present."""
    if not isinstance(payload, dict):
        return None
    limits = payload.get("rateLimits")
    if not isinstance(limits, list):
        return None
    per_minute: list[float] = []
    for item in limits:
        if not isinstance(item, dict) or item.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        seconds = _INTERVAL_SECONDS.get(str(item.get("interval")))
        try:
            window = float(seconds or 0) * float(item.get("intervalNum", 1))
            limit = float(item["limit"])
        except (KeyError, TypeError, ValueError):
            continue
        if window > 0 and limit > 0:
            per_minute.append(limit * 60.0 / window)
    return min(per_minute) if per_minute else None


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
        return self._breaker

    @property
    def limiter(self) -> TokenBucket:
        return self._bucket

    async def load_markets(self) -> set[str]:
        async with self._markets_lock:
            return set(await self._load_markets())

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None, limit: int
    ) -> list[list[float]]:
        if self._markets is None:
            async with self._markets_lock:
                if self._markets is None:
                    await self._load_markets()

        async def call() -> list[list[float]]:
            rows = await self._client.fetch_ohlcv(symbol, timeframe, since_ms, limit)
            if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
                raise BadResponse(f"{self.exchange}: OHLCV for {symbol} {timeframe} is not a list of rows")
            return rows

        return await self._call("ohlcv", self.request_cost("ohlcv", {"limit": limit}), call)

    async def close(self) -> None:
        """Closes the ccxt client (and its HTTP session), injected or not: this object owns it."""
        await self._client.close()

    def status(self) -> dict[str, object]:
        return {
            "exchange": self.exchange,
            "market_type": self._market_type,
            "breaker": self._breaker.state,
            "paused_until": self._bucket.paused_until,
            "markets_loaded": self._markets is not None,
            "markets": len(self._markets or ()),
            "limiter_tokens": round(self._bucket.tokens, 3),
            "limiter_capacity": self._bucket.capacity,
        }

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
                paused = self._bucket.paused_until
                if paused is not None and paused - self._clock.now() > self._timeout:
                    raise ExchangePaused(self.exchange, paused)
                await self._bucket.acquire(cost)
                result = await self._invoke(call)
        except MarketError as exc:
            self._metrics.exchange_requests.labels(self.exchange, kind, _outcome(exc)).inc()
            raise
        self._metrics.exchange_requests.labels(self.exchange, kind, "ok").inc()
        return result

    async def _invoke(self, call: Callable[[], Awaitable[T]]) -> T:
        """One ccxt call, its errors translated; headers are read before anything else awaits."""
        try:
            result = await call()
        except cx.BaseError as exc:
            headers = self._client.last_response_headers
            error = translate(exc, self.exchange, headers, self._clock.now())
            # Only a 429/418 is sure to be an answer; after a network error the headers are stale.
            if isinstance(error, RateLimited):
                self._reconcile(headers)
            if isinstance(error, RateLimited) and error.retry_after is not None:
                self._bucket.pause_until(self._clock.now() + error.retry_after)
                self._log.warning(
                    "%s: %s; pausing %.0f s", self.exchange, type(error).__name__, error.retry_after
                )
            raise error from exc
        except _PARSE_ERRORS as exc:
            raise BadResponse(f"{self.exchange}: unusable response: {type(exc).__name__}: {exc}") from exc
        self._reconcile(self._client.last_response_headers)
        body = self._client.last_http_response
        if self._client.last_json_response is None and isinstance(body, str) and body.strip():
            # ccxt hands an unparsable body on as text, and parses rows out of its characters.
            raise BadResponse(f"{self.exchange}: response is not JSON: {body[:80]!r}")
        return result

    def _reconcile(self, headers: Mapping[str, str] | None) -> None:
        used = header(headers, _USED_WEIGHT)
        if used is None or self._window_capacity is None:
            return
        try:
            self._bucket.reconcile(float(used), self._window_capacity)
        except ValueError:
            self._log.debug("%s: ignoring unparsable %s header %r", self.exchange, _USED_WEIGHT, used)

    def _adopt_published_limit(self) -> None:
        """Switch the bucket to the exchange's weight units once exchangeInfo has been seen.

        ccxt does not keep exchangeInfo's `rateLimits`; the body of the last response does,
        and load_markets is a single request now that only one market family is loaded.
        """
        per_minute = published_weight_per_minute(getattr(self._client, "last_json_response", None))
        if per_minute is None or per_minute == self._window_capacity:
            return
        self._weight_per_unit = per_minute / self._units_per_minute
        self._window_capacity = per_minute
        capacity = self._budget * per_minute
        self._bucket.resize(capacity, capacity / 60.0)
        self._reconcile(self._client.last_response_headers)

    def request_cost(self, kind: str, params: dict[str, Any]) -> float:
        """Bucket tokens for one call of `kind` ("markets", "ohlcv"), in the bucket's unit."""
        units = 1.0
        name = _ENDPOINTS.get((str(self._client.id), self._market_type), {}).get(kind)
        entry = _implicit_endpoint(type(self._client), name) if name else None
        if entry is not None:
            units = float(
                self._client.calculate_rate_limiter_cost(
                    entry.api, entry.method, entry.path, params, entry.config
                )
            )
        return units * self._weight_per_unit

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


def _implicit_endpoint(cls: type, name: str) -> Any:
    """ccxt's `Entry` (path, api, method, cost config) behind an implicit API method.

    Looked up in the class dictionaries rather than with getattr: ccxt's constructor replaces
    some camelCase names on the class with the bare function, which has lost the config.
    """
    for klass in cls.__mro__:
        entry = vars(klass).get(name)
        if entry is not None and all(hasattr(entry, a) for a in ("api", "method", "path", "config")):
            return entry
    return None


def _new_client(exchange_id: str) -> Any:
    cls = getattr(ccxt_async, exchange_id, None)
    if not isinstance(cls, type) or not issubclass(cls, ccxt_async.Exchange):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    return cls()
