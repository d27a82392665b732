"""Volume-profile arithmetic shared by the two volume-profile strategies (spec §4.2, §4.14).

Both grow the value area outward from the point of control one row at a time, taking the
heavier neighbour, until it holds a share of the profile's volume. They differ only in who wins
a tie, so one vectorised routine serves both: replay needs the value area of hundreds of
profiles at once, and stepping them all together keeps that to one array operation per row.

volume also needs the profile of the last `bars` bars at every bar of a history
(`rolling_histograms`). Live computes one window, replay thousands, and both must agree to the
bit — a tie between two rows flips the POC or the value area otherwise — so every window's rows
are summed by the same float operations in both, never by sliding sums.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import talib
from numpy.lib.stride_tricks import as_strided

from engine.market.candles import Candles, FloatArray, IntArray

Scalar = TypeVar("Scalar", bound=np.generic)

# Up to this many profiles, a plain loop beats stepping arrays (see `_value_area_scalar`).
SCALAR_PROFILES = 4

# Windows (of 100 bars; scaled for other lengths) per pass of `rolling_histograms`: the
# (windows x bars) temporaries of one pass stay small enough to be reused from the heap instead
# of being page-faulted in afresh. Measured on the bundled data: flat from 128 to 512, 1024 is
# ~20 % slower.
PROFILE_CHUNK = 256

# Bars classified per pass (their runs' bars laid end to end), for the same reason.
CLASSIFY_CHUNK = 16384

# Half a unit in the last place of a float64: bounds the rounding of the closed-form row test.
HALF_ULP = 2.0**-53


def value_area(
    hist: FloatArray, poc: IntArray, share: float, *, ties_upper: bool, of: IntArray | None = None
) -> tuple[IntArray, IntArray]:
    """Lowest and highest row of each profile's value area (rows of `hist` are profiles; only
    the profiles `of`, if given, whose POCs `poc` are).

    Starting from the POC row, the heavier of the two adjacent rows is added while the area
    holds less than `share` of the profile's total; a side that reached the edge of the
    profile is no longer a candidate, and a full profile stops. `ties_upper` says whether equal
    neighbours go up (volume_profile) or down (volume). Profiles that stopped growing leave the
    arrays, so each step touches only the live ones.
    """
    rows = hist.shape[1]
    target = share * hist.sum(axis=1)
    which = np.arange(hist.shape[0]) if of is None else of
    k = which.shape[0]
    if k <= SCALAR_PROFILES:
        return _value_area_scalar(hist[which], poc, target[which], ties_upper)
    width = rows + 2  # -inf on both sides: an edge is never the heavier neighbour
    padded = np.full((k, width), -np.inf)
    padded[:, 1:-1] = hist[which]
    flat = padded.ravel()
    live = np.arange(k)
    row0 = live * width + 1  # flat index of each profile's row 0
    out_lo = row0 + poc  # flat indices of the lowest and highest row, then rows
    out_hi = out_lo.copy()
    edge, under, over = row0 - 1, out_lo - 1, out_lo + 1  # under lo / over hi, as flat indices
    acc = flat[out_lo]
    goal = target[which]
    for _ in range(rows - 1):
        # after s < rows - 1 steps no profile is full: only the share can stop one
        growing = acc < goal
        if not growing.all():
            out_lo[live], out_hi[live] = under + 1, over - 1
            keep = np.flatnonzero(growing)
            if keep.shape[0] == 0:
                return out_lo - row0, out_hi - row0
            live, edge, under, over = live[keep], edge[keep], under[keep], over[keep]
            acc, goal = acc[keep], goal[keep]
        up, down = flat[over], flat[under]
        take_up: npt.NDArray[np.bool_] = (up >= down) if ties_upper else (up > down)
        take_up |= under == edge
        over += take_up
        under -= ~take_up
        acc += np.where(take_up, up, down)
    out_lo[live], out_hi[live] = under + 1, over - 1
    return out_lo - row0, out_hi - row0


def _value_area_scalar(
    hist: FloatArray, poc: IntArray, target: FloatArray, ties_upper: bool
) -> tuple[IntArray, IntArray]:
    """The same growth one profile at a time, for the live path's single profile.

    Array operations cost microseconds each however short the array, and a profile takes up to
    `rows` steps; a plain loop is ten times cheaper there. It adds the same floats in the same
    order as the array version, so both give identical answers (tested).
    """
    los, his = [], []
    for row, start, goal in zip(hist.tolist(), poc.tolist(), target.tolist(), strict=True):
        lo = hi = start
        acc = row[start]
        last = len(row) - 1
        while acc < goal and (lo > 0 or hi < last):
            up = row[hi + 1] if hi < last else -math.inf
            down = row[lo - 1] if lo > 0 else -math.inf
            if lo == 0 or (up >= down if ties_upper else up > down):
                hi, acc = hi + 1, acc + up
            else:
                lo, acc = lo - 1, acc + down
        los.append(lo)
        his.append(hi)
    return np.asarray(los, dtype=np.int64), np.asarray(his, dtype=np.int64)


# -- rolling profiles ---------------------------------------------------------------------


def profile_frame(
    c: Candles, at: IntArray, bars: int, rows: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bottom (lowest low), top (highest high) and row height of the `bars`-bar window ending at
    each `at`; a flat window's row height is 0."""
    bottom = np.asarray(talib.MIN(c.low, timeperiod=bars), dtype=np.float64)[at]
    top = np.asarray(talib.MAX(c.high, timeperiod=bars), dtype=np.float64)[at]
    height = (top - bottom) / rows
    return bottom, top, np.where(height <= 0, 0.0, height)


def centre(bottom: FloatArray, height: FloatArray, row: IntArray) -> FloatArray:
    """Price at the middle of each profile's `row`: bottom + (row + 0.5)·height, the same floats
    as a table of centres (written with `out=`: a big chained expression makes numpy inspect the
    call stack for temporaries it may reuse, which costs more than the arithmetic)."""
    out: FloatArray = np.add(row, 0.5, dtype=np.float64)
    np.multiply(out, height, out=out)
    np.add(out, bottom, out=out)
    return out


def covered_rows(
    lo_b: FloatArray, hi_b: FloatArray, base: FloatArray, height: FloatArray, rows: int
) -> tuple[IntArray, IntArray]:
    """First and last row whose centre `base + (j + 0.5)·height` lies in each bar's [low, high].

    The closed form can miss by one row when a price sits on a centre (common on coarse tick
    grids), so it is checked against a table of the centres themselves and nudged.
    """
    k = base.shape[0]
    table = np.empty((k, rows + 2))
    table[:, 0], table[:, -1] = -np.inf, np.inf
    table[:, 1:-1] = base + (np.arange(rows) + 0.5) * height
    flat_t = table.ravel()
    row0 = (np.arange(k) * (rows + 2) + 1)[:, None]
    a = np.clip(np.ceil((lo_b - base) / height - 0.5), 0, rows).astype(np.int64)
    a = a - (flat_t[row0 + a - 1] >= lo_b) + (flat_t[row0 + a] < lo_b)
    e = np.clip(np.floor((hi_b - base) / height - 0.5), -1, rows - 1).astype(np.int64)
    e = e + (flat_t[row0 + e + 1] <= hi_b) - (flat_t[row0 + e] > hi_b)
    return a, e


def _row_bounds(
    lo: FloatArray, hi: FloatArray, base: FloatArray, height: FloatArray, rows: int, slack: float
) -> tuple[FloatArray, FloatArray, IntArray]:
    """`covered_rows` of bars (each with its profile's base and row height) by the closed form,
    as floats: first row and last row + 1; and which bars need `covered_rows`' exact test.

    The closed form is exact unless its quotient lies within rounding error (`slack`, in rows)
    of a whole number — a price on or next to a row's centre.
    """
    first = lo - base
    first /= height
    first -= 0.5
    a = np.ceil(first)
    last = hi - base
    last /= height
    last -= 0.5
    e = np.floor(last)
    e += 1.0
    if slack >= 0.25:
        return a, e, np.arange(lo.shape[0])
    first -= a  # in [-1, 0]: -0.5 is mid-way between two whole numbers
    first += 0.5
    np.abs(first, out=first)
    last -= e  # in [-1, 0)
    last += 0.5
    np.abs(last, out=last)
    np.maximum(first, last, out=first)
    return a, e, np.flatnonzero(first >= 0.5 - slack)


def _codes(a: FloatArray, b: FloatArray, rows: int) -> tuple[FloatArray, FloatArray]:
    """Bincount columns of bars covering rows [a, b): a in the plus half, `rows` + b in the
    minus half, 2·`rows` where nothing is added (no row covered; a run through the top row)."""
    empty = a >= b
    np.copyto(a, 2 * rows, where=empty)
    empty |= b >= rows
    np.copyto(b, rows, where=empty)
    b += rows
    return a, b


def _strided_rows(x: npt.NDArray[Scalar], width: int) -> npt.NDArray[Scalar]:
    """Read-only view whose row i is x[i : i + width]."""
    x = np.ascontiguousarray(x)
    step = x.strides[0]
    out: npt.NDArray[Scalar] = as_strided(
        x, shape=(x.shape[0] - width + 1, width), strides=(step, step), writeable=False
    )
    return out


def rolling_histograms(
    low: FloatArray,
    high: FloatArray,
    volume: FloatArray,
    at: IntArray,
    bottom: FloatArray,
    top: FloatArray,
    bars: int,
    rows: int,
) -> FloatArray:
    """Row volumes of the profile of the `bars` bars ending at each `at` (rows: `rows` equal
    bands of [bottom, top], the window's lowest low and highest high).

    A bar adds its whole volume to every row whose centre lies in [low, high] — a contiguous
    run of rows, so it costs two entries of a difference array (plus at its first row, minus
    past its last), summed per row in bar order and accumulated upwards.

    Consecutive windows with the same bottom and top (a "run") give each bar the same rows, so
    those are found once per run, over the run's bars laid end to end. Each window's row sums
    are then two weighted bincounts of its own bars, in bar order — the very additions a lone
    window makes — for PROFILE_CHUNK windows at a time.
    """
    k = at.shape[0]
    hist = np.empty((k, rows))
    if k == 0:
        return hist
    new = np.empty(k, dtype=bool)
    new[0] = True
    step = np.diff(at)
    # a run may skip windows (its bars stay contiguous), not a window's worth of bars
    new[1:] = (step <= 0) | (step >= bars) | (bottom[1:] != bottom[:-1]) | (top[1:] != top[:-1])
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    t0 = at[starts]
    t1 = at[np.append(starts[1:] - 1, k - 1)]
    base, tops = bottom[starts], top[starts]
    height = (tops - base) / rows
    flat = height <= 0
    height[flat] = 1.0
    count = t1 - t0 + bars
    offset = np.zeros(starts.shape[0], dtype=np.int64)
    np.cumsum(count[:-1], out=offset[1:])
    # rounding of the closed form, in rows: ulps of the prices over the row height, plus the rows
    scale = float((np.maximum(np.abs(base), np.abs(tops) + height) / height).max())
    slack = 8 * HALF_ULP * (2 * rows + 2 + scale)
    # each bar's two bincount columns in its run (see `_codes`), found CLASSIFY_CHUNK bars at a time
    spare = 2 * rows
    width = spare + 1
    plus = np.empty(int(offset[-1] + count[-1]), dtype=np.min_scalar_type(spare))
    minus = np.empty_like(plus)
    bound = np.unique(np.searchsorted(offset, np.arange(0, plus.shape[0], CLASSIFY_CHUNK), side="right") - 1)
    exact: list[tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray]] = []
    for g0, g1 in zip(bound.tolist(), [*bound[1:].tolist(), starts.shape[0]], strict=True):
        u0, u1 = int(offset[g0]), int(offset[g1 - 1] + count[g1 - 1])
        per_bar = count[g0:g1]
        bar = np.arange(u0, u1) + np.repeat((t0 - bars + 1 - offset)[g0:g1], per_bar)
        lo, hi = low[bar], high[bar]
        b0, h = np.repeat(base[g0:g1], per_bar), np.repeat(height[g0:g1], per_bar)
        a, b, check = _row_bounds(lo, hi, b0, h, rows, slack)
        if flat[g0:g1].any():
            whole = np.repeat(flat[g0:g1], per_bar)
            a[whole], b[whole] = 0.0, float(rows)
            check = check[~whole[check]]
        if check.shape[0]:
            exact.append((check + u0, lo[check], hi[check], b0[check], h[check]))
        plus[u0:u1], minus[u0:u1] = _codes(a, b, rows)
    if exact:  # the few bars next to a centre, all passes at once
        where, lo, hi, b0, h = (np.concatenate(x) for x in zip(*exact, strict=True))
        a_x, e_x = covered_rows(lo[:, None], hi[:, None], b0[:, None], h[:, None], rows)
        plus[where], minus[where] = _codes(
            a_x[:, 0].astype(np.float64), (e_x[:, 0] + 1).astype(np.float64), rows
        )
    first = offset[run] + (at - t0[run])  # each window's first bar in the run arrays
    plus_rows, minus_rows = _strided_rows(plus, bars), _strided_rows(minus, bars)
    volume_rows = _strided_rows(volume, bars)
    chunk = max(1, PROFILE_CHUNK * 100 // bars)
    shift = np.arange(0, chunk * width, width)[:, None]
    for s in range(0, k, chunk):
        e = min(s + chunk, k)
        nw, size = e - s, (e - s) * width
        vol = volume_rows[at[s:e] - (bars - 1)].ravel()
        index = np.add(plus_rows[first[s:e]], shift[:nw], dtype=np.intp).ravel()
        sums = np.bincount(index, weights=vol, minlength=size).reshape(nw, width)
        index = np.add(minus_rows[first[s:e]], shift[:nw], dtype=np.intp).ravel()
        less = np.bincount(index, weights=vol, minlength=size).reshape(nw, width)
        np.subtract(sums[:, :rows], less[:, rows:spare], out=hist[s:e])
    # accumulate upwards (a cumsum along the rows, one row for all windows at once)
    for j in range(1, rows):
        np.add(hist[:, j - 1], hist[:, j], out=hist[:, j])
    return hist
