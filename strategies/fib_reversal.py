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

from engine.market.candles import FloatArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import bars_from
from strategies._swings import BoolArray, RangeExtreme, latest_known, swing_highs, swing_lows

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
        t = np.arange(self.lookback - 1, n, dtype=np.int64)
        hi_i = latest_known(swing_highs(c.high, span), span)[t]
        lo_i = latest_known(swing_lows(c.low, span), span)[t]
        # Only swings whose left side lies inside the window ending at t count.
        oldest = t - p.window + 1 + span
        have = (hi_i >= oldest) & (lo_i >= oldest)
        hi_c, lo_c = np.maximum(hi_i, 0), np.maximum(lo_i, 0)
        high, low = c.high[hi_c], c.low[lo_c]
        rng = high - low

        # Newer swing high: an up-swing being retraced (LONG) if the low that started it holds.
        # The older swing is always more than L ≥ confirmation bars back with the presets.
        lowest_since = RangeExtreme(c.low, maximum=False).query(lo_c + 1, t)
        highest_since = RangeExtreme(c.high, maximum=True).query(hi_c + 1, t)
        up = have & (hi_i > lo_i) & (t - lo_i >= p.confirm) & (lowest_since >= low)
        down = have & (lo_i > hi_i) & (t - hi_i >= p.confirm) & (highest_since <= high)
        up &= rng > 0
        down &= rng > 0

        level, zone = self._zone(c.close[t], high, low, rng, up)
        o, cl, h, lo = c.open[t], c.close[t], c.high[t], c.low[t]
        body = np.abs(cl - o)
        long_ok = (cl >= o) | ((body > 0) & (np.minimum(o, cl) - lo >= 2 * body))
        short_ok = (cl <= o) | ((body > 0) & (h - np.maximum(o, cl) >= 2 * body))
        hit = ~np.isnan(level)
        fire_long = up & hit & long_ok
        fire_short = down & hit & short_ok

        ks = np.asarray(bars_from(fire_long | fire_short, 0), dtype=np.int64)
        columns = (t, fire_long, level, zone, hi_i, high, lo_i, low, cl, cl >= o, cl <= o)
        return [self._candidate(*row) for row in zip(*(col[ks].tolist() for col in columns), strict=True)]

    def _zone(
        self, close: FloatArray, high: FloatArray, low: FloatArray, rng: FloatArray, up: BoolArray
    ) -> tuple[FloatArray, BoolArray]:
        """Retracement level hit by the close (NaN if none) and whether it is the golden pocket.

        Textbook convention measured from the newer swing: after an up-swing lvl(f) = high - f·R,
        after a down-swing lvl(f) = low + f·R. The pocket is tested first, then .618/.5/.382.
        """
        p = self.params
        base = np.where(up, high, low)
        sign = np.where(up, -1.0, 1.0)

        def lvl(f: float) -> FloatArray:
            return np.asarray(base + sign * f * rng, dtype=np.float64)

        g1, g2 = lvl(GOLDEN_POCKET[0]), lvl(GOLDEN_POCKET[1])
        pad = p.pocket_pad * rng
        pocket = (close >= np.minimum(g1, g2) - pad) & (close <= np.maximum(g1, g2) + pad)
        level = np.where(pocket, GOLDEN_POCKET[0], np.nan)
        for f in STANDARD_LEVELS:
            near = np.isnan(level) & (np.abs(close - lvl(f)) < p.tolerance * rng)
            level = np.where(near, f, level)
        return level, pocket

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        i: int,
        up: bool,
        level: float,
        pocket: bool,
        hi_at: int,
        high: float,
        lo_at: int,
        low: float,
        entry: float,
        green: bool,
        red: bool,
    ) -> Candidate:
        """STRUCTURE method on the older swing: SL beyond it by the 0.75% buffer, TP1/TP2 at 2.0/3.5 R."""
        rng = high - low
        if up:
            direction = Direction.LONG
            levels = self.levels.structure(direction, entry, swing_low=low)
            fib_price = high - level * rng
            support = "close ≥ open" if green else "lower wick ≥ 2x body"
            swing = f"up-swing {low:.8g} → {high:.8g} (high {i - hi_at} bars ago), low unbroken"
        else:
            direction = Direction.SHORT
            levels = self.levels.structure(direction, entry, swing_high=high)
            fib_price = low + level * rng
            support = "close ≤ open" if red else "upper wick ≥ 2x body"
            swing = f"down-swing {high:.8g} → {low:.8g} (low {i - lo_at} bars ago), high unbroken"
        where = "golden pocket 61.8-65%" if pocket else f"{level * 100:.1f}% retracement"
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(
                swing,
                f"close {entry:.8g} in the {where} ({fib_price:.8g})",
                f"bar supports it: {support}",
            ),
            metadata={
                "zone": "GOLDEN_POCKET" if pocket else "STANDARD",
                "level": level,
                "fib_price": fib_price,
                "swing_high": high,
                "swing_low": low,
                "swing_high_bars_ago": i - hi_at,
                "swing_low_bars_ago": i - lo_at,
            },
        )
