"""The candle array every strategy receives.

One small structure of contiguous numpy arrays, so strategies index and slice without copying
into Python lists, and the same value serves a 500-bar live window and a year of history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class Candles:
    """Closed candles in time order; `ts` is each candle's open time in epoch milliseconds."""

    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @classmethod
    def empty(cls) -> Candles:
        """Zero candles with the proper dtypes, so "no history" needs no None checks."""
        f = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), f, f, f, f, f)

    @classmethod
    def from_rows(cls, rows: npt.ArrayLike) -> Candles:
        """Build from an (n, 6) array-like of `[ts_ms, open, high, low, close, volume]`."""
        arr = np.asarray(rows, dtype=np.float64)
        if arr.size == 0:
            return cls.empty()
        if arr.ndim != 2 or arr.shape[1] < 6:
            raise ValueError(f"expected rows of 6 columns, got shape {arr.shape}")
        return cls(
            ts=arr[:, 0].astype(np.int64),
            open=np.ascontiguousarray(arr[:, 1]),
            high=np.ascontiguousarray(arr[:, 2]),
            low=np.ascontiguousarray(arr[:, 3]),
            close=np.ascontiguousarray(arr[:, 4]),
            volume=np.ascontiguousarray(arr[:, 5]),
        )

    def slice(self, start: int, stop: int | None = None) -> Candles:
        """A view of candles `[start, stop)`; numpy slices share memory, nothing is copied."""
        s = slice(start, stop)
        return Candles(self.ts[s], self.open[s], self.high[s], self.low[s], self.close[s], self.volume[s])

    def tail(self, n: int) -> Candles:
        """The last `n` candles (all of them if there are fewer)."""
        return self.slice(max(0, len(self) - n))

    def concat(self, other: Candles) -> Candles:
        """These candles followed by `other` (which must start after the last of these)."""
        return Candles(
            np.concatenate([self.ts, other.ts]),
            np.concatenate([self.open, other.open]),
            np.concatenate([self.high, other.high]),
            np.concatenate([self.low, other.low]),
            np.concatenate([self.close, other.close]),
            np.concatenate([self.volume, other.volume]),
        )

    def rows(self) -> FloatArray:
        """An (n, 6) float array, the inverse of `from_rows`."""
        return np.column_stack(
            [self.ts.astype(np.float64), self.open, self.high, self.low, self.close, self.volume]
        )
