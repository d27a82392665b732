"""Where price first reaches a level: many queries over one candle series at once.

Outcome tracking asks, for every open signal, where its stop and each target are first hit
after the signal's bar. A year-long replay asks hundreds of thousands of such questions of one
series; answering them together with a few passes over a tree of block minima costs about a
microsecond each, where one small numpy search per question cost tens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from engine.market.candles import Candles, FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]
CHUNK = 64  # a position's candles are taken in chunks of 64, 128, 256, ... (see `locate`)


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


def ladders(take_profits: Sequence[tuple[float, ...]]) -> tuple[FloatArray, IntArray]:
    """Targets as a (positions, most targets) array padded with NaN (never hit), and their counts."""
    count = len(take_profits)
    lens = np.fromiter(map(len, take_profits), np.int64, count)
    k = max(1, int(lens.max())) if count else 1
    if not count or int(lens.min()) == k:
        return np.array(take_profits, dtype=np.float64).reshape(count, k), lens
    out = np.full((count, k), math.nan)
    for size in np.unique(lens).tolist():  # rows of one ladder length at a time
        if size:
            rows = np.flatnonzero(lens == size)
            out[rows, :size] = np.array([take_profits[i] for i in rows.tolist()], dtype=np.float64)
    return out, lens


def locate(
    stop_loss: FloatArray,
    ladder: FloatArray,
    lens: IntArray,
    long: BoolArray,
    opened_ms: IntArray,
    r: IntArray,
    c: Candles,
    closes: IntArray,
    expiry_age_ms: int | None,
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """For each position (starting at candle r of `c`, closing at `closes`; targets `ladder`,
    see `ladders`): where its decisive stretch ends and where, before that end, its stop,
    expiry and each target are first reached (the end when they are not; `hits` is
    (positions, most targets), padded with the end), all positions in a few array operations."""
    m, count = len(c), stop_loss.shape[0]
    k = ladder.shape[1]
    levels = np.empty((count, k + 1), dtype=np.float64)
    levels[:, 0] = stop_loss
    levels[:, 1:] = ladder
    # a long's stop and a short's targets are hit by a low at or under them (kind False),
    # the others by a high at or over them (kind True)
    kind = np.empty((count, k + 1), dtype=np.bool_)
    kind[:, 0] = ~long
    kind[:, 1:] = long[:, None]
    first = first_hits(c.low, c.high, kind.ravel(), np.repeat(r, k + 1), levels.ravel())
    first = first.reshape(count, k + 1)
    j_stop, hits = first[:, 0], first[:, 1:]
    j_exp = np.full(count, m, dtype=np.int64)
    if expiry_age_ms is not None:
        j_exp = np.maximum(closes.searchsorted(opened_ms + expiry_age_ms, side="left"), r)
    # A position is decided on the candles up to the end of the first chunk after its start
    # (64, 128, 256, ... of them) holding its stop, its last target or its expiry; later
    # hits count as unseen. With a ladder in order this changes nothing (every target is
    # reached by then, or the stop or expiry came first); it keeps a ladder out of order
    # resolving exactly as the chunk-by-chunk walk this replaces did.
    decisive = np.minimum(np.minimum(j_stop, hits[np.arange(count), np.maximum(lens, 1) - 1]), j_exp) - r
    chunks = np.frexp(((decisive + CHUNK) // CHUNK).astype(np.float64))[1].astype(np.int64)
    end = np.minimum(r + CHUNK * ((1 << chunks) - 1), m)
    return end, np.minimum(j_stop, end), np.minimum(j_exp, end), np.minimum(hits, end[:, None])


HOW_OPEN, HOW_TARGET, HOW_STOP, HOW_EXPIRY = 0, 1, 2, 3


def climb(
    hits: IntArray,
    lens: IntArray,
    j_stop: IntArray,
    j_exp: IntArray,
    end: IntArray,
    reached: IntArray,
) -> tuple[IntArray, IntArray, IntArray]:
    """The outcome rule for many positions at once, given where things first happen.

    Row i has `lens[i]` targets (`hits[i, k]`: first candle touching target k), `reached[i]`
    of them reached before; `j_stop`, `j_exp`: first candle touching the stop, reaching the
    expiry; `end`: the candles seen (an index equal to it means "not seen"). Targets are
    climbed in order while each comes before the stop (a stop in the same candle wins the
    tie: conservative) and no later than the expiry; reaching the last one closes the
    position there; else a stop closes it, else the expiry. Returns the targets reached, how
    it closed (HOW_OPEN/TARGET/STOP/EXPIRY) and the closing candle's index.
    """
    count, k = hits.shape
    cols = np.arange(k)
    ok = (hits < j_stop[:, None]) & (hits <= j_exp[:, None]) & (cols < lens[:, None])
    ok |= cols < reached[:, None]  # reached before: not checked again
    now = np.cumprod(ok, axis=1).sum(axis=1) if k else np.zeros(count, np.int64)
    at_target = (now == lens) & (now > reached)
    stopped = ~at_target & (j_stop < end) & (j_stop <= j_exp)
    expired = ~at_target & ~stopped & (j_exp < end)
    how = np.select([at_target, stopped, expired], [HOW_TARGET, HOW_STOP, HOW_EXPIRY], HOW_OPEN)
    last = hits[np.arange(count), np.maximum(lens, 1) - 1] if k else np.zeros(count, np.int64)
    at = np.where(at_target, last, np.where(stopped, j_stop, j_exp))
    return now, how, at
