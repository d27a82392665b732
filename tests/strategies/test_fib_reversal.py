"""fib_reversal on hand-built swings: the retracement zones, bar support, presets, no look-ahead."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies._swings import RangeExtreme, latest_known, swing_highs, swing_lows
from strategies.fib_reversal import PRESETS, FibReversalParams, FibReversalStrategy

START_MS, STEP_MS = 1_515_560_100_000, 900_000
WICK = 0.01


def make(**params: object) -> FibReversalStrategy:
    return FibReversalStrategy(
        FibReversalParams(**params), RiskSettings().merged(FibReversalStrategy.RISK), "15m"
    )


def run(strategy: FibReversalStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/USDT", timeframe="15m", candles=cs))


def path(knots: list[tuple[int, float]], last: tuple[float, float, float, float] | None = None) -> Candles:
    """Closes interpolated between (bar, price) knots, each bar opening at the previous close.

    Turning knots get a wick twice as long as the other bars', so each turn is exactly one swing
    at price ± 2·WICK. `last` = (open, high, low, close) is appended as one more bar.
    """
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
    if last is not None:
        o, h, lo, c = (np.append(x, v) for x, v in zip((o, h, lo, c), last, strict=True))
    ts = START_MS + STEP_MS * np.arange(c.shape[0], dtype=np.int64)
    return Candles(ts, o, h, lo, c, np.ones(c.shape[0]))


def mirror(cs: Candles) -> Candles:
    """The same market upside down: every LONG setup becomes the SHORT one."""
    k = 2.0 * float(cs.high.max())
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


# Swing low 100 at bar 30, swing high 110 at bar 60, pullback to bar 99 (the signal bar).
LOW, HIGH = 100.0 - 2 * WICK, 110.0 + 2 * WICK
R = HIGH - LOW


def pullback(to: float, *, green: bool = True, body: float = 0.1) -> Candles:
    """The up-swing, then a steady pullback; the last bar closes at `to` (green: from below)."""
    o = to - body if green else to + body
    return path(
        [(0, 104.0), (30, 100.0), (60, 110.0), (98, o)], (o, max(o, to) + WICK, min(o, to) - WICK, to)
    )


def retrace(f: float) -> float:
    """Textbook retracement of the up-swing: f of the range back down from the high."""
    return HIGH - f * R


# -- the zones -----------------------------------------------------------------------------------


def test_golden_pocket_long_with_structure_levels_from_the_swing_low() -> None:
    cs = pullback(retrace(0.63))
    out = run(make(), cs)

    assert [(c.bar, c.direction) for c in out] == [(99, Direction.LONG)]
    cand = out[0]
    entry = cs.close[-1]
    assert cand.entry == entry
    sl = LOW * (1 - 0.0075)
    risk = entry - sl
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    # TP1/TP2 only: the spec gives no TP3 for fib_reversal.
    assert cand.levels.take_profits == pytest.approx([entry + 2.0 * risk, entry + 3.5 * risk], rel=1e-12)
    assert cand.levels.valid, cand.levels.reason
    assert cand.metadata["zone"] == "GOLDEN_POCKET" and cand.metadata["level"] == 0.618
    assert cand.metadata["swing_high"] == pytest.approx(HIGH) and cand.metadata["swing_low"] == pytest.approx(
        LOW
    )
    assert (cand.metadata["swing_high_bars_ago"], cand.metadata["swing_low_bars_ago"]) == (39, 69)
    assert cand.metadata["fib_price"] == pytest.approx(retrace(0.618))
    assert cand.rationale[1].startswith("close ") and "golden pocket" in cand.rationale[1]
    assert cand.confidence is None


@pytest.mark.parametrize(
    ("f", "zone", "level"),
    [
        (0.60, "GOLDEN_POCKET", 0.618),  # pocket .618-.65 widened by 0.02 R on both sides
        (0.665, "GOLDEN_POCKET", 0.618),
        (0.59, "STANDARD", 0.618),  # below .598: within 0.05 R of .618
        (0.52, "STANDARD", 0.5),
        (0.40, "STANDARD", 0.382),
        (0.34, "STANDARD", 0.382),
    ],
)
def test_zones_are_textbook_retracements_from_the_newer_swing(f: float, zone: str, level: float) -> None:
    # Defect: the original measured levels from the older swing (low + f·R for a LONG), so its
    # ".618" was the textbook .382. Here a close 38.2% down from the high is labelled .382.
    out = run(make(), pullback(retrace(f)))
    assert [(c.metadata["zone"], c.metadata["level"]) for c in out] == [(zone, level)]


@pytest.mark.parametrize("f", [0.25, 0.44, 0.69, 0.9])
def test_a_close_between_the_zones_gives_nothing(f: float) -> None:
    assert run(make(), pullback(retrace(f))) == []


def test_the_standard_band_is_tolerance_times_the_range() -> None:
    inside = pullback(retrace(0.5) + 0.0499 * R)
    assert [c.metadata["level"] for c in run(make(), inside)] == [0.5]
    assert run(make(tolerance=0.049), inside) == []


# -- the bar must support the turn ------------------------------------------------------------


def test_a_red_bar_does_not_support_a_long() -> None:
    assert run(make(), pullback(retrace(0.63), green=False)) == []


def test_a_red_hammer_supports_a_long() -> None:
    to = retrace(0.63)
    o = to + 0.1
    # Lower wick 0.25 >= 2 x body 0.1.
    cs = path([(0, 104.0), (30, 100.0), (60, 110.0), (98, o)], (o, o + WICK, to - 0.25, to))
    out = run(make(), cs)
    assert [c.direction for c in out] == [Direction.LONG]
    assert out[0].rationale[2] == "bar supports it: lower wick ≥ 2x body"
    # The same bar with a shorter wick (0.15 < 0.2) does not.
    cs = path([(0, 104.0), (30, 100.0), (60, 110.0), (98, o)], (o, o + WICK, to - 0.15, to))
    assert run(make(), cs) == []


def test_short_is_the_mirror_with_the_stop_above_the_swing_high() -> None:
    cs = mirror(pullback(retrace(0.63)))
    out = run(make(), cs)

    assert [c.direction for c in out] == [Direction.SHORT]
    cand = out[0]
    swing_high = float(cs.high[30])
    assert cand.metadata["swing_high"] == swing_high
    sl = swing_high * 1.0075
    risk = sl - cand.entry
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx(
        [cand.entry - 2 * risk, cand.entry - 3.5 * risk], rel=1e-12
    )
    assert cand.metadata["zone"] == "GOLDEN_POCKET"
    # The mirrored close lies .63 R up from the swing low: low + f·R, the textbook SHORT level.
    low = float(cs.low[60])
    assert cand.entry == pytest.approx(low + 0.63 * (swing_high - low))
    # A green bar (the mirror of a red one) does not support a SHORT.
    assert run(make(), mirror(pullback(retrace(0.63), green=False))) == []


# -- the structure ------------------------------------------------------------------------------


def test_a_low_below_the_swing_low_cancels_the_long() -> None:
    cs = pullback(retrace(0.63))
    cs.low[95] = LOW - 0.05  # a wick through the low that started the move, 4 bars ago
    assert run(make(), cs) == []


def test_confirmation_counts_bars_since_the_older_swing() -> None:
    cs = pullback(retrace(0.63))
    assert len(run(make(confirmation=69), cs)) == 1  # the swing low is 69 bars old
    assert run(make(confirmation=70), cs) == []


def test_a_swing_is_used_only_once_its_right_side_has_closed() -> None:
    # An up-swing from bar 40 peaking at bar 92, then 7 bars down. With the fast preset (L = 5)
    # the high is confirmed at bar 97; with medium (L = 10) it would need bar 102, so at bar 99
    # the medium preset has no swing high at all - it does not peek.
    hi = 110.0 + 2 * WICK
    to = hi - 0.63 * (hi - LOW)
    o = to - 0.1
    cs = path([(0, 104.0), (40, 100.0), (92, 110.0), (98, o)], (o, to + WICK, o - WICK, to))
    fast = run(make(preset="fast"), cs)
    assert [(c.direction, c.metadata["swing_high_bars_ago"]) for c in fast] == [(Direction.LONG, 7)]
    assert run(make(), cs) == []
    assert run(make(preset="safe"), cs) == []


def test_presets_and_overrides() -> None:
    assert PRESETS == {"fast": (5, 2), "medium": (10, 3), "safe": (15, 4)}
    assert make().describe() == {"lookback": 100, "swing_lookback": 10, "confirmation": 3}
    assert make(preset="safe").describe()["swing_lookback"] == 15
    assert make(preset="fast", swing_lookback=7).describe()["swing_lookback"] == 7


# -- levels that fail a gate --------------------------------------------------------------------


def test_a_stop_too_far_away_is_returned_invalid_not_replaced() -> None:
    # A 30% swing: the stop under the swing low is > 5% from the entry. The original fell back
    # to tiered stops; here the candidate keeps the structure levels and is flagged invalid.
    hi = 130.0 + 2 * WICK
    to = hi - 0.63 * (hi - LOW)
    o = to - 0.1
    cs = path([(0, 104.0), (30, 100.0), (60, 130.0), (98, o)], (o, to + WICK, o - WICK, to))
    out = run(make(), cs)
    assert len(out) == 1
    lv = out[0].levels
    assert not lv.valid and lv.reason.startswith("stop ")
    assert lv.stop_loss == pytest.approx(LOW * 0.9925, rel=1e-12)
    risk = lv.entry - lv.stop_loss
    assert lv.take_profits == pytest.approx([lv.entry + 2 * risk, lv.entry + 3.5 * risk], rel=1e-12)


# -- window, params, real data ------------------------------------------------------------------


def test_only_bars_with_a_full_window_behind_them_are_reported() -> None:
    cs = pullback(retrace(0.63))
    assert run(make(), cs.tail(99)) == []
    # The same market with 50 more bars in front: the signal moves to bar 149.
    longer = path(
        [(0, 104.0), (80, 100.0), (110, 110.0), (148, retrace(0.63) - 0.1)],
        (retrace(0.63) - 0.1, retrace(0.63) + WICK, retrace(0.63) - 0.1 - WICK, retrace(0.63)),
    )
    assert [c.bar for c in run(make(), longer)] == [149]


def test_swing_helpers_know_a_swing_only_span_bars_later() -> None:
    high = np.array([1, 2, 5, 2, 1, 1, 3, 1, 1], dtype=np.float64)
    is_high = swing_highs(high, 2)
    assert np.flatnonzero(is_high).tolist() == [2, 6]
    assert latest_known(is_high, 2).tolist() == [-1, -1, -1, -1, 2, 2, 2, 2, 6]
    low = -high
    assert np.flatnonzero(swing_lows(low, 2)).tolist() == [2, 6]
    mins = RangeExtreme(high, maximum=False)
    maxs = RangeExtreme(high, maximum=True)
    a, b = np.array([0, 3, 2, 8]), np.array([8, 5, 6, 8])
    assert mins.query(a, b).tolist() == [1, 1, 1, 1]
    assert maxs.query(a, b).tolist() == [5, 2, 5, 1]


def test_declared_defaults_follow_the_spec() -> None:
    p = FibReversalParams()
    assert (p.preset, p.window, p.pocket_pad, p.tolerance) == ("medium", 100, 0.02, 0.05)
    risk = RiskSettings().merged(FibReversalStrategy.RISK)
    assert (risk.tp1_mult, risk.tp2_mult, risk.tp3_mult, risk.min_rr) == (2.0, 3.5, None, 1.5)
    assert (FibReversalStrategy.DEFAULT_TIMEFRAME, FibReversalStrategy.DEFAULT_COOLDOWN) == ("15m", 3600)


@pytest.mark.parametrize("bad", [{"preset": "turbo"}, {"window": 21}, {"swing_lookback": 0}, {"lookback": 5}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FibReversalParams(**bad)


def test_fires_valid_both_ways_on_real_data(sample_candles: Callable[[str], Candles]) -> None:
    out = run(make(), sample_candles("ETH-BTC"))
    valid = [c for c in out if c.levels.valid]
    assert {c.direction for c in valid} == {Direction.LONG, Direction.SHORT}
    assert {c.metadata["zone"] for c in valid} == {"GOLDEN_POCKET", "STANDARD"}
    assert all(len(c.levels.take_profits) == 2 for c in out)
