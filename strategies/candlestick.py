"""candlestick — reversal candles with an SMA(50) filter (spec §4.6).

Six classic reversal shapes on the last closed candles (P = the pattern candle, P1 and P2 the
two before it), in the original's own definitions — TA-Lib's CDL* functions measure bodies and
shadows differently and would fire elsewhere. A pattern only counts on the side of the trend
filter: a LONG needs the close above SMA(50), a SHORT below. The stop goes beyond the
pattern's extreme.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import talib
from pydantic import Field

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import bars_from

# (name, direction) in the spec's first-match order. The colour of P decides the direction
# of every pattern (green → LONG, red → SHORT), so the order only picks the name and stop.
PATTERNS: tuple[tuple[str, Direction], ...] = (
    ("Hammer", Direction.LONG),
    ("Shooting Star", Direction.SHORT),
    ("Bullish Engulfing", Direction.LONG),
    ("Bearish Engulfing", Direction.SHORT),
    ("Morning Star", Direction.LONG),
    ("Evening Star", Direction.SHORT),
)
HAMMER, SHOOTING_STAR = 0, 1


class CandlestickParams(StrategyParams):
    """`[params]` of a candlestick instance: pattern ratios, the trend filter and stop placement."""

    sma_period: int = Field(50, ge=1, description="trend filter: SMA of closes ending at the pattern candle")
    shadow_ratio: float = Field(2.0, gt=0, description="Hammer/Shooting Star: long shadow > this x body")
    short_shadow_ratio: float = Field(
        0.3, ge=0, description="Hammer/Shooting Star: other shadow < this x body"
    )
    engulf_body_ratio: float = Field(0.8, ge=0, description="Engulfing: body_P > this x body_P1")
    star_body_ratio: float = Field(0.5, gt=0, description="Stars: body_P1 < this x mean(body_P2, body_P)")
    wick_stop: float = Field(
        0.1, ge=0, description="Hammer/Shooting Star stop: this share of P's range beyond its wick"
    )
    long_stop_factor: float = Field(
        0.99, gt=0, le=1, description="other LONG patterns: stop at lowest low of P2..P x this"
    )
    short_stop_factor: float = Field(
        1.005, ge=1, description="other SHORT patterns: stop at highest high of P2..P x this"
    )


def _shift(x: FloatArray, k: int) -> FloatArray:
    """x[i-k] at i (NaN for the first k bars), so masks never read a wrapped-around bar."""
    out = np.full_like(x, np.nan)
    out[k:] = x[: x.shape[0] - k]
    return out


def pattern_codes(c: Candles, p: CandlestickParams) -> IntArray:
    """Index into PATTERNS of the first pattern completed at each bar, -1 where none."""
    o, h, lo, cl, v = c.open, c.high, c.low, c.close, c.volume
    body = np.abs(cl - o)
    upper = h - np.maximum(o, cl)
    lower = np.minimum(o, cl) - lo
    green, red = cl > o, cl < o
    o1, c1, v1 = _shift(o, 1), _shift(cl, 1), _shift(v, 1)
    o2, c2 = _shift(o, 2), _shift(cl, 2)
    body1, body2 = np.abs(c1 - o1), np.abs(c2 - o2)
    green1, red1, green2, red2 = c1 > o1, c1 < o1, c2 > o2, c2 < o2
    small_star = body1 < p.star_body_ratio * (body2 + body) / 2.0
    mid2 = (o2 + c2) / 2.0

    masks = (
        green & (lower > p.shadow_ratio * body) & (upper < p.short_shadow_ratio * body),
        red & (upper > p.shadow_ratio * body) & (lower < p.short_shadow_ratio * body),
        red1 & green & (o <= c1) & (cl >= o1) & (body > p.engulf_body_ratio * body1) & (v > v1),
        green1 & red & (o >= c1) & (cl <= o1) & (body > p.engulf_body_ratio * body1) & (v > v1),
        red2 & small_star & green & (cl > mid2),
        green2 & small_star & red & (cl < mid2),
    )
    code = np.full(len(c), -1, dtype=np.int64)
    for k in range(len(masks) - 1, -1, -1):  # last to first, so the first match wins
        code[masks[k]] = k
    return code


def stops(c: Candles, code: IntArray, p: CandlestickParams) -> FloatArray:
    """The stop basis at each bar, before the calculator's buffer.

    Read from the pattern candle P (and P1, P2): the original read the forming candle after
    it (spec defect). Hammer / Shooting Star: a tenth of P's range beyond its wick; the
    three-candle and engulfing patterns: the extreme of P2..P, scaled.
    """
    rng = c.high - c.low
    low3 = np.minimum(np.minimum(c.low, _shift(c.low, 1)), _shift(c.low, 2))
    high3 = np.maximum(np.maximum(c.high, _shift(c.high, 1)), _shift(c.high, 2))
    is_long = np.isin(code, [k for k, (_, d) in enumerate(PATTERNS) if d is Direction.LONG])
    stop = np.where(is_long, low3 * p.long_stop_factor, high3 * p.short_stop_factor)
    stop = np.where(code == HAMMER, c.low - p.wick_stop * rng, stop)
    return np.where(code == SHOOTING_STAR, c.high + p.wick_stop * rng, stop)


class CandlestickStrategy(Strategy[CandlestickParams]):
    """LONG on Hammer / Bullish Engulfing / Morning Star above SMA(50); the mirrors below it → SHORT."""

    name = "candlestick"
    Params = CandlestickParams
    # The spec defines TP1/TP2 only, so the global TP3 is switched off with None (the base
    # class types RISK as float-valued; RiskSettings.tp3_mult accepts None).
    RISK = {"sl_mult": 1.5, "tp1_mult": 1.5, "tp2_mult": 2.5, "tp3_mult": None}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 900

    @property
    def lookback(self) -> int:
        # SMA is a plain mean: the spec's 50 bars are exactly what the answer depends on.
        return max(self.params.sma_period, 3)

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        code = pattern_codes(c, p)
        sma = np.asarray(talib.SMA(c.close, timeperiod=p.sma_period), dtype=np.float64)
        is_long = np.array([d is Direction.LONG for _, d in PATTERNS])[np.maximum(code, 0)]
        # NaN SMA compares False, so bars without a full SMA never fire.
        ok = (code >= 0) & np.where(is_long, c.close > sma, c.close < sma)
        idx = bars_from(ok, self.lookback - 1)
        if not idx:
            return []
        return [
            self._candidate(*row)
            for row in zip(
                idx,
                code[idx].tolist(),
                c.close[idx].tolist(),
                stops(c, code, p)[idx].tolist(),
                sma[idx].tolist(),
                strict=True,
            )
        ]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(self, i: int, code: int, entry: float, stop: float, sma: float) -> Candidate:
        """STRUCTURE method on the pattern's stop (+0.75% buffer): TP1/TP2 at 1.5R/2.5R, min R:R 1.3.

        Invalid levels are returned flagged for the engine to reject; the original sent a
        fallback instead (spec defect).
        """
        name, direction = PATTERNS[code]
        long_ = direction is Direction.LONG
        if long_:
            levels = self.levels.structure(direction, entry, swing_low=stop)
        else:
            levels = self.levels.structure(direction, entry, swing_high=stop)
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(
                f"{name} candle",
                f"close {'above' if long_ else 'below'} SMA({self.params.sma_period}) {sma:.8g}",
            ),
            metadata={"pattern": name, "sma": sma, "stop_basis": stop},
        )
