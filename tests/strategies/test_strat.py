"""strat on hand-built bars: every combo both ways, its priority, HAMMER/SHOOTER, the filters, the levels."""

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
from strategies.strat import StratParams, StratStrategy, bar_types

START_MS, STEP_MS = 1_515_560_100_000, 900_000
Bar = tuple[float, float, float, float]  # open, high, low, close


def make(**params: object) -> StratStrategy:
    return StratStrategy(StratParams(**params), RiskSettings().merged(StratStrategy.RISK), "15m")


def candles(bars: Sequence[Bar]) -> Candles:
    n = len(bars)
    arr = np.asarray(bars, dtype=np.float64)
    ts = START_MS + STEP_MS * np.arange(n, dtype=np.int64)
    return Candles(ts, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], np.ones(n))


def market(tail: Sequence[Bar], *, prefix: int = 460) -> Candles:
    """`prefix` identical quiet bars (H 9.75, L 9.25, close 9.5: each an inside bar, ATR 0.5),
    then `tail`. The quiet closes keep the SMA(50) near 9.5, under every bullish trigger here."""
    return candles([(9.5, 9.75, 9.25, 9.5)] * prefix + list(tail))


def mirror(cs: Candles) -> Candles:
    """The same bars upside down: 2u ↔ 2d, highs ↔ lows, so every setup fires mirrored."""
    k = 40.0
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


def run(strategy: StratStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/BTC", timeframe="15m", candles=cs))


def last(strategy: StratStrategy, cs: Candles) -> list[Candidate]:
    return [c for c in run(strategy, cs) if c.bar == len(cs) - 1]


# Spec example 1: (10.0, 9.0), (10.5, 9.2) = 2u, (10.4, 9.5) = 1, S (10.8, 9.6) = 2u, close_T 10.9.
MEASURED_MOVE: list[Bar] = [
    (9.5, 10.0, 9.0, 9.5),
    (9.5, 10.5, 9.2, 10.3),
    (10.3, 10.4, 9.5, 10.0),
    (10.0, 10.8, 9.6, 10.7),
    (10.7, 10.95, 10.6, 10.9),  # T
]


def test_spec_example_212_measured_move_long_with_setup_bar_stop_and_unit_targets() -> None:
    cs = market(MEASURED_MOVE)
    assert [int(t) for t in bar_types(cs.high, cs.low)[-5:-1]] == [3, 2, 1, 2]  # (3), 2u, 1, 2u

    out = run(make(), cs)
    assert len(out) == 1
    cand = out[0]
    assert cand.bar == len(cs) - 1
    assert cand.direction is Direction.LONG
    assert cand.metadata["setup"] == "212 measured move"
    assert cand.metadata["bar_types"] == "2u-1-2u"
    # The original built the signal with an undefined stop (crash): the stop is S's low.
    assert cand.entry == 10.9
    assert cand.levels.stop_loss == 9.6
    # unit = max(|10.9 - 9.6|, ATR~0.5) = 1.3 → TP1 10.9 + 2.6, TP2 10.9 + 3.9; no TP3.
    assert cand.metadata["atr"] < 1.3
    assert cand.metadata["unit"] == pytest.approx(1.3)
    assert cand.levels.take_profits == pytest.approx((13.5, 14.8))
    assert cand.levels.valid
    assert cand.metadata["sma"] < 10.9
    assert cand.rationale[0] == "212 measured move bullish setup (bar types 2u-1-2u)"
    assert cand.rationale[1] == "trigger bar closed above the setup high"


def test_mirrored_measured_move_is_a_short_with_the_stop_at_the_setup_high() -> None:
    cs = mirror(market(MEASURED_MOVE))
    out = run(make(), cs)
    assert [c.direction for c in out] == [Direction.SHORT]
    cand = out[0]
    assert cand.metadata["setup"] == "212 measured move"
    assert cand.entry == pytest.approx(40 - 10.9)
    assert cand.levels.stop_loss == pytest.approx(40 - 9.6)
    assert cand.levels.take_profits == pytest.approx((40 - 13.5, 40 - 14.8))
    assert cand.rationale[1] == "trigger bar closed below the setup low"


def bars_of(types: Sequence[str]) -> list[Bar]:
    """A base bar (10, 9) followed by bars of the given types; each closes mid-range."""
    h, lo = 10.0, 9.0
    out: list[Bar] = [(9.5, h, lo, 9.5)]
    step = {"2u": (0.5, 0.2), "2d": (-0.2, -0.5), "1": (-0.1, 0.1), "3": (0.5, -0.5)}
    for t in types:
        dh, dl = step[t]
        h, lo = h + dh, lo + dl
        out.append(((h + lo) / 2, h, lo, (h + lo) / 2))
    return out


def triggered_long(types: Sequence[str]) -> list[Bar]:
    """Bars of `types` (the last is S) and a trigger bar closing 0.1 above S's high."""
    bars = bars_of(types)
    s_high = bars[-1][1]
    return [*bars, (s_high - 0.05, s_high + 0.15, s_high - 0.1, s_high + 0.1)]


# (b2, b1, b0=S) bullish sequences; the bearish ones are their mirror images.
COMBOS = [
    ("222", ["2u", "2u", "2u"]),
    ("212 measured move", ["2u", "1", "2u"]),
    ("322", ["3", "2d", "2u"]),
    ("212 reversal", ["2d", "1", "2u"]),
    ("32", ["1", "3", "2u"]),
    ("22", ["1", "2d", "2u"]),
]


@pytest.mark.parametrize(("name", "types"), COMBOS, ids=[c[0] for c in COMBOS])
def test_every_combo_fires_long_and_mirrored_short(name: str, types: list[str]) -> None:
    cs = market(triggered_long(types))
    up = last(make(), cs)
    assert [(c.direction, c.metadata["setup"]) for c in up] == [(Direction.LONG, name)]
    assert up[0].metadata["bar_types"] == "-".join(types)
    assert up[0].levels.stop_loss == cs.low[-2]

    down = last(make(), mirror(cs))
    assert [(c.direction, c.metadata["setup"]) for c in down] == [(Direction.SHORT, name)]
    assert down[0].metadata["bar_types"] == "-".join({"2u": "2d", "2d": "2u"}.get(t, t) for t in types)
    assert down[0].levels.stop_loss == pytest.approx(40 - cs.low[-2])


def test_spec_example_322_is_named_322_not_22() -> None:
    # The original listed 22 first, so (3, 2d, 2u) was reported as a 22 (spec defect).
    out = last(make(), market(triggered_long(["3", "2d", "2u"])))
    assert out[0].metadata["setup"] == "322"
    assert out[0].rationale[0].startswith("322 bullish")


@pytest.mark.parametrize(
    ("types", "name"),
    [
        (["2u", "2u", "2u"], "222"),  # also b1 2u … but 222 is first
        (["3", "2u", "2u"], None),  # 2u after 2u without a 2u before: no combo
        (["2u", "3", "2u"], "32"),
        (["2d", "2d", "2u"], "22"),
    ],
)
def test_priority_and_gaps(types: list[str], name: str | None) -> None:
    out = last(make(), market(triggered_long(types)))
    assert [c.metadata["setup"] for c in out] == ([name] if name else [])


def test_spec_example_hammer_without_a_combo() -> None:
    # S = O 10.0 H 10.1 L 9.0 C 10.05, an inside bar of a wide bar: no combo, body in the top 25%.
    tail: list[Bar] = [(9.5, 10.5, 8.5, 9.5), (10.0, 10.1, 9.0, 10.05), (10.05, 10.3, 10.0, 10.2)]
    cs = market(tail)
    out = last(make(), cs)
    assert [(c.direction, c.metadata["setup"]) for c in out] == [(Direction.LONG, "HAMMER")]
    cand = out[0]
    assert cand.rationale[0] == "HAMMER setup (bar types 1-3-1)"
    assert cand.levels.stop_loss == 9.0
    unit = max(10.2 - 9.0, float(cand.metadata["atr"]))
    assert cand.levels.take_profits == pytest.approx((10.2 + 2 * unit, 10.2 + 3 * unit))

    # Mirrored, the same shape is a SHOOTER → SHORT.
    down = last(make(), mirror(cs))
    assert [(c.direction, c.metadata["setup"]) for c in down] == [(Direction.SHORT, "SHOOTER")]


def test_mid_range_setup_bar_without_a_combo_gives_nothing() -> None:
    tail: list[Bar] = [(9.5, 10.5, 8.5, 9.5), (9.4, 10.1, 9.0, 9.7), (9.7, 10.3, 9.6, 10.2)]
    assert last(make(), market(tail)) == []


def test_zero_range_setup_bar_is_skipped() -> None:
    tail: list[Bar] = [(9.5, 10.5, 8.5, 9.5), (10.0, 10.0, 10.0, 10.0), (10.0, 10.3, 10.0, 10.2)]
    assert last(make(), market(tail)) == []


def test_trigger_must_close_beyond_the_setup_bar() -> None:
    bars = MEASURED_MOVE[:-1]
    # T trades above S's high (10.8) but closes back inside: no trigger.
    assert last(make(), market([*bars, (10.7, 11.0, 10.6, 10.8)])) == []
    assert len(last(make(), market([*bars, (10.7, 11.0, 10.6, 10.81)]))) == 1


def test_sma_filter_blocks_a_long_below_the_average() -> None:
    # Quiet bars at 11.5 put SMA(50) above the trigger close.
    cs = candles([(11.5, 11.75, 11.25, 11.5)] * 460 + MEASURED_MOVE)
    sma = talib.SMA(cs.close, timeperiod=50)[-2]
    assert sma > 10.9
    assert last(make(), cs) == []
    assert len(last(make(sma_period=3), cs)) == 1  # the filter is what held it back


def test_unit_is_at_least_one_atr_when_the_stop_is_tight() -> None:
    # A narrow 212: S (10.05, 9.95)… the stop 10.0 is 0.15 under entry, ATR ≈ 0.5 is the unit.
    tail: list[Bar] = [
        (9.6, 9.7, 9.55, 9.65),
        (9.9, 10.0, 9.6, 9.95),
        (9.9, 9.98, 9.7, 9.9),
        (9.95, 10.05, 9.75, 10.0),
        (10.0, 10.2, 9.95, 10.15),
    ]
    out = last(make(), market(tail))
    assert len(out) == 1
    cand = out[0]
    atr = float(cand.metadata["atr"])
    assert abs(cand.entry - cand.levels.stop_loss) < atr
    assert cand.metadata["unit"] == atr
    assert cand.levels.take_profits == pytest.approx((10.15 + 2 * atr, 10.15 + 3 * atr))
    assert cand.levels.rr1 > 2.0


def test_no_calculator_gate_a_wide_stop_is_still_valid() -> None:
    # A 212 with S 30% tall: far beyond the 5% max stop, but the spec has no calculator gate.
    tail: list[Bar] = [
        (9.5, 10.0, 9.0, 9.5),
        (9.5, 12.0, 9.2, 11.0),
        (11.0, 11.5, 9.5, 10.0),
        (10.0, 12.5, 9.6, 12.0),
        (12.0, 12.8, 11.9, 12.6),
    ]
    out = last(make(), market(tail))
    assert len(out) == 1
    lv = out[0].levels
    assert abs(lv.entry - lv.stop_loss) / lv.entry > 0.05
    assert lv.valid
    assert lv.take_profits == pytest.approx((12.6 + 2 * 3.0, 12.6 + 3 * 3.0))


def test_fires_with_51_bars_the_original_never_had() -> None:
    # The original's 50-bar fetch minus the forming bar left 49 for an SMA(50): it never fired.
    strategy = make(warmup=0)
    assert strategy.lookback == 51
    cs = market(MEASURED_MOVE)
    assert [c.bar for c in run(strategy, cs.tail(51))] == [50]
    assert run(strategy, cs.tail(50)) == []


def test_only_bars_with_a_full_lookback_are_reported() -> None:
    strategy = make()
    assert strategy.lookback == 51 + 400
    cs = market(MEASURED_MOVE)
    assert run(strategy, cs.tail(strategy.lookback - 1)) == []
    assert [c.bar for c in run(strategy, cs.tail(strategy.lookback))] == [strategy.lookback - 1]


def test_declared_defaults_follow_the_spec() -> None:
    p = StratParams()
    assert (p.sma_period, p.hammer_zone, p.atr_period, p.atr_mode, p.warmup) == (50, 0.25, 14, "wilder", 400)
    assert (StratStrategy.DEFAULT_TIMEFRAME, StratStrategy.DEFAULT_COOLDOWN) == ("15m", 3600)
    risk = RiskSettings().merged(StratStrategy.RISK)
    assert (risk.sl_mult, risk.tp1_mult, risk.tp2_mult, risk.tp3_mult, risk.min_rr) == (
        1.5,
        2.0,
        3.0,
        None,
        1.3,
    )


@pytest.mark.parametrize("bad", [{"hammer_zone": 0.5}, {"warmup": -1}, {"atr_mode": "ema"}, {"sma": 50}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StratParams(**bad)


def test_real_data_levels_are_on_the_right_side(sample_candles: Callable[[str], Candles]) -> None:
    cs = sample_candles("ETH-BTC")
    out = run(make(), cs)
    assert out
    for c in out:
        s = c.direction.sign
        assert s * (c.entry - c.levels.stop_loss) > 0
        assert c.levels.valid
        assert c.levels.rr1 >= 2.0 - 1e-9
        assert all(type(v) is float for k, v in c.metadata.items() if k not in ("setup", "bar_types"))
