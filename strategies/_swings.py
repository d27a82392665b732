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
    return known_swings(is_swing, span, 1)[0]


def known_swings(is_swing: BoolArray, span: int, depth: int) -> list[IntArray]:
    """The latest `depth` swings confirmed by each bar t, newest first: [latest, the one before
    it, ...], each -1 where there are not that many."""
    n = is_swing.shape[0]
    # Swings at or before t - span, counted (a cumulative sum, much cheaper than a running max),
    # pick their indices from the list of swing bars; a count too low picks one of the -1s.
    known = np.zeros(n, dtype=np.int64)
    known[span:] = np.cumsum(is_swing[: max(n - span, 0)])
    at = np.concatenate((np.full(depth, -1, dtype=np.int64), np.flatnonzero(is_swing)))
    return [at[known + (depth - 1 - j)] for j in range(depth)]


def previous_swing(is_swing: BoolArray) -> IntArray:
    """For each swing bar, the index of the swing before it (-1 for the first); -1 elsewhere."""
    prev = np.full(is_swing.shape[0], -1, dtype=np.int64)
    pos = np.flatnonzero(is_swing)
    prev[pos[1:]] = pos[:-1]
    return prev


def held_since(
    values: FloatArray, is_swing: BoolArray, latest: IntArray, span: int, *, maximum: bool
) -> BoolArray:
    """For each bar t, whether no bar after its latest known swing s = latest[t] went beyond it:
    values[s+1..t] all ≤ values[s] for swing highs (`maximum`), all ≥ for swing lows; False
    where there is no swing. A NaN counts as beyond, as in a RangeExtreme query. `is_swing`
    comes from swing_highs / swing_lows with this `span`, and `latest` from latest_known.

    One pass instead of a range query per bar: every t with the same s lies in s+L..(next
    swing)+L-1, so a bar j ≥ s+L is checked against the swing in force at j (latest[j] = s), and
    the bars s+1..s+L-1, which belong to the previous swing's stretch, once per swing (a
    failure there is booked on bar s+L). Then t held iff no bar in s+L..t is beyond.
    """
    n = values.shape[0]
    s = np.maximum(latest, 0)
    beyond = ~(values <= values[s] if maximum else values >= values[s])
    # s+1..s+L-1 lie in the swing's own window, so only a NaN there (which also leaves TA-Lib's
    # rolling extreme unreliable) can put one beyond it.
    if span > 1 and np.isnan(values).any():
        pos = np.flatnonzero(is_swing)  # pos + span < n: swings are marked with L bars right of them
        near = values[pos[:, None] + np.arange(1, span)]
        ok = near <= values[pos, None] if maximum else near >= values[pos, None]
        beyond[pos + span] |= ~ok.all(axis=1)
    count = np.cumsum(beyond)
    before = count[np.minimum(s + span - 1, n - 1)]  # clipped only where latest = -1
    return np.asarray((latest >= 0) & (count == before), dtype=np.bool_)


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
