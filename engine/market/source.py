"""What the gateway needs from a market, live or replayed.

The gateway owns caching, validation and dropping the forming candle; a source only answers
raw requests the way an exchange does. That keeps the live client (ccxt) and the CSV replay
interchangeable under the same gateway, so the replay demo runs the live code path.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class MarketData(Protocol):
    """A raw source of markets and OHLCV rows for one exchange."""

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

    async def close(self) -> None: ...

    def status(self) -> dict[str, object]:
        """Health details for /ready (breaker state, pause, whether markets are loaded)."""
        ...
