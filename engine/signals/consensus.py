"""Consensus aggregator (spec §5): several distinct strategies agreeing on one market.

Receives every emitted signal in process (no state-file polling, so nothing is missed), keeps
every signal of the window, and needs distinct strategies — one strategy twice is not a
consensus. All times are candle times (`bar_close_ms`), so live and replay agree.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.signals.levels import RR_TOLERANCE
from engine.signals.model import SIDE, Signal, iso_utc

LABELS = ((7.0, "LEGENDARY"), (5.0, "EXTREME"), (3.5, "HIGH"), (2.0, "MODERATE"))
RR_RELAX = ((7.0, 1.1), (5.0, 1.3), (3.5, 1.4))


@dataclass(frozen=True, slots=True)
class ConsensusSettings:
    """The aggregator's knobs as plain values, so it does not depend on the config model."""

    window_minutes: float = 30.0
    min_strategies: int = 2
    threshold: float = 3.0
    min_rr: float = 1.7
    memory_hours: float = 2.0
    default_weight: float = 1.0
    adaptive: bool = False
    adaptive_min_factor: float = 0.5
    adaptive_max_factor: float = 1.5


HitCounts = Callable[[str], tuple[int, int]]
"""strategy → (wins, closed) from the outcome tracker."""


def hit_rate_factor(wins: int, closed: int, lo: float, hi: float) -> float:
    """Weight multiplier from a tracked hit rate: Laplace-smoothed so a new strategy starts at
    1.0 (one virtual win and loss), relative to a coin flip, clamped to [lo, hi]."""
    p = (wins + 1) / (closed + 2)
    return min(max(p / 0.5, lo), hi)


def strength_label(score: float) -> str:
    """The spec §5 label of a score (LOW to LEGENDARY), each bound within the R:R float tolerance."""
    for bound, label in LABELS:
        if score >= bound - RR_TOLERANCE:
            return label
    return "LOW"


def effective_min_rr(score: float, min_rr: float) -> float:
    """The R:R gate for a score: strong agreement relaxes `min_rr` (spec §5), never tightens it."""
    for bound, relaxed in RR_RELAX:
        if score >= bound - RR_TOLERANCE:
            return min(min_rr, relaxed)
    return min_rr


def recency_weight(age_minutes: float) -> float:
    """Weight of a contributor's entry in the blended consensus entry, so fresher prices count more."""
    if age_minutes <= 5.0:
        return 2.0
    if age_minutes >= 15.0:
        return 1.0
    return 1.5


def _spans(settings: ConsensusSettings) -> tuple[int, int]:
    """The window and the alert memory in ms."""
    return int(settings.window_minutes * 60_000), int(settings.memory_hours * 3_600_000)


@dataclass(frozen=True, slots=True)
class _ScoreFacts:
    """What a score decides, worked out once per distinct score: a replay raises thousands of
    alerts from the few sums its weights can make."""

    label: str
    min_rr: float
    confidence: float
    rounded: float
    text: str

    @classmethod
    def of(cls, score: float, min_rr: float) -> _ScoreFacts:
        return cls(
            strength_label(score),
            effective_min_rr(score, min_rr),
            round(min(score / 7.0, 1.0) * 100, 1),
            round(score, 4),
            f"{score:.2f}",
        )


class ConsensusAggregator:
    """Groups signals by (symbol, direction, timeframe) within a sliding window."""

    def __init__(
        self,
        settings: ConsensusSettings,
        weights: Mapping[str, float],
        plugin_of: Mapping[str, str],
        hits: HitCounts | None = None,
    ):
        self.hits = hits
        self._settings = settings
        self._window_ms, self._memory_ms = _spans(settings)
        self._weights = dict(weights)
        # instance name → plugin name, so "psar_fast" weighs like psar unless configured itself
        self._plugin_of = dict(plugin_of)
        self._base: dict[str, float] = {}  # base weights looked up so far (a replay asks millions of times)
        self._by_score: dict[float, _ScoreFacts] = {}  # what a score decides (few distinct scores recur)
        self._recent: dict[tuple[str, str, str], deque[Signal]] = {}
        self._alert_ids: dict[tuple[str, str, str], str] = {}
        self._memory: dict[str, dict[str, Any]] = {}
        self._oldest_alert_ms = 0  # a lower bound of the memory's last_alert_ms values

    # settings, weights and plugin names are replaced on reload; the weights follow them

    @property
    def settings(self) -> ConsensusSettings:
        """The knobs in force."""
        return self._settings

    @settings.setter
    def settings(self, value: ConsensusSettings) -> None:
        self._settings, self._base, self._by_score = value, {}, {}
        self._window_ms, self._memory_ms = _spans(value)

    @property
    def weights(self) -> dict[str, float]:
        """Configured weights by instance or plugin name."""
        return self._weights

    @weights.setter
    def weights(self, value: Mapping[str, float]) -> None:
        self._weights, self._base = dict(value), {}

    @property
    def plugin_of(self) -> dict[str, str]:
        """Instance name → plugin name."""
        return self._plugin_of

    @plugin_of.setter
    def plugin_of(self, value: Mapping[str, str]) -> None:
        self._plugin_of, self._base = dict(value), {}

    def base_weight(self, strategy: str) -> float:
        """Configured weight by instance name, then plugin name, else the default weight."""
        if strategy in self._weights:
            return self._weights[strategy]
        return self._weights.get(self._plugin_of.get(strategy, strategy), self._settings.default_weight)

    def weight(self, strategy: str) -> float:
        """Configured weight, scaled by the strategy's tracked hit rate when adaptive."""
        base = self._base.get(strategy)
        if base is None:
            base = self._base[strategy] = self.base_weight(strategy)
        if not self._settings.adaptive or self.hits is None:
            return base
        wins, closed = self.hits(strategy)
        st = self._settings
        return base * hit_rate_factor(wins, closed, st.adaptive_min_factor, st.adaptive_max_factor)

    def add(self, sig: Signal) -> Signal | None:
        """Record a strategy signal; return a consensus Signal when it triggers a NEW or UPDATE alert."""
        if sig.kind != "signal":
            return None
        st = self._settings
        now_ms = sig.bar_close_ms
        group = (sig.symbol, SIDE[sig.direction], sig.timeframe)
        q = self._recent.get(group)
        if q is None:
            q = self._recent[group] = deque()
        q.append(sig)
        oldest = now_ms - self._window_ms
        while q[0].bar_close_ms < oldest:  # never empties: sig itself stays
            q.popleft()
        self._expire_memory(now_ms)
        # latest signal per distinct strategy
        if len(q) < st.min_strategies:
            return None
        latest: dict[str, Signal] = {}
        for s in q:
            if s.bar_close_ms <= now_ms:
                latest[s.strategy] = s
        if len(latest) < st.min_strategies:
            return None
        weight = self.weight
        weights = {name: weight(name) for name in latest}
        score = sum(weights.values())
        if score < st.threshold - RR_TOLERANCE:
            return None
        return self._alert(sig, group, latest, weights, score, now_ms)

    def _alert(
        self,
        trigger: Signal,
        group: tuple[str, str, str],
        latest: dict[str, Signal],
        weights: dict[str, float],
        score: float,
        now_ms: int,
    ) -> Signal | None:
        alert_id = self._alert_ids.get(group)
        if alert_id is None:
            alert_id = self._alert_ids[group] = "_".join(p for p in group if p)
        mem = self._memory.get(alert_id)
        if mem is not None and set(latest) <= set(mem["contributors"]):
            # nothing new to say; deciding it first is cheaper and changes nothing, since the
            # gates below never touch the memory when they refuse
            return None
        direction = trigger.direction
        s = direction.sign
        voters = sorted(latest.items())
        ages = []
        num = den = 0.0
        for _, sig in voters:  # the entry: recency-weighted, in name order
            age = (now_ms - sig.bar_close_ms) / 60_000
            ages.append(age)
            rw = recency_weight(age)
            num += sig.entry * rw
            den += rw
        entry = num / den
        sl_sum = tp1_sum = tp2_sum = 0.0
        n1 = n2 = 0
        for x in latest.values():  # plain means, added up in arrival order
            sl_sum += x.stop_loss
            tps = x.take_profits
            if tps:
                tp1_sum += tps[0]
                n1 += 1
                if len(tps) > 1:
                    tp2_sum += tps[1]
                    n2 += 1
        sl = sl_sum / len(latest)
        risk = s * (entry - sl)
        if risk <= 0:
            return None  # mean stop not on the losing side: the original sent these, we do not
        tp1 = tp1_sum / n1 if n1 else entry + s * risk
        tp2 = tp2_sum / n2 if n2 else entry + s * 2 * risk
        if s * (tp1 - entry) <= 0:
            tp1 = entry + s * risk
        if s * (tp2 - entry) <= 0:
            tp2 = entry + s * 2 * risk
        rr1 = abs(tp1 - entry) / risk
        rr2 = abs(tp2 - entry) / risk
        facts = self._by_score.get(score)
        if facts is None:
            facts = self._by_score[score] = _ScoreFacts.of(score, self._settings.min_rr)
        need = facts.min_rr
        if max(rr1, rr2) < need - RR_TOLERANCE:
            return None
        names = set(latest)
        if mem is None:
            kind, new_names = "new", sorted(names)
        else:
            new_names = sorted(names - set(mem["contributors"]))
            if not new_names:
                return None
            kind = "update"
            names |= set(mem["contributors"])
        self._memory[alert_id] = {"contributors": sorted(names), "last_alert_ms": now_ms}
        first = len(self._memory) == 1
        self._oldest_alert_ms = now_ms if first else min(self._oldest_alert_ms, now_ms)
        label = facts.label
        contributors = [
            {
                "strategy": name,
                "weight": weights[name],
                "age_minutes": round(age, 2),
                "entry": sig.entry,
                "stop_loss": sig.stop_loss,
                "signal_id": sig.id,
            }
            for (name, sig), age in zip(voters, ages, strict=True)
        ]
        voted = ",".join([name for name, _ in voters])  # sorted
        digest = hashlib.sha1(f"{alert_id}|{now_ms}|{voted}".encode(), usedforsecurity=False).hexdigest()[:16]
        return Signal(
            id=digest,
            strategy="consensus",
            symbol=group[0],
            direction=direction,
            timeframe=group[2],
            exchange=trigger.exchange,
            entry=entry,
            stop_loss=sl,
            take_profits=(tp1, tp2),
            created_at=iso_utc(now_ms),
            bar_close_ms=now_ms,
            confidence=facts.confidence,
            rationale=(f"{len(latest)} strategies agree, score {facts.text} ({label})",),
            metadata={
                "alert_id": alert_id,
                "alert": kind,
                "score": facts.rounded,
                "label": label,
                "rr1": round(rr1, 4),
                "rr2": round(rr2, 4),
                "min_rr": need,
                "new_contributors": new_names,
                "contributors": contributors,
            },
            kind="consensus",
        )

    def _expire_memory(self, now_ms: int) -> None:
        horizon = now_ms - self._memory_ms
        if not self._memory or self._oldest_alert_ms >= horizon:
            return  # runs for every signal: skip the scan while nothing can have expired
        for key in [k for k, v in self._memory.items() if v["last_alert_ms"] < horizon]:
            del self._memory[key]
        self._oldest_alert_ms = min((v["last_alert_ms"] for v in self._memory.values()), default=0)

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Alert memory and the window's signals in plain types, so a restart keeps both."""
        return {
            "memory": self._memory,
            "recent": [s.to_record() for q in self._recent.values() for s in q],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a `snapshot()` from the state file, so a restart neither repeats nor loses an alert."""
        self._memory = {str(k): dict(v) for k, v in dict(data.get("memory", {})).items()}
        self._oldest_alert_ms = min((int(v["last_alert_ms"]) for v in self._memory.values()), default=0)
        for rec in data.get("recent", []):
            sig = Signal.from_record(rec)
            group = (sig.symbol, sig.direction.value, sig.timeframe)
            self._recent.setdefault(group, deque()).append(sig)
