"""Turns a strategy's candidate into an emitted Signal, or says why not.

This is the central gate: levels must be valid (the calculator's verdict), and the cooldown
must be clear. Rejections are counted by reason so a user can see a strategy that keeps
proposing unusable levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from engine.market.candles import Candles
from engine.metrics import Metrics
from engine.signals.cooldown import Cooldowns, cooldown_key
from engine.signals.model import Candidate, Signal, iso_utc, signal_id
from engine.timeframes import timeframe_seconds


@dataclass(frozen=True, slots=True)
class Origin:
    """Who proposed the candidate and with which cooldown."""

    strategy: str
    symbol: str
    timeframe: str
    exchange: str
    cooldown: int


class SignalBuilder:
    """Applies the level and cooldown gates; starts the cooldown of what it emits."""

    def __init__(self, cooldowns: Cooldowns, metrics: Metrics) -> None:
        self.cooldowns = cooldowns
        self.metrics = metrics
        self._children: dict[tuple[int, str, str], Any] = {}

    def _count(self, counter: Counter, a: str, b: str) -> None:
        # labels() costs microseconds per call; a replay counts millions of candidates
        key = (id(counter), a, b)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(a, b)
        child.inc()

    def build(self, origin: Origin, candles: Candles, cand: Candidate) -> Signal | None:
        """The Signal for `cand`, or None (counted by reason) for invalid levels or an active cooldown."""
        if not cand.levels.valid:
            self._count(self.metrics.signals_rejected, origin.strategy, "invalid_levels")
            return None
        bar_close_ms = int(candles.ts[cand.bar]) + timeframe_seconds(origin.timeframe) * 1000
        at = bar_close_ms / 1000.0
        key = cooldown_key(
            origin.strategy, origin.symbol, origin.timeframe, cand.direction.value, cand.sub_key
        )
        if self.cooldowns.blocked(key, at):
            self._count(self.metrics.signals_rejected, origin.strategy, "cooldown")
            return None
        self.cooldowns.start(key, at, origin.cooldown)
        lv = cand.levels
        meta = dict(cand.metadata)
        meta["rr1"] = round(lv.rr1, 4)
        if lv.rr2 is not None:
            meta["rr2"] = round(lv.rr2, 4)
        self._count(self.metrics.signals, origin.strategy, cand.direction.value)
        return Signal(
            id=signal_id(origin.strategy, origin.symbol, origin.timeframe, bar_close_ms, cand.direction),
            strategy=origin.strategy,
            symbol=origin.symbol,
            direction=cand.direction,
            timeframe=origin.timeframe,
            exchange=origin.exchange,
            entry=lv.entry,
            stop_loss=lv.stop_loss,
            take_profits=lv.take_profits,
            created_at=iso_utc(bar_close_ms),
            bar_close_ms=bar_close_ms,
            confidence=cand.confidence,
            rationale=cand.rationale,
            metadata=meta,
        )
