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
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, model_validator

from engine.market.candles import FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
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

    Every window is stepped at once — a handful of in-place array operations per step across
    all windows — because replay needs a fresh line for each of thousands of bars. `off` is
    per window.

    The step is rewritten so it needs no branch per trend: in "signed" prices (the EMA times
    +1 in an up trend, -1 in a down one) both trends are the up case, and the ratcheted line
    max(line, EMA - off) is `K - off` with K the running maximum of the signed EMA since the
    last turn (rounding is monotonic, so max(a - off, b - off) == max(a, b) - off exactly, and
    -(e + off) == -e - off). As off ≥ 0, the ratchet never lifts the line above this step's
    EMA, so the trend turns exactly when the signed EMA is below the line before the step; a
    turn restarts K at the EMA signed for the new trend. A NaN off or EMA stalls the line at
    NaN as before. The floats are bit-identical to stepping the line itself.
    """
    n = ends.shape[0]
    if n <= _SCALAR_WINDOWS:
        return _most_line_scalar(ema, off, ends, window, start)
    steps = window - start
    base = ends - (window - 1) + start
    if bool((np.diff(ends) == 1).all()):
        # Consecutive windows (replay): step j of every window is one contiguous slice.
        b0 = int(base[0])
        rows = sliding_window_view(ema[b0 : b0 + steps - 1 + n], n)
    else:
        rows = ema[base[None, :] + np.arange(steps)[:, None]]
    peak = rows[0].copy()  # K: running max of the signed EMA since the last turn
    sign = np.ones(n)  # +1 up, -1 down
    signed, line, turned = np.empty(n), np.empty(n), np.empty(n, dtype=bool)
    prev_sign = sign
    for j in range(1, steps):
        if j == steps - 1:
            prev_sign = sign.copy()
        np.multiply(sign, rows[j], out=signed)
        np.subtract(peak, off, out=line)  # the line before this step, signed
        np.less(signed, line, out=turned)
        np.maximum(peak, signed, out=peak)
        k = turned.nonzero()[0]  # turns are rare: fix those windows up by index
        if k.shape[0]:
            peak[k] = -signed[k]
            sign[k] = -sign[k]
    out: FloatArray = sign * (peak - off)
    return out, sign > 0, prev_sign > 0


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

        k = np.flatnonzero(reversal | pull_long | pull_short)
        return self._candidates(ends[k], up[k], reversal[k], close[k], line[k], e[k], a[k])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        i: IntArray,
        up: BoolArray,
        reversal: BoolArray,
        entry: FloatArray,
        most: FloatArray,
        ema: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """ATR method with the MOST line as the stop: TP1/TP2/TP3 at 2.0/3.5/4.5 ATR (RISK + global).

        A REVERSAL's stop is EMA ∓ 2·ATR with the close beyond the EMA, so its risk always
        exceeds the 2-ATR TP1 and the R:R gate rejects it; the rule is kept as specified and
        the rejection is counted centrally.
        """
        sign = np.where(up, 1, -1).astype(np.int8)
        levels = self.arrays.atr(sign, entry, atr_, custom_sl=most)
        ema_name = f"EMA({self.params.ema_period})"

        def describe(row: int) -> Detail:
            long = bool(up[row])
            trend, side = ("up", "above") if long else ("down", "below")
            if reversal[row]:
                kind = "REVERSAL"
                rationale: tuple[str, ...] = (
                    f"MOST trend turned {trend}",
                    f"{ema_name} crossed {side} the MOST line",
                )
            else:
                kind = "PULLBACK"
                rationale = (
                    f"MOST trend {trend}",
                    f"bar touched {ema_name} and closed {side} it",
                    f"close {side} the previous close",
                )
            metadata = {
                "kind": kind,
                "most": float(most[row]),
                "ema": float(ema[row]),
                "atr": float(atr_[row]),
            }
            return rationale, metadata

        return self.batch(i, sign, entry, levels, describe=describe)
