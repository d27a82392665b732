"""Plugin isolation: a failing plugin is counted, logged, quarantined, and never stops others."""

from __future__ import annotations

import logging

import pytest

from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
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
