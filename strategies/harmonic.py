"""harmonic — XABCD patterns on a colour-run zigzag (spec §4.5).

The last five zigzag pivots X, A, B, C, D are compared by four Fibonacci ratios; a harmonic
pattern is a known set of ratio ranges with ideal values. When D completes a pattern the move
C→D is expected to reverse: LONG when D is a low, SHORT when it is a high. Entry waits for a
0.236 retracement of C→D; the stop sits just beyond D, targets at Fibonacci extensions of the
C→D leg.

A pattern is judged once, at the bar where its D pivot becomes known (kept or moved by the
zigzag); it is never re-alerted while D stays the last pivot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import talib
from pydantic import Field

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr
from strategies._zigzag import ZigzagStates, zigzag_states

# Bars the original fetched per scan; the engine adds `warmup` on top (see `lookback`).
DATA_BARS = 300

RATIOS = ("XAB", "ABC", "BCD", "XAD")
Range = tuple[float, float] | None  # None: any value, and no part in the error
# name: ranges and ideals of (XAB, ABC, BCD, XAD), in the spec's order of precedence.
PATTERNS: tuple[tuple[str, tuple[Range, Range, Range, Range], tuple[float | None, ...]], ...] = (
    ("Cypher", ((0.382, 0.618), (1.13, 1.414), (1.272, 2.0), (0.76, 0.80)), (0.5, 1.272, 1.414, 0.786)),
    ("Shark", ((0.5, 0.875), (1.13, 1.618), (1.27, 2.24), (0.886, 1.13)), (0.618, 1.27, 1.618, 1.0)),
    ("Deep Crab", ((0.88, 0.895), (0.382, 0.886), (2.0, 3.618), (1.60, 1.63)), (0.886, 0.618, 2.618, 1.618)),
    ("Butterfly", ((0.0, 0.786), (0.382, 0.886), (1.618, 2.618), (1.27, 1.618)), (0.786, 0.618, 2.24, 1.41)),
    ("Bat", ((0.382, 0.5), (0.382, 0.886), (1.618, 2.618), (0.0, 0.886)), (0.5, 0.618, 2.0, 0.886)),
    ("Crab", ((0.5, 0.875), (0.382, 0.886), (2.0, 5.0), (1.382, 5.0)), (0.618, 0.618, 2.618, 1.618)),
    ("Gartley", ((0.61, 0.625), (0.382, 0.886), (1.13, 2.618), (0.75, 0.875)), (0.618, 0.618, 1.272, 0.786)),
    ("ABCD", (None, (0.382, 0.886), (1.13, 2.618), None), (None, 0.618, 1.27, None)),
)


class HarmonicParams(StrategyParams):
    """`[params]` of a harmonic instance: zigzag pivot distance, pattern tolerance and entry retrace."""

    atr_period: int = Field(14, ge=1, description="ATR period of the zigzag's pivot distance")
    pivot_atr_mult: float = Field(
        2.0, gt=0, description="a new pivot must lie this many ATRs from the last kept one"
    )
    stdev_period: int = Field(50, ge=2, description="closes whose stdev replaces the ATR when it is ≤ 0")
    max_error: float = Field(0.15, gt=0, description="cap on sum |ratio - ideal| for a pattern to count")
    entry_retrace: float = Field(0.236, ge=0, description="entry: this share of |D - C| back from D")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(
        400, ge=0, description=WARMUP_HELP + "; it also lets the zigzag forget where it started"
    )


def xabcd_ratios(price: FloatArray) -> FloatArray:
    """(m, 4) ratios XAB, ABC, BCD, XAD of (m, 5) pivot prices X, A, B, C, D (NaN on a zero leg)."""
    x, a, b, c, d = price.T
    xa, ab, bc = np.abs(x - a), np.abs(a - b), np.abs(b - c)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.column_stack([np.abs(b - a) / xa, np.abs(b - c) / ab, np.abs(c - d) / bc, np.abs(a - d) / xa])
    return np.where(np.isfinite(r), r, np.nan)


def match_patterns(ratios: FloatArray, max_error: float) -> tuple[IntArray, FloatArray]:
    """Per row: the first pattern with all ratios in range and error ≤ max_error (-1: none), and its error.

    A pattern whose ranges hold but whose error is too big does not stop the search: the
    next one in order may still fit.
    """
    m = ratios.shape[0]
    code = np.full(m, -1, dtype=np.int64)
    error = np.full(m, np.nan)
    for k, (_, ranges, ideals) in enumerate(PATTERNS):
        ok = code < 0
        err = np.zeros(m)
        for j, (rg, ideal) in enumerate(zip(ranges, ideals, strict=True)):
            if rg is not None:
                ok &= (ratios[:, j] >= rg[0]) & (ratios[:, j] <= rg[1])
            if ideal is not None:
                err += np.abs(ratios[:, j] - ideal)
        ok &= err <= max_error + 1e-12  # ratios of rounded prices: don't lose a tie to float noise
        code[ok] = k
        error[ok] = err[ok]
    return code, error


class HarmonicStrategy(Strategy[HarmonicParams]):
    """LONG when the last five zigzag pivots complete a harmonic pattern at a low D; SHORT at a high D."""

    name = "harmonic"
    Params = HarmonicParams
    RISK = {"sl_mult": 2.0, "tp1_mult": 2.0, "tp2_mult": 3.5, "min_rr": 2.0}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 180

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup}

    # -- rule -------------------------------------------------------------------------------

    def pivots(self, window: Window) -> ZigzagStates:
        """The zigzag's states over the window: the last five pivots after each change."""
        c = window.candles
        p = self.params
        a = atr(c, p.atr_period, p.atr_mode)
        sd = np.asarray(talib.STDDEV(c.close, timeperiod=p.stdev_period, nbdev=1.0), dtype=np.float64)
        return zigzag_states(c, p.pivot_atr_mult * np.where(a > 0, a, sd))

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        states = self.pivots(window)
        keep = states.confirm >= self.lookback - 1
        if not keep.any():  # the usual live call: no pivot confirmed at the last bar
            return []
        price, bars, confirm = states.price[keep], states.bar[keep], states.confirm[keep]
        ratios = xabcd_ratios(price)
        code, error = match_patterns(ratios, self.params.max_error)
        out: list[Candidate] = []
        for k in np.flatnonzero(code >= 0):
            out.append(
                self._candidate(
                    window, int(confirm[k]), int(code[k]), float(error[k]), price[k], bars[k], ratios[k]
                )
            )
        return out

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        window: Window,
        i: int,
        code: int,
        error: float,
        price: FloatArray,
        bars: IntArray,
        ratios: FloatArray,
    ) -> Candidate:
        """FIBONACCI method on swings D and C: SL = D -/+ 0.75%, TPs at entry +/- 0.618/1/1.618 * |D - C|.

        The original passed only one swing, so the method always failed and a fallback priced
        from D went out ungated (spec defect); here the levels carry the calculator's verdict,
        including the 2.0 minimum R:R, which passes only when |D - C| is about 10% of price.
        """
        name = PATTERNS[code][0]
        c_, d = float(price[3]), float(price[4])
        direction = Direction.LONG if d < c_ else Direction.SHORT
        s = direction.sign
        leg = abs(d - c_)
        entry = d + s * self.params.entry_retrace * leg
        lo, hi = min(c_, d), max(c_, d)
        levels = self.levels.fibonacci(direction, entry, swing_low=lo, swing_high=hi)
        ts = window.candles.ts
        d_time = int(ts[int(bars[4])])
        meta: dict[str, Any] = {"pattern": name, "error": error, "d_time": d_time}
        meta.update(zip(RATIOS, ratios.tolist(), strict=True))
        meta.update(zip("XABCD", price.tolist(), strict=True))
        kind = "low" if direction is Direction.LONG else "high"
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(
                f"{name} pattern completed at a {kind} D {d:.8g}",
                "ratios " + ", ".join(f"{r} {float(v):.3f}" for r, v in zip(RATIOS, ratios, strict=True)),
                f"error {error:.3f} ≤ {self.params.max_error:g}",
            ),
            metadata=meta,
            sub_key=f"{name}:{d_time}",
        )
