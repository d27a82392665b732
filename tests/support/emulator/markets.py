"""Deterministic market data for the emulator: the bundled CSV candles and synthetic markets.

Symbols with a CSV in the data directory serve it (coarser intervals resampled); any other
symbol gets a smooth synthetic price that exists at every instant, so tests and the benchmark
can ask for any number of markets at any time. Perpetuals follow the spot price of the same
pair. Every answer is a pure function of (symbol, clock time, request), so a test can compute
what it expects.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from engine.clock import Clock
from engine.market.candles import FloatArray
from engine.market.replay import ReplayMarket
from engine.timeframes import timeframe_seconds

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "data" / "sample"
WEEK_MS = 7 * 86_400_000
FUNDING_EVERY_MS = 8 * 3_600_000
TRADE_EVERY_MS = 250
SPREAD = 1e-4


def split(symbol: str) -> tuple[str, str, str | None]:
    """("BTC", "USDT", "USDT") for "BTC/USDT:USDT"; settle is None for spot."""
    base, rest = symbol.split("/")
    quote, _, settle = rest.partition(":")
    return base, quote, settle or None


def market_id(symbol: str) -> str:
    base, quote, _ = split(symbol)
    return base + quote


def synthetic_symbols(n: int, quote: str = "USDT", swap: bool = False) -> tuple[str, ...]:
    """`n` made-up markets ("S000/USDT", ...) for load tests; ccxt maps no currency code onto them."""
    suffix = f":{quote}" if swap else ""
    return tuple(f"S{i:03d}/{quote}{suffix}" for i in range(n))


def fmt(x: float) -> str:
    return f"{x:.8f}"


class MarketBook:
    """Prices, candles, trades, books and funding for every symbol the emulator lists."""

    def __init__(self, clock: Clock, data_dir: Path, seed: int, csv_shift_ms: int = 0) -> None:
        if csv_shift_ms % WEEK_MS:
            raise ValueError("csv_shift_ms must be whole weeks, so every interval stays aligned")
        self._clock = clock
        self._csv = ReplayMarket(data_dir, "binance", clock)
        self._seed = seed
        self.csv_shift_ms = csv_shift_ms
        self._rows: dict[tuple[str, str], FloatArray] = {}

    @property
    def csv_symbols(self) -> frozenset[str]:
        return self._csv.symbols

    def csv_range_ms(self) -> tuple[int, int]:
        """First and last 5m candle open time of the bundled files, unshifted."""
        return self._csv.time_range("5m")

    def now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    # --- candles -----------------------------------------------------------------------------

    def klines(
        self, symbol: str, interval: str, start: int | None, end: int | None, limit: int
    ) -> FloatArray:
        """Rows (open time, o, h, l, c, v) as the exchange has them now, the forming one included."""
        step = timeframe_seconds(interval) * 1000
        now = self.now_ms()
        top = min(now, end) if end is not None else now
        spot = self._spot_symbol(symbol)
        if spot in self._csv.symbols:
            arr = self._csv_rows(spot, interval)
            ts = arr[:, 0]
            hi = int(np.searchsorted(ts, top, side="right"))
            if start is None:
                return arr[max(0, hi - limit) : hi]
            lo = int(np.searchsorted(ts, start, side="left"))
            return arr[lo : min(hi, lo + limit)]
        last = top // step * step
        first = -(-start // step) * step if start is not None else last - (limit - 1) * step
        opens = np.arange(first, min(last, first + (limit - 1) * step) + 1, step, dtype=np.float64)
        phase = self._phase(spot)
        o = self._price(opens, phase)
        c = self._price(np.minimum(opens + step, now), phase)
        h = np.maximum(o, c) * 1.001
        lo_ = np.minimum(o, c) * 0.999
        v = 10.0 + 5.0 * (1.0 + np.sin(opens / 3.1e6 + phase))
        return np.column_stack([opens, o, h, lo_, c, v])

    def last_price(self, symbol: str) -> float:
        """The price now: the close so far of the forming candle."""
        spot = self._spot_symbol(symbol)
        now = self.now_ms()
        if spot in self._csv.symbols:
            arr = self._csv_rows(spot, "5m")
            i = int(np.searchsorted(arr[:, 0], now, side="right")) - 1
            return float(arr[max(0, i), 4 if i >= 0 else 1])
        return float(self._price(np.array([float(now)]), self._phase(spot))[0])

    # --- snapshots ---------------------------------------------------------------------------

    def ticker_24hr(self, symbol: str, futures: bool) -> dict[str, Any]:
        now = self.now_ms()
        last = self.last_price(symbol)
        spot = self._spot_symbol(symbol)
        if spot in self._csv.symbols:
            opened = last
        else:
            opened = float(self._price(np.array([now - 86_400_000.0]), self._phase(spot))[0])
        body: dict[str, Any] = {
            "symbol": market_id(symbol),
            "priceChange": fmt(last - opened),
            "priceChangePercent": f"{(last / opened - 1) * 100:.3f}",
            "weightedAvgPrice": fmt((last + opened) / 2),
            "lastPrice": fmt(last),
            "lastQty": "1.00000000",
            "openPrice": fmt(opened),
            "highPrice": fmt(max(last, opened) * 1.01),
            "lowPrice": fmt(min(last, opened) * 0.99),
            "volume": "12345.00000000",
            "quoteVolume": fmt(12345.0 * last),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": 1,
            "lastId": 100_000,
            "count": 100_000,
        }
        if not futures:
            bid, ask = self._top(last)
            body |= {
                "prevClosePrice": fmt(opened),
                "bidPrice": fmt(bid),
                "bidQty": "5.00000000",
                "askPrice": fmt(ask),
                "askQty": "5.00000000",
            }
        return body

    def book_ticker(self, symbol: str, futures: bool) -> dict[str, Any]:
        bid, ask = self._top(self.last_price(symbol))
        body: dict[str, Any] = {
            "symbol": market_id(symbol),
            "bidPrice": fmt(bid),
            "bidQty": "5.00000000",
            "askPrice": fmt(ask),
            "askQty": "5.00000000",
        }
        if futures:
            body["time"] = self.now_ms()
        return body

    def agg_trades(self, symbol: str, limit: int, futures: bool) -> list[dict[str, Any]]:
        """The last `limit` trades, one every TRADE_EVERY_MS up to now, with stable ids."""
        ids, ts, price, qty, maker = self._trades(symbol, limit)
        out = []
        for i, t, p, q, m in zip(ids, ts, price, qty, maker, strict=True):
            row: dict[str, Any] = {"a": i, "p": fmt(p), "q": fmt(q), "f": i, "l": i, "T": t, "m": m}
            if not futures:
                row["M"] = True
            out.append(row)
        return out

    def recent_trades(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        ids, ts, price, qty, maker = self._trades(symbol, limit)
        return [
            {"id": i, "price": fmt(p), "qty": fmt(q), "quoteQty": fmt(p * q), "time": t, "isBuyerMaker": m}
            | {"isBestMatch": True}
            for i, t, p, q, m in zip(ids, ts, price, qty, maker, strict=True)
        ]

    def depth(self, symbol: str, limit: int, futures: bool) -> dict[str, Any]:
        """`limit` levels a side, one basis point apart, around the last price."""
        bid, ask = self._top(self.last_price(symbol))
        steps = np.arange(limit, dtype=np.float64)
        qty = 1.0 + (np.abs(np.sin(steps * 12.9898 + self._phase(symbol))) * 10.0)
        bids = [[fmt(bid * (1 - SPREAD * k)), fmt(q)] for k, q in zip(steps, qty, strict=True)]
        asks = [[fmt(ask * (1 + SPREAD * k)), fmt(q)] for k, q in zip(steps, qty, strict=True)]
        now = self.now_ms()
        body: dict[str, Any] = {"lastUpdateId": now, "bids": bids, "asks": asks}
        if futures:
            body |= {"E": now, "T": now}
        return body

    def premium_index(self, symbol: str) -> dict[str, Any]:
        now = self.now_ms()
        mark = self.last_price(symbol)
        return {
            "symbol": market_id(symbol),
            "markPrice": fmt(mark),
            "indexPrice": fmt(mark * (1 - SPREAD)),
            "estimatedSettlePrice": fmt(mark),
            "lastFundingRate": fmt(self.funding_rate(symbol)),
            "interestRate": "0.00010000",
            "nextFundingTime": (now // FUNDING_EVERY_MS + 1) * FUNDING_EVERY_MS,
            "time": now,
        }

    def funding_rate(self, symbol: str) -> float:
        """Constant within a funding period, different from one period to the next."""
        period = self.now_ms() // FUNDING_EVERY_MS
        return round(0.0001 + 0.0002 * math.sin(period + self._phase(symbol)), 8)

    # --- helpers -----------------------------------------------------------------------------

    def _csv_rows(self, symbol: str, interval: str) -> FloatArray:
        key = (symbol, interval)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._csv.history(symbol, interval).rows()
            rows[:, 0] += self.csv_shift_ms
            self._rows[key] = rows
        return rows

    def _trades(
        self, symbol: str, limit: int
    ) -> tuple[list[int], list[int], list[float], list[float], list[bool]]:
        last_id = self.now_ms() // TRADE_EVERY_MS
        ids = np.arange(last_id - limit + 1, last_id + 1, dtype=np.int64)
        ts = ids * TRADE_EVERY_MS
        noise = np.sin(ids.astype(np.float64) * 12.9898 + self._phase(symbol))
        price = self.last_price(symbol) * (1 + SPREAD * noise)
        qty = 0.01 + np.abs(noise) * 2.0
        return ids.tolist(), ts.tolist(), price.tolist(), qty.tolist(), (noise > 0).tolist()

    def _top(self, last: float) -> tuple[float, float]:
        return last * (1 - SPREAD / 2), last * (1 + SPREAD / 2)

    def _phase(self, symbol: str) -> float:
        return float(zlib.crc32(self._spot_symbol(symbol).encode()) % 1000 + self._seed)

    @staticmethod
    def _spot_symbol(symbol: str) -> str:
        return symbol.partition(":")[0]

    @staticmethod
    def _price(t_ms: FloatArray, phase: float) -> FloatArray:
        out: FloatArray = 100.0 * (1.0 + 0.05 * np.sin(t_ms / 2.16e7 + phase) + 0.002 * np.sin(t_ms / 4.2e5))
        return out
