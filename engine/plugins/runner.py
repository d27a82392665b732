"""The safe-call wrapper around every strategy evaluation.

A plugin is third-party code as far as the engine is concerned: whatever it raises becomes a
StrategyError that is logged with the plugin and symbol, counted, and swallowed, so one broken
plugin never stops the others. Repeated failures quarantine the instance (visible in /ready)
instead of spamming the log every candle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from engine.errors import StrategyError
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.signals.batch import CandidateBatch, as_batch
from engine.signals.model import Candidate

log = logging.getLogger("engine.plugins")


class SafeRunner:
    """Runs `evaluate` for an instance and turns any failure into bookkeeping."""

    def __init__(self, metrics: Metrics, *, quarantine_after: int = 5) -> None:
        self.metrics = metrics
        self.quarantine_after = quarantine_after

    def run(self, inst: PluginInstance, window: Window) -> Sequence[Candidate]:
        """Candidates at the window's last bar, or () when the plugin failed or is quarantined."""
        last = len(window.candles) - 1
        batch = self.run_all(inst, window)
        try:
            return batch.at_bar(last)
        except Exception as exc:  # a plugin's describe() runs here, and may fail like evaluate
            self.failed(inst, window.symbol, exc)
            return ()

    def run_all(self, inst: PluginInstance, window: Window) -> CandidateBatch:
        """Candidates at every bar (replay's single call over a whole history), isolated the same way."""
        if inst.quarantined:
            return CandidateBatch.empty()
        started = time.perf_counter()
        try:
            result = as_batch(inst.strategy.evaluate(window), inst.strategy.risk)
        except Exception as exc:
            self.failed(inst, window.symbol, exc)
            return CandidateBatch.empty()
        finally:
            self.metrics.plugin_duration.labels(inst.name).observe(time.perf_counter() - started)
        self.metrics.plugin_runs.labels(inst.name).inc()
        inst.failures = 0
        return result

    def failed(self, inst: PluginInstance, symbol: str, exc: Exception) -> None:
        """Book an exception from the plugin's code (`evaluate`, or a batch's `describe` wherever
        it runs) as a StrategyError: logged, counted, and towards the quarantine."""
        err = StrategyError(inst.name, symbol, exc)
        err.__cause__ = exc
        inst.failures += 1
        inst.last_error = str(err)
        self.metrics.plugin_errors.labels(inst.name).inc()
        cause = err.__cause__
        log.error(
            "%s (consecutive failure %d, quarantine at %d)",
            err,
            inst.failures,
            self.quarantine_after,
            exc_info=(type(cause), cause, cause.__traceback__) if cause else None,
        )
        if inst.failures >= self.quarantine_after:
            inst.quarantined = True
            self.metrics.plugin_quarantined.labels(inst.name).set(1)
            log.error(
                "plugin instance %r quarantined after %d consecutive failures", inst.name, inst.failures
            )

    def release(self, inst: PluginInstance) -> None:
        """Lift a quarantine (after a reload with new settings)."""
        inst.quarantined = False
        inst.failures = 0
        self.metrics.plugin_quarantined.labels(inst.name).set(0)
