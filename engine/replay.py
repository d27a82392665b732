"""Fast replay: each strategy called once per market over the whole history.

The candidates are then pushed through the very classes the live path uses — SignalBuilder
(level and cooldown gates), ConsensusAggregator, OutcomeTracker — in the order live would
meet them: by candle close, then strategy, symbol and direction. Only the data access differs,
which is why the sameness test can demand identical signals from both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clock import VirtualClock
from engine.config import LoadedConfig
from engine.errors import EngineError
from engine.market.candles import Candles
from engine.market.replay import ReplayMarket
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.replay_plan import history_start, unreplayable_reason
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.cooldown import Cooldowns
from engine.signals.model import Signal
from engine.signals.outcomes import OutcomeEvent, OutcomeTracker
from engine.stats import consensus_settings
from engine.timeframes import timeframe_seconds

log = logging.getLogger("engine.replay")

Progress = Callable[[int, int, str], None]


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay found, plus what it could not run and why."""

    signals: list[Signal] = field(default_factory=list)
    outcomes: list[OutcomeEvent] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    evaluations: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    histories: dict[tuple[str, str], Candles] = field(default_factory=dict)

    @property
    def strategy_signals(self) -> list[Signal]:
        """The strategies' own signals, without the consensus signals derived from them."""
        return [s for s in self.signals if s.kind == "signal"]

    @property
    def consensus_signals(self) -> list[Signal]:
        """The aggregator's signals, kept apart so no strategy's signal is counted twice."""
        return [s for s in self.signals if s.kind == "consensus"]


def replay_start_ms(instances: Sequence[PluginInstance], market: ReplayMarket) -> int:
    """Where `engine run`'s paced replay starts: the first close at which some instance has a
    full window (the same rule as `engine.replay_plan.plan_replay`)."""
    return int(min(history_start(market, inst)[0] for inst in instances) * 1000)


def run_replay(
    config: LoadedConfig,
    instances: Sequence[PluginInstance],
    data_dir: Path,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay every instance over the files; signals in [start_ms, end_ms] (candle close) count."""
    st = config.settings
    market = ReplayMarket(data_dir, st.market.exchange, VirtualClock(float("inf")))
    metrics = Metrics()
    runner = SafeRunner(metrics, quarantine_after=st.engine.quarantine_after)
    builder = SignalBuilder(Cooldowns(), metrics)
    exp = st.outcomes.expiry_hours
    tracker = OutcomeTracker(expiry_seconds=None if exp is None else exp * 3600)
    consensus = None
    if st.consensus.enabled:
        consensus = ConsensusAggregator(
            consensus_settings(config),
            st.consensus.weights,
            {i.name: i.plugin for i in instances},
            hits=lambda s: (tracker.stats[s].wins, tracker.stats[s].closed) if s in tracker.stats else (0, 0),
        )
    result = ReplayResult()
    runnable = _runnable(instances, market, result)
    if start_ms is None and runnable:
        start_ms = replay_start_ms(runnable, market)
    result.start_ms, result.end_ms = start_ms, end_ms
    emitted = _evaluate(
        runnable, market, runner, builder, st.market.exchange, result, start_ms, end_ms, progress
    )
    emitted.sort(key=lambda s: (s.bar_close_ms, s.strategy, s.symbol, s.direction.value))
    adaptive = consensus is not None and consensus.settings.adaptive
    cursor: dict[tuple[str, str], int] = {}
    i = 0
    while i < len(emitted):
        t = emitted[i].bar_close_ms
        if adaptive:
            # consensus weights read hit rates: outcomes must be known up to t, and no further
            _advance(tracker, result, cursor, t)
        while i < len(emitted) and emitted[i].bar_close_ms == t:
            sig = emitted[i]
            result.signals.append(sig)
            tracker.track(sig)
            agreed = consensus.add(sig) if consensus is not None else None
            if agreed is not None:
                result.signals.append(agreed)
                tracker.track(agreed)
            i += 1
    _advance(tracker, result, cursor, None)
    result.stats = tracker.summary()
    return result


def _runnable(
    instances: Sequence[PluginInstance], market: ReplayMarket, result: ReplayResult
) -> list[PluginInstance]:
    keep = []
    for inst in instances:
        reason = unreplayable_reason(market, inst)
        if reason:
            result.skipped[inst.name] = reason
        else:
            keep.append(inst)
    return keep


def _evaluate(
    instances: Sequence[PluginInstance],
    market: ReplayMarket,
    runner: SafeRunner,
    builder: SignalBuilder,
    exchange: str,
    result: ReplayResult,
    start_ms: int | None,
    end_ms: int | None,
    progress: Progress | None,
) -> list[Signal]:
    """Each instance over each market's history, through the level and cooldown gates.

    A cooldown key belongs to one (instance, symbol), so gating each stream in bar order here
    decides exactly what gating everything in global time order would, while keeping only the
    signals — not every candidate — in memory.
    """
    emitted: list[Signal] = []
    jobs = [(inst, sym) for inst in instances for sym in inst.symbols]
    missing: dict[str, list[str]] = {}
    for n, (inst, sym) in enumerate(jobs):
        if progress is not None:
            progress(n, len(jobs), f"{inst.name} {sym}")
        needs = inst.strategy.needs()
        try:
            frames = {tf: _history(market, result, sym, tf) for tf in needs.timeframes}
        except EngineError as exc:
            missing.setdefault(inst.name, []).append(f"{sym}: {exc}")
            continue
        candles = frames[inst.timeframe]
        result.evaluations += len(candles)
        origin = Origin(inst.name, sym, inst.timeframe, exchange, inst.cooldown)
        batch = runner.run_all(inst, Window(sym, inst.timeframe, candles, frames))
        try:
            emitted.extend(builder.build_batch(origin, candles, batch, start_ms=start_ms, end_ms=end_ms))
        except Exception as exc:  # the plugin's describe() runs here; isolate it like evaluate
            log.error("%s on %s: describing its signals failed: %r", inst.name, sym, exc)
    if progress is not None:
        progress(len(jobs), len(jobs), "done")
    for name, reasons in missing.items():
        inst_syms = next(i.symbols for i in instances if i.name == name)
        if len(reasons) == len(inst_syms):
            result.skipped[name] = "no data: " + "; ".join(reasons)
        else:
            log.warning("%s: some symbols have no data and were skipped: %s", name, "; ".join(reasons))
    return emitted


def _history(market: ReplayMarket, result: ReplayResult, symbol: str, timeframe: str) -> Candles:
    key = (symbol, timeframe)
    if key not in result.histories:
        result.histories[key] = market.history(symbol, timeframe)
    return result.histories[key]


def _advance(
    tracker: OutcomeTracker, result: ReplayResult, cursor: dict[tuple[str, str], int], until_ms: int | None
) -> None:
    """Feed each watched series' candles closed by `until_ms` (all of them if None) to the tracker."""
    for key in sorted(tracker.watched()):
        candles = result.histories.get(key)
        if candles is None:
            continue
        tf_ms = timeframe_seconds(key[1]) * 1000
        stop = (
            len(candles)
            if until_ms is None
            else int((candles.ts + tf_ms).searchsorted(until_ms, side="right"))
        )
        begin = cursor.get(key, 0)
        if stop > begin:
            # only closing events are reported; intermediate steps would just hold memory
            result.outcomes.extend(
                e for e in tracker.update(key[0], key[1], candles.slice(0, stop)) if e.final
            )
            cursor[key] = stop
