"""Replay with adaptive consensus weights: every market in one stream.

Adaptive weights follow each strategy's hit rate across all markets as time passes, so the
markets cannot be replayed apart (engine/replay_unit.py): outcomes must be known up to each
signal's time, and no further. Signals of every market go through the consensus in time
order, with each watched series' candles fed to the outcome tracker up to that time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.metrics import Metrics
from engine.plugins.runner import SafeRunner
from engine.replay_unit import UnitResult, UnitSpec, evaluate_market, in_time_order, settled_from, tabulate
from engine.signals.builder import SignalBuilder
from engine.signals.cooldown import Cooldowns
from engine.signals.model import Signal
from engine.signals.outcomes import OutcomeEvent, OutcomeTracker
from engine.timeframes import timeframe_seconds

Progress = Callable[[int, int, str], None]
"""(markets done, markets in all, the market just done)."""


def run_interleaved(spec: UnitSpec, progress: Progress | None) -> UnitResult:
    """All markets in one stream: consensus weights read hit rates, so outcomes must be known
    up to each signal's time, and no further."""
    metrics = Metrics()
    runner = SafeRunner(metrics, quarantine_after=spec.quarantine_after)
    builder = SignalBuilder(Cooldowns(), metrics)
    histories: dict[tuple[str, str], Any] = {}
    emitted: list[Signal] = []
    evaluations, missing = 0, []
    for i, sym in enumerate(spec.symbols):
        if progress is not None:
            progress(i, len(spec.symbols), sym)
        spec.market.confirm_edges(sym)
        sigs, n, miss = evaluate_market(spec, sym, runner, builder, histories)
        emitted.extend(sigs)
        evaluations += n
        missing.extend(miss)
    tracker = OutcomeTracker(expiry_seconds=spec.expiry_seconds)
    assert spec.consensus is not None
    consensus = spec.consensus(
        lambda s: (tracker.stats[s].wins, tracker.stats[s].closed) if s in tracker.stats else (0, 0)
    )
    finals: dict[str, OutcomeEvent] = {}
    cursor: dict[tuple[str, str], int] = {}
    ordered: list[tuple[Signal, Signal]] = []
    emitted = in_time_order(emitted)
    i = 0
    while i < len(emitted):
        t = emitted[i].bar_close_ms
        _advance(tracker, histories, finals, cursor, t)
        while i < len(emitted) and emitted[i].bar_close_ms == t:
            sig = emitted[i]
            ordered.append((sig, sig))
            tracker.track(sig)
            agreed = consensus.add(sig)
            if agreed is not None:
                ordered.append((agreed, sig))
                tracker.track(agreed)
            i += 1
    _advance(tracker, histories, finals, cursor, None)
    if progress is not None:
        progress(len(spec.symbols), len(spec.symbols), "done")
    out = tabulate(spec, "all", ordered, settled_from(ordered, finals), tracker.stats, [None] * len(ordered))
    out.evaluations, out.missing = evaluations, missing
    return out


def _advance(
    tracker: OutcomeTracker,
    histories: dict[tuple[str, str], Any],
    finals: dict[str, OutcomeEvent],
    cursor: dict[tuple[str, str], int],
    until_ms: int | None,
) -> None:
    """Feed each watched series' candles closed by `until_ms` (all of them if None) to the tracker."""
    for key in sorted(tracker.watched()):
        candles = histories.get(key)
        if candles is None:
            continue
        tf_ms = timeframe_seconds(key[1]) * 1000
        stop = (
            len(candles)
            if until_ms is None
            else int((candles.ts + tf_ms).searchsorted(until_ms, side="right"))
        )
        if stop > cursor.get(key, 0):
            finals.update(
                (e.signal_id, e) for e in tracker.update(key[0], key[1], candles.slice(0, stop)) if e.final
            )
            cursor[key] = stop
