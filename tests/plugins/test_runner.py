"""Plugin isolation: a failing plugin is counted, logged, quarantined, and never stops others."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.signals.batch import CandidateBatch
from engine.signals.levels import RiskSettings
from tests.support.fakes import BrokenStrategy, EveryBarStrategy, make_candles


def instance(cls: type, name: str) -> PluginInstance:
    strat = cls(cls.Params(), RiskSettings(), "5m")
    return PluginInstance(name, cls.name, "test", strat, ("ETH/BTC",), "5m", None, 0)


def value(m: Metrics, metric: str, **labels: str) -> float:
    v = m.registry.get_sample_value(metric, labels)
    return 0.0 if v is None else v


def test_failure_is_isolated_counted_and_quarantines(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    runner = SafeRunner(m, quarantine_after=3)
    bad = instance(BrokenStrategy, "bad")
    good = instance(EveryBarStrategy, "good")
    w = Window("ETH/BTC", "5m", make_candles([1.0, 1.01, 1.02, 1.03, 1.04]))
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            assert list(runner.run(bad, w)) == []
            assert len(runner.run(good, w)) == 1  # only the last bar's candidate
    assert "strategy 'bad' failed on ETH/BTC: ZeroDivisionError: plugin bug" in caplog.text
    assert bad.quarantined and not good.quarantined
    assert value(m, "engine_plugin_errors_total", plugin="bad") == 3
    assert value(m, "engine_plugin_quarantined", plugin="bad") == 1
    assert value(m, "engine_plugin_runs_total", plugin="good") == 3
    assert list(runner.run(bad, w)) == []  # quarantined: not even called
    assert value(m, "engine_plugin_errors_total", plugin="bad") == 3


def test_success_resets_the_failure_streak() -> None:
    m = Metrics()
    runner = SafeRunner(m, quarantine_after=2)
    inst = instance(EveryBarStrategy, "flaky")
    short = Window("ETH/BTC", "5m", make_candles([1.0]))
    inst.failures = 1
    runner.run(inst, short)
    assert inst.failures == 0 and not inst.quarantined


class BadWordsStrategy(EveryBarStrategy):
    """Finds candidates as columns but its describe() is broken: fails only when a signal is built."""

    name = "bad_words"

    def evaluate(self, window: Window) -> CandidateBatch:
        n = len(window.candles)
        sign = np.ones(n, dtype=np.int8)
        entry = window.candles.close
        levels = self.arrays.atr(sign, entry, entry * 0.01)

        def describe(row: int) -> tuple[tuple[str, ...], dict[str, object]]:
            raise KeyError(f"no words for row {row}")

        return self.batch(np.arange(n), sign, entry, levels, describe=describe)


class GarbageStrategy(EveryBarStrategy):
    """Returns something that is not a sequence of candidates."""

    name = "garbage"

    def evaluate(self, window: Window) -> CandidateBatch:
        return [1, 2, 3]  # type: ignore[return-value]


def test_a_failing_describe_or_a_wrong_answer_is_isolated_like_a_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Metrics()
    runner = SafeRunner(m, quarantine_after=5)
    w = Window("ETH/BTC", "5m", make_candles([1.0, 1.01, 1.02]))
    with caplog.at_level(logging.ERROR):
        assert list(runner.run(instance(BadWordsStrategy, "words"), w)) == []
        assert list(runner.run(instance(GarbageStrategy, "junk"), w)) == []
    assert "no words for row 2" in caplog.text
    assert value(m, "engine_plugin_errors_total", plugin="words") == 1
    assert value(m, "engine_plugin_errors_total", plugin="junk") == 1
    good = runner.run_all(instance(EveryBarStrategy, "good"), w)
    assert len(good) == 3 and all(c.levels.valid for c in good)
