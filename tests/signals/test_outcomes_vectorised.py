"""OutcomeTracker's array search equals a plain bar-by-bar walk of the rules (hypothesis).

The reference below applies the module's rules one candle at a time: in each candle the next
targets are reached unless the candle also touches the stop; then a stop closes the signal (as
its last target if one was reached), else an age past `expiry_seconds` expires it at the close.
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.candles import Candles
from engine.signals import outcomes
from engine.signals.model import Direction, Signal
from engine.signals.outcomes import OutcomeEvent, OutcomeTracker
from engine.signals.tally import StrategyStats
from tests.support.outcome_cases import STEP, T0, grid_candles, ladder_signal


@dataclass
class RefPosition:
    sig: Signal
    last_seen_ms: int
    reached: int = 0


class Reference:
    """The rules walked candle by candle: the oracle for `OutcomeTracker.update`."""

    def __init__(self, expiry_seconds: float | None) -> None:
        self.expiry_seconds = expiry_seconds
        self.open: dict[str, RefPosition] = {}
        self.stats: dict[str, StrategyStats] = {}

    def track(self, sig: Signal) -> None:
        self.stats.setdefault(sig.strategy, StrategyStats())
        if sig.id not in self.open:
            self.stats[sig.strategy].signals += 1
            self.open[sig.id] = RefPosition(sig, sig.bar_close_ms)

    def update(self, c: Candles) -> list[OutcomeEvent]:
        out: list[OutcomeEvent] = []
        for p in list(self.open.values()):
            for i in range(len(c)):
                close_ms = int(c.ts[i]) + STEP
                if close_ms <= p.last_seen_ms:
                    continue
                if self._step(p, float(c.high[i]), float(c.low[i]), float(c.close[i]), close_ms, out):
                    break
                p.last_seen_ms = close_ms
        return out

    def update_price(self, price: float, at_ms: int) -> list[OutcomeEvent]:
        out: list[OutcomeEvent] = []
        for p in list(self.open.values()):
            if at_ms > p.sig.bar_close_ms:
                self._step(p, price, price, price, at_ms, out)  # last_seen does not move
        return out

    def _step(
        self, p: RefPosition, hi: float, lo: float, cl: float, at: int, out: list[OutcomeEvent]
    ) -> bool:
        """One candle; True once the position is closed."""
        s = p.sig
        long = s.direction is Direction.LONG
        stopped = lo <= s.stop_loss if long else hi >= s.stop_loss
        expired = self.expiry_seconds is not None and at - s.bar_close_ms >= self.expiry_seconds * 1000
        while not stopped and p.reached < len(s.take_profits):
            tp = s.take_profits[p.reached]
            if not (hi >= tp if long else lo <= tp):
                break
            p.reached += 1
            label = f"TP{p.reached}"
            if p.reached == len(s.take_profits):
                out.append(self._close(p, label, label, tp, at, tp))
                return True
            out.append(self._event(p, label, label, False, tp, at, tp))
        # after TP1 the signal is a win: it closes as its last target, at that target's R
        won = f"TP{p.reached}" if p.reached else ""
        tp_r = s.take_profits[p.reached - 1] if p.reached else None
        if stopped:
            r_price = s.stop_loss if tp_r is None else tp_r
            out.append(self._close(p, "SL", won or "SL", s.stop_loss, at, r_price))
            return True
        if expired:
            out.append(self._close(p, "EXPIRED", won or "EXPIRED", cl, at, cl if tp_r is None else tp_r))
            return True
        return False

    def _event(
        self, p: RefPosition, event: str, result: str, final: bool, price: float, at: int, r_price: float
    ) -> OutcomeEvent:
        s = p.sig
        sign = 1 if s.direction is Direction.LONG else -1
        risk = abs(s.entry - s.stop_loss)
        r = sign * (r_price - s.entry) / risk if risk > 0 else 0.0
        pnl = sign * (price - s.entry) / s.entry * 100.0
        return OutcomeEvent(
            s.id, s.strategy, s.symbol, s.timeframe, s.direction, event, result, final, price, at, r, pnl
        )

    def _close(
        self, p: RefPosition, event: str, result: str, price: float, at: int, r_price: float
    ) -> OutcomeEvent:
        ev = self._event(p, event, result, True, price, at, r_price)
        del self.open[p.sig.id]
        self.stats[p.sig.strategy].record(result, ev.r_multiple)
        return ev


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Candles, list[Signal], list[tuple[str, int, int]], float | None]:
    """Candles on an integer price grid (so levels are touched exactly), signals opened at
    random bars with ordered ladders, and a feed of candle windows and ticker prices."""
    n = draw(st.integers(1, 160))
    candles = grid_candles(draw, n)
    steps = st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), min_size=1, max_size=3)
    signals = [
        ladder_signal(
            draw,
            f"s{i}",
            ["a", "b", "c"],
            T0 + STEP * draw(st.integers(-2, n)) + draw(st.sampled_from([0, 0, 0, 1, STEP // 2])),
            steps,
        )
        for i in range(draw(st.integers(1, 40)))
    ]

    feed: list[tuple[str, int, int]] = []  # ("candles", lo, hi) or ("price", price, at_ms)
    done = 0
    while done < n:
        upto = min(n, done + draw(st.sampled_from([1, 1, 2, 5, 30, 200])))
        start = draw(st.sampled_from([0, max(0, done - 3), done]))
        feed.append(("candles", start, upto))
        if draw(st.booleans()):
            at = T0 + STEP * upto + draw(st.integers(-STEP, STEP))
            feed.append(("price", draw(st.integers(75, 135)), at))
        done = upto
    expiry = draw(st.one_of(st.none(), st.integers(0, 80).map(lambda b: b * 300), st.floats(0, 24_000)))
    return candles, signals, feed, expiry


@given(scenarios(), st.booleans())
@settings(max_examples=400, deadline=None)
def test_update_equals_a_bar_by_bar_walk(
    scenario: tuple[Candles, list[Signal], list[tuple[str, int, int]], float | None], arrays_only: bool
) -> None:
    """Several positions per series, tracked as their bars close, fed in random stretches
    (overlapping windows, several candles at once) with ticker prices in between: the same
    events in the same order, the same statistics and the same open state as the reference."""
    candles, signals, feed, expiry = scenario
    tracker, ref = OutcomeTracker(expiry_seconds=expiry), Reference(expiry)
    pending = sorted(signals, key=lambda s: s.bar_close_ms)
    # arrays_only: the array search even for the few short stretches live would walk plainly
    with mock.patch.object(outcomes, "_SCAN_MAX", 0 if arrays_only else outcomes._SCAN_MAX):
        for what, a, b in feed:
            now = int(candles.ts[b - 1]) + STEP if what == "candles" else b
            while pending and pending[0].bar_close_ms <= now:
                sig = pending.pop(0)
                tracker.track(sig)
                ref.track(sig)
            if what == "candles":
                got, want = (
                    tracker.update("ETH/BTC", "5m", candles.slice(a, b)),
                    ref.update(candles.slice(a, b)),
                )
            else:
                got, want = tracker.update_price("ETH/BTC", float(a), b), ref.update_price(float(a), b)
            assert got == want
    assert tracker.stats == ref.stats
    assert tracker.summary() == {k: v.summary() for k, v in sorted(ref.stats.items())}
    assert [(p.signal_id, p.last_seen_ms, p.reached) for p in tracker.open.values()] == [
        (p.sig.id, p.last_seen_ms, p.reached) for p in ref.open.values()
    ]


def test_one_long_history_with_many_positions_equals_the_walk() -> None:
    """A random walk of 3000 candles and 400 positions in one call (the replay shape)."""
    rng = np.random.default_rng(7)
    n = 3000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    hi = close * (1 + np.abs(rng.normal(0, 0.002, n)))
    lo = close * (1 - np.abs(rng.normal(0, 0.002, n)))
    candles = Candles(T0 + STEP * np.arange(n, dtype=np.int64), close, hi, lo, close, np.ones(n))
    signals = []
    for i, bar in enumerate(sorted(rng.choice(n, 400, replace=False).tolist())):
        d = Direction.LONG if rng.random() < 0.5 else Direction.SHORT
        e, a = float(close[bar]), float(close[bar]) * 0.01 * float(rng.uniform(0.5, 3))
        tps = (e + d.sign * a, e + d.sign * 2 * a, e + d.sign * 3 * a)
        signals.append(
            Signal(
                f"s{i}", "ab"[i % 2], "X/Y", d, "5m", "x", e, e - d.sign * a, tps, "", T0 + STEP * (bar + 1)
            )
        )
    for expiry in (None, 6 * 3600):
        tracker, ref = OutcomeTracker(expiry_seconds=expiry), Reference(expiry)
        for sig in signals:
            tracker.track(sig)
            ref.track(sig)
        events = tracker.update("X/Y", "5m", candles)
        assert events == ref.update(candles)
        assert len(events) > 400 and tracker.stats == ref.stats
        assert [p.signal_id for p in tracker.open.values()] == list(ref.open)
