"""volume on hand-built markets: the factor vote, the rolling profile, its levels, and the defects."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.volume import (
    PATTERNS,
    VolumeParams,
    VolumeStrategy,
    candle_patterns,
    factor_votes,
    latest_mean_volume,
    near_hvn,
    rolling_profiles,
)

START_MS, STEP_MS = 1_515_560_100_000, 900_000
LAST = 600  # bars 0..600: the default lookback is 600, so bars 599 and 600 are evaluated


def make(**params: object) -> VolumeStrategy:
    return VolumeStrategy(VolumeParams(**params), RiskSettings().merged(VolumeStrategy.RISK), "15m")


def run(strategy: VolumeStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="ETH/BTC", timeframe="15m", candles=cs))


def candles(
    o: npt.ArrayLike, h: npt.ArrayLike, lo: npt.ArrayLike, c: npt.ArrayLike, v: npt.ArrayLike
) -> Candles:
    f = [np.asarray(x, dtype=np.float64) for x in (o, h, lo, c, v)]
    ts = START_MS + STEP_MS * np.arange(f[0].shape[0], dtype=np.int64)
    return Candles(ts, *f)


def zigzag(up: float, down: float, n: int = LAST + 1, last_volume: float = 1.0) -> Candles:
    """Odd bars rise by `up` (green), even bars fall by `down` (red); 0.05 % wicks, volume 1."""
    c = [100.0]
    for k in range(1, n):
        c.append(c[-1] * (1 + up) if k % 2 else c[-1] * (1 - down))
    close = np.array(c)
    o = np.concatenate([[close[0]], close[:-1]])
    v = np.ones(n)
    v[-1] = last_volume
    return candles(o, np.maximum(o, close) * 1.0005, np.minimum(o, close) * 0.9995, close, v)


def votes(cs: Candles, **params: object) -> tuple[list[str], list[str]]:
    """Names of the non-profile factors that hold at the last bar, per side."""
    v = factor_votes(cs, VolumeParams(**params), np.array([len(cs) - 1]))
    longs = ["trend", "rsi_band", "rsi_trend", "near_hvn", "pattern", "volume_spike", "buying_pressure"]
    shorts = ["trend", "rsi_band", "near_hvn", "pattern", "volume_spike"]
    return [n for n, m in zip(longs, v.long, strict=True) if m[0]], [
        n for n, m in zip(shorts, v.short, strict=True) if m[0]
    ]


def expected_levels(cand: Candidate) -> tuple[float, float, float]:
    """SL, TP1, TP2 by the spec's formula from the candidate's own profile metadata."""
    md, e = cand.metadata, cand.entry
    if cand.direction is Direction.LONG:
        sl = min(md["val"] - md["row_height"], 0.985 * e)
        r = max(e - sl, 0.01 * e)
        tp1 = max(md["poc"], e + 2 * r)
        return sl, tp1, max(tp1 + r, e + 3 * r)
    sl = max(md["vah"] + md["row_height"], 1.015 * e)
    r = max(sl - e, 0.01 * e)
    tp1 = min(md["poc"], e - 2 * r)
    return sl, tp1, min(tp1 - r, e - 3 * r)


# -- the vote -----------------------------------------------------------------------------------


def test_gentle_uptrend_gives_a_long_from_trend_and_momentum() -> None:
    # Zig-zag up (+0.2 %, -0.1 %): close above SMA20, RSI ~65 → trend, RSI band, RSI-and-trend.
    cs = zigzag(0.002, 0.001)
    out = run(make(), cs)
    assert [(c.bar, c.direction) for c in out] == [(LAST - 1, Direction.LONG), (LAST, Direction.LONG)]
    cand = out[-1]
    assert cand.metadata["factors"] == ["trend", "rsi_band", "rsi_trend"]
    assert cand.confidence == 3.0
    assert (cand.metadata["long_votes"], cand.metadata["short_votes"]) == (3, 0)
    assert 50 < cand.metadata["rsi"] < 80 and cand.entry > cand.metadata["sma"]
    sl, tp1, tp2 = expected_levels(cand)
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx((tp1, tp2), rel=1e-12)
    assert cand.levels.rr1 == pytest.approx(2.0) and cand.levels.valid
    assert cand.rationale == (
        "close above SMA20",
        f"RSI {cand.metadata['rsi']:.1f} in 45-80",
        "RSI above 50 with close above SMA20",
    )


def test_stop_beyond_five_percent_is_flagged_not_replaced_by_a_fallback() -> None:
    # Defect fixed: a stop over 5 % away went out through a fallback. A steep rise leaves the
    # value area far below: the candidate comes back flagged for the engine to reject.
    out = run(make(), zigzag(0.004, 0.002))
    assert out and all(c.direction is Direction.LONG for c in out)
    lv = out[-1].levels
    assert lv.stop_loss == pytest.approx(expected_levels(out[-1])[0], rel=1e-12)
    assert not lv.valid and "exceeds max 5.0%" in lv.reason


def test_downtrend_with_a_spike_on_a_red_bar_gives_a_short() -> None:
    # Defect fixed: the original counted every volume spike for LONG; a red spike votes SHORT.
    cs = zigzag(0.002, 0.004, last_volume=5.0)  # the last bar falls: red
    out = run(make(), cs)
    assert [(c.bar, c.direction) for c in out] == [(LAST, Direction.SHORT)]
    cand = out[0]
    assert cand.metadata["factors"] == ["trend", "rsi_band", "volume_spike"]
    assert cand.confidence == 1 + 1 + 2
    assert cand.metadata["volume_ratio"] == pytest.approx(5.0 / 1.2)  # SMA20 of 19 ones and a 5
    sl, tp1, tp2 = expected_levels(cand)
    assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx((tp1, tp2), rel=1e-12)
    assert cand.levels.stop_loss > cand.entry > cand.levels.take_profits[0] > cand.levels.take_profits[1]


def test_a_spike_on_a_green_bar_votes_long_not_short() -> None:
    down = zigzag(0.002, 0.004, n=LAST)  # ends on a green bar (index 599 rises)
    v = down.volume.copy()
    v[-1] = 5.0
    cs = candles(down.open, down.high, down.low, down.close, v)
    longs, shorts = votes(cs)
    assert "volume_spike" in longs and "volume_spike" not in shorts
    # The green spike also makes the latest green bars out-trade the red ones.
    assert "buying_pressure" in longs
    assert shorts == ["trend", "rsi_band"]


def test_rsi_in_both_bands_votes_long_only() -> None:
    # The SHORT RSI band (20-55) is an else-if of the LONG one (45-80): RSI ~48 is LONG's.
    cs = zigzag(0.003, 0.003)
    rsi = factor_votes(cs, VolumeParams(), np.array([LAST])).rsi[0]
    assert 45 < rsi < 55
    longs, shorts = votes(cs)
    assert "rsi_band" in longs and "rsi_band" not in shorts


def test_a_tie_fires_nothing_even_with_one_factor_needed() -> None:
    cs = zigzag(0.003, 0.003)
    assert votes(cs) == (["rsi_band"], ["trend"])
    assert [c.bar for c in run(make(min_factors=1), cs)] == [LAST - 1]  # 600 is a 1-1 tie


def test_two_factors_are_not_enough() -> None:
    cs = zigzag(0.002, 0.004)  # SHORT: trend and RSI band only
    assert votes(cs)[1] == ["trend", "rsi_band"]
    assert run(make(), cs) == []
    assert [c.direction for c in run(make(min_factors=2), cs) if c.bar == LAST] == [Direction.SHORT]


# -- building blocks ----------------------------------------------------------------------------


def test_candle_patterns_follow_the_spec_definitions() -> None:
    # bar 1: Hammer (§4.6 example); bar 3: bullish engulfing after a red bar; bar 4: a red
    # shooting star; bar 6: bearish engulfing after a green bar; bar 7: a plain bar.
    o = [101.0, 100.0, 102.0, 99.8, 102.0, 100.0, 101.05, 100.0]
    h = [101.5, 101.2, 102.1, 102.6, 105.1, 101.1, 101.2, 100.5]
    lo = [100.5, 97.5, 99.9, 99.5, 101.45, 99.9, 99.0, 99.5]
    c = [101.0, 101.0, 100.0, 102.5, 101.5, 101.0, 99.5, 100.2]
    cs = candles(o, h, lo, c, np.ones(8))
    assert [PATTERNS[k] for k in candle_patterns(cs, np.arange(8))] == [
        "",
        "hammer",
        "",
        "bullish engulfing",
        "shooting star",
        "",
        "bearish engulfing",
        "",
    ]


def test_buying_pressure_compares_the_latest_three_green_and_red_bars() -> None:
    green = np.array([1, 0, 1, 0, 1, 1, 0, 0], dtype=bool)
    red = ~green
    vol = np.array([9.0, 1.0, 2.0, 1.0, 3.0, 4.0, 2.0, 3.0])
    at = np.array([7])
    g_sum, g_n = latest_mean_volume(green, vol, at, bars=20, count=3)
    r_sum, r_n = latest_mean_volume(red, vol, at, bars=20, count=3)
    assert (g_sum[0], g_n[0]) == (2.0 + 3.0 + 4.0, 3)  # bars 2, 4, 5 — not the older 9
    assert (r_sum[0], r_n[0]) == (1.0 + 2.0 + 3.0, 3)
    # Only bars within the last `bars` count: with 4, green bars 4 and 5 remain.
    g_sum, g_n = latest_mean_volume(green, vol, at, bars=4, count=3)
    assert (g_sum[0], g_n[0]) == (7.0, 2)


def test_profile_rows_take_the_whole_volume_of_every_bar_covering_their_centre() -> None:
    # 100-bar profile of 4 rows over [10, 14]: centres 10.5, 11.5, 12.5, 13.5. 96 flat bars at
    # 12.0 (between centres: no row), then bars covering all rows (1), row 0 (2), rows 2-3 (3),
    # and exactly the centre 11.5 (4, an edge case of the inclusive test).
    lo = [12.0] * 96 + [10.0, 10.0, 12.0, 11.5]
    hi = [12.0] * 96 + [14.0, 11.0, 14.0, 11.5]
    v = [1.0] * 96 + [1.0, 2.0, 3.0, 4.0]
    cs = candles(lo, hi, lo, hi, v)
    hist, bottom, height, poc, va_lo, va_hi = rolling_profiles(cs, np.array([99]), 100, 4, 0.70)
    assert hist[0].tolist() == [3.0, 5.0, 4.0, 4.0]
    assert (bottom[0], height[0], poc[0]) == (10.0, 1.0, 1)
    # 70 % of 16 = 11.2: from 5, the upper neighbour 4 beats the lower 3 twice → rows 1-3.
    assert (va_lo[0], va_hi[0]) == (1, 3)
    centres = 10.5 + np.arange(4)[None, :]
    # No row exceeds 1.5 x the mean (4): no HVN. Double row 0 and it is one.
    assert not near_hvn(hist, centres, height, np.array([10.6]), 1.5, 2.0)[0]
    hvn = np.array([[12.0, 5.0, 4.0, 4.0]])
    assert near_hvn(hvn, centres, height, np.array([12.4]), 1.5, 2.0)[0]  # 1.9 rows away
    assert not near_hvn(hvn, centres, height, np.array([12.5]), 1.5, 2.0)[0]  # 2 rows: not < 2


@pytest.mark.parametrize("pair", ["NXT-BTC", "ADA-BTC"])
def test_rolling_profiles_cover_exactly_the_rows_whose_centre_is_in_the_bar(
    pair: str, sample_candles: Callable[[str], Candles]
) -> None:
    # Coarse tick grids put prices exactly on row centres; the closed form alone misses some.
    cs = sample_candles(pair)
    at = np.arange(99, len(cs))
    hist, bottom, height, *_ = rolling_profiles(cs, at, 100, 24, 0.70)
    idx = at[:, None] + np.arange(-99, 1)
    centres = bottom[:, None, None] + (np.arange(24) + 0.5) * height[:, None, None]
    cover = (cs.low[idx][:, :, None] <= centres) & (centres <= cs.high[idx][:, :, None])
    brute = (cover * cs.volume[idx][:, :, None]).sum(axis=1)
    np.testing.assert_allclose(hist, brute, rtol=1e-9, atol=1e-9 * float(cs.volume.max()))


def reference(
    cs: Candles, t: int, bars: int = 100, rows: int = 24
) -> tuple[float, float, float, float, bool]:
    """POC, VAH, VAL, row height and near-HVN at bar t, by the spec's words in plain Python."""
    low, high, vol = (
        cs.low[t - bars + 1 : t + 1].tolist(),
        cs.high[t - bars + 1 : t + 1].tolist(),
        cs.volume[t - bars + 1 : t + 1].tolist(),
    )
    bottom = min(low)
    h = (max(high) - bottom) / rows
    centres = [bottom + (j + 0.5) * h for j in range(rows)]
    row = [sum(v for lo_, hi_, v in zip(low, high, vol, strict=True) if lo_ <= x <= hi_) for x in centres]
    poc = row.index(max(row))
    bot = top = poc
    acc, total = row[poc], sum(row)
    while acc < 0.70 * total and (bot > 0 or top < rows - 1):
        up = row[top + 1] if top < rows - 1 else -1.0  # -1: no row on that side
        down = row[bot - 1] if bot > 0 else -1.0
        if up > down:  # ties go down
            top, acc = top + 1, acc + up
        else:
            bot, acc = bot - 1, acc + down
    nodes = [centres[j] for j in range(rows) if row[j] > 1.5 * total / rows]
    close = float(cs.close[t])
    near = bool(nodes) and min(abs(x - close) for x in nodes) < 2 * h
    return centres[poc], centres[top], centres[bot], h, near


@pytest.mark.parametrize("pair", ["ETH-BTC", "NXT-BTC"])
def test_profiles_and_levels_on_real_data_match_the_spec_in_plain_python(
    pair: str, sample_candles: Callable[[str], Candles]
) -> None:
    cs = sample_candles(pair)
    out = run(make(), cs)
    assert sum(c.levels.valid for c in out) > 0
    assert any("near_hvn" in c.metadata["factors"] for c in out)
    for cand in out[:: max(1, len(out) // 60)]:
        md = cand.metadata
        poc, vah, val, h, near = reference(cs, cand.bar)
        assert (md["poc"], md["vah"], md["val"], md["row_height"]) == pytest.approx(
            (poc, vah, val, h), rel=1e-12
        )
        side_ok = cand.entry < poc if cand.direction is Direction.LONG else cand.entry >= poc
        assert ("near_hvn" in md["factors"]) == (near and side_ok)
        sl, tp1, tp2 = expected_levels(cand)
        assert cand.levels.stop_loss == pytest.approx(sl, rel=1e-12)
        assert cand.levels.take_profits == pytest.approx((tp1, tp2), rel=1e-12)
        weights = {"near_hvn": 2, "volume_spike": 2, "buying_pressure": 2}
        assert cand.confidence == sum(weights.get(f, 1) for f in md["factors"])
        assert len(md["factors"]) >= 3


# -- lookback and params --------------------------------------------------------------------------


def test_only_bars_with_a_full_lookback_behind_them_are_reported() -> None:
    strategy = make()
    assert strategy.lookback == 200 + 400
    assert make(warmup=0, profile_bars=300).lookback == 300
    cs = zigzag(0.002, 0.004, last_volume=5.0)
    assert run(strategy, cs.tail(599)) == []
    assert [c.bar for c in run(strategy, cs.tail(600))] == [599]


def test_declared_defaults_follow_the_spec() -> None:
    p = VolumeParams()
    assert (p.profile_bars, p.profile_rows, p.value_area_pct, p.hvn_mult, p.hvn_distance_rows) == (
        100,
        24,
        0.70,
        1.5,
        2.0,
    )
    assert (p.sma_period, p.rsi_period, p.volume_spike_mult) == (20, 14, 1.5)
    assert (p.pressure_bars, p.pressure_count, p.pressure_mult, p.min_factors, p.warmup) == (
        20,
        3,
        1.2,
        3,
        400,
    )
    assert VolumeStrategy.RISK == {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0}
    assert (VolumeStrategy.DEFAULT_TIMEFRAME, VolumeStrategy.DEFAULT_COOLDOWN) == ("15m", 1800)


@pytest.mark.parametrize(
    "bad", [{"profile_rows": 1}, {"value_area_pct": 1.5}, {"min_factors": 0}, {"max_open": 1}]
)
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VolumeParams(**bad)
