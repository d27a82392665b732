"""Outcome tracking: what happened to every emitted signal (spec §3, issue 5).

A signal is open from its bar's close. Each later closed candle of its market moves it along
the ladder TP1 → TP2 → TP3 (closed at the last target), or stops it out, or expires it after
`expiry_seconds`. When one candle touches both the stop and the next target we cannot know
which came first, so the stop is counted (conservative). TP1 is a full win (no partials): a
signal stopped out after TP1 closes as TP1, at TP1's R. Live and replay use this same class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.market.candles import Candles, FloatArray, IntArray
from engine.signals.model import Direction, Signal, iso_utc
from engine.timeframes import timeframe_seconds

RESULTS = ("TP1", "TP2", "TP3", "SL", "EXPIRED")
BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Position:
    """Tracking state of one open signal (mutable: it moves along its ladder)."""

    signal_id: str
    strategy: str
    symbol: str
    timeframe: str
    direction: Direction
    entry: float
    stop_loss: float
    take_profits: tuple[float, ...]
    opened_ms: int
    last_seen_ms: int
    reached: int = 0  # how many targets have been hit

    @property
    def risk(self) -> float:
        """Entry-to-stop distance: the unit of `r_at`."""
        return abs(self.entry - self.stop_loss)

    def r_at(self, price: float) -> float:
        """Profit at `price` in R (multiples of the risk); 0 for a zero-risk position, not an error."""
        return self.direction.sign * (price - self.entry) / self.risk if self.risk > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form for the state file."""
        d = asdict(self)
        d["direction"] = self.direction.value
        d["take_profits"] = list(self.take_profits)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Position:
        """Inverse of `to_dict()`; KeyError, ValueError or TypeError for an entry of another layout."""
        return cls(
            signal_id=str(d["signal_id"]),
            strategy=str(d["strategy"]),
            symbol=str(d["symbol"]),
            timeframe=str(d["timeframe"]),
            direction=Direction(d["direction"]),
            entry=float(d["entry"]),
            stop_loss=float(d["stop_loss"]),
            take_profits=tuple(float(x) for x in d["take_profits"]),
            opened_ms=int(d["opened_ms"]),
            last_seen_ms=int(d["last_seen_ms"]),
            reached=int(d.get("reached", 0)),
        )


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """A step of a signal's life: a target hit, a stop, an expiry. `final` closes the signal."""

    signal_id: str
    strategy: str
    symbol: str
    timeframe: str
    direction: Direction
    event: str
    result: str
    final: bool
    price: float
    at_ms: int
    r_multiple: float
    pnl_percent: float

    def to_record(self) -> dict[str, Any]:
        """The journal and sink form (kind "outcome"), timed by candle close like signals."""
        return {
            "kind": "outcome",
            "signal_id": self.signal_id,
            "strategy": self.strategy,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "direction": self.direction.value,
            "event": self.event,
            "result": self.result,
            "final": self.final,
            "price": self.price,
            "at": iso_utc(self.at_ms),
            "bar_close_ms": self.at_ms,
            "r_multiple": round(self.r_multiple, 6),
            "pnl_percent": round(self.pnl_percent, 6),
        }


@dataclass(slots=True)
class StrategyStats:
    """Closed-signal tallies of one strategy (or of "consensus")."""

    signals: int = 0
    tp1: int = 0
    tp2: int = 0
    tp3: int = 0
    sl: int = 0
    expired: int = 0
    sum_r: float = 0.0

    @property
    def closed(self) -> int:
        """Signals that reached a final result: the denominator of the rates."""
        return self.tp1 + self.tp2 + self.tp3 + self.sl + self.expired

    @property
    def wins(self) -> int:
        """Closes at any target; TP1 is already a full win (no partials)."""
        return self.tp1 + self.tp2 + self.tp3

    @property
    def win_rate(self) -> float | None:
        """Wins per closed signal; None before any close, since 0 would read as a losing strategy."""
        return self.wins / self.closed if self.closed else None

    @property
    def avg_r(self) -> float | None:
        """Mean R per closed signal; None before any close."""
        return self.sum_r / self.closed if self.closed else None

    def record(self, result: str, r: float) -> None:
        """Tally one final result (a RESULTS name) and its R multiple."""
        setattr(self, result.lower(), getattr(self, result.lower()) + 1)
        self.sum_r += r

    def summary(self) -> dict[str, Any]:
        """The public view: counts, win rate and average R (None until something closed)."""
        wr, ar = self.win_rate, self.avg_r
        return {
            "signals": self.signals,
            "tp1": self.tp1,
            "tp2": self.tp2,
            "tp3": self.tp3,
            "sl": self.sl,
            "expired": self.expired,
            "closed": self.closed,
            "open": self.signals - self.closed,
            "win_rate": None if wr is None else round(wr, 4),
            "avg_r": None if ar is None else round(ar, 4),
        }


@dataclass(slots=True)
class OutcomeTracker:
    """Open positions plus per-strategy statistics; fed closed candles, emits OutcomeEvents."""

    expiry_seconds: float | None = None
    open: dict[str, Position] = field(default_factory=dict)
    stats: dict[str, StrategyStats] = field(default_factory=dict)

    def track(self, sig: Signal) -> None:
        """Start tracking an emitted signal (idempotent on its id)."""
        st = self.stats.setdefault(sig.strategy, StrategyStats())
        if sig.id in self.open or not sig.take_profits:
            return
        st.signals += 1
        self.open[sig.id] = Position(
            sig.id,
            sig.strategy,
            sig.symbol,
            sig.timeframe,
            sig.direction,
            sig.entry,
            sig.stop_loss,
            tuple(sig.take_profits),
            sig.bar_close_ms,
            sig.bar_close_ms,
        )

    def watched(self) -> set[tuple[str, str]]:
        """(symbol, timeframe) series that have open signals."""
        return {(p.symbol, p.timeframe) for p in self.open.values()}

    def update(self, symbol: str, timeframe: str, candles: Candles) -> list[OutcomeEvent]:
        """Walk every open signal of this series through the candles it has not seen yet.

        Live passes one new candle per close; replay may pass a long stretch at once. Each
        position is resolved with a few array searches instead of a loop over bars, with the
        same rule a bar-by-bar walk would apply (stop first, then the ladder, then expiry).
        """
        events: list[OutcomeEvent] = []
        if len(candles) == 0:
            return events
        tf_ms = timeframe_seconds(timeframe) * 1000
        closes = candles.ts + tf_ms
        for pos in [p for p in self.open.values() if p.symbol == symbol and p.timeframe == timeframe]:
            start = int(closes.searchsorted(pos.last_seen_ms, side="right"))
            if start < len(candles):
                events.extend(
                    self._walk(pos, candles, closes, start, self._horizon(pos, candles, closes, start))
                )
        return events

    def _horizon(self, pos: Position, c: Candles, closes: IntArray, start: int) -> int:
        """End of the stretch that decides the position: the first chunk (growing 64, 128, ...
        bars) holding its stop, its last target or its expiry. A year-long replay then costs
        each signal the bars until it resolves, not the whole remaining history."""
        long = pos.direction is Direction.LONG
        last_tp = pos.take_profits[-1]
        end, step, n = start, 64, len(c)
        while end < n:
            lo_end = end
            end = min(n, end + step)
            hi, lo = c.high[lo_end:end], c.low[lo_end:end]
            if (lo <= pos.stop_loss).any() if long else (hi >= pos.stop_loss).any():
                break
            if (hi >= last_tp).any() if long else (lo <= last_tp).any():
                break
            if (
                self.expiry_seconds is not None
                and closes[end - 1] - pos.opened_ms >= self.expiry_seconds * 1000
            ):
                break
            step *= 2
        return end

    def update_price(self, symbol: str, price: float, at_ms: int) -> list[OutcomeEvent]:
        """Check open signals of `symbol` against a live price between candle closes.

        A target or stop seen in the ticker is reported at once instead of at the candle's
        close. The candle walk still covers the whole candle later (this does not move
        `last_seen`), so a stop touched earlier in that candle still counts.
        """
        events: list[OutcomeEvent] = []
        if not math.isfinite(price) or price <= 0:
            return events
        point = np.array([price], dtype=np.float64)
        when = np.array([at_ms], dtype=np.int64)
        for pos in [p for p in self.open.values() if p.symbol == symbol]:
            if at_ms <= pos.opened_ms:
                continue
            seen = pos.last_seen_ms
            events.extend(self._walk_arrays(pos, point, point, point, when))
            pos.last_seen_ms = seen
        return events

    def _walk(self, pos: Position, c: Candles, closes: IntArray, start: int, stop: int) -> list[OutcomeEvent]:
        return self._walk_arrays(
            pos, c.high[start:stop], c.low[start:stop], c.close[start:stop], closes[start:stop]
        )

    def _walk_arrays(
        self, pos: Position, hi: FloatArray, lo: FloatArray, cl: FloatArray, ts: IntArray
    ) -> list[OutcomeEvent]:
        n = len(ts)
        long = pos.direction is Direction.LONG

        def first(mask: BoolArray) -> int:
            return int(mask.argmax()) if mask.any() else n

        j_stop = first(lo <= pos.stop_loss if long else hi >= pos.stop_loss)
        j_exp = n
        if self.expiry_seconds is not None:
            j_exp = first(ts - pos.opened_ms >= self.expiry_seconds * 1000)
        out: list[OutcomeEvent] = []
        while pos.reached < len(pos.take_profits):
            tp = pos.take_profits[pos.reached]
            j = first(hi >= tp if long else lo <= tp)
            # a stop inside the same candle as the target wins the tie (conservative)
            if not (j < j_stop and j <= j_exp):
                break
            pos.reached += 1
            label = f"TP{pos.reached}"
            if pos.reached == len(pos.take_profits):
                out.append(self._close(pos, label, label, tp, int(ts[j])))
                return out
            out.append(self._event(pos, label, label, False, tp, int(ts[j])))
        tp_r = pos.take_profits[pos.reached - 1] if pos.reached else None
        if j_stop < n and j_stop <= j_exp:
            result = f"TP{pos.reached}" if pos.reached else "SL"
            out.append(self._close(pos, "SL", result, pos.stop_loss, int(ts[j_stop]), r_price=tp_r))
        elif j_exp < n:
            result = f"TP{pos.reached}" if pos.reached else "EXPIRED"
            price = float(cl[j_exp])
            out.append(self._close(pos, "EXPIRED", result, price, int(ts[j_exp]), r_price=tp_r))
        else:
            pos.last_seen_ms = int(ts[-1])
        return out

    def _event(
        self,
        pos: Position,
        event: str,
        result: str,
        final: bool,
        price: float,
        at_ms: int,
        r_price: float | None = None,
    ) -> OutcomeEvent:
        r = pos.r_at(price if r_price is None else r_price)
        pnl = pos.direction.sign * (price - pos.entry) / pos.entry * 100.0
        return OutcomeEvent(
            pos.signal_id,
            pos.strategy,
            pos.symbol,
            pos.timeframe,
            pos.direction,
            event,
            result,
            final,
            price,
            at_ms,
            r,
            pnl,
        )

    def _close(
        self, pos: Position, event: str, result: str, price: float, at_ms: int, r_price: float | None = None
    ) -> OutcomeEvent:
        ev = self._event(pos, event, result, True, price, at_ms, r_price)
        del self.open[pos.signal_id]
        self.stats.setdefault(pos.strategy, StrategyStats()).record(result, ev.r_multiple)
        return ev

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per-strategy summaries sorted by name: the figures a replay reports."""
        return {name: st.summary() for name, st in sorted(self.stats.items())}

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(open positions, stats) in plain types for the state file."""
        stats = {name: asdict(st) for name, st in self.stats.items()}
        return [p.to_dict() for p in self.open.values()], stats

    def restore(self, open_positions: Iterable[Mapping[str, Any]], stats: Mapping[str, Any]) -> None:
        """Load a `snapshot()`; entries from an older state layout are skipped, not fatal."""
        for d in open_positions:
            try:
                pos = Position.from_dict(d)
            except (KeyError, ValueError, TypeError):
                continue  # an open-signal entry from an older state layout: not a position
            self.open[pos.signal_id] = pos
        for name, d in stats.items():
            self.stats[name] = StrategyStats(
                **{k: v for k, v in dict(d).items() if k in StrategyStats.__slots__}
            )
