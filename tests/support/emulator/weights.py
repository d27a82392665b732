"""Request weights per endpoint, as Binance publishes them (and ccxt's cost tables encode them).

Spot and USDⓈ-M futures are metered separately, each per minute of its own: spot 6000, futures
2400. Some weights depend on the request (`limit` for klines and depth, whether `symbol` is
given for tickers), which is why a weight is either a number or a function of the query. Tests
may replace entries to make the exchange charge more than the client expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Weight = int | Callable[[Mapping[str, str]], int]

SPOT_LIMIT = 6000
FAPI_LIMIT = 2400


def by_limit(
    steps: tuple[tuple[int, int], ...], default_limit: int, above: int
) -> Callable[[Mapping[str, str]], int]:
    """Weight from the first (max_limit, weight) step covering the request's `limit`."""

    def weight(query: Mapping[str, str]) -> int:
        try:
            limit = int(query.get("limit", default_limit))
        except ValueError:
            limit = default_limit
        return next((w for top, w in steps if limit <= top), above)

    return weight


def by_symbol(with_symbol: int, without: int) -> Callable[[Mapping[str, str]], int]:
    """Ticker endpoints weigh far more when asked for every symbol at once."""

    def weight(query: Mapping[str, str]) -> int:
        return with_symbol if "symbol" in query else without

    return weight


def spot_weights() -> dict[str, Weight]:
    return {
        "ping": 1,
        "time": 1,
        "exchangeInfo": 20,
        "klines": 2,
        "ticker/24hr": by_symbol(2, 80),
        "ticker/bookTicker": by_symbol(2, 4),
        "aggTrades": 2,
        "trades": 10,
        "depth": by_limit(((100, 5), (500, 25), (1000, 50)), 100, 250),
    }


def fapi_weights() -> dict[str, Weight]:
    return {
        "ping": 1,
        "time": 1,
        "exchangeInfo": 1,
        "klines": by_limit(((99, 1), (499, 2), (1000, 5)), 500, 10),
        "ticker/24hr": by_symbol(1, 40),
        "ticker/bookTicker": by_symbol(2, 5),
        "aggTrades": 20,
        "trades": 5,
        "depth": by_limit(((50, 2), (100, 5), (500, 10)), 500, 20),
        "premiumIndex": by_symbol(1, 10),
    }


def weight_of(weights: Mapping[str, Weight], endpoint: str, query: Mapping[str, str]) -> int:
    """The weight of one request; endpoints not listed weigh 1."""
    weight = weights.get(endpoint, 1)
    return weight(query) if callable(weight) else weight
