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

from engine.market.candles import Candles, IntArray
from engine.signals.hits import CHUNK, HOW_EXPIRY, HOW_OPEN, HOW_STOP, HOW_TARGET, climb, ladders, locate
from engine.signals.model import Direction, Signal, iso_utc
from engine.signals.tally import StrategyStats
from engine.timeframes import timeframe_seconds

RESULTS = ("TP1", "TP2", "TP3", "SL", "EXPIRED")
BoolArray = npt.NDArray[np.bool_]
_NEVER_MS = 2**62  # an expiry age (ms) no signal reaches
_LONG = Direction.LONG  # a module constant: looking members up on the enum class is slow
_SCAN_MAX = 512  # positions x (candles + 16) up to which a plain walk beats the array search


def _sign(direction: Direction) -> int:
    """`Direction.sign`, without its enum-class lookup (this runs for every event)."""
    return 1 if direction is _LONG else -1


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
        risk = abs(self.entry - self.stop_loss)
        return _sign(self.direction) * (price - self.entry) / risk if risk > 0 else 0.0

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
class OutcomeTracker:
    """Open positions plus per-strategy statistics; fed closed candles, emits OutcomeEvents."""

    expiry_seconds: float | None = None
    open: dict[str, Position] = field(default_factory=dict)
    stats: dict[str, StrategyStats] = field(default_factory=dict)

    def track(self, sig: Signal) -> None:
        """Start tracking an emitted signal (idempotent on its id)."""
        st = self.stats.get(sig.strategy)
        if st is None:
            st = self.stats[sig.strategy] = StrategyStats()
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

        Live passes one new candle per close; replay may pass a long stretch at once. First
        every position's stop, targets and expiry are located (all positions of the series in
        one array search, or by a plain scan for a few short ones), then each is resolved with
        the rule a bar-by-bar walk would apply (stop first, then the ladder, then expiry).
        """
        events: list[OutcomeEvent] = []
        n = len(candles)
        if n == 0:
            return events
        series = [p for p in self.open.values() if p.symbol == symbol and p.timeframe == timeframe]
        if not series:
            return events
        tf_ms = timeframe_seconds(timeframe) * 1000
        seen = np.fromiter((p.last_seen_ms for p in series), np.int64, len(series))
        # each position's first candle closing after what it has seen (close = open + tf_ms)
        starts = candles.ts.searchsorted(seen - tf_ms, side="right")
        s0 = int(starts.min())
        if s0 >= n:
            return events
        if int(starts.max()) >= n:
            keep = starts < n
            series = [p for p, ok in zip(series, keep.tolist(), strict=True) if ok]
            starts = starts[keep]
        stretch = candles.slice(s0)  # what any of them has not seen; indices below are into it
        m = n - s0
        closes = stretch.ts + tf_ms
        times, prices = closes.tolist(), stretch.close.tolist()
        # a few positions over at most one chunk: walk them (their whole stretch decides them)
        if m <= CHUNK and len(series) * (m + 16) <= _SCAN_MAX:
            lows, highs, age = stretch.low.tolist(), stretch.high.tolist(), self.expiry_age_ms()
            scans = [
                self._scan(pos, r, lows, highs, times, age)
                for pos, r in zip(series, (starts - s0).tolist(), strict=True)
            ]
            self._resolve(series, np.full(len(series), m), scans, times, prices, events)
        else:
            end, j_stop, j_exp, hits = self._search(series, starts - s0, stretch, closes)
            self._resolve_arrays(series, end, j_stop, j_exp, hits, times, prices, events)
        return events

    def _search(
        self, series: list[Position], r: IntArray, c: Candles, closes: IntArray
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """`locate` for these positions."""
        count = len(series)
        return locate(
            np.fromiter((p.stop_loss for p in series), np.float64, count),
            *ladders([p.take_profits for p in series]),
            np.fromiter((p.direction is _LONG for p in series), np.bool_, count),
            np.fromiter((p.opened_ms for p in series), np.int64, count),
            r,
            c,
            closes,
            self.expiry_age_ms(),
        )

    @staticmethod
    def _scan(
        pos: Position, r: int, lows: list[float], highs: list[float], closes: list[int], age: int | None
    ) -> tuple[int, int, list[int]]:
        """`_search` for one position by a plain walk over a few candles (from index r): the
        first candle touching its stop, reaching its expiry, touching each target; len(closes)
        for none. Cheaper than array calls for a few positions and candles (live)."""
        m = len(closes)
        sl = pos.stop_loss
        if pos.direction is _LONG:
            j_stop = next((j for j in range(r, m) if lows[j] <= sl), m)
            hits = [next((j for j in range(r, m) if highs[j] >= tp), m) for tp in pos.take_profits]
        else:
            j_stop = next((j for j in range(r, m) if highs[j] >= sl), m)
            hits = [next((j for j in range(r, m) if lows[j] <= tp), m) for tp in pos.take_profits]
        j_exp = m
        if age is not None:
            opened = pos.opened_ms
            j_exp = next((j for j in range(r, m) if closes[j] - opened >= age), m)
        return j_stop, j_exp, hits

    def update_price(self, symbol: str, price: float, at_ms: int) -> list[OutcomeEvent]:
        """Check open signals of `symbol` against a live price between candle closes.

        A target or stop seen in the ticker is reported at once instead of at the candle's
        close. The candle walk still covers the whole candle later (this does not move
        `last_seen`), so a stop touched earlier in that candle still counts.
        """
        events: list[OutcomeEvent] = []
        if not math.isfinite(price) or price <= 0:
            return events
        # the price as one candle: its high, low and close, closing now
        point, when, age = [float(price)], [int(at_ms)], self.expiry_age_ms()
        series = [p for p in self.open.values() if p.symbol == symbol and at_ms > p.opened_ms]
        if not series:
            return events
        seen = [p.last_seen_ms for p in series]
        scans = [self._scan(pos, 0, point, point, when, age) for pos in series]
        self._resolve(series, np.ones(len(series), np.int64), scans, when, point, events)
        for pos, ms in zip(series, seen, strict=True):
            pos.last_seen_ms = ms
        return events

    def expiry_age_ms(self) -> int | None:
        """The whole-millisecond age from which a signal has expired (`age >= expiry_seconds`
        in ms, for integer ages), or None if signals never expire."""
        if self.expiry_seconds is None:
            return None
        limit = self.expiry_seconds * 1000
        if math.isnan(limit) or limit > _NEVER_MS:
            return None
        return -_NEVER_MS if limit < -_NEVER_MS else math.ceil(limit)

    def _resolve(
        self,
        series: list[Position],
        end: IntArray,
        scans: list[tuple[int, int, list[int]]],
        times: list[int],
        prices: list[float],
        out: list[OutcomeEvent],
    ) -> None:
        """`_resolve_arrays` for what `_scan` found, one (stop, expiry, targets) per position."""
        count = len(series)
        k = max((len(h) for _, _, h in scans), default=0)
        hits = np.array([h + [int(e)] * (k - len(h)) for (_, _, h), e in zip(scans, end, strict=True)])
        self._resolve_arrays(
            series,
            end,
            np.fromiter((s for s, _, _ in scans), np.int64, count),
            np.fromiter((x for _, x, _ in scans), np.int64, count),
            hits.reshape(count, k).astype(np.int64),
            times,
            prices,
            out,
        )

    def _resolve_arrays(
        self,
        series: list[Position],
        end: IntArray,
        j_stop: IntArray,
        j_exp: IntArray,
        hits: IntArray,
        times: list[int],
        prices: list[float],
        out: list[OutcomeEvent],
    ) -> None:
        """Move each position along its ladder by the one rule (`climb`), given the first candle
        touching its stop, reaching its expiry and touching each target, where `end` means "not
        in the candles seen"; index i closes at `times[i]` at `prices[i]`. Every step becomes an
        event, appended to `out` in position order."""
        count = len(series)
        lens = np.fromiter((len(p.take_profits) for p in series), np.int64, count)
        before = np.fromiter((p.reached for p in series), np.int64, count)
        now, how, at = climb(hits, lens, j_stop, j_exp, end, before)
        rows = zip(
            series, before.tolist(), now.tolist(), how.tolist(), at.tolist(), end.tolist(), strict=True
        )
        for i, (pos, was, reached, closed, j, e) in enumerate(rows):
            tps = pos.take_profits
            pos.reached = reached
            for step in range(was, reached):
                label = f"TP{step + 1}"
                t = times[int(hits[i, step])]
                if closed == HOW_TARGET and step == reached - 1:
                    out.append(self._close(pos, label, label, tps[step], t))
                else:
                    out.append(self._event(pos, label, label, False, tps[step], t))
            tp_r = tps[reached - 1] if reached else None
            if closed == HOW_STOP:
                result = f"TP{reached}" if reached else "SL"
                out.append(self._close(pos, "SL", result, pos.stop_loss, times[j], tp_r))
            elif closed == HOW_EXPIRY:
                result = f"TP{reached}" if reached else "EXPIRED"
                out.append(self._close(pos, "EXPIRED", result, prices[j], times[j], tp_r))
            elif closed == HOW_OPEN:
                pos.last_seen_ms = times[e - 1]

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
        entry = pos.entry
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
            pos.r_at(price if r_price is None else r_price),
            _sign(pos.direction) * (price - entry) / entry * 100.0,
        )

    def _close(
        self, pos: Position, event: str, result: str, price: float, at_ms: int, r_price: float | None = None
    ) -> OutcomeEvent:
        ev = self._event(pos, event, result, True, price, at_ms, r_price)
        del self.open[pos.signal_id]
        st = self.stats.get(pos.strategy)
        if st is None:
            st = self.stats[pos.strategy] = StrategyStats()
        st.record(result, ev.r_multiple)
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
