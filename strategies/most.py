"""most — the Moving Stop line (spec §4.12).

MOST is a trailing stop drawn around EMA(9) at a distance of 2·ATR: it only ratchets in the
trend's favour, and the trend turns when the EMA crosses it. A turn is a REVERSAL signal; in an
unbroken trend, a bar that dips to the EMA and closes back above it (below, for a down trend)
is a PULLBACK entry. The stop is the line itself.

The spec makes the line window-dependent — it is rebuilt from index `ema_period` of the
100-bar window on every scan, with the distance taken from the window's last bar — so the
answer at bar t is the line over the `window` bars ending at t, in live and replay alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field, model_validator

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

BoolArray = npt.NDArray[np.bool_]


class MostParams(StrategyParams):
    """`[params]` of a most instance: the EMA, ATR distance and rebuild window of the MOST line."""

    ema_period: int = Field(9, ge=1, description="EMA the line follows; the line starts at this window index")
    atr_period: int = Field(14, ge=1, description="ATR period (and stdev fallback period) for the distance")
    atr_mult: float = Field(2.0, gt=0, description="line distance from the EMA, in ATRs of the last bar")
    window: int = Field(100, description="bars the line is rebuilt over for each bar (the original's fetch)")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)

    @model_validator(mode="after")
    def _window_fits_line(self) -> MostParams:
        # The rule compares the line's last two trend states, so it needs two steps at least.
        if self.window < self.ema_period + 2:
            raise ValueError(f"window ({self.window}) must be at least ema_period + 2")
        return self


def most_line(
    ema: FloatArray, off: FloatArray, ends: IntArray, window: int, start: int
) -> tuple[FloatArray, BoolArray, BoolArray]:
    """The MOST line of each window ending at `ends`: (line at the end, trend up at the end, one bar before).

    Every window is stepped at once — one array operation per step across all windows —
    because replay needs a fresh line for each of thousands of bars. `off` is per window.
    """
    if ends.shape[0] <= _SCALAR_WINDOWS:
        return _most_line_scalar(ema, off, ends, window, start)
    base = ends - (window - 1)
    line = ema[base + start] - off
    up = np.ones(ends.shape[0], dtype=bool)
    prev_up = up
    for j in range(start + 1, window):
        e = ema[base + j]
        held = np.where(up, np.maximum(line, e - off), np.minimum(line, e + off))
        crossed = np.where(up, e < held, e > held)
        prev_up, up = up, up ^ crossed
        line = np.where(crossed, np.where(up, e - off, e + off), held)
    return line, up, prev_up


# Below this many windows (the live path builds one) plain floats beat array operations,
# whose per-call overhead dominates on arrays of one element.
_SCALAR_WINDOWS = 4


def _most_line_scalar(
    ema: FloatArray, off: FloatArray, ends: IntArray, window: int, start: int
) -> tuple[FloatArray, BoolArray, BoolArray]:
    """The same recursion as `most_line`, one window at a time in plain Python floats."""
    n = ends.shape[0]
    lines, ups, prev_ups = np.empty(n), np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    for k in range(n):
        base = int(ends[k]) - (window - 1)
        d = float(off[k])
        seg = ema[base + start : base + window].tolist()
        line = seg[0] - d
        up = prev_up = True
        for e in seg[1:]:
            if up:
                held = max(line, e - d)
                crossed = e < held
            else:
                held = min(line, e + d)
                crossed = e > held
            prev_up = up
            if crossed:
                up = not up
                line = e - d if up else e + d
            else:
                line = held
        lines[k], ups[k], prev_ups[k] = line, up, prev_up
    return lines, ups, prev_ups


class MostStrategy(Strategy[MostParams]):
    """REVERSAL when the MOST trend turns; PULLBACK to the EMA inside an unbroken trend."""

    name = "most"
    Params = MostParams
    RISK = {"sl_mult": 1.0, "tp1_mult": 2.0, "tp2_mult": 3.5}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 3600

    @property
    def lookback(self) -> int:
        return self.params.window + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup, "window": self.params.window}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        ema = np.asarray(talib.EMA(c.close, timeperiod=p.ema_period), dtype=np.float64)
        atr_ = atr(c, p.atr_period, p.atr_mode)
        stdev = np.asarray(talib.STDDEV(c.close, timeperiod=p.atr_period, nbdev=1.0), dtype=np.float64)

        # Only windows ending at an emitted bar are built: one in live, every bar in replay.
        ends = np.arange(self.lookback - 1, len(c), dtype=np.int64)
        a = atr_[ends]
        off = p.atr_mult * np.where(np.isfinite(a) & (a > 0), a, stdev[ends])
        line, up, prev_up = most_line(ema, off, ends, p.window, p.ema_period)

        e, close, prev_close = ema[ends], c.close[ends], c.close[ends - 1]
        reversal = up != prev_up
        pull_long = ~reversal & up & (c.low[ends] <= e) & (close > e) & (close > prev_close)
        pull_short = ~reversal & ~up & (c.high[ends] >= e) & (close < e) & (close < prev_close)

        out: list[Candidate] = []
        for k in np.flatnonzero(reversal | pull_long | pull_short):
            direction = Direction.LONG if up[k] else Direction.SHORT
            kind = "REVERSAL" if reversal[k] else "PULLBACK"
            out.append(self._candidate(int(ends[k]), direction, kind, window, float(line[k]), ema, atr_))
        return out

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        i: int,
        direction: Direction,
        kind: str,
        window: Window,
        most: float,
        ema: FloatArray,
        atr_: FloatArray,
    ) -> Candidate:
        """ATR method with the MOST line as the stop: TP1/TP2/TP3 at 2.0/3.5/4.5 ATR (RISK + global).

        A REVERSAL's stop is EMA ∓ 2·ATR with the close beyond the EMA, so its risk always
        exceeds the 2-ATR TP1 and the R:R gate rejects it; the rule is kept as specified and
        the rejection is counted centrally.
        """
        c = window.candles
        entry = float(c.close[i])
        a, e = float(atr_[i]), float(ema[i])
        levels = self.levels.atr(direction, entry=entry, atr=a, custom_sl=most)
        up = direction is Direction.LONG
        if kind == "REVERSAL":
            rationale: tuple[str, ...] = (
                f"MOST trend turned {'up' if up else 'down'}",
                f"EMA({self.params.ema_period}) crossed {'above' if up else 'below'} the MOST line",
            )
        else:
            rationale = (
                f"MOST trend {'up' if up else 'down'}",
                f"bar touched EMA({self.params.ema_period}) and closed {'above' if up else 'below'} it",
                f"close {'above' if up else 'below'} the previous close",
            )
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=rationale,
            metadata={"kind": kind, "most": most, "ema": e, "atr": a},
        )
