"""What the gateway needs from a market, live or replayed.

The gateway owns caching, validation and dropping the forming candle; a source only answers
raw requests the way an exchange does. That keeps the live client (ccxt) and the CSV replay
interchangeable under the same gateway, so the replay demo runs the live code path.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.market.snapshots import Funding, OrderBook, Ticker, Trades


@runtime_checkable
class MarketData(Protocol):
    """A raw source of markets, OHLCV rows and point-in-time snapshots for one exchange.

    A source that cannot provide a snapshot kind at all (CSV replay has no order books)
    raises `DataUnavailable` saying why, without touching the network.
    """

    exchange: str

    async def load_markets(self) -> set[str]:
        """Unified symbols ("ETH/BTC") that can be asked for."""
        ...

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None, limit: int
    ) -> list[list[float]]:
        """Rows `[ts_ms, open, high, low, close, volume]`, oldest first, at most `limit`.

        From `since_ms` (open time, inclusive) when given, else the most recent rows. The last
        row may be the still-forming candle, as exchanges return it.
        """
        ...

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Last price and top of book now."""
        ...

    async def fetch_trades(self, symbol: str, limit: int) -> Trades:
        """The most recent `limit` public trades, oldest first."""
        ...

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        """The best `depth` levels of each side now."""
        ...

    async def fetch_funding(self, symbol: str) -> Funding:
        """The current funding rate of a perpetual swap."""
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown, after which the source is not used."""
        ...

    def status(self) -> dict[str, object]:
        """Health details for /ready (breaker state, pause, whether markets are loaded)."""
        ...
