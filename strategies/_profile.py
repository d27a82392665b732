"""Value-area growth shared by the two volume-profile strategies (spec §4.2, §4.14).

Both grow the value area outward from the point of control one row at a time, taking the
heavier neighbour, until it holds a share of the profile's volume. They differ only in who wins
a tie, so one vectorised routine serves both: replay needs the value area of hundreds of
profiles at once, and stepping them all together keeps that to one array operation per row.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.market.candles import FloatArray, IntArray

# Up to this many profiles, a plain loop beats stepping arrays (see `_value_area_scalar`).
SCALAR_PROFILES = 4


def value_area(
    hist: FloatArray, poc: IntArray, share: float, *, ties_upper: bool
) -> tuple[IntArray, IntArray]:
    """Lowest and highest row of each profile's value area (rows of `hist` are profiles).

    Starting from the POC row, the heavier of the two adjacent rows is added while the area
    holds less than `share` of the profile's total; a side that reached the edge of the
    profile is no longer a candidate, and a full profile stops. `ties_upper` says whether equal
    neighbours go up (volume_profile) or down (volume).
    """
    k, rows = hist.shape
    target = share * hist.sum(axis=1)
    if k <= SCALAR_PROFILES:
        return _value_area_scalar(hist, poc, target, ties_upper)
    at = np.arange(k)
    lo = poc.astype(np.int64).copy()
    hi = lo.copy()
    acc = hist[at, lo].copy()
    for _ in range(rows - 1):
        growing = (acc < target) & ((lo > 0) | (hi < rows - 1))
        if not growing.any():
            break
        up_ok, down_ok = hi < rows - 1, lo > 0
        up_vol = np.where(up_ok, hist[at, np.minimum(hi + 1, rows - 1)], -np.inf)
        down_vol = np.where(down_ok, hist[at, np.maximum(lo - 1, 0)], -np.inf)
        take_up: npt.NDArray[np.bool_] = (up_vol >= down_vol) if ties_upper else (up_vol > down_vol)
        take_up = take_up | ~down_ok
        step_up = growing & take_up
        step_down = growing & ~take_up
        hi = hi + step_up
        lo = lo - step_down
        acc = acc + np.where(step_up, up_vol, 0.0) + np.where(step_down, down_vol, 0.0)
    return lo, hi


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
