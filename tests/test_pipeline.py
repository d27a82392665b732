"""One tick end to end with fakes: journal before sinks, gates, once-per-bar, consensus."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import NetworkError
from engine.market.candles import Candles
from engine.market.snapshots import Ticker
from engine.metrics import Metrics
from engine.pipeline import Pipeline
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.signals.builder import SignalBuilder
from engine.signals.consensus import ConsensusAggregator, ConsensusSettings
from engine.signals.cooldown import Cooldowns
from engine.signals.levels import RiskSettings
from engine.sinks.base import SinkEvent
from tests.support.fakes import EveryBarStrategy, FramesAndTickerStrategy, make_candles


class FakeMarket:
    def __init__(self, candles: Candles) -> None:
        self.data = candles
        self.calls: list[tuple[str, str, int]] = []
        self.down: set[str] = set()

    async def candles(self, symbol: str, timeframe: str, lookback: int) -> Candles:
        self.calls.append((symbol, timeframe, lookback))
        if symbol in self.down:
            raise NetworkError("connection refused")
        return self.data


class Recorder:
    """Journal and publisher in one, so the test sees the order of events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        self.events.append(("journal", record.get("id")))

    def publish(self, event: SinkEvent) -> None:
        self.events.append(("sink", event.record.get("id")))


def inst(
    name: str, symbols: tuple[str, ...] = ("ETH/BTC",), cooldown: int = 0, **risk: float
) -> PluginInstance:
    s = EveryBarStrategy(EveryBarStrategy.Params(), RiskSettings().merged(risk), "5m")
    return PluginInstance(name, "every_bar", "test", s, symbols, "5m", None, cooldown)


def pipeline(
    market: FakeMarket, rec: Recorder, m: Metrics, consensus: ConsensusAggregator | None = None
) -> Pipeline:
    return Pipeline(
        exchange="binance",
        market=market,
        runner=SafeRunner(m),
        builder=SignalBuilder(Cooldowns(), m),
        consensus=consensus,
        journal=rec,
        publisher=rec,
    )


async def test_journal_before_sinks_and_one_fetch_per_market() -> None:
    m, rec = Metrics(), Recorder()
    market = FakeMarket(make_candles(np.linspace(1.0, 1.1, 10)))
    p = pipeline(market, rec, m)
    out = await p.tick(0.0, [inst("a"), inst("b")])
    assert len(out) == 2
    assert market.calls == [("ETH/BTC", "5m", 5)]
    for sig in out:
        i_j = rec.events.index(("journal", sig.id))
        i_s = rec.events.index(("sink", sig.id))
        assert i_j < i_s
    assert out[0].created_at == "2018-01-10T05:45:00Z"  # 10th bar opens 05:40, closes 05:45


async def test_same_bar_is_not_evaluated_twice_and_cooldown_blocks() -> None:
    m, rec = Metrics(), Recorder()
    market = FakeMarket(make_candles(np.linspace(1.0, 1.1, 10)))
    p = pipeline(market, rec, m)
    a = inst("a", cooldown=3600)
    assert len(await p.tick(0.0, [a])) == 1
    assert await p.tick(1.0, [a]) == []  # same closed bar: skipped
    market.data = make_candles(np.linspace(1.0, 1.1, 11))
    assert await p.tick(2.0, [a]) == []  # next bar, but inside the 1 h cooldown
    assert (
        m.registry.get_sample_value("engine_signals_rejected_total", {"strategy": "a", "reason": "cooldown"})
        == 1
    )


async def test_invalid_levels_are_rejected_and_counted() -> None:
    m, rec = Metrics(), Recorder()
    p = pipeline(FakeMarket(make_candles(np.linspace(1.0, 1.1, 10))), rec, m)
    assert await p.tick(0.0, [inst("a", min_rr=5.0)]) == []
    labels = {"strategy": "a", "reason": "invalid_levels"}
    assert m.registry.get_sample_value("engine_signals_rejected_total", labels) == 1
    assert rec.events == []


async def test_market_failure_for_one_symbol_does_not_stop_others() -> None:
    m, rec = Metrics(), Recorder()
    market = FakeMarket(make_candles(np.linspace(1.0, 1.1, 10)))
    market.down.add("LTC/BTC")
    out = await pipeline(market, rec, m).tick(0.0, [inst("a", ("ETH/BTC", "LTC/BTC"))])
    assert [s.symbol for s in out] == ["ETH/BTC"]


async def test_consensus_signal_is_journaled_and_published() -> None:
    m, rec = Metrics(), Recorder()
    agg = ConsensusAggregator(ConsensusSettings(threshold=2.0), {}, {})
    p = pipeline(FakeMarket(make_candles(np.linspace(1.0, 1.1, 10))), rec, m, agg)
    out = await p.tick(0.0, [inst("a"), inst("b")])
    assert len(out) == 2
    kinds = [e for e in rec.events if e[1] not in {s.id for s in out}]
    assert [k for k, _ in kinds] == ["journal", "sink"]  # one consensus record, journaled first


class SnapshotMarket(FakeMarket):
    """Serves a 5m and a 15m series and a ticker, failing tickers on demand."""

    def __init__(self) -> None:
        super().__init__(make_candles(np.linspace(1.0, 1.1, 12)))
        self.frames = {"5m": self.data, "15m": make_candles([1.0, 1.05, 1.1, 1.2], step_ms=900_000)}
        self.ticker_down = False

    async def candles(self, symbol: str, timeframe: str, lookback: int) -> Candles:
        self.calls.append((symbol, timeframe, lookback))
        return self.frames[timeframe]

    async def ticker(self, symbol: str) -> Ticker:
        if self.ticker_down:
            raise NetworkError("ticker endpoint down")
        return Ticker(last=1.234, bid=1.233, ask=1.235, ts_ms=0)


async def test_higher_timeframes_and_ticker_reach_the_strategy() -> None:
    m, rec = Metrics(), Recorder()
    market = SnapshotMarket()
    s = FramesAndTickerStrategy(FramesAndTickerStrategy.Params(), RiskSettings(), "5m")
    i = PluginInstance("ft", "frames_and_ticker", "test", s, ("ETH/BTC",), "5m", None, 0)
    out = await pipeline(market, rec, m).tick(0.0, [i])
    assert sorted(market.calls) == [("ETH/BTC", "15m", 3), ("ETH/BTC", "5m", 3)]
    (w,) = s.seen
    assert set(w.frames) == {"5m", "15m"} and len(w.frames["15m"]) == 3
    assert w.frames["15m"].close[-1] == 1.2 and w.candles is w.frames["5m"]
    assert [sig.entry for sig in out] == [1.234]  # entry from the ticker


async def test_missing_snapshot_skips_only_that_strategy() -> None:
    m, rec = Metrics(), Recorder()
    market = SnapshotMarket()
    market.ticker_down = True
    s = FramesAndTickerStrategy(FramesAndTickerStrategy.Params(), RiskSettings(), "5m")
    snap = PluginInstance("ft", "frames_and_ticker", "test", s, ("ETH/BTC",), "5m", None, 0)
    out = await pipeline(market, rec, m).tick(0.0, [snap, inst("plain")])
    assert s.seen == [] and [x.strategy for x in out] == ["plain"]


async def test_outcomes_are_tracked_journaled_and_published() -> None:
    from engine.signals.outcomes import OutcomeTracker

    m, rec = Metrics(), Recorder()
    market = FakeMarket(make_candles(np.linspace(1.0, 1.1, 10)))
    tracker = OutcomeTracker()
    p = Pipeline(
        exchange="binance",
        market=market,
        runner=SafeRunner(m),
        builder=SignalBuilder(Cooldowns(), m),
        consensus=None,
        journal=rec,
        publisher=rec,
        tracker=tracker,
        metrics=m,
    )
    a = inst("a", cooldown=10**6)
    (sig,) = await p.tick(0.0, [a])
    assert sig.id in tracker.open
    # the next bar jumps far above every target: TP1..TP3 in one candle, closed at TP3
    market.data = make_candles([*np.linspace(1.0, 1.1, 10), 2.0])
    await p.tick(1.0, [a])
    assert sig.id not in tracker.open
    outcome_ids = [e for e in rec.events if e[1] is None]
    assert outcome_ids == [("journal", None), ("sink", None)] * 3  # TP1, TP2, TP3, each journaled first
    assert m.registry.get_sample_value("engine_outcomes_total", {"strategy": "a", "result": "TP3"}) == 1
    assert m.registry.get_sample_value("engine_strategy_win_rate", {"strategy": "a"}) == 1.0
