"""orb on hand-built sessions: the spec's example, retests, cycles, stages and the 00:00 UTC anchor."""

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
from strategies.orb import OrbParams, OrbStrategy

DAY_MS, MIN_MS = 86_400_000, 60_000
DAY = 1_515_628_800_000  # 2018-01-11T00:00:00Z

# The spec's opening range: first five 1m candles, high 10.00, low 9.80.
OPENING = [
    (9.9, 9.95, 9.85, 9.9),
    (9.9, 10.0, 9.8, 9.9),
    (9.9, 9.95, 9.85, 9.9),
    (9.9, 9.92, 9.86, 9.9),
    (9.9, 9.93, 9.87, 9.9),
]
EXAMPLE_CLOSES = [10.01, 10.03, 10.05, 10.04, 10.00, 9.95]


def make(timeframe: str = "1m", **params: object) -> OrbStrategy:
    return OrbStrategy(OrbParams(**params), RiskSettings().merged(OrbStrategy.RISK), timeframe)


def run(strategy: OrbStrategy, cs: Candles) -> Sequence[Candidate]:
    return strategy.evaluate(Window(symbol="BTC/USDT", timeframe=strategy.timeframe, candles=cs))


def session(
    opening: Sequence[tuple[float, float, float, float]],
    closes: Sequence[float],
    *,
    filler: int = 1840,
    step_ms: int = MIN_MS,
    volume: Sequence[float] | None = None,
) -> Candles:
    """`filler` quiet bars up to 00:00 UTC, then the opening candles (o, h, l, c), then one bar
    per close, each opening at the previous close with 0.005 wicks."""
    o, h, lo, c = [], [], [], []
    for k in range(filler):  # 9.88/9.92 zig-zag inside a 9.86-9.94 range: no events
        close = 9.88 if k % 2 else 9.92
        prev = 9.9 if k == 0 else c[-1]
        o.append(prev), c.append(close), h.append(max(prev, close) + 0.02), lo.append(min(prev, close) - 0.02)
    for bar in opening:
        o.append(bar[0]), h.append(bar[1]), lo.append(bar[2]), c.append(bar[3])
    for close in closes:
        prev = c[-1]
        (
            o.append(prev),
            c.append(close),
            h.append(max(prev, close) + 0.005),
            lo.append(min(prev, close) - 0.005),
        )
    n = len(c)
    ts = DAY - filler * step_ms + step_ms * np.arange(n, dtype=np.int64)
    vol = np.ones(n) if volume is None else np.concatenate([np.ones(n - len(volume)), volume])
    f = [np.asarray(x, dtype=np.float64) for x in (o, h, lo, c)]
    return Candles(ts, f[0], f[1], f[2], f[3], vol)


def mirror(cs: Candles) -> Candles:
    k = 19.8  # maps the 9.80-10.00 range onto itself: 10.00 ↔ 9.80
    return Candles(cs.ts, k - cs.open, k - cs.low, k - cs.high, k - cs.close, cs.volume)


def events(out: Sequence[Candidate], first: int) -> list[tuple[int, Direction, str]]:
    """(bar after the opening range, direction, event) of each candidate."""
    return [(c.bar - first, c.direction, c.metadata["kind"]) for c in out]


FIRST = 1840 + 5  # index of the first bar after ORB5 is complete


def test_spec_example_breakout_then_one_retest() -> None:
    cs = session(OPENING, EXAMPLE_CLOSES)
    out = run(make(), cs)

    # 10.01 is inside the 0.2 % buffer (10.02); 10.03, 10.05 are the two closes above → LONG
    # at 10.05; 10.04 adds nothing; 10.00 is back inside → one retest LONG; 9.95 → nothing.
    assert events(out, FIRST) == [(2, Direction.LONG, "breakout_up"), (4, Direction.LONG, "retest_up")]
    atr = talib.ATR(cs.high, cs.low, cs.close, timeperiod=14)
    for cand, entry in zip(out, (10.05, 10.00), strict=True):
        a = atr[cand.bar]
        assert cand.entry == entry
        assert cand.levels.stop_loss == pytest.approx(entry - 1.5 * a * 1.0075, rel=1e-12)
        assert cand.levels.take_profits == pytest.approx([entry + m * a for m in (2.0, 3.0, 4.5)], rel=1e-12)
        assert cand.levels.valid, cand.levels.reason
        assert cand.levels.rr1 == pytest.approx(2.0 / (1.5 * 1.0075))
        assert (cand.metadata["stage"], cand.metadata["orb_high"], cand.metadata["orb_low"]) == (5, 10.0, 9.8)
    assert out[0].rationale[1] == "2+ consecutive closes above the ORB5 high"


def test_mirrored_example_gives_short_breakout_and_retest() -> None:
    cs = mirror(session(OPENING, EXAMPLE_CLOSES))
    out = run(make(), cs)
    assert events(out, FIRST) == [(2, Direction.SHORT, "breakout_down"), (4, Direction.SHORT, "retest_down")]
    assert out[0].entry == pytest.approx(19.8 - 10.05)
    lv = out[0].levels
    assert lv.stop_loss > lv.entry > lv.take_profits[0] > lv.take_profits[1] > lv.take_profits[2]


def test_retest_fires_once_per_breakout_not_on_every_bar_inside() -> None:
    # Defect fixed: the original never reset the retest, re-firing it on each scan (up to 6).
    cs = session(OPENING, [10.03, 10.05, 9.95, 9.9, 9.96, 9.9, 9.97])
    assert events(run(make(), cs), FIRST) == [
        (1, Direction.LONG, "breakout_up"),
        (2, Direction.LONG, "retest_up"),
    ]


def test_each_new_breakout_is_a_cycle_and_max_cycles_caps_them() -> None:
    one = [10.03, 10.05, 9.95]  # breakout, then retest
    cs = session(OPENING, one * 3)
    kinds = [c.metadata["kind"] for c in run(make(), cs)]
    assert kinds == ["breakout_up", "retest_up"] * 3
    # With two cycles allowed the third breakout (and so its retest) never happens.
    assert [c.metadata["kind"] for c in run(make(max_cycles=2), cs)] == ["breakout_up", "retest_up"] * 2


def test_a_close_through_the_far_side_ends_the_breakout_without_a_retest() -> None:
    # Decision (docs): above twice (LONG), then straight below the range twice: the up-breakout
    # ends without a retest and a down-breakout starts; back inside → its retest.
    cs = session(OPENING, [10.03, 10.05, 9.7, 9.65, 9.9])
    assert events(run(make(), cs), FIRST) == [
        (1, Direction.LONG, "breakout_up"),
        (3, Direction.SHORT, "breakout_down"),
        (4, Direction.SHORT, "retest_down"),
    ]


def test_one_close_outside_is_not_a_breakout_and_min_bars_outside_is_honoured() -> None:
    cs = session(OPENING, [10.05, 9.9, 10.05, 9.9])
    assert run(make(), cs) == []
    assert [c.metadata["kind"] for c in run(make(min_bars_outside=1), cs)] == ["breakout_up", "retest_up"] * 2
    cs3 = session(OPENING, [10.03, 10.04, 10.05])
    assert events(run(make(min_bars_outside=3), cs3), FIRST) == [(2, Direction.LONG, "breakout_up")]


def test_range_is_anchored_at_0000_utc_and_a_new_session_resets_the_state() -> None:
    # Defect fixed: the original took the first N bars of its 100-bar fetch. Here the session
    # starts at 00:00 UTC however far back the window reaches, and every day starts afresh.
    rest = DAY_MS // MIN_MS - 5 - 2
    day1 = session(OPENING, [10.03, 10.05] + [10.06] * rest)  # up-breakout open until 23:59…
    assert int(day1.ts[-1]) == DAY + DAY_MS - MIN_MS  # 23:59
    # …day 2 opens far lower; its first close is inside day 1's range but must not be a retest.
    ts = day1.ts[-1] + MIN_MS * np.arange(1, 8, dtype=np.int64)
    c2 = np.array([9.9, 9.95, 9.85, 9.9, 9.9, 9.9, 9.9])
    day2 = Candles(ts, c2, c2 + 0.05, c2 - 0.05, c2, np.ones(7))
    out = run(make(), day1.concat(day2))
    kinds = [(c.bar, c.metadata["kind"]) for c in out]
    assert kinds == [(FIRST + 1, "breakout_up")]


def test_range_of_a_later_stage_is_the_first_n_candles_of_the_day(
    sample_candles: Callable[[str], Candles],
) -> None:
    # On real 5m candles every candidate's range is the extreme of the first N candles of its
    # own UTC day — whatever bar the window starts at.
    cs = sample_candles("ETH-BTC")
    strategy = make("5m")
    out = run(strategy, cs)
    assert {c.metadata["stage"] for c in out} == {5, 15, 30, 60}
    day = cs.ts // DAY_MS
    for cand in out:
        start = int(np.flatnonzero(day == day[cand.bar])[0])
        assert int(cs.ts[start]) % DAY_MS == 0
        n = int(cand.metadata["stage"])
        assert cand.bar >= start + n
        assert cand.metadata["orb_high"] == cs.high[start : start + n].max()
        assert cand.metadata["orb_low"] == cs.low[start : start + n].min()
    assert sum(c.levels.valid for c in out) > 0


def test_stages_are_honoured_and_the_first_stage_with_an_event_wins() -> None:
    # Defect fixed: `orb_stages` was ignored. Fifteen quiet candles make ORB15 = ORB5 here.
    quiet = [(9.9, 9.91, 9.89, 9.9)] * 10
    cs = session(OPENING + quiet, [10.03, 10.05, 9.95])
    first15 = 1840 + 15
    both = run(make(), cs)
    assert [(c.bar - first15, c.metadata["stage"], c.metadata["kind"]) for c in both] == [
        (1, 5, "breakout_up"),
        (2, 5, "retest_up"),
    ]
    only15 = run(make(stages=(15,)), cs)
    assert [(c.bar - first15, c.metadata["stage"]) for c in only15] == [(1, 15), (2, 15)]
    # A session shorter than a stage never arms that stage.
    short = session(OPENING, [10.03, 10.05])
    assert [c.metadata["stage"] for c in run(make(stages=(15, 30)), short)] == []


def test_volume_filter_waits_for_a_high_volume_close_outside() -> None:
    cs = session(OPENING, [10.03, 10.04, 10.05, 9.95], volume=[1.0, 1.0, 5.0, 1.0])
    assert [c.bar - FIRST for c in run(make(), cs)] == [1, 3]
    out = run(make(volume_filter=True), cs)
    assert events(out, FIRST) == [(2, Direction.LONG, "breakout_up"), (3, Direction.LONG, "retest_up")]
    no_volume = session(OPENING, [10.03, 10.04, 10.05, 9.95])
    assert run(make(volume_filter=True), no_volume) == []


def test_invalid_levels_are_returned_flagged_and_all_three_targets_kept() -> None:
    # Defect fixed: the original used the calculator's defaults (min R:R 1.8), ignored its
    # verdict and kept only TP1. Here: global risk, TP1-TP3, and the gate's verdict.
    out = run(make(), session(OPENING, EXAMPLE_CLOSES))
    assert all(len(c.levels.take_profits) == 3 for c in out)
    tight = RiskSettings(min_sl_percent=2.0)  # the ~1.1 % stop is now too close
    strat = OrbStrategy(OrbParams(), tight, "1m")
    flagged = run(strat, session(OPENING, EXAMPLE_CLOSES))
    assert len(flagged) == 2 and not any(c.levels.valid for c in flagged)
    assert flagged[0].levels.reason.startswith("stop ")


def test_lookback_covers_a_whole_day_of_the_timeframe_plus_warmup() -> None:
    assert make().lookback == 1440 + 400
    assert make("5m").lookback == 288 + 400
    assert make("15m", warmup=0).lookback == 96
    strategy = make()
    cs = session(OPENING, EXAMPLE_CLOSES[:3])
    assert [c.bar for c in run(strategy, cs)] == [len(cs) - 1]
    assert run(strategy, cs.tail(strategy.lookback - 1)) == []
    assert [c.bar for c in run(strategy, cs.tail(strategy.lookback))] == [strategy.lookback - 1]


@pytest.mark.parametrize("tf", ["1d", "7m"])
def test_timeframes_that_do_not_divide_a_day_are_refused(tf: str) -> None:
    with pytest.raises(ValueError, match="divides a UTC day"):
        make(tf)


def test_declared_defaults_follow_the_spec() -> None:
    p = OrbParams()
    assert p.stages == (5, 15, 30, 60)
    assert (p.breakout_buffer_pct, p.min_bars_outside, p.max_cycles) == (0.2, 2, 6)
    assert (p.volume_filter, p.volume_mult, p.volume_ma_length) == (False, 1.5, 20)
    assert (p.atr_period, p.atr_mode, p.warmup) == (14, "wilder", 400)
    assert OrbStrategy.RISK == {}
    assert (OrbStrategy.DEFAULT_TIMEFRAME, OrbStrategy.DEFAULT_COOLDOWN) == ("1m", 0)


@pytest.mark.parametrize(
    "bad",
    [{"stages": ()}, {"stages": (15, 5)}, {"stages": (0, 5)}, {"max_cycles": 0}, {"retest_buffer_pct": 0.2}],
)
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OrbParams(**bad)
