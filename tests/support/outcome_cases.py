"""Hypothesis strategies for outcome-tracking tests: candles on an integer price grid (so
levels are touched exactly) and signals with ladders around them."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from engine.market.candles import Candles
from engine.signals.model import Direction, Signal

STEP = 300_000  # 5m
T0 = 1_700_000_000_000


def grid_candles(draw: st.DrawFn, n: int) -> Candles:
    """n 5m candles with integer lows and highs from T0 and a close somewhere between."""
    lo = np.array(draw(st.lists(st.integers(80, 120), min_size=n, max_size=n)), dtype=np.float64)
    hi = lo + np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), dtype=np.float64)
    cl = lo + np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))) * (hi - lo)
    return Candles(T0 + STEP * np.arange(n, dtype=np.int64), cl, hi, lo, cl, np.ones(n))


def ladder_signal(
    draw: st.DrawFn,
    sid: str,
    strategies: list[str],
    bar_close_ms: int,
    steps: st.SearchStrategy[list[float]],
) -> Signal:
    """A signal on ETH/BTC 5m with an integer entry, a risk (zero included) and targets at
    cumulative `steps` of that risk (a negative step makes the ladder out of order)."""
    long = draw(st.booleans())
    sign = 1 if long else -1
    entry = float(draw(st.integers(85, 115)))
    risk = draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 8.0]))
    tps = tuple(entry + sign * risk * float(x) for x in np.cumsum(draw(steps)))
    return Signal(
        sid,
        draw(st.sampled_from(strategies)),
        "ETH/BTC",
        Direction.LONG if long else Direction.SHORT,
        "5m",
        "binance",
        entry,
        entry - sign * risk,
        tps,
        "",
        bar_close_ms,
    )
