"""strat — "The Strat" bar combos (spec §4.4).

Each bar is typed by how it sits against the bar before it: an outside bar (3) takes out both
sides, a directional bar (2u / 2d) only one, an inside bar (1) neither. Short sequences of these
types ending at the setup bar S mark a continuation or reversal; the next bar T confirms it by
closing beyond S. Without a combo, a setup bar closing at the top of its range (HAMMER) or the
bottom (SHOOTER) is read the same way. The stop sits at the far side of S, the level whose
break voids the setup.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

# The SMA of closes ending at S plus the trigger bar: the original's 50-bar fetch lost its
# forming bar and never had enough (spec defect), so the data window is 51 closed bars.
DATA_BARS = 51

# Bar types, coded so that a combo is a tuple of small ints.
INSIDE, UP, DOWN, OUTSIDE = 1, 2, -2, 3
TYPE_NAME = {INSIDE: "1", UP: "2u", DOWN: "2d", OUTSIDE: "3", 0: "?"}
# Type by (higher high, lower low) as 2·hh + ll: neither, low only, high only, both.
BY_BREAKS = np.array([INSIDE, DOWN, UP, OUTSIDE], dtype=np.int64)
TYPE_CODES = 6  # type + 2 lies in 0..5: a triple of types is one base-6 number

ANY = 0
# (name, bullish (b2, b1, b0), bearish) in priority order; ANY leaves b2 free. Every bullish
# combo ends on a 2u and every bearish one on a 2d, so S's own type fixes the direction and
# the order only decides the name (the original let 22 shadow 322: spec defect).
COMBOS: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("222", (UP, UP, UP), (DOWN, DOWN, DOWN)),
    ("212 measured move", (UP, INSIDE, UP), (DOWN, INSIDE, DOWN)),
    ("322", (OUTSIDE, DOWN, UP), (OUTSIDE, UP, DOWN)),
    ("212 reversal", (DOWN, INSIDE, UP), (UP, INSIDE, DOWN)),
    ("32", (ANY, OUTSIDE, UP), (ANY, OUTSIDE, DOWN)),
    ("22", (ANY, DOWN, UP), (ANY, UP, DOWN)),
)
HAMMER, SHOOTER = len(COMBOS), len(COMBOS) + 1
SETUP_NAMES = (*(c[0] for c in COMBOS), "HAMMER", "SHOOTER")


class StratParams(StrategyParams):
    """`[params]` of a strat instance: the trend filter, the hammer/shooter zone and the ATR unit."""

    sma_period: int = Field(50, ge=1, description="trend filter: SMA of closes ending at the setup bar")
    hammer_zone: float = Field(
        0.25,
        gt=0,
        lt=0.5,
        description="no-combo setups: open and close within this top/bottom share of S's range",
    )
    atr_period: int = Field(14, ge=1, description="ATR period; the TP unit is at least one ATR")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


def bar_types(high: FloatArray, low: FloatArray) -> IntArray:
    """Type of each bar against the one before (strict comparisons); the first bar is 0 (unknown)."""
    t = np.zeros(high.shape[0], dtype=np.int64)
    hh = high[1:] > high[:-1]
    ll = low[1:] < low[:-1]
    t[1:] = BY_BREAKS[2 * hh + ll]
    return t


def _combo_table() -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Setup code and side of every (b2, b1, b0) type triple, looked up by `_triple`.

    Filled in COMBOS order, bullish before bearish, first match kept: the same precedence as
    testing the combos one by one, for the cost of one table lookup per bar.
    """
    setup = np.full(TYPE_CODES**3, -1, dtype=np.int64)
    bull = np.zeros(TYPE_CODES**3, dtype=bool)
    kinds = tuple(TYPE_NAME)
    for b2, b1, b0 in itertools.product(kinds, repeat=3):
        key = _triple(b2, b1, b0)
        for k, (_, up_combo, down_combo) in enumerate(COMBOS):
            hits = [
                is_bull
                for combo, is_bull in ((up_combo, True), (down_combo, False))
                if combo[0] in (ANY, b2) and combo[1:] == (b1, b0)
            ]
            if hits:
                setup[key], bull[key] = k, hits[0]
                break
    return setup, bull


def _triple(b2: Any, b1: Any, b0: Any) -> Any:
    """Index of a (b2, b1, b0) triple of bar types (scalars or arrays) in the combo table."""
    return ((b2 + 2) * TYPE_CODES + (b1 + 2)) * TYPE_CODES + (b0 + 2)


SETUP_OF, BULL_OF = _combo_table()


class StratStrategy(Strategy[StratParams]):
    """LONG/SHORT when a Strat combo (or HAMMER/SHOOTER) on S is triggered by T closing beyond S."""

    name = "strat"
    Params = StratParams
    # The spec defines TP1/TP2 only, so the global TP3 is switched off with None (the base
    # class types RISK as float-valued; RiskSettings.tp3_mult accepts None).
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0, "tp3_mult": None}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 3600

    @property
    def lookback(self) -> int:
        return max(DATA_BARS, self.params.sma_period + 1) + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup}

    def on_load(self) -> None:
        st = self.risk
        # TP1/TP2 in units (2/3 by default, from RISK so a config can move them).
        self._mults: tuple[float, ...] = (st.tp1_mult, st.tp2_mult) + (
            () if st.tp3_mult is None else (st.tp3_mult,)
        )

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        # Only trigger bars T >= `start` are reported, and everything but the SMA and ATR is
        # local to T's last few bars, so the columns below cover T = start.. only (in a live
        # window just the last bar). S = T - 1; types[j] is the type of bar start - 4 + j.
        start = self.lookback - 1
        types = bar_types(c.high[start - 4 :], c.low[start - 4 :])
        key = _triple(types[1:-3], types[2:-2], types[3:-1])
        setup, bull = SETUP_OF[key], BULL_OF[key]

        s_open, s_high, s_low, s_close = (x[start - 1 : n - 1] for x in (c.open, c.high, c.low, c.close))
        rng = s_high - s_low
        lo_zone = s_low + p.hammer_zone * rng
        hi_zone = s_low + (1.0 - p.hammer_zone) * rng
        none = (setup < 0) & (rng > 0)
        shooter = none & (s_open < lo_zone) & (s_close < lo_zone)
        hammer = none & (s_open > hi_zone) & (s_close > hi_zone)
        setup = np.where(hammer, HAMMER, np.where(shooter, SHOOTER, setup))
        bull = bull | hammer

        sma = np.asarray(talib.SMA(c.close, timeperiod=p.sma_period), dtype=np.float64)[start - 1 : n - 1]
        close = c.close[start:]
        # NaN SMA compares False, so bars without a full SMA never fire.
        fired = setup >= 0
        long_ = fired & bull & (close > s_high) & (close > sma)
        short = fired & ~bull & (close < s_low) & (close < sma)
        k = np.flatnonzero(long_ | short)
        if k.shape[0] == 0:
            return []
        atr_ = atr(c, p.atr_period, p.atr_mode)[start + k]
        seq = np.stack([types[k + 1], types[k + 2], types[k + 3]], axis=1)
        return self._candidates(
            start + k, long_[k], setup[k], seq, close[k], s_low[k], s_high[k], sma[k], atr_
        )

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        long_: npt.NDArray[np.bool_],
        setup: IntArray,
        seq: IntArray,
        entry: FloatArray,
        s_low: FloatArray,
        s_high: FloatArray,
        sma: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """Fixed-R off the setup bar's far side: unit = max(risk, ATR), TP1/TP2 at 2/3 units, no gate.

        The spec sizes targets from the setup, not the calculator's R:R and stop-distance gates,
        so only the side and ordering rules apply (the trigger already puts the stop on the
        losing side). The original built the signal with an undefined stop variable and crashed
        (spec defect); the stop is the setup bar's low (LONG) or high (SHORT). `seq` holds the
        types of the three bars ending at S.
        """
        sl = np.where(long_, s_low, s_high)
        risk = np.abs(entry - sl)
        unit = np.where(np.isfinite(atr_), np.maximum(risk, atr_), risk)
        sign = np.where(long_, 1, -1).astype(np.int8)
        levels = self.arrays.fixed_r(sign, entry, sl, self._mults, unit=unit)
        period = self.params.sma_period

        def describe(row: int) -> Detail:
            up = bool(long_[row])
            code = int(setup[row])
            name = SETUP_NAMES[code]
            kind = name if code >= len(COMBOS) else f"{name} {'bullish' if up else 'bearish'}"
            types = "-".join(TYPE_NAME[t] for t in seq[row].tolist())
            m = float(sma[row])
            return (
                f"{kind} setup (bar types {types})",
                "trigger bar closed above the setup high" if up else "trigger bar closed below the setup low",
                f"close {'above' if up else 'below'} SMA({period}) {m:.8g}",
            ), {
                "setup": name,
                "bar_types": types,
                "sma": m,
                "atr": float(atr_[row]),
                "unit": float(unit[row]),
            }

        return self.batch(i, sign, entry, levels, describe=describe, gate=False)
