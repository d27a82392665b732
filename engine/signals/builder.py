"""Turns a strategy's candidate into an emitted Signal, or says why not.

This is the central gate: levels must be valid (the calculator's verdict), and the cooldown
must be clear. Rejections are counted by reason so a user can see a strategy that keeps
proposing unusable levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter

from engine.market.candles import Candles
from engine.metrics import Metrics
from engine.signals.batch import CandidateBatch
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
        self._add(counter, a, b, 1)

    def _add(self, counter: Counter, a: str, b: str, amount: int) -> None:
        # labels() costs microseconds per call; a replay counts millions of candidates
        key = (id(counter), a, b)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(a, b)
        child.inc(amount)

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
        self._count(self.metrics.signals, origin.strategy, cand.direction.value)
        return self._emit(origin, bar_close_ms, cand)

    def _emit(self, origin: Origin, bar_close_ms: int, cand: Candidate) -> Signal:
        lv = cand.levels
        meta = dict(cand.metadata)
        meta["rr1"] = round(lv.rr1, 4)
        if lv.rr2 is not None:
            meta["rr2"] = round(lv.rr2, 4)
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

    def build_batch(
        self,
        origin: Origin,
        candles: Candles,
        batch: CandidateBatch,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[Signal]:
        """`build` for every row of a batch in bar order, deciding with arrays what `build` would.

        Rows whose bar closes outside [start_ms, end_ms] are ignored. A cooldown key belongs
        to one side (and sub-key) of one stream, so each key's rows are gated on their own:
        after an emitted row, the next candidate is the first one at or past the cooldown's
        end — one binary search per emitted signal, not a Python step per candidate. Only
        the emitted rows are turned into Candidates (and described).
        """
        n = len(batch)
        if n == 0:
            return []
        tf_ms = timeframe_seconds(origin.timeframe) * 1000
        close_ms = candles.ts[batch.bar] + tf_ms
        inside = np.ones(n, dtype=np.bool_)
        if start_ms is not None:
            inside &= close_ms >= start_ms
        if end_ms is not None:
            inside &= close_ms <= end_ms
        n_invalid = int(np.count_nonzero(inside & ~batch.valid))
        if n_invalid:
            self._add(self.metrics.signals_rejected, origin.strategy, "invalid_levels", n_invalid)
        ok = np.flatnonzero(inside & batch.valid)
        groups: dict[tuple[int, str], list[int]] = {}
        if batch.sub_keys is None:
            for s in (1, -1):
                groups[(s, "")] = ok[batch.sign[ok] == s].tolist()
        else:
            for i in ok.tolist():
                groups.setdefault((int(batch.sign[i]), batch.sub_keys[i]), []).append(i)
        chosen: list[int] = []
        for (s, sub), rows in groups.items():
            if not rows:
                continue
            direction = "LONG" if s > 0 else "SHORT"
            key = cooldown_key(origin.strategy, origin.symbol, origin.timeframe, direction, sub)
            at = close_ms[rows] / 1000.0
            j = 0
            while j < len(rows):
                until = self.cooldowns.until(key)
                if until is not None and until > at[j]:
                    j = int(at.searchsorted(until, side="left"))
                    if j >= len(rows):
                        break
                self.cooldowns.start(key, float(at[j]), origin.cooldown)
                chosen.append(rows[j])
                j += 1
        if len(ok) > len(chosen):
            self._add(self.metrics.signals_rejected, origin.strategy, "cooldown", len(ok) - len(chosen))
        chosen.sort()
        signs = batch.sign[chosen]
        for s, name in ((1, "LONG"), (-1, "SHORT")):
            emitted = int(np.count_nonzero(signs == s))
            if emitted:
                self._add(self.metrics.signals, origin.strategy, name, emitted)
        return [self._emit(origin, int(close_ms[i]), batch.candidate(i)) for i in chosen]
