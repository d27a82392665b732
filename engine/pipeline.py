"""One tick, end to end: fetch → evaluate → gate → journal → consensus → sinks.

The journal is written before anything else sees a signal, so a crash between "found" and
"delivered" loses nothing: the journal is the record of truth, sinks are best effort with a
dead-letter file behind them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.market.candles import Candles
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades
from engine.metrics import Metrics
from engine.plugins.base import DataNeeds, Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.model import Signal
from engine.signals.outcomes import OutcomeEvent, OutcomeTracker
from engine.sinks.base import SinkEvent
from engine.sinks.console import format_consensus, format_outcome, format_signal

log = logging.getLogger("engine.pipeline")

# Bars fetched for a series watched only because it has open signals.
OUTCOME_LOOKBACK = 50


class CandleSource(Protocol):
    """The part of the market gateway a tick needs."""

    async def candles(self, symbol: str, timeframe: str, lookback: int) -> Candles:
        """The last `lookback` closed candles of a series."""
        ...

    async def ticker(self, symbol: str) -> Ticker:
        """Last price and top of book of `symbol`."""
        ...

    async def trades(self, symbol: str, limit: int) -> Trades:
        """The latest `limit` public trades of `symbol`, oldest first."""
        ...

    async def order_book(self, symbol: str, depth: int) -> OrderBook:
        """The best `depth` levels of each side of `symbol`'s book."""
        ...

    async def funding(self, symbol: str) -> Funding:
        """The current funding rate of a perpetual swap."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The non-OHLCV data one evaluation declared in its needs; kinds not asked for stay None."""

    ticker: Ticker | None = None
    trades: Trades | None = None
    order_book: OrderBook | None = None
    funding: Funding | None = None


class JournalWriter(Protocol):
    """Where signals are recorded before anything else sees them (the Journal, or a fake in tests)."""

    def append(self, record: dict[str, Any]) -> None:
        """Persist one record before returning: the pipeline publishes only what is on disk."""
        ...


class Publisher(Protocol):
    """Where decided events go after the journal (the sink dispatcher, or a fake in tests)."""

    def publish(self, event: SinkEvent) -> None:
        """Hand one event to the sinks without waiting: a tick never blocks on delivery."""
        ...


class Pipeline:
    """Runs the due instances of one tick and routes what they find."""

    def __init__(
        self,
        *,
        exchange: str,
        market: CandleSource,
        runner: SafeRunner,
        builder: SignalBuilder,
        consensus: ConsensusAggregator | None,
        journal: JournalWriter,
        publisher: Publisher,
        tracker: OutcomeTracker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.exchange = exchange
        self.market = market
        self.runner = runner
        self.builder = builder
        self.consensus = consensus
        self.journal = journal
        self.publisher = publisher
        self.tracker = tracker
        self.metrics = metrics
        self.changes = 0  # signals and outcomes emitted so far: tells the engine state changed
        self._last_bar: dict[tuple[str, str], int] = {}
        self._failing: set[str] = set()

    async def tick(self, now: float, due: Sequence[PluginInstance]) -> list[Signal]:
        """Evaluate every (instance, symbol) due now; returns what was emitted, in a stable order."""
        wanted: dict[tuple[str, str], int] = {}
        snaps: dict[tuple[str, DataNeeds], None] = {}
        for inst in due:
            needs = inst.strategy.needs()
            for sym in inst.symbols:
                for tf in needs.timeframes:
                    key = (sym, tf)
                    wanted[key] = max(wanted.get(key, 0), needs.lookback)
                if not needs.ohlcv_only:
                    snaps[(sym, needs)] = None
        if self.tracker is not None:
            # open signals keep being followed even when their strategy is not due this tick
            for key in self.tracker.watched():
                wanted.setdefault(key, OUTCOME_LOOKBACK)
        keys = list(wanted)
        snap_keys = list(snaps)
        results = await asyncio.gather(
            *(self.market.candles(sym, tf, wanted[(sym, tf)]) for sym, tf in keys),
            *(self._snapshot(sym, needs) for sym, needs in snap_keys),
            return_exceptions=True,
        )
        data: dict[tuple[str, str], Candles] = {}
        for key, res in zip(keys, results[: len(keys)], strict=True):
            if self._ok(f"candles for {key[0]} {key[1]}", res):
                assert isinstance(res, Candles)
                data[key] = res
        snapshots: dict[tuple[str, DataNeeds], Snapshot] = {}
        for skey, res in zip(snap_keys, results[len(keys) :], strict=True):
            if self._ok(f"market snapshot for {skey[0]}", res):
                assert isinstance(res, Snapshot)
                snapshots[skey] = res
        if self.tracker is not None:
            for (sym, tf), candles in data.items():
                for ev in self.tracker.update(sym, tf, candles):
                    self.emit_outcome(ev)
        emitted: list[Signal] = []
        for inst in due:
            for sym in inst.symbols:
                window = self._window(inst, sym, data, snapshots)
                if window is None:
                    continue
                origin = Origin(inst.name, sym, inst.timeframe, self.exchange, inst.cooldown)
                for cand in self.runner.run(inst, window):
                    sig = self.builder.build(origin, window.candles, cand)
                    if sig is not None:
                        emitted.append(sig)
        emitted.sort(key=lambda s: (s.bar_close_ms, s.strategy, s.symbol, s.direction.value))
        for sig in emitted:
            self.emit(sig)
        return emitted

    def _ok(self, what: str, res: object) -> bool:
        """Log a failed fetch once per outage (not every tick), and its recovery."""
        if isinstance(res, BaseException):
            if what not in self._failing:
                log.warning("no %s: %s: %s", what, type(res).__name__, res)
            self._failing.add(what)
            return False
        if what in self._failing:
            log.info("%s: available again", what)
            self._failing.discard(what)
        return True

    def _window(
        self,
        inst: PluginInstance,
        sym: str,
        data: dict[tuple[str, str], Candles],
        snapshots: dict[tuple[str, DataNeeds], Snapshot],
    ) -> Window | None:
        """The strategy's window, or None when data is missing or this bar was already evaluated."""
        needs = inst.strategy.needs()
        frames: dict[str, Candles] = {}
        for tf in needs.timeframes:
            got = data.get((sym, tf))
            if got is None:
                return None
            frames[tf] = got.tail(needs.lookback)
        primary = frames.get(inst.timeframe)
        if primary is None or len(primary) < needs.lookback:
            return None
        snap = Snapshot()
        if not needs.ohlcv_only:
            found = snapshots.get((sym, needs))
            if found is None:
                return None
            snap = found
        last_ts = int(primary.ts[-1])
        if self._last_bar.get((inst.name, sym)) == last_ts:
            return None  # this closed bar was already evaluated (period shorter than the candle)
        self._last_bar[(inst.name, sym)] = last_ts
        return Window(
            sym,
            inst.timeframe,
            primary,
            frames,
            ticker=snap.ticker,
            trades=snap.trades,
            order_book=snap.order_book,
            funding=snap.funding,
        )

    async def _snapshot(self, symbol: str, needs: DataNeeds) -> Snapshot:
        """Everything non-OHLCV a strategy declared, fetched concurrently through the gateway."""
        m = self.market

        async def none() -> None:
            return None

        def maybe(flag: bool, make: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
            return make() if flag else none()

        ticker, trades, book, funding = await asyncio.gather(
            maybe(needs.ticker, lambda: m.ticker(symbol)),
            maybe(needs.trades > 0, lambda: m.trades(symbol, needs.trades)),
            maybe(needs.order_book > 0, lambda: m.order_book(symbol, needs.order_book)),
            maybe(needs.funding, lambda: m.funding(symbol)),
        )
        return Snapshot(ticker, trades, book, funding)

    def _history(self, strategy: str) -> dict[str, Any]:
        if self.tracker is None or strategy not in self.tracker.stats:
            return {}
        return {"history": self.tracker.stats[strategy].summary()}

    def emit(self, sig: Signal) -> None:
        """Journal first, then outcome tracking, consensus and sinks."""
        rec = sig.to_record()
        self.journal.append(rec)
        self.changes += 1
        if self.tracker is not None:
            self.tracker.track(sig)
        self.publisher.publish(SinkEvent("signal", rec, format_signal(sig), self._history(sig.strategy)))
        if self.consensus is None:
            return
        agreed = self.consensus.add(sig)
        if agreed is not None:
            crec = agreed.to_record()
            self.journal.append(crec)
            if self.tracker is not None:
                self.tracker.track(agreed)
            if self.metrics is not None:
                self.metrics.consensus.labels(str(agreed.metadata.get("alert", "new"))).inc()
            self.publisher.publish(
                SinkEvent("consensus", crec, format_consensus(crec), self._history("consensus"))
            )

    def emit_outcome(self, ev: OutcomeEvent) -> None:
        """A level was hit: journal it, count it, tell the sinks."""
        rec = ev.to_record()
        self.journal.append(rec)
        self.changes += 1
        if self.metrics is not None and ev.final and self.tracker is not None:
            self.metrics.outcomes.labels(ev.strategy, ev.result).inc()
            summary = self.tracker.stats[ev.strategy].summary()
            self.metrics.win_rate.labels(ev.strategy).set(summary["win_rate"] or 0.0)
            self.metrics.avg_r.labels(ev.strategy).set(summary["avg_r"] or 0.0)
        self.publisher.publish(SinkEvent("outcome", rec, format_outcome(rec), self._history(ev.strategy)))
