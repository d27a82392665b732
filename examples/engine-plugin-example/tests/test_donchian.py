"""Unit tests of the donchian plugin, runnable on their own: `pip install -e . && pytest`.

They need signal-engine importable (the plugin runs inside it), nothing else.
"""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import numpy as np
import pytest
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction

from engine_donchian.strategy import DonchianParams, DonchianStrategy

STEP_MS = 300_000  # 5m candles


def make(**params: object) -> DonchianStrategy:
    """The strategy as the engine builds it: params validated, global risk ← plugin RISK."""
    cls = DonchianStrategy
    return cls(cls.Params(**params), RiskSettings().merged(cls.RISK), cls.DEFAULT_TIMEFRAME)


def candles(close: list[float], spread: float = 0.004) -> Candles:
    """Candles around `close`: open at the previous close, high/low `spread` (fraction) beyond."""
    c = np.asarray(close, dtype=np.float64)
    o = np.concatenate(([c[0]], c[:-1]))
    h = np.maximum(o, c) * (1 + spread)
    lo = np.minimum(o, c) * (1 - spread)
    ts = np.arange(len(c), dtype=np.int64) * STEP_MS + 1_515_000_000_000
    return Candles.from_rows(np.column_stack([ts, o, h, lo, c, np.ones_like(c)]))


def win(cs: Candles) -> Window:
    return Window(symbol="ETH/BTC", timeframe="5m", candles=cs)


def test_breakout_up_is_a_long_with_valid_levels() -> None:
    s = make(period=20)
    flat = [100.0 + 0.1 * math.sin(i) for i in range(60)]
    cs = candles([*flat, 103.0])  # last close far above the channel top (~100.5)
    got = [c for c in s.evaluate(win(cs)) if c.bar == len(cs) - 1]
    assert [c.direction for c in got] == [Direction.LONG]
    lv = got[0].levels
    assert lv.valid, lv.reason
    assert lv.stop_loss < lv.entry == 103.0 < lv.take_profits[0] < lv.take_profits[1]
    assert len(lv.take_profits) == 3  # RISK sets tp3_mult
    assert got[0].metadata["upper"] < 103.0


def test_breakout_down_is_a_short_and_a_trend_fires_once() -> None:
    s = make(period=20)
    flat = [100.0 + 0.1 * math.sin(i) for i in range(60)]
    falling = [97.0 - i for i in range(5)]  # breaks down, then keeps closing below the channel
    cs = candles([*flat, *falling])
    got = list(s.evaluate(win(cs)))
    assert [(c.bar, c.direction) for c in got] == [(60, Direction.SHORT)]


def test_too_short_a_window_gives_nothing() -> None:
    s = make(period=20)
    assert s.lookback == 22
    assert s.evaluate(win(candles([100.0] * 21))) == []


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError):
        DonchianParams(period=1)
    with pytest.raises(ValidationError):
        DonchianParams(perio=20)  # type: ignore[call-arg]  # a typo is an error, not a default


def test_live_windows_reproduce_one_call_over_the_history() -> None:
    """The parity requirement: bar-by-bar `lookback` windows ≡ one vectorised call."""
    rng = np.random.default_rng(7)
    close = list(100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, 3000))))
    cs = candles(close, spread=0.002)
    s = make(period=20, atr_period=14)
    lb = s.lookback

    def key(c: Candidate, t: int) -> tuple[int, str]:
        return int(cs.ts[t]), c.direction.value

    replay = {key(c, c.bar): c for c in s.evaluate(win(cs))}
    live: dict[tuple[int, str], Candidate] = {}
    for t in range(lb - 1, len(cs)):
        for c in s.evaluate(win(cs.slice(t - lb + 1, t + 1))):
            if c.bar == lb - 1:
                live[key(c, t)] = c
    assert len(replay) > 10, "too few breakouts for the check to mean anything"
    assert live.keys() == replay.keys()
    for k, r in replay.items():
        assert live[k].levels == r.levels  # bit-for-bit: no recursive indicator, no warm-up


def test_registered_under_the_engine_entry_point() -> None:
    eps = {ep.name: ep for ep in entry_points(group="engine.strategies")}
    assert "donchian" in eps, "package not installed (pip install -e .)"
    assert eps["donchian"].load() is DonchianStrategy
