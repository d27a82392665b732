"""mtf — multi-timeframe trend confluence (spec §4.13).

A trend on the trading timeframe is worth following when the larger timeframes point the same
way: the base frame must be trending clearly (close ≥ 1 % beyond its SMA(50), RSI on the same
side of 50), the first higher timeframe must agree, and the second one makes it STRONG.

Every higher-timeframe bar is used only once it has closed by the base bar's close, so a
signal at base bar t never sees a 1h or 4h candle still forming at t (no look-ahead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import DataNeeds, Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from engine.timeframes import timeframe_seconds
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

# Bars the original fetched per timeframe; the engine adds `warmup` on top (see `lookback`).
DATA_BARS = 100

# The original's base → (1st, 2nd) higher timeframe table; any other base uses FALLBACK.
HIGHER: Mapping[str, tuple[str, str]] = {
    "5m": ("15m", "1h"),
    "15m": ("1h", "4h"),
    "30m": ("1h", "4h"),
    "1h": ("4h", "1d"),
    "4h": ("1d", "1w"),
}
FALLBACK = ("1h", "4h")

TREND_NAMES = {1: "BULLISH", -1: "BEARISH", 0: "NEUTRAL"}


class MtfParams(StrategyParams):
    """`[params]` of an mtf instance: the per-timeframe trend test, confluence needed, higher timeframes."""

    sma_period: int = Field(
        50, ge=2, le=DATA_BARS, description="SMA the close is compared with on every timeframe"
    )
    rsi_period: int = Field(
        14, ge=2, description="RSI period; RSI above 50 confirms BULLISH, below 50 BEARISH"
    )
    min_base_conf: float = Field(
        0.02, ge=0, le=1, description="minimum base-timeframe confidence min(2·|close-SMA|/SMA, 1)"
    )
    min_score: int = Field(2, ge=1, le=3, description="confluence needed: 1st higher TF agrees = 2, 2nd = 1")
    higher_timeframes: tuple[str, str] | None = Field(
        None, description="the two higher timeframes; None = the spec's table for the base timeframe"
    )
    atr_period: int = Field(14, ge=1, description="ATR period of the base timeframe for the levels")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


def trend(candles: Candles, sma_period: int, rsi_period: int) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Per bar: +1 BULLISH / -1 BEARISH / 0 NEUTRAL, and the confidence min(2·|close-SMA|/SMA, 1).

    Bars without a defined SMA or RSI compare False and stay NEUTRAL.
    """
    c = candles.close
    sma = np.asarray(talib.SMA(c, timeperiod=sma_period), dtype=np.float64)
    rsi = np.asarray(talib.RSI(c, timeperiod=rsi_period), dtype=np.float64)
    bull = (c > sma) & (rsi > 50.0)
    bear = (c < sma) & (rsi < 50.0)
    conf = np.minimum(2.0 * np.abs(c - sma) / sma, 1.0)
    return bull.astype(np.int8) - bear.astype(np.int8), conf


def last_closed(frame: Candles, timeframe: str, close_ms: IntArray) -> IntArray:
    """Index in `frame` of the last bar closed (open + length ≤ t) at each time in `close_ms`; -1 if none."""
    frame_close = frame.ts + timeframe_seconds(timeframe) * 1000
    return np.searchsorted(frame_close, close_ms, side="right").astype(np.int64) - 1


class MtfStrategy(Strategy[MtfParams]):
    """LONG/SHORT when the base trend is clear and the higher timeframes agree (score ≥ 2 of 3)."""

    name = "mtf"
    Params = MtfParams
    # The spec gives TP1/TP2 only, so the global TP3 is switched off (the base class types RISK
    # as float-valued; RiskSettings.tp3_mult accepts None).
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0, "tp3_mult": None, "min_rr": 1.3}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 3600

    def on_load(self) -> None:
        higher = self.params.higher_timeframes or HIGHER.get(self.timeframe, FALLBACK)
        base_s = timeframe_seconds(self.timeframe)
        for tf in higher:
            if timeframe_seconds(tf) <= base_s:
                raise ValueError(
                    f"higher timeframe {tf} is not longer than the base {self.timeframe}; "
                    "set params.higher_timeframes"
                )
        if higher[0] == higher[1]:
            raise ValueError(f"the two higher timeframes must differ, got {higher}")
        self.higher: tuple[str, str] = (higher[0], higher[1])

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def needs(self) -> DataNeeds:
        return DataNeeds(timeframes=(self.timeframe, *self.higher), lookback=self.lookback)

    def describe(self) -> dict[str, Any]:
        return {
            "lookback": self.lookback,
            "warmup": self.params.warmup,
            "higher_timeframes": list(self.higher),
        }

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        missing = [tf for tf in self.higher if tf not in window.frames]
        if missing:
            raise ValueError(f"mtf on {self.timeframe} needs the {', '.join(missing)} frames in the window")
        if min(len(c), *(len(window.frames[tf]) for tf in self.higher)) < self.lookback:
            return []
        p = self.params
        base, conf = trend(c, p.sma_period, p.rsi_period)
        base_close = c.ts + timeframe_seconds(self.timeframe) * 1000

        # Each higher trend as of every base bar's close. A base bar fires only once every frame
        # has a full lookback of bars closed by then, as the live window would hand it.
        higher: list[npt.NDArray[np.int8]] = []
        complete = np.ones(len(c), dtype=bool)
        for tf in self.higher:
            frame = window.frames[tf]
            h_trend, _ = trend(frame, p.sma_period, p.rsi_period)
            j = last_closed(frame, tf, base_close)
            complete &= j >= self.lookback - 1
            higher.append(h_trend[np.maximum(j, 0)])

        score = 2 * (higher[0] == base) + (higher[1] == base)
        fire = (base != 0) & (conf >= p.min_base_conf) & (score >= p.min_score) & complete

        i = np.flatnonzero(fire[self.lookback - 1 :]) + (self.lookback - 1)
        atr_ = atr(c, p.atr_period, p.atr_mode)
        return self._candidates(i, base[i], conf[i], [h[i] for h in higher], score[i], c.close[i], atr_[i])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        base: npt.NDArray[np.int8],
        conf: FloatArray,
        higher: list[npt.NDArray[np.int8]],
        score: IntArray,
        entry: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """ATR method: SL 1.5 ATR (buffered), TP1/TP2 at 2.0/3.0 ATR, min R:R 1.3, for every strength.

        The original widened a STRONG signal's stop to 2.25 ATR, which made R:R 0.88 and
        failed every time; the stop is the same for both strengths here (spec decision).
        """
        sign = base  # +1 LONG, -1 SHORT: a fired bar is never NEUTRAL
        levels = self.arrays.atr(sign, entry, atr_)
        confidence = score / 3 * 100
        threshold = f"{self.params.min_base_conf:g}"
        tfs = self.higher

        def describe(row: int) -> Detail:
            name = TREND_NAMES[int(base[row])]
            sc = int(score[row])
            kind = "STRONG" if sc == 3 else "MODERATE"
            h_names = [TREND_NAMES[int(h[row])] for h in higher]
            cf = float(conf[row])
            rationale = (
                f"{self.timeframe} {name}, confidence {cf:.3f} ≥ {threshold}",
                *(
                    f"{tf} {h} ({'+' + str(pt) if h == name else '+0'})"
                    for tf, h, pt in zip(tfs, h_names, (2, 1), strict=True)
                ),
                f"{kind} confluence {sc}/3",
            )
            metadata: dict[str, Any] = {"kind": kind, "score": sc, "base_conf": cf, "atr": float(atr_[row])}
            for tf, h in zip(tfs, h_names, strict=True):
                metadata[f"trend_{tf}"] = h
            return rationale, metadata

        return self.batch(i, sign, entry, levels, describe=describe, confidence=confidence)
