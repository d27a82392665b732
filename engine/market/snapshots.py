"""Point-in-time market data beyond candles: ticker, recent trades, order book, funding.

Snapshot strategies (funding, liquidation) read these; they exist only "now", so replay can
run such a strategy only where snapshots were recorded, and otherwise reports it as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.market.candles import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Ticker:
    """Last traded price and top of book, as the exchange reported them at `ts_ms`."""

    last: float
    bid: float | None
    ask: float | None
    ts_ms: int


@dataclass(frozen=True, slots=True, eq=False)
class Trades:
    """Recent public trades, oldest first. `buyer_taker` is True when the taker bought."""

    ts: IntArray
    price: FloatArray
    amount: FloatArray
    buyer_taker: BoolArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def last(self, n: int) -> Trades:
        """The `n` most recent trades (all of them if there are fewer); views, not copies."""
        k = max(0, len(self) - n)
        return Trades(self.ts[k:], self.price[k:], self.amount[k:], self.buyer_taker[k:])

    @property
    def value(self) -> FloatArray:
        """Quote value of each trade (price · amount)."""
        return self.price * self.amount


@dataclass(frozen=True, slots=True, eq=False)
class OrderBook:
    """Order book levels: `bids` best (highest) first, `asks` best (lowest) first; rows (price, amount)."""

    bids: FloatArray
    asks: FloatArray
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Funding:
    """Current funding rate of a perpetual as a fraction (0.0001 = 0.01 %), and when it applies."""

    rate: float
    ts_ms: int
    next_funding_ms: int | None = None
