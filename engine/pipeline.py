"""One tick, end to end: fetch → evaluate → gate → journal → consensus → sinks.

The journal is written before anything else sees a signal, so a crash between "found" and
"delivered" loses nothing: the journal is the record of truth, sinks are best effort with a
dead-letter file behind them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.market.candles import Candles
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.model import Signal
from engine.sinks.base import SinkEvent
from engine.sinks.console import format_consensus, format_signal

log = logging.getLogger("engine.pipeline")


class CandleSource(Protocol):
    """The part of the market gateway a tick needs."""

    async def candles(self, symbol: str, timeframe: str, lookback: int) -> Candles: ...


class JournalWriter(Protocol):
    def append(self, record: dict[str, Any]) -> None: ...


class Publisher(Protocol):
    def publish(self, event: SinkEvent) -> None: ...


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
        on_signal: Callable[[Signal], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.market = market
        self.runner = runner
        self.builder = builder
        self.consensus = consensus
        self.journal = journal
        self.publisher = publisher
        self.on_signal = on_signal
        self._last_bar: dict[tuple[str, str], int] = {}
        self._failing: set[tuple[str, str]] = set()

    async def tick(self, now: float, due: Sequence[PluginInstance]) -> list[Signal]:
        """Evaluate every (instance, symbol) due now; returns what was emitted, in a stable order."""
        wanted: dict[tuple[str, str], int] = {}
        for inst in due:
            for sym in inst.symbols:
                key = (sym, inst.timeframe)
                wanted[key] = max(wanted.get(key, 0), inst.lookback)
        keys = list(wanted)
        results = await asyncio.gather(
            *(self.market.candles(sym, tf, wanted[(sym, tf)]) for sym, tf in keys), return_exceptions=True
        )
        data: dict[tuple[str, str], Candles] = {}
        for key, res in zip(keys, results, strict=True):
            if isinstance(res, BaseException):
                if key not in self._failing:
                    log.warning("no candles for %s %s: %s: %s", key[0], key[1], type(res).__name__, res)
                self._failing.add(key)
                continue
            if key in self._failing:
                log.info("candles for %s %s are back", *key)
                self._failing.discard(key)
            data[key] = res
        emitted: list[Signal] = []
        for inst in due:
            for sym in inst.symbols:
                candles = data.get((sym, inst.timeframe))
                if candles is None or len(candles) < inst.lookback:
                    continue
                window = Window(sym, inst.timeframe, candles.tail(inst.lookback))
                last_ts = int(window.candles.ts[-1])
                if self._last_bar.get((inst.name, sym)) == last_ts:
                    continue  # this closed bar was already evaluated (period shorter than the candle)
                self._last_bar[(inst.name, sym)] = last_ts
                origin = Origin(inst.name, sym, inst.timeframe, self.exchange, inst.cooldown)
                for cand in self.runner.run(inst, window):
                    sig = self.builder.build(origin, window.candles, cand)
                    if sig is not None:
                        emitted.append(sig)
        emitted.sort(key=lambda s: (s.bar_close_ms, s.strategy, s.symbol, s.direction.value))
        for sig in emitted:
            self.emit(sig)
        return emitted

    def emit(self, sig: Signal) -> None:
        """Journal first, then consensus and sinks."""
        rec = sig.to_record()
        self.journal.append(rec)
        if self.on_signal is not None:
            self.on_signal(sig)
        self.publisher.publish(SinkEvent("signal", rec, format_signal(sig)))
        if self.consensus is None:
            return
        agreed = self.consensus.add(sig)
        if agreed is not None:
            crec = agreed.to_record()
            self.journal.append(crec)
            if self.on_signal is not None:
                self.on_signal(agreed)
            self.publisher.publish(SinkEvent("consensus", crec, format_consensus(crec)))
