"""`settle` (replay's columnar outcomes) equals `track` + `update`, signal for signal.

Replay keeps only each signal's final outcome; it must be exactly the final event the live
tracker would have produced, with the same statistics (sum of R in the same order) and the
same positions left open.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.candles import Candles
from engine.signals.model import Signal
from engine.signals.outcomes import RESULTS, OutcomeEvent, OutcomeTracker
from engine.signals.settle import settle
from tests.support.outcome_cases import STEP, T0, grid_candles, ladder_signal


@st.composite
def cases(draw: st.DrawFn) -> tuple[Candles, list[Signal], float | None]:
    n = draw(st.integers(0, 150))
    candles = grid_candles(draw, n)
    steps = st.lists(st.sampled_from([0.5, 1.0, 1.5, -0.5]), min_size=0, max_size=3)
    signals = [
        ladder_signal(
            draw,
            # a few repeated ids: the tracker keys positions by id
            f"s{draw(st.integers(0, 60)) if draw(st.booleans()) else i + 100}",
            ["a", "b", "consensus"],
            T0 + STEP * draw(st.integers(-2, n + 1)) + draw(st.sampled_from([0, 0, 1, STEP // 2])),
            steps,
        )
        for i in range(draw(st.integers(0, 40)))
    ]
    expiry = draw(st.one_of(st.none(), st.integers(0, 60).map(lambda b: b * 300), st.floats(0, 20_000)))
    return candles, signals, expiry


@given(cases())
@settings(max_examples=400, deadline=None)
def test_settle_gives_each_signal_the_final_event_of_track_and_update(
    case: tuple[Candles, list[Signal], float | None],
) -> None:
    candles, signals, expiry = case
    live, fast = OutcomeTracker(expiry_seconds=expiry), OutcomeTracker(expiry_seconds=expiry)
    for s in signals:
        live.track(s)
    finals: dict[str, OutcomeEvent] = {}
    if len(candles):
        finals = {e.signal_id: e for e in live.update("ETH/BTC", "5m", candles) if e.final}
    got = settle(fast, signals, "5m", candles)
    for i, s in enumerate(signals):
        e = finals.get(s.id)
        if e is None:
            assert got.result[i] == -1, s
        else:
            assert RESULTS[got.result[i]] == e.result
            assert (int(got.at_ms[i]), float(got.price[i])) == (e.at_ms, e.price)
            assert (float(got.r[i]), float(got.pnl[i])) == (e.r_multiple, e.pnl_percent)
    assert fast.stats == live.stats  # sum_r too: the same additions in the same order
    assert [(p.signal_id, p.last_seen_ms, p.reached) for p in fast.open.values()] == [
        (p.signal_id, p.last_seen_ms, p.reached) for p in live.open.values()
    ]
