"""volume_profile on hand-built swings: the profile between two pivots, crosses of its levels,
pivots confirmed only `pivot_length` bars later, and the value area's growth rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies._profile import value_area
from strategies.volume_profile import VolumeProfileParams, VolumeProfileStrategy, pivots

START_MS, STEP_MS = 1_515_560_100_000, 300_000
RAMP = 60  # quiet rising bars before the swing: strictly rising highs and lows have no pivots
SMALL = {"pivot_length": 2, "profile_bins": 4, "window": 60}

# The swing (high, low, close, volume): a pivot high at P0, a pivot low at P1 = P0 + 3.
# Range [10, 12] in 4 bins of 0.5; mid-prices 11.6, 11.25, 10.75, 10.25 put the volumes
# 10, 40, 30, 15 into bins 3, 2, 1, 0. POC = bin 2 (centre 11.25); the value area (68 % of 95
# = 64.6) grows from 40 to the heavier neighbour, bin 1 (30): 70 → VAL 10.5, VAH 11.5.
SWING = [
    (12.0, 11.2, 11.6, 10.0),
    (11.6, 10.9, 11.25, 40.0),
    (11.2, 10.3, 10.75, 30.0),
    (10.5, 10.0, 10.25, 15.0),
]
P0, P1 = RAMP, RAMP + 3


def make(**params: object) -> VolumeProfileStrategy:
    merged = {**SMALL, **params}
    return VolumeProfileStrategy(VolumeProfileParams(**merged), RiskSettings(), "5m")


def run(strategy: VolumeProfileStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/BTC", timeframe="5m", candles=cs))


def market(after: Sequence[tuple[float, float, float, float]]) -> Candles:
    """Ramp, the swing, then `after` bars (high, low, close, volume); opens at the previous close."""
    rows = [(8.05 + 0.01 * i, 8.0 + 0.01 * i, 8.025 + 0.01 * i, 1.0) for i in range(RAMP)]
    rows += SWING + list(after)
    h, lo, c, v = (np.array(x, dtype=np.float64) for x in zip(*rows, strict=True))
    o = np.concatenate([[c[0]], c[:-1]])
    ts = START_MS + STEP_MS * np.arange(len(c), dtype=np.int64)
    return Candles(ts, o, h, lo, c, v)


def mirror(cs: Candles, k: float = 22.0) -> Candles:
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


# Two bars confirm the pivot low (lows above 10), closing under VAL; then a close above it.
CONFIRM = [(10.45, 10.1, 10.4, 1.0), (10.45, 10.15, 10.4, 1.0)]
CROSS_VAL = (10.65, 10.35, 10.6, 1.0)


def test_the_swing_has_exactly_the_two_intended_pivots() -> None:
    cs = market([*CONFIRM, CROSS_VAL, (10.7, 10.5, 10.6, 1.0), (10.7, 10.5, 10.6, 1.0)])
    assert pivots(cs, 2).tolist() == [P0, P1]


def test_close_crossing_up_through_val_gives_a_long_with_the_spec_levels() -> None:
    cs = market([*CONFIRM, CROSS_VAL])
    out = run(make(), cs)

    assert len(out) == 1
    cand = out[0]
    assert (cand.bar, cand.direction, cand.sub_key) == (len(cs) - 1, Direction.LONG, "val_up")
    md = cand.metadata
    assert (md["kind"], md["events"]) == ("val_up", ["val_up"])
    assert (md["poc"], md["vah"], md["val"]) == pytest.approx((11.25, 11.5, 10.5), rel=1e-12)
    assert (md["pivot_from_ms"], md["pivot_to_ms"]) == (int(cs.ts[P0]), int(cs.ts[P1]))
    # VA = 1.0 → risk unit 0.5, buffer 0.05: SL = VAL - 0.05; TPs at 1.2 / 1.8 units.
    lv = cand.levels
    assert lv.entry == 10.6
    assert lv.stop_loss == pytest.approx(10.45, rel=1e-12)
    assert lv.take_profits == pytest.approx((11.2, 11.5), rel=1e-12)
    assert lv.rr1 == pytest.approx(4.0)
    assert lv.valid, lv.reason
    assert cand.rationale[0] == "close crossed above VAL 10.5"


def test_crossing_down_through_vah_gives_a_short_mirrored() -> None:
    cs = mirror(market([*CONFIRM, CROSS_VAL]))
    out = run(make(), cs)

    assert [(c.direction, c.sub_key) for c in out] == [(Direction.SHORT, "vah_down")]
    md, lv = out[0].metadata, out[0].levels
    assert (md["poc"], md["vah"], md["val"]) == pytest.approx((22 - 11.25, 22 - 10.5, 22 - 11.5), rel=1e-12)
    assert lv.entry == pytest.approx(11.4)
    assert lv.stop_loss == pytest.approx(11.55, rel=1e-12)
    assert lv.take_profits == pytest.approx((10.8, 10.5), rel=1e-12)
    assert lv.valid


def test_a_pivot_is_used_only_once_confirmed_no_look_ahead() -> None:
    # The same cross of VAL one bar after the pivot low, before the two bars that confirm it:
    # the profile does not exist yet, so nothing fires — then or later.
    early = market([(10.65, 10.1, 10.6, 1.0), (10.7, 10.15, 10.6, 1.0), (10.7, 10.2, 10.6, 1.0)])
    assert pivots(early, 2).tolist() == [P0, P1]  # visible with hindsight…
    assert run(make(), early) == []  # …but not usable at the bar that crossed
    # Confirmed at P1 + 2: a cross on that very bar is the first that can fire.
    on_time = market([CONFIRM[0], (10.65, 10.15, 10.6, 1.0)])
    assert [c.bar for c in run(make(), on_time)] == [P1 + 2]


def test_both_pivots_must_lie_inside_the_window_ending_at_the_bar() -> None:
    drift = [(10.45 + 0.001 * k, 10.15 + 0.001 * k, 10.4, 1.0) for k in range(40)]  # no pivots
    cs = market([*CONFIRM, *drift, CROSS_VAL])
    # The window ending at the cross must start `pivot_length` bars before P0 to see it.
    t = len(cs) - 1
    reach = t - P0 + 1 + 2
    assert [c.sub_key for c in run(make(window=reach), cs)] == ["val_up"]
    assert run(make(window=reach - 1), cs) == []


def test_a_bar_crossing_two_levels_is_one_candidate_naming_both() -> None:
    # From under VAL (10.4) to above the POC (11.3): one LONG for the bar, cooldown key POC.
    cs = market([*CONFIRM, (11.35, 10.35, 11.3, 1.0)])
    out = run(make(), cs)
    assert len(out) == 1
    md = out[0].metadata
    assert (md["events"], out[0].sub_key, md["kind"]) == (["poc_up", "val_up"], "poc_up", "poc_up")
    assert out[0].rationale[:2] == ("close crossed above POC 11.25", "close crossed above VAL 10.5")
    # Entry far above VAL: the stop is 0.85 away (7.5 %), TP1 0.6 → flagged for rejection.
    lv = out[0].levels
    assert lv.stop_loss == pytest.approx(10.45) and lv.take_profits[0] == pytest.approx(11.9)
    assert lv.rr1 == pytest.approx(0.6 / 0.85)
    assert not lv.valid and lv.reason.startswith("stop 7.52% away exceeds")


def test_stop_falls_back_to_one_unit_when_the_edge_is_not_below_entry() -> None:
    # With no buffer, a close landing exactly on VAL puts VAL - buf on the entry itself.
    cs = market([*CONFIRM, (10.55, 10.35, 10.5, 1.0)])
    out = run(make(buffer_fraction=0.0, min_buffer_pct=0.0), cs)
    assert [c.sub_key for c in out] == ["val_up"]
    lv = out[0].levels
    assert lv.stop_loss == pytest.approx(10.0) and lv.take_profits == pytest.approx((11.1, 11.4))
    assert lv.rr1 == pytest.approx(1.2) and not lv.valid


def test_high_volume_is_flagged_but_does_not_gate() -> None:
    loud = market([*CONFIRM, (10.65, 10.35, 10.6, 100.0)])
    out = run(make(volume_ma_length=5), loud)
    assert out[0].metadata["high_volume"] is True
    assert out[0].rationale[-1].startswith("high volume: ")
    quiet = run(make(volume_ma_length=5), market([*CONFIRM, CROSS_VAL]))
    assert quiet[0].metadata["high_volume"] is False and quiet[0].levels.valid


def test_no_cross_no_signal() -> None:
    assert run(make(), market([*CONFIRM, (10.48, 10.35, 10.45, 1.0)])) == []


# -- value area ---------------------------------------------------------------------------------


def va(hist: Sequence[float], share: float, ties_upper: bool = True) -> tuple[int, int]:
    h = np.array([hist], dtype=np.float64)
    lo, hi = value_area(h, h.argmax(axis=1), share, ties_upper=ties_upper)
    return int(lo[0]), int(hi[0])


def test_value_area_adds_one_neighbour_at_a_time_and_has_no_holes() -> None:
    # Defect fixed: the original added both neighbours per step, skipping the upper one when
    # it was smaller, which left holes. Here: POC 40, then 25 below, then 20 below → [0, 2].
    assert va([20, 25, 40, 5, 10], 0.68) == (0, 2)
    # Grows upward past a light row once the lower side is exhausted.
    assert va([30, 40, 5, 5, 20], 0.9) == (0, 4)
    assert va([0, 0, 100, 0, 0], 0.68) == (2, 2)


def test_value_area_ties_go_up_for_volume_profile_and_down_for_volume() -> None:
    hist = [5, 20, 40, 20, 15]
    assert va(hist, 0.6, ties_upper=True) == (2, 3)
    assert va(hist, 0.6, ties_upper=False) == (1, 2)


@pytest.mark.parametrize("ties_upper", [True, False])
def test_value_area_of_one_profile_equals_the_batched_answer(
    ties_upper: bool, sample_candles: Callable[[str], Candles]
) -> None:
    # Live evaluates one profile (a plain loop), replay hundreds at once (array steps).
    cs = sample_candles("LTC-BTC")
    hist = np.stack([cs.volume[i : i + 25] for i in range(0, 5000, 7)])
    hist[::5, 3:9] = 0.0  # empty rows and ties
    poc = hist.argmax(axis=1)
    batched = value_area(hist, poc, 0.68, ties_upper=ties_upper)
    for j in range(hist.shape[0]):
        one = value_area(hist[j : j + 1], poc[j : j + 1], 0.68, ties_upper=ties_upper)
        assert (one[0][0], one[1][0]) == (batched[0][j], batched[1][j])


# -- real data ----------------------------------------------------------------------------------


def reference_levels(
    cs: Candles, t: int, length: int = 20, bins: int = 25, window: int = 500
) -> tuple[float, ...]:
    """POC, VAH, VAL at bar t by the spec's words, in plain Python."""
    high, low, vol = cs.high.tolist(), cs.low.tolist(), cs.volume.tolist()
    w0 = t - window + 1
    piv = [
        i
        for i in range(w0 + length, t - length + 1)
        if high[i] == max(high[i - length : i + length + 1])
        or low[i] == min(low[i - length : i + length + 1])
    ]
    a, b = piv[-2], piv[-1]
    lo, hi = min(low[a : b + 1]), max(high[a : b + 1])
    step = (hi - lo) / bins
    hist = [0.0] * bins
    for j in range(a, b + 1):
        k = int(((high[j] + low[j]) / 2.0 - lo) / step)
        hist[min(k, bins - 1)] += vol[j]
    poc = hist.index(max(hist))
    bot = top = poc
    acc, total = hist[poc], sum(hist)
    while acc < 0.68 * total and (bot > 0 or top < bins - 1):
        up = hist[top + 1] if top < bins - 1 else -1.0
        down = hist[bot - 1] if bot > 0 else -1.0
        if up >= down:
            top, acc = top + 1, acc + up
        else:
            bot, acc = bot - 1, acc + down
    return lo + (poc + 0.5) * step, lo + (top + 1) * step, lo + bot * step


@pytest.mark.parametrize("pair", ["ETH-BTC", "XLM-BTC"])
def test_profiles_on_real_data_match_the_spec_in_plain_python(
    pair: str, sample_candles: Callable[[str], Candles]
) -> None:
    cs = sample_candles(pair)
    strategy = VolumeProfileStrategy(VolumeProfileParams(), RiskSettings(), "5m")
    out = run(strategy, cs)
    assert sum(c.levels.valid for c in out) > 0
    for cand in out[:: max(1, len(out) // 40)]:
        md = cand.metadata
        # Both anchors confirmed 20 bars before the signal bar, inside its 500-bar window.
        assert md["pivot_to_ms"] <= cs.ts[cand.bar - 20]
        assert md["pivot_from_ms"] >= cs.ts[cand.bar - 499 + 20]
        assert (md["poc"], md["vah"], md["val"]) == pytest.approx(reference_levels(cs, cand.bar), rel=1e-12)


def test_lookback_and_defaults_follow_the_spec() -> None:
    p = VolumeProfileParams()
    assert (p.pivot_length, p.profile_bins, p.value_area_pct, p.volume_ma_length) == (20, 25, 0.68, 89)
    assert (p.high_volume_mult, p.range_risk_fraction, p.buffer_fraction) == (1.618, 0.5, 0.05)
    assert (p.min_risk_pct, p.min_buffer_pct, p.tp1_rr, p.tp2_rr, p.window) == (0.2, 0.05, 1.2, 1.8, 500)
    assert VolumeProfileStrategy.RISK == {}
    assert (VolumeProfileStrategy.DEFAULT_TIMEFRAME, VolumeProfileStrategy.DEFAULT_COOLDOWN) == ("5m", 300)
    strategy = make()
    assert strategy.lookback == 60
    cs = market([*CONFIRM, CROSS_VAL])
    assert run(strategy, cs.tail(59)) == []
    assert [c.bar for c in run(strategy, cs.tail(60))] == [59]


@pytest.mark.parametrize("bad", [{"window": 80}, {"value_area_pct": 0}, {"profile_bins": 1}, {"pivots": 3}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VolumeProfileParams(**bad)
