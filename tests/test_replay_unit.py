"""One market's replay unit: a plugin failing while its signals are described loses only its
own signals; every other signal keeps its own JSON record."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson
import pytest

from engine.clock import VirtualClock
from engine.market.replay import ReplayMarket
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.replay_unit import UnitSpec, evaluate_market
from engine.signals.batch import CandidateBatch
from engine.signals.builder import SignalBuilder
from engine.signals.cooldown import Cooldowns
from engine.signals.levels import RiskSettings
from tests.support.fakes import EveryBarStrategy

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


class WordsFailLate(EveryBarStrategy):
    """Columns for every bar; describe() breaks on the 50th signal, after 49 have been described."""

    name = "words_fail_late"

    def evaluate(self, window: Window) -> CandidateBatch:  # type: ignore[override]
        n = len(window.candles)
        sign = np.ones(n, dtype=np.int8)
        entry = window.candles.close
        calls = []

        def describe(row: int) -> tuple[tuple[str, ...], dict[str, object]]:
            calls.append(row)
            if len(calls) == 50:
                raise KeyError(f"no words for row {row}")
            return (f"row {row}",), {}

        return self.batch(
            np.arange(n), sign, entry, self.arrays.atr(sign, entry, entry * 0.01), describe=describe
        )


def instance(cls: type, name: str) -> PluginInstance:
    strat = cls(cls.Params(), RiskSettings(), "5m")
    return PluginInstance(name, cls.name, "test", strat, ("ETH/BTC",), "5m", None, 0)


def test_a_describe_failing_midway_drops_its_instance_and_keeps_the_records_aligned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock(0.0))
    bad, good = instance(WordsFailLate, "bad"), instance(EveryBarStrategy, "good")
    spec = UnitSpec(
        (good, bad, instance(EveryBarStrategy, "late")),
        market,
        "binance",
        5,
        None,
        None,
        ("bad", "good", "late", "consensus"),
        ("ETH/BTC",),
        None,
        None,
        None,
    )
    metrics = Metrics()
    runner = SafeRunner(metrics, quarantine_after=5)
    records: list[bytes] = []
    with caplog.at_level(logging.ERROR):
        signals, evaluations, missing = evaluate_market(
            spec, "ETH/BTC", runner, SignalBuilder(Cooldowns(), metrics), {}, records
        )
    bars = len(market.history("ETH/BTC", "5m"))
    assert evaluations == 3 * bars and not missing
    assert [s.strategy for s in signals] == ["good"] * bars + ["late"] * bars
    assert [orjson.loads(r + b"}")["id"] for r in records] == [s.id for s in signals]
    assert "no words for row 49" in caplog.text
    assert metrics.registry.get_sample_value("engine_plugin_errors_total", {"plugin": "bad"}) == 1
