"""Swing highs and lows as the two fib strategies define them (spec §4.8, §4.9), without look-ahead.

A swing high at bar i is a high no bar within L bars on either side exceeds:
high[i] = max(high[i-L..i+L]); a swing low likewise with min. Such a swing is only *known* at
bar i+L, when its right-hand side has closed, so every "as of bar t" helper here uses only the
swings with i + L ≤ t. Replay asks for every bar at once, hence the array forms; a live window
gets the same answer because a swing at i depends on bars i-L..i+L and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import talib

from engine.market.candles import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]


def swing_highs(high: FloatArray, span: int) -> BoolArray:
    """Bars whose high equals the highest high within `span` bars either side (ties all count)."""
    return _centred_extreme(high, span, talib.MAX)


def swing_lows(low: FloatArray, span: int) -> BoolArray:
    """Bars whose low equals the lowest low within `span` bars either side (ties all count)."""
    return _centred_extreme(low, span, talib.MIN)


def _centred_extreme(values: FloatArray, span: int, rolling: Callable[..., Any]) -> BoolArray:
    n = values.shape[0]
    out = np.zeros(n, dtype=bool)
    width = 2 * span + 1
    if n < width:
        return out
    # The rolling extreme at j covers j-2L..j, i.e. the bars centred on i = j - L.
    ext = np.asarray(rolling(values, timeperiod=width), dtype=np.float64)
    out[span : n - span] = values[span : n - span] == ext[width - 1 :]
    return out


def latest_known(is_swing: BoolArray, span: int) -> IntArray:
    """For each bar t, the index of the latest swing confirmed by t (i + span ≤ t), -1 if none."""
    n = is_swing.shape[0]
    seen = np.full(n, -1, dtype=np.int64)
    pos = np.flatnonzero(is_swing)
    seen[pos + span] = pos
    return np.maximum.accumulate(seen) if n else seen


def previous_swing(is_swing: BoolArray) -> IntArray:
    """For each swing bar, the index of the swing before it (-1 for the first); -1 elsewhere."""
    prev = np.full(is_swing.shape[0], -1, dtype=np.int64)
    pos = np.flatnonzero(is_swing)
    prev[pos[1:]] = pos[:-1]
    return prev


class RangeExtreme:
    """Minimum or maximum of `values[a..b]` (inclusive) for many ranges at once.

    A sparse table: level k holds the extreme of every run of 2^k bars, so any range is the
    extreme of two overlapping runs. Built in O(n log n) array operations, each query batch in
    O(1) of them — no Python loop over bars or over range lengths.
    """

    def __init__(self, values: FloatArray, *, maximum: bool) -> None:
        self._fn = np.maximum if maximum else np.minimum
        pad = -np.inf if maximum else np.inf
        n = values.shape[0]
        levels = max(1, int(n).bit_length())
        table = np.full((levels, n), pad, dtype=np.float64)
        table[0] = values
        for k in range(1, levels):
            half = 1 << (k - 1)
            table[k, : n - half] = self._fn(table[k - 1, : n - half], table[k - 1, half:])
        self._table = table

    def query(self, a: IntArray, b: IntArray) -> FloatArray:
        """Extreme of values[a[j]..b[j]] for each j; requires 0 ≤ a ≤ b < n."""
        # frexp is exact: length = m·2^e with m in [0.5, 1), so floor(log2(length)) = e - 1.
        k = np.frexp((b - a + 1).astype(np.float64))[1].astype(np.int64) - 1
        return np.asarray(self._fn(self._table[k, a], self._table[k, b - (1 << k) + 1]), dtype=np.float64)
