"""fib_reversal — a pullback into the Fibonacci retracement of the last swing (spec §4.8).

After a swing from a low to a high (the high being the newer swing), price often pulls back
61.8-65% of the move — the golden pocket — or to the 50/38.2% levels before resuming. A close
in such a zone on a bar that pushes back (green, or a long lower wick) is a LONG; the mirror
after a swing from a high down to a low is a SHORT. The stop goes beyond the swing that started
the move: if price gets there the swing, and the setup, is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from strategies._swings import BoolArray, held_since, latest_known, swing_highs, swing_lows

Preset = Literal["fast", "medium", "safe"]
# (swing lookback L, confirmation bars) of the original's presets.
PRESETS: dict[str, tuple[int, int]] = {"fast": (5, 2), "medium": (10, 3), "safe": (15, 4)}

GOLDEN_POCKET = (0.618, 0.65)
STANDARD_LEVELS = (0.618, 0.5, 0.382)


class FibReversalParams(StrategyParams):
    """`[params]` of a fib_reversal instance; a preset sets swing size and confirmation unless overridden."""

    preset: Preset = Field(
        "medium", description="swing lookback / confirmation: fast 5/2, medium 10/3, safe 15/4"
    )
    swing_lookback: int | None = Field(
        None, ge=1, description="bars each side a swing must dominate (L); overrides the preset"
    )
    confirmation: int | None = Field(
        None, ge=0, description="bars since the older swing before a setup counts; overrides the preset"
    )
    window: int = Field(
        100, description="bars searched for swings, ending at the signal bar (the original's fetch)"
    )
    pocket_pad: float = Field(
        0.02, ge=0, description="golden pocket widened by this fraction of the swing range"
    )
    tolerance: float = Field(
        0.05, gt=0, description="STANDARD zone: |close - level| below this fraction of the swing range"
    )

    @property
    def span(self) -> int:
        """Swing lookback L in force: `swing_lookback` if set, else the preset's."""
        return self.swing_lookback if self.swing_lookback is not None else PRESETS[self.preset][0]

    @property
    def confirm(self) -> int:
        """Confirmation bars in force: `confirmation` if set, else the preset's."""
        return self.confirmation if self.confirmation is not None else PRESETS[self.preset][1]

    @model_validator(mode="after")
    def _window_fits_two_swings(self) -> FibReversalParams:
        # A swing needs L bars both sides inside the window, and the two swings distinct bars.
        if self.window < 2 * self.span + 2:
            raise ValueError(f"window ({self.window}) must be at least 2·swing_lookback + 2")
        return self


class FibReversalStrategy(Strategy[FibReversalParams]):
    """LONG on a supported close in the retracement of an up-swing; SHORT mirrored."""

    name = "fib_reversal"
    Params = FibReversalParams
    # The spec gives TP1/TP2 only, so the global TP3 is switched off. (The base class types RISK
    # as floats only, though RiskSettings.merged takes None.)
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.5, "tp3_mult": None, "min_rr": 1.5}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 3600

    @property
    def lookback(self) -> int:
        # No recursive indicator: the answer at t is a function of the `window` bars ending at t.
        return self.params.window

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {"lookback": self.lookback, "swing_lookback": p.span, "confirmation": p.confirm}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        span = p.span
        first = self.lookback - 1  # rows below are bars first..n-1
        t = np.arange(first, n)
        is_hi, is_lo = swing_highs(c.high, span), swing_lows(c.low, span)
        hi_known, lo_known = latest_known(is_hi, span), latest_known(is_lo, span)
        hi_i, lo_i = hi_known[first:], lo_known[first:]
        # Only swings whose left side lies inside the window ending at t count.
        oldest = t - p.window + 1 + span
        have = (hi_i >= oldest) & (lo_i >= oldest)

        # Newer swing high: an up-swing being retraced (LONG) if the low that started it holds.
        # The older swing is always more than L ≥ confirmation bars back with the presets.
        low_held = held_since(c.low, is_lo, lo_known, span, maximum=False)[first:]
        high_held = held_since(c.high, is_hi, hi_known, span, maximum=True)[first:]
        up = have & (hi_i > lo_i) & (t - lo_i >= p.confirm) & low_held
        down = have & (lo_i > hi_i) & (t - hi_i >= p.confirm) & high_held

        # The bar must push back: green or a long lower wick for a LONG, mirrored for a SHORT.
        o, cl, h, lo = c.open[first:], c.close[first:], c.high[first:], c.low[first:]
        body = np.abs(cl - o)
        long_ok = (cl >= o) | ((body > 0) & (np.minimum(o, cl) - lo >= 2 * body))
        short_ok = (cl <= o) | ((body > 0) & (h - np.maximum(o, cl) >= 2 * body))

        # Only those rows are worth the zone test.
        k = np.flatnonzero((up & long_ok) | (down & short_ok))
        up, hi_at, lo_at = up[k], hi_i[k], lo_i[k]
        high, low = c.high[hi_at], c.low[lo_at]
        rng = high - low
        i, entry = k + first, cl[k]
        level, pocket = self._zone(entry, high, low, rng, up)
        j = np.flatnonzero((rng > 0) & ~np.isnan(level))
        if not j.size:
            return []
        i = i[j]
        return self._candidates(
            i, up[j], level[j], pocket[j], hi_at[j], high[j], lo_at[j], low[j], entry[j], c.open[i]
        )

    def _zone(
        self, close: FloatArray, high: FloatArray, low: FloatArray, rng: FloatArray, up: BoolArray
    ) -> tuple[FloatArray, BoolArray]:
        """Retracement level hit by the close (NaN if none) and whether it is the golden pocket.

        Textbook convention measured from the newer swing: after an up-swing lvl(f) = high - f·R,
        after a down-swing lvl(f) = low + f·R. The pocket is tested first, then .618/.5/.382.
        """
        p = self.params
        base = np.where(up, high, low)
        # ∓R formed once: f·(∓R) is exactly (∓1·f)·R, as rounding is symmetric about zero.
        signed = np.where(up, -rng, rng)

        def lvl(f: float) -> FloatArray:
            return np.asarray(base + f * signed, dtype=np.float64)

        g1, g2 = lvl(GOLDEN_POCKET[0]), lvl(GOLDEN_POCKET[1])
        pad = p.pocket_pad * rng
        pocket = (close >= np.minimum(g1, g2) - pad) & (close <= np.maximum(g1, g2) + pad)
        # The first zone hit wins, so they are laid down last to first.
        near = p.tolerance * rng
        level = np.full(close.shape, np.nan)
        for f in reversed(STANDARD_LEVELS):
            level = np.where(np.abs(close - lvl(f)) < near, f, level)
        level = np.where(pocket, GOLDEN_POCKET[0], level)
        return level, pocket

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        up: BoolArray,
        level: FloatArray,
        pocket: BoolArray,
        hi_at: IntArray,
        high: FloatArray,
        lo_at: IntArray,
        low: FloatArray,
        entry: FloatArray,
        open_: FloatArray,
    ) -> CandidateBatch:
        """STRUCTURE method on the older swing: SL beyond it by the 0.75% buffer, TP1/TP2 at 2.0/3.5 R."""
        sign = np.where(up, 1, -1).astype(np.int8)
        levels = self.arrays.structure(sign, entry, np.where(up, low, high))

        def describe(row: int) -> Detail:
            lvl, hi, lo, close = float(level[row]), float(high[row]), float(low[row]), float(entry[row])
            hi_ago, lo_ago = int(i[row] - hi_at[row]), int(i[row] - lo_at[row])
            rng = hi - lo
            if up[row]:
                fib_price = hi - lvl * rng
                support = "close ≥ open" if close >= open_[row] else "lower wick ≥ 2x body"
                swing = f"up-swing {lo:.8g} → {hi:.8g} (high {hi_ago} bars ago), low unbroken"
            else:
                fib_price = lo + lvl * rng
                support = "close ≤ open" if close <= open_[row] else "upper wick ≥ 2x body"
                swing = f"down-swing {hi:.8g} → {lo:.8g} (low {lo_ago} bars ago), high unbroken"
            where = "golden pocket 61.8-65%" if pocket[row] else f"{lvl * 100:.1f}% retracement"
            return (
                swing,
                f"close {close:.8g} in the {where} ({fib_price:.8g})",
                f"bar supports it: {support}",
            ), {
                "zone": "GOLDEN_POCKET" if pocket[row] else "STANDARD",
                "level": lvl,
                "fib_price": fib_price,
                "swing_high": hi,
                "swing_low": lo,
                "swing_high_bars_ago": hi_ago,
                "swing_low_bars_ago": lo_ago,
            }

        return self.batch(i, sign, entry, levels, describe=describe)
