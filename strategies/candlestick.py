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
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate, Direction

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
IS_LONG = np.array([d is Direction.LONG for _, d in PATTERNS])


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


def pattern_codes(c: Candles, p: CandlestickParams, start: int, sma: FloatArray) -> IntArray:
    """Index into PATTERNS of the first pattern completed at each bar from `start` (≥ 2) on that
    is on the side of the trend filter `sma` (same rows), -1 where none.

    The colour of P decides the side, so "green above SMA" stands in for green in every LONG
    shape and "red below SMA" for red in every SHORT one: a bar on the wrong side matches
    nothing, as if the filter were applied afterwards (a NaN SMA compares False). P1 and P2
    are read through views shifted by one and two bars, so no mask reads a wrapped-around bar.
    """
    n = len(c)
    o, h, lo, cl, v = c.open[start:], c.high[start:], c.low[start:], c.close[start:], c.volume[start:]
    o1, c1, v1 = c.open[start - 1 : n - 1], c.close[start - 1 : n - 1], c.volume[start - 1 : n - 1]
    o2, c2 = c.open[start - 2 : n - 2], c.close[start - 2 : n - 2]
    body = np.abs(cl - o)
    upper = h - np.maximum(o, cl)
    lower = np.minimum(o, cl) - lo
    green, red = (cl > o) & (cl > sma), (cl < o) & (cl < sma)
    body1, body2 = np.abs(c1 - o1), np.abs(c2 - o2)
    long_shadow, short_shadow = p.shadow_ratio * body, p.short_shadow_ratio * body
    engulfs = (body > p.engulf_body_ratio * body1) & (v > v1)
    small_star = body1 < p.star_body_ratio * (body2 + body) / 2.0
    mid2 = (o2 + c2) / 2.0

    masks = (
        green & (lower > long_shadow) & (upper < short_shadow),
        red & (upper > long_shadow) & (lower < short_shadow),
        green & (c1 < o1) & (o <= c1) & (cl >= o1) & engulfs,
        red & (c1 > o1) & (o >= c1) & (cl <= o1) & engulfs,
        green & (c2 < o2) & small_star & (cl > mid2),
        red & (c2 > o2) & small_star & (cl < mid2),
    )
    code = np.full(n - start, -1, dtype=np.int64)
    for k in range(len(masks) - 1, -1, -1):  # last to first, so the first match wins
        code[masks[k]] = k
    return code


def stops(c: Candles, i: IntArray, code: IntArray, p: CandlestickParams) -> FloatArray:
    """The stop basis at bars `i` (each ≥ 2) with pattern `code`, before the calculator's buffer.

    Read from the pattern candle P (and P1, P2): the original read the forming candle after
    it (spec defect). Hammer / Shooting Star: a tenth of P's range beyond its wick; the
    three-candle and engulfing patterns: the extreme of P2..P, scaled.
    """
    low, high = c.low[i], c.high[i]
    rng = high - low
    low3 = np.minimum(np.minimum(low, c.low[i - 1]), c.low[i - 2])
    high3 = np.maximum(np.maximum(high, c.high[i - 1]), c.high[i - 2])
    stop = np.where(IS_LONG[code], low3 * p.long_stop_factor, high3 * p.short_stop_factor)
    stop = np.where(code == HAMMER, low - p.wick_stop * rng, stop)
    return np.asarray(np.where(code == SHOOTING_STAR, high + p.wick_stop * rng, stop), dtype=np.float64)


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
        first = self.lookback - 1  # ≥ 2: P2 exists at every bar looked at
        sma = np.asarray(talib.SMA(c.close, timeperiod=p.sma_period), dtype=np.float64)[first:]
        code = pattern_codes(c, p, first, sma)
        k = np.flatnonzero(code >= 0)
        if not k.size:
            return []
        return self._candidates(c, k + first, code[k], sma[k])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(self, c: Candles, i: IntArray, code: IntArray, sma: FloatArray) -> CandidateBatch:
        """STRUCTURE method on the pattern's stop (+0.75% buffer): TP1/TP2 at 1.5R/2.5R, min R:R 1.3.

        Invalid levels are returned flagged for the engine to reject; the original sent a
        fallback instead (spec defect).
        """
        p = self.params
        entry = c.close[i]
        stop = stops(c, i, code, p)
        sign = np.where(IS_LONG[code], 1, -1).astype(np.int8)
        levels = self.arrays.structure(sign, entry, stop)
        period = p.sma_period
        # plain lists once: a replay describes thousands of rows, and reading arrays one
        # element at a time is slow
        code_l, sma_l, stop_l = code.tolist(), sma.tolist(), stop.tolist()
        words = [
            (name, f"{name} candle", "above" if d is Direction.LONG else "below") for name, d in PATTERNS
        ]

        def describe(row: int) -> Detail:
            name, candle, side = words[code_l[row]]
            m = sma_l[row]
            return (candle, f"close {side} SMA({period}) {m:.8g}"), {
                "pattern": name,
                "sma": m,
                "stop_basis": stop_l[row],
            }

        return self.batch(i, sign, entry, levels, describe=describe)
