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

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from strategies._common import WARMUP_HELP
from strategies._swings import BoolArray, known_swings, swing_highs, swing_lows

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
        first = self.lookback - 1  # rows below are bars first..n-1
        fast = np.asarray(talib.EMA(c.close, timeperiod=p.fast_ema), dtype=np.float64)[first:]
        slow = np.asarray(talib.EMA(c.close, timeperiod=p.slow_ema), dtype=np.float64)[first:]

        is_hi, is_lo = swing_highs(c.high, span), swing_lows(c.low, span)
        last_hi, second_hi = (a[first:] for a in known_swings(is_hi, span, 2))
        last_lo, second_lo = (a[first:] for a in known_swings(is_lo, span, 2))
        # Two of each kind inside the window ending at t (their left side included).
        oldest = np.arange(first - p.window + 1 + span, n - p.window + 1 + span)
        have = (second_hi >= oldest) & (second_lo >= oldest)

        # Up-trend: anchor = 2nd-latest swing low, the leg runs to the latest swing high after it.
        up = have & (fast > slow) & (last_hi > second_lo)
        down = have & (fast < slow) & (last_lo > second_hi)
        # The rest is only worked out on the rows with a leg to trade.
        k = np.flatnonzero(up | down)
        up = up[k]
        anchor = np.where(up, second_lo[k], second_hi[k])
        extreme = np.where(up, last_hi[k], last_lo[k])
        high = c.high[np.where(up, extreme, anchor)]
        low = c.low[np.where(up, anchor, extreme)]
        rng = high - low
        i = k + first
        close = c.close[i]
        inside = (rng > 0) & (close >= low) & (close <= high)

        # Textbook retracement from the newest swing: high - f·R after an up-leg, low + f·R after a
        # down-leg. The first level the close is near wins, so they are laid down last to first.
        # ∓R formed once: f·(∓R) is exactly (∓1·f)·R, as rounding is symmetric about zero.
        base, signed = np.where(up, high, low), np.where(up, -rng, rng)
        tolerance = p.tolerance * rng
        level = np.full(k.shape, np.nan)
        for f in reversed(LEVELS):
            level = np.where(np.abs(close - (base + f * signed)) <= tolerance, f, level)
        # A zero volume never beats the average (TA-Lib's running sum of zeros can dip below 0).
        vol, vol_avg = c.volume[i], np.asarray(talib.SMA(c.volume, timeperiod=p.volume_period))[i]
        weak_ok = (level != 0.382) | ((vol > vol_avg) & (vol > 0))
        j = np.flatnonzero(inside & ~np.isnan(level) & weak_ok)
        if not j.size:
            return []
        return self._candidates(c, i[j], up[j], level[j], anchor[j], extreme[j], high[j], low[j], close[j])

    def _confirmed(self, c: Candles, anchor: int, up: bool, t: int) -> bool:
        """The `confirmation` bars after the anchor held it (LONG: no lower low; SHORT: no higher
        high), all of them closed by bar t. The original ran the LONG test on SHORT anchors
        too; here it is mirrored. With confirmation ≤ swing_lookback the swing itself implies it.
        Only metadata and words depend on it, so it is asked per emitted candidate."""
        last = anchor + self.params.confirmation
        if last > t:
            return False
        if up:
            return bool(c.low[anchor + 1 : last + 1].min() >= c.low[anchor])
        return bool(c.high[anchor + 1 : last + 1].max() <= c.high[anchor])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        c: Candles,
        i: IntArray,
        up: BoolArray,
        level: FloatArray,
        anchor_at: IntArray,
        extreme_at: IntArray,
        high: FloatArray,
        low: FloatArray,
        entry: FloatArray,
    ) -> CandidateBatch:
        """STRUCTURE method on the anchor: SL beyond it by the 0.75% buffer; TP1/TP2/TP3 at
        2.0/3.5/4.5 R (TP3 is a spec Decision: the original's equalled TP2 or sat on the wrong
        side), min R:R 2.0. Invalid levels are returned flagged, never replaced by a fallback."""
        sign = np.where(up, 1, -1).astype(np.int8)
        levels = self.arrays.structure(sign, entry, np.where(up, low, high))
        p = self.params

        def describe(row: int) -> Detail:
            bar, long_, lvl = int(i[row]), bool(up[row]), float(level[row])
            hi, lo, anchor = float(high[row]), float(low[row]), int(anchor_at[row])
            rng = hi - lo
            if long_:
                fib_price = hi - lvl * rng
                leg = f"up-trend leg from swing low {lo:.8g} to swing high {hi:.8g}"
            else:
                fib_price = lo + lvl * rng
                leg = f"down-trend leg from swing high {hi:.8g} to swing low {lo:.8g}"
            quality = QUALITY[lvl]
            confirmed = self._confirmed(c, anchor, long_, bar)
            at = f"{lvl * 100:.1f}% retracement {fib_price:.8g} ({quality})"
            rationale = [leg, f"close {float(entry[row]):.8g} at the {at}"]
            if quality == "WEAK":
                rationale.append(f"volume above its {p.volume_period}-bar average")
            if confirmed:
                rationale.append(f"anchor held for the next {p.confirmation} bars")
            return tuple(rationale), {
                "quality": quality,
                "level": lvl,
                "fib_price": fib_price,
                "swing_high": hi,
                "swing_low": lo,
                "anchor_bars_ago": bar - anchor,
                "extreme_bars_ago": bar - int(extreme_at[row]),
                "swing_confirmed": confirmed,
            }

        return self.batch(i, sign, entry, levels, describe=describe)
