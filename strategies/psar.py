"""psar — Parabolic SAR flip confirmed by ADX (spec §4.3).

A flip of the SAR from one side of price to the other is a trend change; it is only worth a
signal when the market is trending (ADX ≥ 20) and the flip bar itself closes in the new
direction. The stop goes at the SAR, the level whose break would flip the trend back.
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

# Bars the original fetched per scan; the engine adds `warmup` on top (see `lookback`).
DATA_BARS = 100


class PsarParams(StrategyParams):
    """`[params]` of a psar instance: SAR acceleration, the ADX trend gate and ATR targets."""

    acceleration: float = Field(0.02, gt=0, description="SAR acceleration factor step and start")
    maximum: float = Field(0.2, gt=0, description="SAR acceleration factor cap")
    adx_period: int = Field(14, ge=2, description="ADX period")
    adx_threshold: float = Field(20.0, ge=0, description="minimum ADX at the flip bar (trend strength)")
    atr_period: int = Field(14, ge=1, description="ATR period for the take-profit distances")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


class PsarStrategy(Strategy[PsarParams]):
    """LONG when SAR flips below price on a green bar with ADX ≥ threshold; SHORT mirrored."""

    name = "psar"
    Params = PsarParams
    RISK = {"sl_mult": 1.0, "tp1_mult": 2.0, "tp2_mult": 3.5}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 180

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        sar = np.asarray(
            talib.SAR(c.high, c.low, acceleration=p.acceleration, maximum=p.maximum), dtype=np.float64
        )
        adx = np.asarray(talib.ADX(c.high, c.low, c.close, timeperiod=p.adx_period), dtype=np.float64)
        atr_ = atr(c, p.atr_period, p.atr_mode)

        trend = np.where(sar < c.close, 1, -1)
        flipped = np.zeros(len(c), dtype=bool)
        flipped[1:] = trend[1:] != trend[:-1]
        # NaN ADX compares False, so bars without a defined ADX never fire.
        strong = adx >= p.adx_threshold
        up = flipped & strong & (trend == 1) & (c.close > c.open)
        down = flipped & strong & (trend == -1) & (c.close < c.open)

        i = np.flatnonzero(up | down)
        i = i[i >= self.lookback - 1]
        return self._candidates(i, up[i], c.close[i], sar[i], adx[i], atr_[i])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        up: BoolArray,
        entry: FloatArray,
        sar: FloatArray,
        adx: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """ATR method with the SAR as the stop: TP1/TP2/TP3 at 2.0/3.5/4.5 ATR (RISK + global)."""
        sign = np.where(up, 1, -1).astype(np.int8)
        levels = self.arrays.atr(sign, entry, atr_, custom_sl=sar)
        threshold = f"{self.params.adx_threshold:g}"

        def describe(row: int) -> Detail:
            long = bool(up[row])
            x, s, a = float(adx[row]), float(sar[row]), float(atr_[row])
            return (
                f"SAR flipped {'below' if long else 'above'} price",
                f"ADX {x:.1f} ≥ {threshold}",
                f"flip on a {'green bar (close > open)' if long else 'red bar (close < open)'}",
            ), {"adx": x, "sar": s, "atr": a}

        return self.batch(i, sign, entry, levels, describe=describe)
