"""exchangeInfo bodies: the fields ccxt's binance.parse_market reads, and the published rateLimits.

The client sizes its token bucket from `rateLimits`, so the emulator's limit (small in tests
that must provoke 429s, Binance's own elsewhere) reaches the engine the way the real one does.
"""

from __future__ import annotations

from typing import Any

from tests.support.emulator.markets import market_id, split

_PRICE_FILTER = {
    "filterType": "PRICE_FILTER",
    "minPrice": "0.00000100",
    "maxPrice": "1000000.00000000",
    "tickSize": "0.00000100",
}
_LOT_SIZE = {
    "filterType": "LOT_SIZE",
    "minQty": "0.00100000",
    "maxQty": "100000.00000000",
    "stepSize": "0.00100000",
}


def exchange_info(symbols: tuple[str, ...], weight_limit: int, now_ms: int, futures: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": [swap_info(s) if futures else spot_info(s) for s in symbols],
    }
    if futures:
        body["futuresType"] = "U_MARGINED"
        body["assets"] = [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}]
    return body


def spot_info(symbol: str) -> dict[str, Any]:
    base, quote, _ = split(symbol)
    return {
        "symbol": market_id(symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [_PRICE_FILTER, _LOT_SIZE],
        "permissions": ["SPOT"],
    }


def swap_info(symbol: str) -> dict[str, Any]:
    """A USDⓈ-M perpetual: `contractType` PERPETUAL and a margin asset equal to the quote."""
    base, quote, settle = split(symbol)
    return {
        "symbol": market_id(symbol),
        "pair": market_id(symbol),
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": settle or quote,
        "pricePrecision": 6,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "filters": [
            _PRICE_FILTER,
            _LOT_SIZE,
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC", "IOC"],
    }
