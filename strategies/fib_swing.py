"""fib_swing - a retracement of the last swing, traded only with the trend (spec §4.9).

In an up-trend (EMA20 above EMA50) the move from the second-latest swing low (the anchor) to
the latest swing high is the leg price is expected to resume; a close back at its 65, 61.8,
50 or 38.2% retracement is a LONG entry, with the stop beyond the anchor. A down-trend is
mirrored. The shallower the retracement, the weaker the setup: a 38.2% one is only taken on
above-average volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import talib
from pydantic import Field, model_validator

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import WARMUP_HELP, bars_from
from strategies._swings import (
    BoolArray,
    RangeExtreme,
    latest_known,
    previous_swing,
    swing_highs,
    swing_lows,
)

# Tested in this order; the first level the close is near decides.
LEVELS = (0.65, 0.618, 0.5, 0.382)
QUALITY = {0.65: "PREMIUM", 0.618: "PREMIUM", 0.5: "CONFIRMED", 0.382: "WEAK"}


class FibSwingParams(StrategyParams):
    """`[params]` of a fib_swing instance: swing size, the EMA trend filter and entry tolerance."""

    swing_lookback: int = Field(10, ge=1, description="bars each side a swing must dominate (L)")
    confirmation: int = Field(
        5, ge=1, description="bars after the anchor that must hold it for `swing_confirmed` (metadata)"
    )
    window: int = Field(
        200, description="bars searched for swings, ending at the signal bar (the original's fetch)"
    )
    fast_ema: int = Field(20, ge=2, description="trend filter: up when EMA(fast) > EMA(slow)")
    slow_ema: int = Field(50, ge=2, description="trend filter slow EMA")
    tolerance: float = Field(
        0.02, gt=0, description="|close - level| at most this fraction of the swing range"
    )
    volume_period: int = Field(20, ge=2, description="a 38.2% (WEAK) entry needs volume above this average")
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)

    @model_validator(mode="after")
    def _window_fits_swings(self) -> FibSwingParams:
        # Two swings of each kind need room: each one owns L bars either side.
        if self.window < 4 * self.swing_lookback + 2:
            raise ValueError(f"window ({self.window}) must be at least 4·swing_lookback + 2")
        return self


class FibSwingStrategy(Strategy[FibSwingParams]):
    """LONG at a retracement of the last up-leg in an up-trend; SHORT mirrored in a down-trend."""

    name = "fib_swing"
    Params = FibSwingParams
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.5, "tp3_mult": 4.5, "min_rr": 2.0}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 3600

    @property
    def lookback(self) -> int:
        return self.params.window + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup, "window": self.params.window}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        span = p.swing_lookback
        t = np.arange(self.lookback - 1, n, dtype=np.int64)
        fast = np.asarray(talib.EMA(c.close, timeperiod=p.fast_ema), dtype=np.float64)[t]
        slow = np.asarray(talib.EMA(c.close, timeperiod=p.slow_ema), dtype=np.float64)[t]
        vol_avg = np.asarray(talib.SMA(c.volume, timeperiod=p.volume_period), dtype=np.float64)[t]

        is_hi, is_lo = swing_highs(c.high, span), swing_lows(c.low, span)
        last_hi = latest_known(is_hi, span)[t]
        last_lo = latest_known(is_lo, span)[t]
        second_hi = np.where(last_hi >= 0, previous_swing(is_hi)[np.maximum(last_hi, 0)], -1)
        second_lo = np.where(last_lo >= 0, previous_swing(is_lo)[np.maximum(last_lo, 0)], -1)
        # Two of each kind inside the window ending at t (their left side included).
        oldest = t - p.window + 1 + span
        have = (second_hi >= oldest) & (second_lo >= oldest)

        # Up-trend: anchor = 2nd-latest swing low, the leg runs to the latest swing high after it.
        up = have & (fast > slow) & (last_hi > second_lo)
        down = have & (fast < slow) & (last_lo > second_hi)
        anchor = np.where(up, second_lo, np.where(down, second_hi, 0))
        high = np.where(up, c.high[np.maximum(last_hi, 0)], c.high[anchor])
        low = np.where(up, c.low[anchor], c.low[np.maximum(last_lo, 0)])
        rng = high - low
        close = c.close[t]
        inside = (rng > 0) & (close >= low) & (close <= high)

        # Textbook retracement from the newest swing: high - f·R after an up-leg, low + f·R after a down-leg.
        base = np.where(up, high, low)
        sign = np.where(up, -1.0, 1.0)
        level = np.full(t.shape, np.nan)
        for f in LEVELS:
            near = np.isnan(level) & (np.abs(close - (base + sign * f * rng)) <= p.tolerance * rng)
            level = np.where(near, f, level)
        # A zero volume never beats the average (TA-Lib's running sum of zeros can dip below 0).
        vol = c.volume[t]
        weak_ok = (level != 0.382) | ((vol > vol_avg) & (vol > 0))
        fire = (up | down) & inside & ~np.isnan(level) & weak_ok

        confirmed = self._confirmed(c.low, c.high, anchor, up, t)
        extreme = np.where(up, last_hi, last_lo)
        ks = np.asarray(bars_from(fire, 0), dtype=np.int64)
        columns = (t, up, level, anchor, extreme, high, low, close, confirmed)
        return [self._candidate(*row) for row in zip(*(col[ks].tolist() for col in columns), strict=True)]

    def _confirmed(
        self, low: FloatArray, high: FloatArray, anchor: IntArray, up: BoolArray, t: IntArray
    ) -> BoolArray:
        """The `confirmation` bars after the anchor held it (LONG: no lower low; SHORT: no higher
        high), all of them closed by bar t. The original ran the LONG test on SHORT anchors
        too; here it is mirrored. With confirmation ≤ swing_lookback the swing itself implies it."""
        last = anchor + self.params.confirmation
        closed = last <= t
        end = np.minimum(last, t)
        start = np.minimum(anchor + 1, end)
        held_long = RangeExtreme(low, maximum=False).query(start, end) >= low[anchor]
        held_short = RangeExtreme(high, maximum=True).query(start, end) <= high[anchor]
        return np.asarray(closed & np.where(up, held_long, held_short), dtype=np.bool_)

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        i: int,
        up: bool,
        level: float,
        anchor_at: int,
        extreme_at: int,
        high: float,
        low: float,
        entry: float,
        confirmed: bool,
    ) -> Candidate:
        """STRUCTURE method on the anchor: SL beyond it by the 0.75% buffer; TP1/TP2/TP3 at
        2.0/3.5/4.5 R (TP3 is a spec Decision: the original's equalled TP2 or sat on the wrong
        side), min R:R 2.0. Invalid levels are returned flagged, never replaced by a fallback."""
        rng = high - low
        if up:
            direction = Direction.LONG
            levels = self.levels.structure(direction, entry, swing_low=low)
            fib_price = high - level * rng
            leg = f"up-trend leg from swing low {low:.8g} to swing high {high:.8g}"
        else:
            direction = Direction.SHORT
            levels = self.levels.structure(direction, entry, swing_high=high)
            fib_price = low + level * rng
            leg = f"down-trend leg from swing high {high:.8g} to swing low {low:.8g}"
        quality = QUALITY[level]
        rationale = [
            leg,
            f"close {entry:.8g} at the {level * 100:.1f}% retracement {fib_price:.8g} ({quality})",
        ]
        if quality == "WEAK":
            rationale.append(f"volume above its {self.params.volume_period}-bar average")
        if confirmed:
            rationale.append(f"anchor held for the next {self.params.confirmation} bars")
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=tuple(rationale),
            metadata={
                "quality": quality,
                "level": level,
                "fib_price": fib_price,
                "swing_high": high,
                "swing_low": low,
                "anchor_bars_ago": i - anchor_at,
                "extreme_bars_ago": i - extreme_at,
                "swing_confirmed": confirmed,
            },
        )
