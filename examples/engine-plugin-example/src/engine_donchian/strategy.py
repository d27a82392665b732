"""donchian — Donchian-channel breakout, a third-party strategy plugin for signal-engine.

The channel of bar t is the highest high and the lowest low of the `period` bars *before* t
(bar t itself is not part of its own channel). A bar whose close breaks above the channel's
top, when the previous bar's close had not, is a LONG breakout; a close below the bottom
after a close that was not is a SHORT breakout. Stop and targets come from the engine's
shared TP/SL calculator (ATR method), so the engine's level gates apply as for any strategy.

Parity: everything here is a sliding-window computation over a fixed number of past bars
(max/min over `period` bars, a plain mean of `atr_period` true ranges), nothing recursive.
So the answer at bar t depends on exactly the `lookback` bars ending at t, and a vectorised
call over a whole history gives bit-for-bit the same candidates as one call per live window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field

from engine.market.candles import Candles, FloatArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction


class DonchianParams(StrategyParams):
    """Parameters of one donchian instance (`[params]` of its strategies/<name>.toml)."""

    period: int = Field(20, ge=2, le=1000, description="bars in the channel (before the signal bar)")
    atr_period: int = Field(14, ge=1, le=1000, description="true ranges averaged for the ATR")
    min_width_percent: float = Field(
        0.0, ge=0, description="ignore channels narrower than this, in percent of the close"
    )


def rolling(values: FloatArray, n: int, how: Literal["max", "min", "mean"]) -> FloatArray:
    """`how` of the `n` values ending at each index; NaN before that.

    Each window is reduced on its own, in the same order wherever it sits (no running sums
    carried along the array), so the value at an index does not depend on where the array
    starts: a bar gives the same number in a 60-bar live window and in a 6000-bar history.
    """
    out = np.full(values.shape[0], np.nan)
    m = values.shape[0] - n + 1
    if m <= 0:
        return out
    if how == "mean":
        # Left-to-right sum of the n lagged slices: the same additions, in the same order, for
        # every window (a cumsum difference would drift with the distance from the start).
        total = values[0:m].copy()
        for k in range(1, n):
            total += values[k : k + m]
        out[n - 1 :] = total / n
    else:
        windows = sliding_window_view(values, n)
        out[n - 1 :] = windows.max(axis=1) if how == "max" else windows.min(axis=1)
    return out


def channel(candles: Candles, period: int) -> tuple[FloatArray, FloatArray]:
    """Top and bottom of the channel of every bar: extremes of the `period` bars before it."""
    upper = np.full(len(candles), np.nan)
    lower = np.full(len(candles), np.nan)
    upper[1:] = rolling(candles.high, period, "max")[:-1]
    lower[1:] = rolling(candles.low, period, "min")[:-1]
    return upper, lower


def simple_atr(candles: Candles, period: int) -> FloatArray:
    """Plain mean of the last `period` true ranges (no Wilder smoothing, hence no warm-up)."""
    h, lo, c = candles.high, candles.low, candles.close
    tr = np.full(len(candles), np.nan)
    if len(candles) > 1:
        prev = c[:-1]
        tr[1:] = np.maximum(h[1:] - lo[1:], np.maximum(np.abs(h[1:] - prev), np.abs(lo[1:] - prev)))
    return rolling(tr, period, "mean")


class DonchianStrategy(Strategy[DonchianParams]):
    """LONG when the close breaks above the prior `period` bars' high; SHORT below their low."""

    name = "donchian"
    Params = DonchianParams
    # This plugin's TP/SL defaults; an instance file's [risk] table still overrides them.
    RISK: ClassVar[Mapping[str, float | None]] = {
        "sl_mult": 1.0,
        "tp1_mult": 2.0,
        "tp2_mult": 3.0,
        "tp3_mult": 4.0,
    }
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 3600

    def on_load(self) -> None:
        p = self.params
        # Bar t reads the channel of t and of t-1 (period + 2 bars) and the ATR at t (atr_period
        # true ranges, each also reading the close before it).
        self._lookback = max(p.period + 2, p.atr_period + 1)

    @property
    def lookback(self) -> int:
        return self._lookback

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "channel": self.params.period}

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        upper, lower = channel(c, p.period)
        atr = simple_atr(c, p.atr_period)
        close = c.close
        prev_close = np.concatenate(([np.nan], close[:-1]))
        prev_upper = np.concatenate(([np.nan], upper[:-1]))
        prev_lower = np.concatenate(([np.nan], lower[:-1]))
        wide = (upper - lower) >= close * p.min_width_percent / 100.0
        # NaN compares False: bars without a full channel never fire.
        up = (close > upper) & (prev_close <= prev_upper) & wide
        down = (close < lower) & (prev_close >= prev_lower) & wide
        # Bars before lookback - 1 had less history than a live window would: never report them.
        first = self.lookback - 1
        out: list[Candidate] = []
        for i in np.flatnonzero((up | down)[first:]) + first:
            direction = Direction.LONG if up[i] else Direction.SHORT
            out.append(self._candidate(int(i), direction, c, upper, lower, atr))
        return out

    def _candidate(
        self,
        i: int,
        direction: Direction,
        c: Candles,
        upper: FloatArray,
        lower: FloatArray,
        atr: FloatArray,
    ) -> Candidate:
        entry, top, bottom, a = float(c.close[i]), float(upper[i]), float(lower[i]), float(atr[i])
        levels = self.levels.atr(direction, entry=entry, atr=a)
        broken = top if direction is Direction.LONG else bottom
        side = "above" if direction is Direction.LONG else "below"
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(
                f"close {entry:.8g} broke {side} the {self.params.period}-bar channel at {broken:.8g}",
                f"channel {bottom:.8g} .. {top:.8g}",
            ),
            metadata={"upper": top, "lower": bottom, "atr": a},
        )
