"""strat — "The Strat" bar combos (spec §4.4).

Each bar is typed by how it sits against the bar before it: an outside bar (3) takes out both
sides, a directional bar (2u / 2d) only one, an inside bar (1) neither. Short sequences of these
types ending at the setup bar S mark a continuation or reversal; the next bar T confirms it by
closing beyond S. Without a combo, a setup bar closing at the top of its range (HAMMER) or the
bottom (SHOOTER) is read the same way. The stop sits at the far side of S, the level whose
break voids the setup.
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
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr, bars_from

# The SMA of closes ending at S plus the trigger bar: the original's 50-bar fetch lost its
# forming bar and never had enough (spec defect), so the data window is 51 closed bars.
DATA_BARS = 51

# Bar types, coded so that a combo is a tuple of small ints.
INSIDE, UP, DOWN, OUTSIDE = 1, 2, -2, 3
TYPE_NAME = {INSIDE: "1", UP: "2u", DOWN: "2d", OUTSIDE: "3", 0: "?"}

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
    t[1:] = np.where(hh & ll, OUTSIDE, np.where(hh, UP, np.where(ll, DOWN, INSIDE)))
    return t


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
        types = bar_types(c.high, c.low)
        # Everything below is indexed by the trigger bar T = i; S = i-1.
        b0, b1, b2 = (np.roll(types, k) for k in (1, 2, 3))
        setup = np.full(n, -1, dtype=np.int64)
        bull = np.zeros(n, dtype=bool)
        for k, (_, up_combo, down_combo) in enumerate(COMBOS):
            for combo, is_bull in ((up_combo, True), (down_combo, False)):
                hit = (setup < 0) & (b1 == combo[1]) & (b0 == combo[2])
                if combo[0] != ANY:
                    hit &= b2 == combo[0]
                setup[hit] = k
                bull[hit] = is_bull

        s_open, s_high, s_low, s_close = (np.roll(x, 1) for x in (c.open, c.high, c.low, c.close))
        rng = s_high - s_low
        lo_zone = s_low + p.hammer_zone * rng
        hi_zone = s_low + (1.0 - p.hammer_zone) * rng
        none = (setup < 0) & (rng > 0)
        shooter = none & (s_open < lo_zone) & (s_close < lo_zone)
        hammer = none & (s_open > hi_zone) & (s_close > hi_zone)
        setup[hammer], bull[hammer] = HAMMER, True
        setup[shooter], bull[shooter] = SHOOTER, False
        setup[:4] = -1  # types of S-2 need S-3: no full combo before T = 4

        sma = np.roll(np.asarray(talib.SMA(c.close, timeperiod=p.sma_period), dtype=np.float64), 1)
        close = c.close
        # NaN SMA compares False, so bars without a full SMA never fire.
        long_ = (setup >= 0) & bull & (close > s_high) & (close > sma)
        short = (setup >= 0) & ~bull & (close < s_low) & (close < sma)

        idx = bars_from(long_ | short, self.lookback - 1)
        if not idx:
            return []
        atr_ = atr(c, p.atr_period, p.atr_mode)[idx]
        is_long = long_[idx]
        entry = close[idx]
        sl = np.where(is_long, s_low[idx], s_high[idx])
        risk = np.abs(entry - sl)
        unit = np.where(np.isfinite(atr_), np.maximum(risk, atr_), risk)
        seqs = ["-".join(TYPE_NAME[t] for t in types[i - 3 : i].tolist()) for i in idx]
        return [
            self._candidate(*row)
            for row in zip(
                idx,
                is_long.tolist(),
                setup[idx].tolist(),
                seqs,
                entry.tolist(),
                sl.tolist(),
                unit.tolist(),
                sma[idx].tolist(),
                atr_.tolist(),
                strict=True,
            )
        ]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        i: int,
        long_: bool,
        setup: int,
        seq: str,
        entry: float,
        sl: float,
        unit: float,
        sma: float,
        atr_: float,
    ) -> Candidate:
        """Fixed-R off the setup bar's far side: unit = max(risk, ATR), TP1/TP2 at 2/3 units, no gate.

        The spec sizes targets from the setup, not the calculator's R:R and stop-distance gates,
        so only the side and ordering rules apply (the trigger already puts the stop on the
        losing side). The original built the signal with an undefined stop variable and crashed
        (spec defect); the stop is the setup bar's low (LONG) or high (SHORT).
        """
        direction = Direction.LONG if long_ else Direction.SHORT
        levels = self.levels.fixed_r(direction, entry, sl, self._mults, unit=unit, gate=False)
        name = SETUP_NAMES[setup]
        kind = name if setup >= len(COMBOS) else f"{name} {'bullish' if long_ else 'bearish'}"
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(
                f"{kind} setup (bar types {seq})",
                "trigger bar closed above the setup high"
                if long_
                else "trigger bar closed below the setup low",
                f"close {'above' if long_ else 'below'} SMA({self.params.sma_period}) {sma:.8g}",
            ),
            metadata={"setup": name, "bar_types": seq, "sma": sma, "atr": atr_, "unit": unit},
        )
