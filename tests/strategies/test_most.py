"""most on hand-built markets: the line itself, a trend reversal, pullbacks to the EMA."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import talib
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.most import MostParams, MostStrategy, most_line

START_MS, STEP_MS = 1_515_560_100_000, 300_000


def make(**params: object) -> MostStrategy:
    return MostStrategy(MostParams(**params), RiskSettings().merged(MostStrategy.RISK), "5m")


def run(strategy: MostStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/BTC", timeframe="5m", candles=cs))


class Market:
    """A candle tape built bar by bar, each bar given relative to the previous close."""

    def __init__(self, bars: int, step: float, wick: float) -> None:
        c = 100.0 * (1.0 + step) ** np.arange(bars)
        o = np.concatenate([[c[0]], c[:-1]])
        self.o, self.c = list(o), list(c)
        self.h = list(np.maximum(o, c) * (1 + wick))
        self.lo = list(np.minimum(o, c) * (1 - wick))

    def add(self, close: float, *, high: float | None = None, low: float | None = None) -> Market:
        o = self.c[-1]
        self.o.append(o)
        self.c.append(close)
        self.h.append(max(o, close) if high is None else high)
        self.lo.append(min(o, close) if low is None else low)
        return self

    def ema(self) -> float:
        return float(talib.EMA(np.asarray(self.c), timeperiod=9)[-1])

    def candles(self) -> Candles:
        n = len(self.c)
        ts = START_MS + STEP_MS * np.arange(n, dtype=np.int64)
        f = [np.asarray(x, dtype=np.float64) for x in (self.o, self.h, self.lo, self.c)]
        return Candles(ts, f[0], f[1], f[2], f[3], np.ones(n))


def mirror(cs: Candles) -> Candles:
    k = 2.0 * float(cs.high.max())
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


def indicators(cs: Candles) -> tuple[np.ndarray, np.ndarray]:
    return talib.EMA(cs.close, timeperiod=9), talib.ATR(cs.high, cs.low, cs.close, timeperiod=14)


def pullback_market() -> Market:
    """Steady 0.2% rise, three 0.8% red bars, then a bar opening at the low, closing just above EMA(9)."""
    m = Market(520, 0.002, 0.001)
    for _ in range(3):
        prev = m.c[-1]
        m.add(prev * 0.992, high=prev * 1.001, low=prev * 0.992 * 0.999)
    prev = m.c[-1]
    target = m.ema() * 1.0005  # closes above the previous EMA, so above the new one too
    m.add(target, high=target * 1.001, low=prev * 0.999)
    return m


# -- the line ---------------------------------------------------------------------------------


def test_line_ratchets_with_the_trend_and_flips_when_the_ema_crosses_it() -> None:
    ema = np.array([10.0, 11.0, 12.0, 11.0, 9.0, 8.0])
    off = np.array([1.0])
    # Up from 9, ratchets to 11, holds at 11 while the EMA dips to 11, flips at 9 to 9 + 1.
    line, up, prev_up = most_line(ema, off, np.array([4]), window=5, start=0)
    assert (line[0], up[0], prev_up[0]) == (10.0, False, True)
    # Down: the line follows EMA + off down to 9 without flipping back.
    line, up, prev_up = most_line(ema, off, np.array([5]), window=6, start=0)
    assert (line[0], up[0], prev_up[0]) == (9.0, False, False)


def test_line_of_many_windows_at_once_equals_each_window_alone(
    sample_candles: Callable[[str], Candles],
) -> None:
    cs = sample_candles("LTC-BTC").slice(0, 1200)
    ema, atr = indicators(cs)
    ends = np.arange(499, 1200)
    off = 2.0 * atr[ends]
    line, up, prev_up = most_line(ema, off, ends, window=100, start=9)
    for k in range(0, len(ends), 37):
        # The spec's definition, one window at a time, in plain Python.
        t, o = int(ends[k]), float(off[k])
        w = ema[t - 99 : t + 1]
        m, trend = w[9] - o, [True]
        for e in w[10:]:
            if trend[-1]:
                m = max(m, e - o)
                if e < m:
                    trend.append(False)
                    m = e + o
                else:
                    trend.append(True)
            else:
                m = min(m, e + o)
                if e > m:
                    trend.append(True)
                    m = e - o
                else:
                    trend.append(False)
        assert (line[k], up[k], prev_up[k]) == (m, trend[-1], trend[-2])


# -- the rule ---------------------------------------------------------------------------------


def test_trend_reversal_down_gives_a_short_with_the_line_as_stop() -> None:
    m = Market(520, 0.001, 0.002)
    for _ in range(4):
        prev = m.c[-1]
        m.add(prev * 0.99, high=prev * 1.001, low=prev * 0.99 * 0.999)
    cs = m.candles()
    out = run(make(), cs)

    assert [(c.bar, c.direction, c.metadata["kind"]) for c in out] == [
        (len(cs) - 1, Direction.SHORT, "REVERSAL")
    ]
    cand = out[0]
    ema, atr = indicators(cs)
    # Right after a flip down the line sits at EMA + 2·ATR of the signal bar.
    assert cand.levels.stop_loss == pytest.approx(ema[-1] + 2.0 * atr[-1], rel=1e-12)
    assert cand.levels.take_profits == pytest.approx([cs.close[-1] - k * atr[-1] for k in (2.0, 3.5, 4.5)])
    assert cand.metadata["most"] == cand.levels.stop_loss
    assert cand.rationale[0] == "MOST trend turned down"
    # The line is over 2 ATR from a close beyond the EMA, so TP1 (2 ATR) cannot pay 1.3 R.
    assert not cand.levels.valid
    assert cand.levels.reason.startswith("R:R ")


def test_pullback_to_the_ema_in_an_uptrend_gives_a_valid_long() -> None:
    cs = pullback_market().candles()
    out = run(make(), cs)

    assert [(c.bar, c.direction, c.metadata["kind"]) for c in out] == [
        (len(cs) - 1, Direction.LONG, "PULLBACK")
    ]
    cand = out[0]
    ema, atr = indicators(cs)
    assert cs.low[-1] <= ema[-1] < cs.close[-1]
    # No flip in the window: the line is the highest EMA - 2·ATR it has ratcheted to.
    assert cand.levels.stop_loss == pytest.approx(ema[-91:].max() - 2.0 * atr[-1], rel=1e-12)
    assert cand.entry == cs.close[-1]
    assert cand.levels.take_profits[0] == pytest.approx(cs.close[-1] + 2.0 * atr[-1], rel=1e-12)
    assert cand.levels.valid, cand.levels.reason


def test_pullback_in_a_downtrend_gives_a_short() -> None:
    cs = mirror(pullback_market().candles())
    out = run(make(), cs)

    assert [(c.direction, c.metadata["kind"]) for c in out] == [(Direction.SHORT, "PULLBACK")]
    ema, atr = indicators(cs)
    assert out[0].levels.stop_loss == pytest.approx(ema[-91:].min() + 2.0 * atr[-1], rel=1e-12)
    assert out[0].levels.stop_loss > out[0].entry > out[0].levels.take_profits[0]


@pytest.mark.parametrize(("close", "fires"), [(1.0005, True), (0.9995, False)])
def test_pullback_needs_a_close_above_the_previous_bar(close: float, fires: bool) -> None:
    # In a steady rise the EMA lags the close by ~0.8%: a bar that wicks down to it and closes
    # near the previous close is a pullback only if it closes above that previous close.
    m = Market(520, 0.002, 0.001)
    prev = m.c[-1]
    m.add(prev * close, high=prev * 1.002, low=m.ema() * 0.99)
    cs = m.candles()
    ema, _ = indicators(cs)
    assert cs.low[-1] <= ema[-1] < cs.close[-1] > cs.close[-3]
    out = run(make(), cs)
    assert [c.metadata["kind"] for c in out if c.bar == len(cs) - 1] == (["PULLBACK"] if fires else [])


def test_a_bar_that_never_touches_the_ema_is_not_a_pullback() -> None:
    m = Market(520, 0.002, 0.001)
    prev = m.c[-1]
    m.add(prev * 1.002, low=prev * 0.9995)
    assert run(make(), m.candles()) == []


# -- lookback and params ------------------------------------------------------------------------


def test_only_bars_with_a_full_lookback_behind_them_are_reported() -> None:
    strategy = make()
    assert strategy.lookback == 100 + 400
    assert make(window=60, warmup=0).lookback == 60
    cs = pullback_market().candles()
    assert run(strategy, cs.tail(strategy.lookback - 1)) == []
    assert [c.bar for c in run(strategy, cs.tail(strategy.lookback))] == [strategy.lookback - 1]


def test_declared_defaults_follow_the_spec() -> None:
    p = MostParams()
    assert (p.ema_period, p.atr_period, p.atr_mult, p.window) == (9, 14, 2.0, 100)
    assert (p.atr_mode, p.warmup) == ("wilder", 400)
    assert MostStrategy.RISK == {"sl_mult": 1.0, "tp1_mult": 2.0, "tp2_mult": 3.5}
    assert (MostStrategy.DEFAULT_TIMEFRAME, MostStrategy.DEFAULT_COOLDOWN) == ("5m", 3600)


@pytest.mark.parametrize("bad", [{"window": 10}, {"atr_mult": 0}, {"warmup": -5}, {"period": 9}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MostParams(**bad)


def test_reversals_on_real_data_never_pass_the_rr_gate(sample_candles: Callable[[str], Candles]) -> None:
    """Documents a property of the spec's levels (see docs/strategies/most.md)."""
    out = run(make(), sample_candles("ETH-BTC"))
    reversals = [c for c in out if c.metadata["kind"] == "REVERSAL"]
    pullbacks = [c for c in out if c.metadata["kind"] == "PULLBACK"]
    assert reversals and pullbacks
    assert all(c.levels.risk > abs(c.levels.take_profits[0] - c.entry) for c in reversals)
    assert not any(c.levels.valid for c in reversals)
    assert any(c.levels.valid for c in pullbacks)
