"""fib_swing on hand-built swings: trend filter, the four levels and their quality, both directions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import talib
from pydantic import ValidationError

from engine.config import StrategyEntry, StrategyFile
from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.plugins.instance import build_instance
from engine.plugins.registry import Registry
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.fib_swing import FibSwingParams, FibSwingStrategy

START_MS, STEP_MS = 1_515_560_100_000, 900_000
WICK = 0.01


def make(**params: object) -> FibSwingStrategy:
    return FibSwingStrategy(FibSwingParams(**params), RiskSettings().merged(FibSwingStrategy.RISK), "15m")


def run(strategy: FibSwingStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/USDT", timeframe="15m", candles=cs))


def path(knots: list[tuple[int, float]], volume: float = 1.0) -> Candles:
    """Closes interpolated between (bar, price) knots, each bar opening at the previous close;
    turning knots get a double wick so each turn is one swing at price ± 2·WICK. `volume` is
    the last bar's volume (the others trade 1)."""
    xs, ps = [k for k, _ in knots], [p for _, p in knots]
    c = np.interp(np.arange(xs[-1] + 1), xs, ps)
    o = np.concatenate([[c[0]], c[:-1]])
    h, lo = np.maximum(o, c) + WICK, np.minimum(o, c) - WICK
    for j in range(1, len(knots) - 1):
        k, p = knots[j]
        if p > max(ps[j - 1], ps[j + 1]):
            h[k] += WICK
        if p < min(ps[j - 1], ps[j + 1]):
            lo[k] -= WICK
    v = np.ones(c.shape[0])
    v[-1] = volume
    ts = START_MS + STEP_MS * np.arange(c.shape[0], dtype=np.int64)
    return Candles(ts, o, h, lo, c, v)


def mirror(cs: Candles) -> Candles:
    """The same market upside down: the up-trend LONG setup becomes the down-trend SHORT one."""
    k = 2.0 * float(cs.high.max())
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


# A long climb; swing highs at 470, 545 and 585, swing lows at 525 (the anchor: 2nd-latest)
# and 555; then a pullback from the latest high to the signal bar 599.
UPTREND = [(0, 70.0), (440, 97.0), (470, 99.0), (525, 98.5), (545, 100.6), (555, 100.0), (585, 104.0)]
ANCHOR, HIGH = 98.5 - 2 * WICK, 104.0 + 2 * WICK
R = HIGH - ANCHOR


def retrace(f: float, knots: list[tuple[int, float]] = UPTREND, volume: float = 1.0) -> Candles:
    return path([*knots, (599, HIGH - f * R)], volume)


def emas(cs: Candles) -> tuple[float, float]:
    return float(talib.EMA(cs.close, 20)[-1]), float(talib.EMA(cs.close, 50)[-1])


# -- LONG in an up-trend ----------------------------------------------------------------------------


def test_premium_long_at_61_8_with_structure_levels_and_tp3() -> None:
    cs = retrace(0.618)
    fast, slow = emas(cs)
    assert fast > slow  # the trend filter reads up
    out = run(make(), cs)

    assert [(c.bar, c.direction) for c in out] == [(599, Direction.LONG)]
    cand = out[0]
    entry = cs.close[-1]
    sl = ANCHOR * 0.9925
    risk = entry - sl
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    # TP3 at 4.5 R beyond TP2 (defect: the original's TP3 equalled TP2 for a LONG).
    tps = [entry + m * risk for m in (2.0, 3.5, 4.5)]
    assert cand.levels.take_profits == pytest.approx(tps, rel=1e-12)
    # R:R is exactly the 2.0 minimum: accepted with the calculator's tolerance.
    assert cand.levels.valid, cand.levels.reason
    assert cand.levels.rr1 == pytest.approx(2.0)
    md = cand.metadata
    assert (md["quality"], md["level"]) == ("PREMIUM", 0.618)
    assert md["swing_low"] == pytest.approx(ANCHOR) and md["swing_high"] == pytest.approx(HIGH)
    assert (md["anchor_bars_ago"], md["extreme_bars_ago"]) == (74, 14)
    assert md["swing_confirmed"] is True
    assert md["fib_price"] == pytest.approx(HIGH - 0.618 * R)
    assert cand.rationale[0].startswith("up-trend leg from swing low")


@pytest.mark.parametrize(
    ("f", "quality", "level"),
    [
        (0.65, "PREMIUM", 0.65),
        (0.635, "PREMIUM", 0.65),  # near both .65 and .618: .65 is tested first
        (0.60, "PREMIUM", 0.618),
        (0.5, "CONFIRMED", 0.5),
        (0.515, "CONFIRMED", 0.5),
    ],
)
def test_levels_in_order_within_2_percent_of_the_range(f: float, quality: str, level: float) -> None:
    out = run(make(), retrace(f))
    assert [(c.direction, c.metadata["quality"], c.metadata["level"]) for c in out] == [
        (Direction.LONG, quality, level)
    ]


@pytest.mark.parametrize("f", [0.45, 0.56, 0.7, 0.25])
def test_a_close_between_levels_gives_nothing(f: float) -> None:
    assert run(make(), retrace(f)) == []


def test_a_38_2_retracement_needs_volume_above_its_average() -> None:
    assert run(make(), retrace(0.382)) == []  # flat volume: not above the 20-bar mean
    out = run(make(), retrace(0.382, volume=3.0))
    assert [(c.metadata["quality"], c.metadata["level"]) for c in out] == [("WEAK", 0.382)]
    assert "volume above its 20-bar average" in out[0].rationale


def test_no_long_against_the_trend_filter() -> None:
    # A flatter climb, then a deep pullback: EMA(20) has fallen under EMA(50).
    knots = [(0, 60.0), (430, 96.0), (460, 99.5), (500, 98.5), (560, 103.4), (570, 102.9), (589, 104.0)]
    cs = path([*knots, (599, HIGH - 0.618 * R)])
    fast, slow = emas(cs)
    assert fast < slow
    assert run(make(), cs) == []


def test_the_close_must_lie_inside_the_swing_range() -> None:
    # With a very wide tolerance the .65 level "matches" a close above the swing high; the
    # range check still keeps it out.
    assert run(make(tolerance=0.7), path([*UPTREND, (595, 103.5), (599, HIGH - 0.02)])) != []
    assert run(make(tolerance=0.7), path([*UPTREND, (595, 103.5), (599, HIGH + 0.1)])) == []


# -- SHORT in a down-trend ------------------------------------------------------------------------


def test_short_is_the_mirror_with_tp3_on_the_right_side_and_a_mirrored_confirmation() -> None:
    cs = mirror(retrace(0.618))
    fast, slow = emas(cs)
    assert fast < slow
    out = run(make(), cs)

    assert [c.direction for c in out] == [Direction.SHORT]
    cand = out[0]
    anchor_high = float(cs.high[525])
    assert cand.metadata["swing_high"] == anchor_high
    sl = anchor_high * 1.0075
    risk = sl - cand.entry
    # Defect: the original's SHORT TP3 lay on the wrong side; here it is 4.5 R below entry.
    tps = [cand.entry - m * risk for m in (2.0, 3.5, 4.5)]
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx(tps, rel=1e-12)
    assert cand.levels.take_profits[2] < cand.levels.take_profits[1] < cand.entry
    assert cand.levels.valid
    # Levels measured up from the latest swing low: low + f·R.
    low = float(cs.low[585])
    assert cand.metadata["fib_price"] == pytest.approx(low + 0.618 * (anchor_high - low))
    # Defect: SHORT confirmation ran the LONG test (lows above a swing high: never). Mirrored:
    assert cand.metadata["swing_confirmed"] is True


# An anchor undercut 6 bars later: swing lows at 525 (anchor) and 531 (lower), highs 470/528/585.
UNDERCUT = [(0, 70.0), (440, 97.0), (470, 99.0), (525, 98.5), (528, 98.9), (531, 98.2), (585, 104.0)]


@pytest.mark.parametrize(("confirmation", "confirmed"), [(4, True), (8, False)])
def test_confirmation_is_the_anchor_holding_for_the_next_bars_both_ways(
    confirmation: int, confirmed: bool
) -> None:
    strategy = make(swing_lookback=3, confirmation=confirmation)
    cs = retrace(0.618, UNDERCUT)
    assert emas(cs)[0] > emas(cs)[1]
    longs = run(strategy, cs)
    assert [(c.direction, c.metadata["swing_low"]) for c in longs] == [
        (Direction.LONG, pytest.approx(ANCHOR))
    ]
    assert longs[0].metadata["swing_confirmed"] is confirmed
    shorts = run(strategy, mirror(cs))
    assert [c.direction for c in shorts] == [Direction.SHORT]
    assert shorts[0].metadata["swing_confirmed"] is confirmed


def test_confirmation_bars_not_yet_closed_do_not_confirm() -> None:
    # 20 confirmation bars after an anchor 74 bars back are closed; 80 are not.
    assert run(make(confirmation=20), retrace(0.618))[0].metadata["swing_confirmed"] is True
    assert run(make(confirmation=80), retrace(0.618))[0].metadata["swing_confirmed"] is False


# -- levels that fail a gate -----------------------------------------------------------------------


def test_a_stop_too_far_away_is_returned_invalid_not_replaced_by_a_fallback() -> None:
    # A deep 65% pullback of a 14% leg: the stop under the anchor is > 5% away. The original
    # fell back to SL = swing - 0.02 R with 1/2/3 R targets; here the candidate stays as is.
    knots = [(0, 60.0), (440, 87.0), (470, 91.0), (525, 90.0), (545, 95.0), (555, 94.0), (585, 104.0)]
    anchor, high = 90.0 - 2 * WICK, HIGH
    cs = path([*knots, (599, high - 0.65 * (high - anchor))])
    assert emas(cs)[0] > emas(cs)[1]
    out = run(make(), cs)
    assert len(out) == 1
    lv = out[0].levels
    assert not lv.valid and lv.reason.startswith("stop ")
    assert lv.stop_loss == pytest.approx(anchor * 0.9925, rel=1e-12)
    risk = lv.entry - lv.stop_loss
    assert lv.take_profits == pytest.approx([lv.entry + m * risk for m in (2.0, 3.5, 4.5)], rel=1e-12)


# -- timeframe, lookback, params ------------------------------------------------------------------


@pytest.mark.parametrize(("timeframe", "expected"), [("1h", "1h"), (None, "15m")])
def test_the_timeframe_comes_from_the_instance_file(timeframe: str | None, expected: str) -> None:
    # Defect: the original read `timeframe` while its watchlists said `period`, so every row
    # ran on 5m. Here the file's `timeframe` (default 15m) is what the strategy fetches.
    spec = StrategyFile(symbols=["ETH/BTC"], timeframe=timeframe)
    entry = StrategyEntry("fib_swing", Path("fib_swing.toml"), spec)
    inst, problems = build_instance(entry, Registry.discover(), RiskSettings())
    assert problems == [] and inst is not None
    assert inst.timeframe == expected
    assert inst.strategy.needs().timeframes == (expected,)


def test_only_bars_with_a_full_lookback_behind_them_are_reported() -> None:
    strategy = make()
    assert strategy.lookback == 200 + 400
    cs = retrace(0.618)
    assert run(strategy, cs.tail(599)) == []
    assert [c.bar for c in run(make(warmup=300), cs.tail(500))] == [499]


def test_declared_defaults_follow_the_spec() -> None:
    p = FibSwingParams()
    assert (p.swing_lookback, p.confirmation, p.window, p.fast_ema, p.slow_ema) == (10, 5, 200, 20, 50)
    assert (p.tolerance, p.volume_period, p.warmup) == (0.02, 20, 400)
    risk = RiskSettings().merged(FibSwingStrategy.RISK)
    assert (risk.tp1_mult, risk.tp2_mult, risk.tp3_mult, risk.min_rr) == (2.0, 3.5, 4.5, 2.0)
    assert (FibSwingStrategy.DEFAULT_TIMEFRAME, FibSwingStrategy.DEFAULT_COOLDOWN) == ("15m", 3600)


@pytest.mark.parametrize("bad", [{"window": 41}, {"tolerance": 0}, {"warmup": -1}, {"timeframe": "1h"}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FibSwingParams(**bad)


def test_fires_valid_both_ways_on_real_data(sample_candles: Callable[[str], Candles]) -> None:
    out = run(make(), sample_candles("LTC-BTC"))
    valid = [c for c in out if c.levels.valid]
    assert {c.direction for c in valid} == {Direction.LONG, Direction.SHORT}
    for c in valid:
        s = c.direction.sign
        tp1, tp2, tp3 = c.levels.take_profits
        assert s * (tp3 - tp2) > 0 and s * (tp2 - tp1) > 0
    assert {c.metadata["swing_confirmed"] for c in out if c.direction is Direction.SHORT} == {True}
