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
from engine.signals.batch import BoolArray, CandidateBatch, Detail
from engine.signals.model import Candidate
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


def _pattern_table() -> tuple[BoolArray, FloatArray, FloatArray, BoolArray, FloatArray]:
    """PATTERNS as (patterns, 4) arrays: free ratio, range low/high, ideal present, ideal."""
    free = np.array([[rg is None for rg in ranges] for _, ranges, _ in PATTERNS])
    low = np.array([[np.nan if rg is None else rg[0] for rg in ranges] for _, ranges, _ in PATTERNS])
    high = np.array([[np.nan if rg is None else rg[1] for rg in ranges] for _, ranges, _ in PATTERNS])
    scored = np.array([[i is not None for i in ideals] for _, _, ideals in PATTERNS])
    ideal = np.array([[np.nan if i is None else i for i in ideals] for _, _, ideals in PATTERNS])
    return free, low, high, scored, ideal


FREE, LOW, HIGH, SCORED, IDEAL = _pattern_table()
# Ratios every pattern bounds, with the widest bounds any pattern allows: a row outside them
# matches nothing, which rules out most zigzag states before the full comparison.
BOUNDED = np.flatnonzero(~FREE.any(axis=0))
ENVELOPE = np.nanmin(LOW, axis=0)[BOUNDED], np.nanmax(HIGH, axis=0)[BOUNDED]


def match_patterns(ratios: FloatArray, max_error: float) -> tuple[IntArray, FloatArray]:
    """Per row: the first pattern with all ratios in range and error ≤ max_error (-1: none), and its error.

    A pattern whose ranges hold but whose error is too big does not stop the search: the
    next one in order may still fit. All patterns are tried at once as (rows, patterns)
    columns; the error adds |ratio - ideal| in ratio order, as a pattern-by-pattern loop
    would, so a tie with max_error falls the same way.
    """
    m = ratios.shape[0]
    code = np.full(m, -1, dtype=np.int64)
    error = np.full(m, np.nan)
    bounded = ratios[:, BOUNDED]
    rows = np.flatnonzero(((bounded >= ENVELOPE[0]) & (bounded <= ENVELOPE[1])).all(axis=1))
    if rows.shape[0] == 0:
        return code, error
    r = ratios[rows]
    fits, err = np.ones((r.shape[0], len(PATTERNS)), dtype=bool), np.zeros((r.shape[0], len(PATTERNS)))
    for j in range(r.shape[1]):  # (rows, patterns) columns, one ratio at a time
        ratio = r[:, j, None]
        fits &= FREE[:, j] | ((ratio >= LOW[:, j]) & (ratio <= HIGH[:, j]))
        err = err + np.where(SCORED[:, j], np.abs(ratio - IDEAL[:, j]), 0.0)
    ok = fits & (err <= max_error + 1e-12)  # ratios of rounded prices: don't lose a tie to float noise
    hit = ok.any(axis=1)
    first = ok.argmax(axis=1)[hit]
    code[rows[hit]] = first
    error[rows[hit]] = err[hit, first]
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
        k = np.flatnonzero(code >= 0)
        if k.shape[0] == 0:
            return []
        return self._candidates(
            confirm[k], code[k], error[k], price[k], window.candles.ts[bars[k, 4]], ratios[k]
        )

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        code: IntArray,
        error: FloatArray,
        price: FloatArray,
        d_time: IntArray,
        ratios: FloatArray,
    ) -> CandidateBatch:
        """FIBONACCI method on swings D and C: SL = D -/+ 0.75%, TPs at entry +/- 0.618/1/1.618 * |D - C|.

        The original passed only one swing, so the method always failed and a fallback priced
        from D went out ungated (spec defect); here the levels carry the calculator's verdict,
        including the 2.0 minimum R:R, which passes only when |D - C| is about 10% of price.
        Rows are patterns; `price` holds their X, A, B, C, D.
        """
        c_, d = price[:, 3], price[:, 4]
        long = d < c_
        sign = np.where(long, 1, -1).astype(np.int8)
        leg = np.abs(d - c_)
        entry = d + sign.astype(np.float64) * self.params.entry_retrace * leg
        levels = self.arrays.fibonacci(sign, entry, np.minimum(c_, d), np.maximum(c_, d))
        names = [PATTERNS[k][0] for k in code.tolist()]
        times = d_time.tolist()
        max_error = f"{self.params.max_error:g}"

        def describe(row: int) -> Detail:
            name, err, rs = names[row], float(error[row]), ratios[row].tolist()
            meta: dict[str, Any] = {"pattern": name, "error": err, "d_time": times[row]}
            meta.update(zip(RATIOS, rs, strict=True))
            meta.update(zip("XABCD", price[row].tolist(), strict=True))
            return (
                f"{name} pattern completed at a {'low' if long[row] else 'high'} D {float(d[row]):.8g}",
                "ratios " + ", ".join(f"{r} {v:.3f}" for r, v in zip(RATIOS, rs, strict=True)),
                f"error {err:.3f} ≤ {max_error}",
            ), meta

        sub_keys = [f"{name}:{t}" for name, t in zip(names, times, strict=True)]
        return self.batch(i, sign, entry, levels, describe=describe, sub_keys=sub_keys)
