"""Outcome tracking on hand-built candles: the TP ladder, stops, ties, expiry, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.candles import Candles
from engine.signals.model import Direction, Signal
from engine.signals.outcomes import OutcomeTracker

T0 = 1_700_000_100_000  # a 5m candle close
STEP = 300_000


def signal(direction: Direction = Direction.LONG, sid: str = "s1", strategy: str = "psar") -> Signal:
    if direction is Direction.LONG:
        sl, tps = 95.0, (110.0, 120.0, 130.0)
    else:
        sl, tps = 105.0, (90.0, 80.0, 70.0)
    return Signal(sid, strategy, "ETH/BTC", direction, "5m", "binance", 100.0, sl, tps, "", T0)


def candles(hl: list[tuple[float, float]], first_close: int = T0 + STEP) -> Candles:
    """Candles (high, low) closing one step apart from `first_close`; close = mid."""
    n = len(hl)
    hi = np.array([h for h, _ in hl])
    lo = np.array([lo for _, lo in hl])
    mid = (hi + lo) / 2
    ts = first_close - STEP + STEP * np.arange(n, dtype=np.int64)
    return Candles(ts, mid, hi, lo, mid, np.ones(n))


def test_ladder_tp1_tp2_tp3_closes_at_last_target() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    ev = tr.update("ETH/BTC", "5m", candles([(104, 99), (111, 103), (121, 112), (131, 118)]))
    assert [(e.event, e.final) for e in ev] == [("TP1", False), ("TP2", False), ("TP3", True)]
    assert ev[-1].r_multiple == pytest.approx(6.0) and ev[-1].pnl_percent == pytest.approx(30.0)
    s = tr.summary()["psar"]
    assert s["tp3"] == 1 and s["closed"] == 1 and s["win_rate"] == 1.0 and s["avg_r"] == pytest.approx(6.0)
    assert tr.open == {}


def test_stop_before_any_target_and_short_mirror() -> None:
    tr = OutcomeTracker()
    tr.track(signal(Direction.SHORT))
    (ev,) = tr.update("ETH/BTC", "5m", candles([(103, 99), (106, 100)]))
    assert (ev.event, ev.result, ev.price) == ("SL", "SL", 105.0)
    assert ev.r_multiple == pytest.approx(-1.0) and ev.pnl_percent == pytest.approx(-5.0)
    assert tr.summary()["psar"]["win_rate"] == 0.0


def test_candle_touching_stop_and_target_counts_the_stop() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    (ev,) = tr.update("ETH/BTC", "5m", candles([(112, 94)]))
    assert ev.result == "SL"


def test_stop_after_tp1_closes_as_tp1_win() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    ev = tr.update("ETH/BTC", "5m", candles([(111, 99), (108, 94)]))
    assert [(e.event, e.result, e.final) for e in ev] == [("TP1", "TP1", False), ("SL", "TP1", True)]
    assert ev[-1].r_multiple == pytest.approx(2.0)  # TP1 is a full win, at TP1's R
    assert tr.summary()["psar"]["tp1"] == 1


def test_expiry_after_configured_age() -> None:
    tr = OutcomeTracker(expiry_seconds=3 * 300)
    tr.track(signal())
    ev = tr.update("ETH/BTC", "5m", candles([(104, 99), (104, 99), (103, 101), (150, 50)]))
    assert [(e.event, e.result) for e in ev] == [("EXPIRED", "EXPIRED")]
    assert ev[0].r_multiple == pytest.approx(0.4)  # closed at 102 = +2 / risk 5
    assert tr.summary()["psar"]["expired"] == 1


def test_only_new_candles_are_walked_and_state_round_trips() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    old = candles([(200, 1)], first_close=T0)  # the signal bar itself: never counted
    assert tr.update("ETH/BTC", "5m", old) == []
    tr.update("ETH/BTC", "5m", candles([(111, 99)]))
    positions, stats = tr.snapshot()
    again = OutcomeTracker()
    again.restore(positions, stats)
    # the TP1 candle is not replayed after restore; the next one hits TP2
    ev = again.update("ETH/BTC", "5m", candles([(111, 99), (121, 100)]))
    assert [e.event for e in ev] == ["TP2"]
    assert again.summary()["psar"]["signals"] == 1


def test_other_series_and_duplicate_tracking_are_ignored() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    tr.track(signal())
    assert tr.update("LTC/BTC", "5m", candles([(200, 1)])) == []
    assert tr.update("ETH/BTC", "15m", candles([(200, 1)])) == []
    assert tr.summary()["psar"]["signals"] == 1


@given(
    st.lists(st.tuples(st.floats(80, 140), st.floats(0, 30)), min_size=1, max_size=40),
    st.sampled_from([Direction.LONG, Direction.SHORT]),
    st.one_of(st.none(), st.integers(1, 30)),
)
@settings(max_examples=200, deadline=None)
def test_one_batch_equals_candle_by_candle(
    bars: list[tuple[float, float]], direction: Direction, expiry_bars: int | None
) -> None:
    """Replay hands long stretches at once, live one candle per close: both must agree."""
    hl = [(mid + spread / 2, mid - spread / 2) for mid, spread in bars]
    c = candles(hl)
    expiry = None if expiry_bars is None else expiry_bars * 300
    batch, stepwise = OutcomeTracker(expiry_seconds=expiry), OutcomeTracker(expiry_seconds=expiry)
    batch.track(signal(direction))
    stepwise.track(signal(direction))
    a = batch.update("ETH/BTC", "5m", c)
    b = [e for i in range(len(c)) for e in stepwise.update("ETH/BTC", "5m", c.slice(0, i + 1))]
    assert a == b
    assert batch.summary() == stepwise.summary()


def test_ticker_between_closes_reports_targets_early_and_the_candle_still_counts_its_stop() -> None:
    tr = OutcomeTracker()
    tr.track(signal())
    (ev,) = tr.update_price("ETH/BTC", 111.0, T0 + 60_000)  # a minute into the next candle
    assert (ev.event, ev.final, ev.at_ms) == ("TP1", False, T0 + 60_000)
    assert tr.update_price("ETH/BTC", 111.5, T0 + 120_000) == []  # TP1 is not reported twice
    assert tr.update_price("LTC/BTC", 200.0, T0 + 120_000) == []
    # the candle closes: it also dipped to the stop, which the ticker did not see
    (close,) = tr.update("ETH/BTC", "5m", candles([(111.5, 94.0)]))
    assert (close.event, close.result) == ("SL", "TP1")
    assert tr.update_price("ETH/BTC", float("nan"), T0 + 400_000) == []
