"""volume_profile — crosses of the pivot-anchored profile's POC, VAH and VAL (spec §4.2).

The volume traded between the last two swing pivots forms a profile whose point of control
(POC) and value-area edges (VAH, VAL) are where the market agreed on price during that swing.
A close crossing one of them is a change of acceptance: upward crosses are LONG, downward
SHORT. The stop sits beyond the value area, the targets are fixed multiples of a risk unit
taken from the value area's height.

A pivot needs `pivot_length` bars on both sides, so a pivot at bar i is known only from bar
i + `pivot_length` on: the profile used at bar t is the one between the last two pivots
*confirmed* by t, and both must lie far enough inside the `window` bars ending at t to be
detectable there — which makes the answer a function of those bars alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import talib
from pydantic import Field, model_validator

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import BoolArray, CandidateBatch, Detail
from engine.signals.levels import LevelArrays
from engine.signals.model import Candidate
from strategies._profile import value_area

LEVELS = ("poc", "vah", "val")
# Event names by (side, level): LONG rows take the first three, SHORT rows the last three.
EVENT_NAMES = np.array([f"{x}_up" for x in LEVELS] + [f"{x}_down" for x in LEVELS])


class VolumeProfileParams(StrategyParams):
    """`[params]` of a volume_profile instance: pivot anchoring, profile shape and risk sizing."""

    pivot_length: int = Field(20, ge=1, description="bars on each side a pivot high/low must dominate")
    profile_bins: int = Field(25, ge=2, description="equal-height price bins of the profile")
    value_area_pct: float = Field(0.68, gt=0, le=1, description="share of the volume in the value area")
    volume_ma_length: int = Field(89, ge=1, description="volume mean length for the high-volume flag")
    high_volume_mult: float = Field(1.618, gt=0, description="high volume: volume > mult x mean (info only)")
    range_risk_fraction: float = Field(0.5, gt=0, description="risk unit as a fraction of VAH - VAL")
    min_risk_pct: float = Field(0.2, ge=0, description="floor of the risk unit, % of entry")
    buffer_fraction: float = Field(
        0.05, ge=0, description="stop buffer beyond the value area, fraction of VA"
    )
    min_buffer_pct: float = Field(0.05, ge=0, description="floor of the stop buffer, % of entry")
    tp1_rr: float = Field(1.2, gt=0, description="TP1 distance in risk units")
    tp2_rr: float = Field(1.8, gt=0, description="TP2 distance in risk units")
    window: int = Field(500, description="bars handed to the strategy (the original's fetch)")

    @model_validator(mode="after")
    def _window_holds_two_pivots(self) -> VolumeProfileParams:
        if self.window < 4 * self.pivot_length + 2:
            raise ValueError(f"window ({self.window}) must be at least 4 x pivot_length + 2")
        return self


def pivots(c: Candles, length: int) -> IntArray:
    """Bars whose high is the max, or low the min, of the `length` bars on each side."""
    n = len(c)
    span = 2 * length + 1
    hmax = np.asarray(talib.MAX(c.high, timeperiod=span), dtype=np.float64)
    lmin = np.asarray(talib.MIN(c.low, timeperiod=span), dtype=np.float64)
    mid = slice(length, n - length)
    found = np.zeros(n, dtype=bool)
    found[mid] = (c.high[mid] == hmax[span - 1 :]) | (c.low[mid] == lmin[span - 1 :])
    return np.flatnonzero(found)


def segment_profiles(
    c: Candles, first: IntArray, last: IntArray, bins: int, share: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """POC, VAH, VAL and total volume of the profile of bars [first, last] of each segment.

    All segments are binned in one pass: their bars are laid end to end and each bar's volume
    goes to (segment, bin of its mid-price) through one weighted bincount.
    """
    k = first.shape[0]
    lengths = last - first + 1
    offsets = np.cumsum(lengths) - lengths
    seg = np.repeat(np.arange(k), lengths)
    bar = np.repeat(first - offsets, lengths) + np.arange(int(lengths.sum()))
    lo = np.minimum.reduceat(c.low[bar], offsets)
    hi = np.maximum.reduceat(c.high[bar], offsets)
    step = (hi - lo) / bins
    safe = np.where(step > 0, step, 1.0)
    mid = (c.high[bar] + c.low[bar]) / 2.0
    b = np.clip(np.floor((mid - lo[seg]) / safe[seg]), 0, bins - 1).astype(np.int64)
    sums = np.bincount(seg * bins + b, weights=c.volume[bar], minlength=k * bins)
    hist = np.asarray(sums, dtype=np.float64).reshape(k, bins)
    poc = hist.argmax(axis=1)
    va_lo, va_hi = value_area(hist, poc, share, ties_upper=True)
    total = np.where(step > 0, hist.sum(axis=1), 0.0)
    return lo + (poc + 0.5) * step, lo + (va_hi + 1) * step, lo + va_lo * step, total


class VolumeProfileStrategy(Strategy[VolumeProfileParams]):
    """LONG when a close crosses up through the POC, VAH or VAL; SHORT when it crosses down."""

    name = "volume_profile"
    Params = VolumeProfileParams
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 300

    @property
    def lookback(self) -> int:
        # No recursive indicator: the spec's own window is the whole history needed.
        return self.params.window

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "pivot_length": self.params.pivot_length}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        length = p.pivot_length
        piv = pivots(c, length)
        t = np.arange(self.lookback - 1, n)
        # Last pivot confirmed by t, and the one before it; both must be detectable inside
        # the window ending at t, i.e. at least `length` bars after its first bar.
        k = np.searchsorted(piv, t - length, side="right") - 1
        ok = k >= 1
        t, k = t[ok], k[ok]
        ok = piv[k - 1] >= t - self.lookback + 1 + length
        t, k = t[ok], k[ok]
        if t.shape[0] == 0:
            return []

        # k never decreases with t, so the distinct segments are where it changes.
        new_seg = np.empty(k.shape[0], dtype=bool)
        new_seg[0] = True
        np.not_equal(k[1:], k[:-1], out=new_seg[1:])
        used, seg = k[new_seg], np.cumsum(new_seg) - 1
        poc_s, vah_s, val_s, vol_s = segment_profiles(
            c, piv[used - 1], piv[used], p.profile_bins, p.value_area_pct
        )
        good = (vol_s[seg] > 0) & (vah_s[seg] > val_s[seg])
        t, seg = t[good], seg[good]
        prev, cur = c.close[t - 1], c.close[t]
        lv = np.stack([poc_s[seg], vah_s[seg], val_s[seg]])  # rows in LEVELS order
        up = (prev < lv) & (lv <= cur)
        down = (prev > lv) & (lv >= cur)
        any_up = up[0] | up[1] | up[2]
        hit = np.flatnonzero(any_up | down[0] | down[1] | down[2])
        if hit.shape[0] == 0:  # the usual live call: no level crossed at the last bar
            return []
        crossed = np.where(any_up, up, down)[:, hit]

        vma = np.asarray(talib.SMA(c.volume, timeperiod=p.volume_ma_length), dtype=np.float64)
        at, sh = t[hit], seg[hit]
        return self._candidates(
            c,
            at,
            any_up[hit],
            crossed,
            poc_s[sh],
            vah_s[sh],
            val_s[sh],
            piv[used[sh] - 1],
            piv[used[sh]],
            c.volume[at] / vma[at],
        )

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        c: Candles,
        at: IntArray,
        long: BoolArray,
        crossed: BoolArray,
        poc: FloatArray,
        vah: FloatArray,
        val: FloatArray,
        pivot_from: IntArray,
        pivot_to: IntArray,
        volume_ratio: FloatArray,
    ) -> CandidateBatch:
        """Stop beyond the value area, TP1/TP2 at 1.2/1.8 risk units (not the stop distance).

        The unit is half the value area's height (at least 0.2 % of entry); the stop goes a
        buffer (5 % of the value area, at least 0.05 % of entry) beyond VAL for a LONG, VAH
        for a SHORT — or one unit from entry if price already closed beyond that edge.
        `crossed` is (3, rows): which of POC, VAH, VAL each row crossed.
        """
        p = self.params
        entry = c.close[at]
        va = vah - val
        risk = np.maximum(p.range_risk_fraction * va, p.min_risk_pct / 100.0 * entry)
        buf = np.maximum(p.buffer_fraction * va, p.min_buffer_pct / 100.0 * entry)
        sl = np.where(long, val - buf, vah + buf)
        beyond = np.where(long, sl >= entry, sl <= entry)
        sl = np.where(beyond, np.where(long, entry - risk, entry + risk), sl)
        s = np.where(long, 1.0, -1.0)
        tps = np.stack([entry + s * p.tp1_rr * risk, entry + s * p.tp2_rr * risk], axis=1)
        # The first level crossed names the event (and the cooldown sub-key).
        first = crossed.argmax(axis=0) + np.where(long, 0, len(LEVELS))
        sub_keys = EVENT_NAMES[first].tolist()
        from_ms, to_ms = c.ts[pivot_from], c.ts[pivot_to]

        def describe(row: int) -> Detail:
            up = bool(long[row])
            suffix, where = ("_up", "above") if up else ("_down", "below")
            values = (float(poc[row]), float(vah[row]), float(val[row]))
            hits = crossed[:, row].tolist()
            events = [name + suffix for name, hit in zip(LEVELS, hits, strict=True) if hit]
            rationale = [
                f"close crossed {where} {name.upper()} {x:.8g}"
                for name, x, hit in zip(LEVELS, values, hits, strict=True)
                if hit
            ]
            rationale.append(
                f"value area {values[2]:.8g} to {values[1]:.8g} of the profile between the last two pivots"
            )
            ratio = float(volume_ratio[row])
            high_volume = ratio > p.high_volume_mult
            if high_volume:
                rationale.append(f"high volume: {ratio:.2f} x the {p.volume_ma_length}-bar mean")
            return tuple(rationale), {
                "kind": events[0],
                "events": events,
                "poc": values[0],
                "vah": values[1],
                "val": values[2],
                "high_volume": high_volume,
                "volume_ratio": ratio,
                "pivot_from_ms": int(from_ms[row]),
                "pivot_to_ms": int(to_ms[row]),
            }

        return self.batch(
            at, np.where(long, 1, -1), entry, LevelArrays(sl, tps), describe=describe, sub_keys=sub_keys
        )
