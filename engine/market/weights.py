"""What one request costs, in the unit the exchange itself counts.

Binance meters REST calls by weight per minute, publishes the limit in exchangeInfo
`rateLimits`, and reports what this IP has used in `X-MBX-USED-WEIGHT-1M`. ccxt declares each
endpoint's cost in its own units (one unit is `rateLimit` ms of its limiter). Charging the shared
bucket before a call, in the exchange's unit, is what keeps the whole engine under the limit
instead of recovering from 429s; this module is the only place that knows the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# The header Binance puts on every response, and the length of the window it counts.
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
USED_WEIGHT_WINDOW_S = 60.0
_INTERVAL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


@dataclass(frozen=True, slots=True)
class EndpointTable:
    """The ccxt implicit method behind each request kind, the weight of one ccxt cost unit, and
    which kinds the exchange answers with a JSON array.

    ccxt writes Binance spot costs as weight * 0.2 (its comments: "1 IP weight => cost 0.2") and
    USDⓈ-M futures costs as the weight itself, so the factor differs per API family and cannot
    be derived from the published limit alone. `weight_per_unit=None` derives it from the
    published limit and ccxt's `rateLimit`, which is right for exchanges that size costs that way.

    `arrays` matters because ccxt parses an object where it expected an array of rows into no
    rows at all, which would pass for "no candles yet" and be cached for a whole candle.
    """

    methods: Mapping[str, str]
    weight_per_unit: float | None = None
    arrays: frozenset[str] = frozenset()


ENDPOINTS: dict[tuple[str, str], EndpointTable] = {
    ("binance", "spot"): EndpointTable(
        {
            "markets": "publicGetExchangeInfo",
            "ohlcv": "publicGetKlines",
            "ticker": "publicGetTicker24hr",
            "trades": "publicGetAggTrades",
            "order_book": "publicGetDepth",
        },
        weight_per_unit=5.0,
        arrays=frozenset({"ohlcv", "trades"}),
    ),
    ("binance", "swap"): EndpointTable(
        {
            "markets": "fapiPublicGetExchangeInfo",
            "ohlcv": "fapiPublicGetKlines",
            "ticker": "fapiPublicGetTicker24hr",
            "trades": "fapiPublicGetAggTrades",
            "order_book": "fapiPublicGetDepth",
            "funding": "fapiPublicGetPremiumIndex",
        },
        weight_per_unit=1.0,
        arrays=frozenset({"ohlcv", "trades"}),
    ),
}

# Binance USDⓈ-M only accepts these depth limits; a depth in between is fetched at the next one.
SWAP_DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)


def ccxt_units(client: Any, market_type: str, kind: str, params: Mapping[str, Any]) -> float:
    """ccxt's declared cost of one `kind` request ("markets", "ohlcv", ...) with these params.

    Exchanges or kinds not in ENDPOINTS cost ccxt's default of one unit.
    """
    table = ENDPOINTS.get((str(client.id), market_type))
    name = table.methods.get(kind) if table else None
    entry = implicit_endpoint(type(client), name) if name else None
    if entry is None:
        return 1.0
    return float(
        client.calculate_rate_limiter_cost(entry.api, entry.method, entry.path, dict(params), entry.config)
    )


def weight_per_unit(exchange_id: str, market_type: str) -> float | None:
    """Published weight of one ccxt cost unit, when known for this API family."""
    table = ENDPOINTS.get((exchange_id, market_type))
    return table.weight_per_unit if table else None


def answers_array(exchange_id: str, market_type: str, kind: str) -> bool:
    """Whether a `kind` answer that is not a JSON array is certainly broken."""
    table = ENDPOINTS.get((exchange_id, market_type))
    return table is not None and kind in table.arrays


def implicit_endpoint(cls: type, name: str) -> Any:
    """ccxt's `Entry` (path, api, method, cost config) behind an implicit API method.

    Looked up in the class dictionaries rather than with getattr: ccxt's constructor replaces
    some camelCase names on the class with the bare function, which has lost the config.
    """
    for klass in cls.__mro__:
        entry = vars(klass).get(name)
        if entry is not None and all(hasattr(entry, a) for a in ("api", "method", "path", "config")):
            return entry
    return None


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


def swap_depth_limit(depth: int) -> int:
    """The smallest depth Binance USDⓈ-M accepts that covers `depth` levels (capped at 1000)."""
    return next((limit for limit in SWAP_DEPTH_LIMITS if limit >= depth), SWAP_DEPTH_LIMITS[-1])


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
