"""Where price first reaches a level: many queries over one candle series at once.

Outcome tracking asks, for every open signal, where its stop and each target are first hit
after the signal's bar. A year-long replay asks hundreds of thousands of such questions of one
series; answering them together with a few passes over a tree of block minima costs about a
microsecond each, where one small numpy search per question cost tens.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.market.candles import FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]


def first_hits(
    low: FloatArray, high: FloatArray, kind: BoolArray, start: IntArray, level: FloatArray
) -> IntArray:
    """For each query q: the first index j >= start[q] with low[j] <= level[q] (kind False) or
    high[j] >= level[q] (kind True); len(low) where there is none. NaNs never hit.

    All queries at once, by a binary search over minima of aligned power-of-two blocks (a
    min-tree of `low` beside one of `-high`, so both kinds are one search): climb from the start
    over blocks without a hit to the first block holding one, then descend into its first
    hitting half down to one candle. O((m + queries) * log m) array work for m candles.
    """
    m = len(low)
    depth = (m - 1).bit_length()
    size = 1 << depth  # each kind's row, padded with NaN (no hit) to a power of two
    base = np.full(2 * size, np.nan)
    base[:m] = low
    np.negative(high, out=base[size : size + m])
    tree = [base]
    for _ in range(depth):
        tree.append(np.fmin(tree[-1][0::2], tree[-1][1::2]))  # fmin: a NaN candle is no hit
    limit = np.where(kind, -level, level)  # high >= x  <=>  -high <= -x
    row = kind.astype(np.int64) * size
    pos = row + start
    found = np.full(len(pos), -1, dtype=np.int64)  # level of the block known to hold the first hit
    # climb: at level l, pos is a multiple of 2**l; its level-l block is next iff bit l is set
    for lvl in range(depth):
        cell = pos >> lvl
        check = (cell & 1).astype(np.bool_) & (found < 0)
        hit = check & (tree[lvl].take(cell, mode="clip") <= limit)
        found[hit] = lvl
        pos += (check & ~hit).astype(np.int64) << lvl
    # still climbing: pos is its row's start (the start was 0: try the whole row) or end (none)
    check = (found < 0) & (pos == row)
    found[check & (tree[depth].take(pos >> depth, mode="clip") <= limit)] = depth
    # descend: keep the first half of the block if it holds a hit, else move to the second
    for lvl in range(depth - 1, -1, -1):
        cell = pos >> lvl
        miss = (found > lvl) & ~(tree[lvl].take(cell, mode="clip") <= limit)
        pos += miss.astype(np.int64) << lvl
    return np.where(found >= 0, pos - row, m)
