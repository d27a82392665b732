"""psar on hand-built markets: a SAR flip fires only in a trend (ADX) and on a bar closing its way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import talib

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.psar import PsarParams, PsarStrategy

START_MS, STEP_MS = 1_515_560_100_000, 300_000


def make(**params: object) -> PsarStrategy:
    return PsarStrategy(PsarParams(**params), RiskSettings().merged(PsarStrategy.RISK), "5m")


def candles(o: npt.ArrayLike, h: npt.ArrayLike, lo: npt.ArrayLike, c: npt.ArrayLike) -> Candles:
    n = len(np.asarray(c))
    ts = START_MS + STEP_MS * np.arange(n, dtype=np.int64)
    f = [np.asarray(x, dtype=np.float64) for x in (o, h, lo, c)]
    return Candles(ts, f[0], f[1], f[2], f[3], np.ones(n))


def downtrend_then(open_: float, high: float, low: float, close: float, *, bars: int = 519) -> Candles:
    """`bars` red bars falling 0.2% each (0.3% wicks), then one bar given relative to the last close."""
    c = 100.0 * 0.998 ** np.arange(bars)
    o = np.concatenate([[c[0]], c[:-1]])
    h, lo = np.maximum(o, c) * 1.003, np.minimum(o, c) * 0.997
    pc = c[-1]
    return candles([*o, pc * open_], [*h, pc * high], [*lo, pc * low], [*c, pc * close])


def mirror(cs: Candles) -> Candles:
    """The same market upside down: highs become lows, so every rule should fire mirrored."""
    k = 2.0 * float(cs.high.max())
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


def run(strategy: PsarStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/BTC", timeframe="5m", candles=cs))


def sar_trend(cs: Candles) -> npt.NDArray[np.int64]:
    return np.where(talib.SAR(cs.high, cs.low, acceleration=0.02, maximum=0.2) < cs.close, 1, -1)


# A green bar that opens at the previous close and rallies 1% through the falling SAR.
GREEN_FLIP: dict[str, Any] = {"open_": 1.0, "high": 1.013, "low": 1.0, "close": 1.01}


def test_flip_up_on_a_green_bar_in_a_strong_trend_gives_one_long_with_sar_stop() -> None:
    cs = downtrend_then(**GREEN_FLIP)
    out = run(make(), cs)

    assert len(out) == 1
    cand = out[0]
    assert cand.bar == len(cs) - 1
    assert cand.direction is Direction.LONG
    assert cand.entry == cs.close[-1]
    # On the flip the SAR jumps to the downtrend's extreme: the lowest low, one bar back.
    assert cand.levels.stop_loss == pytest.approx(cs.low[-2], rel=1e-12)
    atr = talib.ATR(cs.high, cs.low, cs.close, timeperiod=14)[-1]
    expected = [cs.close[-1] + m * atr for m in (2.0, 3.5, 4.5)]
    assert cand.levels.take_profits == pytest.approx(expected, rel=1e-12)
    assert cand.levels.valid, cand.levels.reason
    assert cand.levels.rr1 >= 1.3
    assert cand.metadata["adx"] >= 20
    assert cand.metadata["sar"] == cand.levels.stop_loss
    assert cand.rationale[0] == "SAR flipped below price"
    assert cand.rationale[1].startswith("ADX ")


def test_flip_down_on_a_red_bar_gives_a_short_with_the_stop_above() -> None:
    cs = mirror(downtrend_then(**GREEN_FLIP))
    out = run(make(), cs)

    assert [c.direction for c in out] == [Direction.SHORT]
    lv = out[0].levels
    assert lv.stop_loss == pytest.approx(cs.high[-2], rel=1e-12)
    assert lv.stop_loss > lv.entry > lv.take_profits[0] > lv.take_profits[1] > lv.take_profits[2]
    assert out[0].rationale[0] == "SAR flipped above price"


def test_flip_on_a_red_bar_gives_nothing() -> None:
    # Gaps up through the SAR but closes below its open.
    cs = downtrend_then(open_=1.015, high=1.016, low=1.0, close=1.008)
    trend = sar_trend(cs)
    assert trend[-2] == -1 and trend[-1] == 1  # the SAR did flip up…
    assert run(make(), cs) == []  # …but not on a bar that agrees


def test_flip_in_a_choppy_market_gives_nothing_because_adx_is_weak() -> None:
    n = 540
    i = np.arange(n)
    c = 100.0 + 0.5 * np.sin(2 * np.pi * i / 12)
    o = np.concatenate([[c[0]], c[:-1]])
    cs = candles(o, np.maximum(o, c) + 0.05, np.minimum(o, c) - 0.05, c)
    strategy = make()
    first = strategy.lookback - 1
    trend = sar_trend(cs)
    flips = [t for t in range(first, n) if trend[t] != trend[t - 1]]
    adx = talib.ADX(cs.high, cs.low, cs.close, timeperiod=14)
    assert len(flips) >= 4 and np.nanmax(adx[first:]) < 20

    assert run(strategy, cs) == []
    # With the ADX gate opened, every one of those flips fires: the gate is what held them back.
    assert [c.bar for c in run(make(adx_threshold=0.0), cs)] == flips


def test_adx_threshold_is_inclusive() -> None:
    cs = downtrend_then(**GREEN_FLIP)
    adx = float(run(make(), cs)[0].metadata["adx"])
    assert len(run(make(adx_threshold=adx), cs)) == 1
    assert run(make(adx_threshold=float(np.nextafter(adx, np.inf))), cs) == []


def test_invalid_levels_are_returned_flagged_for_the_engine_to_reject() -> None:
    # A 2% rally bar: the SAR stop ends up farther than TP1 can pay for.
    cs = downtrend_then(open_=1.0, high=1.023, low=1.0, close=1.02)
    out = run(make(), cs)
    assert len(out) == 1
    assert out[0].direction is Direction.LONG
    assert not out[0].levels.valid
    assert out[0].levels.reason.startswith("R:R ")
    assert out[0].levels.rr1 < 1.3


def test_sma_atr_mode_prices_targets_off_the_plain_mean_true_range() -> None:
    cs = downtrend_then(**GREEN_FLIP)
    out = run(make(atr_mode="sma"), cs)
    h, lo, pc = cs.high[-14:], cs.low[-14:], cs.close[-15:-1]
    mean_tr = np.maximum.reduce([h - lo, np.abs(h - pc), np.abs(lo - pc)]).mean()
    assert out[0].levels.take_profits[0] == pytest.approx(cs.close[-1] + 2.0 * mean_tr, rel=1e-12)


def test_only_bars_with_a_full_lookback_behind_them_are_reported() -> None:
    strategy = make()
    assert strategy.lookback == 100 + 400
    assert make(warmup=0).lookback == 100
    cs = downtrend_then(**GREEN_FLIP)
    assert run(strategy, cs.tail(strategy.lookback - 1)) == []
    assert [c.bar for c in run(strategy, cs.tail(strategy.lookback))] == [strategy.lookback - 1]
    # A longer window puts the same flip at a later index and still reports it.
    longer = downtrend_then(**GREEN_FLIP, bars=700)
    assert [c.bar for c in run(strategy, longer)] == [700]


def test_declared_defaults_follow_the_spec() -> None:
    p = PsarParams()
    assert (p.acceleration, p.maximum, p.adx_period, p.adx_threshold) == (0.02, 0.2, 14, 20.0)
    assert (p.atr_period, p.atr_mode, p.warmup) == (14, "wilder", 400)
    assert PsarStrategy.RISK == {"sl_mult": 1.0, "tp1_mult": 2.0, "tp2_mult": 3.5}
    assert (PsarStrategy.DEFAULT_TIMEFRAME, PsarStrategy.DEFAULT_COOLDOWN) == ("5m", 180)
    risk = RiskSettings().merged(PsarStrategy.RISK)
    assert (risk.min_rr, risk.tp3_mult) == (1.3, 4.5)


@pytest.mark.parametrize("bad", [{"adx_threshold": -1}, {"warmup": -1}, {"atr_mode": "ema"}, {"adx": 20}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PsarParams(**bad)


def test_metadata_is_plain_json_numbers(sample_candles: Callable[[str], Candles]) -> None:
    out = run(make(), sample_candles("ETH-BTC"))
    assert out
    assert all(type(v) is float for c in out for v in c.metadata.values())
