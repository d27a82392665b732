"""Values that flow from strategies to sinks: directions, levels, candidates, signals."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


class Direction(StrEnum):
    """Trade direction. The originals' BULLISH/BUY map to LONG, BEARISH/SELL to SHORT."""

    LONG = "LONG"
    SHORT = "SHORT"

    sign: int
    """+1 for LONG, -1 for SHORT: multiplies distances so one formula serves both sides.
    A plain attribute (set below), not a property: outcome tracking reads it millions of
    times in a long replay."""

    @classmethod
    def parse(cls, text: str) -> Direction:
        """Read the originals' BULLISH/BUY and BEARISH/SELL as well as LONG/SHORT, in any case."""
        t = text.strip().upper()
        if t in ("LONG", "BULLISH", "BUY"):
            return cls.LONG
        if t in ("SHORT", "BEARISH", "SELL"):
            return cls.SHORT
        raise ValueError(f"unknown direction {text!r}")


Direction.LONG.sign = 1
Direction.SHORT.sign = -1
SIDE = {d: d.value for d in Direction}
"""Direction → "LONG"/"SHORT", for hot paths: reading an enum's `.value` costs a microsecond."""


@dataclass(frozen=True, slots=True)
class Levels:
    """Stop-loss and take-profits for one entry, with the verdict of the R:R gate."""

    entry: float
    stop_loss: float
    take_profits: tuple[float, ...]
    risk: float
    rr1: float
    rr2: float | None
    valid: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a strategy proposes at one bar of its window; the engine decides if it becomes a Signal.

    `bar` indexes the window the strategy was given. `levels` come from the shared TP/SL
    calculator; candidates whose levels are invalid are rejected centrally (and counted).
    """

    bar: int
    direction: Direction
    levels: Levels
    confidence: float | None = None
    rationale: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sub_key: str = ""

    @property
    def entry(self) -> float:
        """The entry price the levels were computed for."""
        return self.levels.entry


def signal_id(strategy: str, symbol: str, timeframe: str, bar_close_ms: int, direction: Direction) -> str:
    """Deterministic id: the same signal found live and in replay gets the same id."""
    return signal_ids(strategy, symbol, timeframe, (bar_close_ms,), (direction.value,))[0]


def signal_ids(
    strategy: str, symbol: str, timeframe: str, bar_close_ms: Iterable[int], sides: Iterable[str]
) -> list[str]:
    """`signal_id` of many signals of one stream (a replay makes hundreds of thousands)."""
    head = f"{strategy}|{symbol}|{timeframe}|"
    sha1 = hashlib.sha1
    return [
        sha1(f"{head}{ms}|{side}".encode(), usedforsecurity=False).hexdigest()[:16]
        for ms, side in zip(bar_close_ms, sides, strict=True)
    ]


_DAY_MS = 86_400_000


def iso_utc(epoch_ms: int) -> str:
    """UTC ISO-8601 with a Z suffix, second precision (signal times are candle closes).

    Day and time of day are formatted apart and cached: a replay formats a year of distinct
    candle closes, which no cache of whole timestamps would hold, but only a few hundred
    days and the few hundred closes of a day."""
    day, ms = divmod(epoch_ms, _DAY_MS)
    return f"{_iso_day(day)}T{_iso_time(ms // 1000)}Z"


def iso_utc_bytes(epoch_ms: npt.NDArray[np.int64]) -> list[bytes]:
    """`iso_utc` of many times as ASCII: each distinct day and time of day formatted once, each
    time then two concatenations (a replay writes the outcome time of every signal)."""
    day, rest = np.divmod(epoch_ms, _DAY_MS)
    second = rest // 1000
    days = {d: f"{_iso_day(d)}T".encode() for d in np.unique(day).tolist()}
    times = {s: f"{_iso_time(s)}Z".encode() for s in np.unique(second).tolist()}
    return [days[d] + times[s] for d, s in zip(day.tolist(), second.tolist(), strict=True)]


@functools.lru_cache(maxsize=4096)
def _iso_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).isoformat()


@functools.lru_cache(maxsize=4096)
def _iso_time(second: int) -> str:
    h, rest = divmod(second, 3600)
    return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


_EPOCH = date(1970, 1, 1)


NO_METADATA: Mapping[str, Any] = MappingProxyType({})
"""The metadata of a signal that has none: one shared, read-only empty mapping."""


class Signal(NamedTuple):
    """An emitted signal: the record written to the journal and sent to every sink.

    `created_at` is the close time of the signal bar (candle time, not wall time), so live
    and replay produce identical records. `kind` is "signal" for a strategy's signal and
    "consensus" for the aggregator's.

    Immutable like the engine's frozen dataclasses, but a NamedTuple: a year-long replay
    makes several hundred thousand signals, and a tuple is built about six times faster
    than a frozen dataclass (which sets each field through `object.__setattr__`), and many
    of them turn into columns at C speed (`zip(*signals)`).
    """

    id: str
    strategy: str
    symbol: str
    direction: Direction
    timeframe: str
    exchange: str
    entry: float
    stop_loss: float
    take_profits: tuple[float, ...]
    created_at: str
    bar_close_ms: int
    confidence: float | None = None
    rationale: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = NO_METADATA
    kind: str = "signal"

    @property
    def risk(self) -> float:
        """Entry-to-stop distance: the unit R multiples are measured in."""
        return abs(self.entry - self.stop_loss)

    def to_record(self) -> dict[str, Any]:
        """The journal/JSON form: plain types only, key order stable."""
        return record(
            self.id,
            self.kind,
            self.strategy,
            self.symbol,
            SIDE[self.direction],
            self.timeframe,
            self.exchange,
            self.entry,
            self.stop_loss,
            self.take_profits,
            self.created_at,
            self.bar_close_ms,
            self.confidence,
            self.rationale,
            self.metadata,
        )

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Signal:
        """Inverse of `to_record()`, for the state file and journal; absent optional keys get defaults."""
        return cls(
            id=str(rec["id"]),
            strategy=str(rec["strategy"]),
            symbol=str(rec["symbol"]),
            direction=Direction(rec["direction"]),
            timeframe=str(rec["timeframe"]),
            exchange=str(rec["exchange"]),
            entry=float(rec["entry"]),
            stop_loss=float(rec["stop_loss"]),
            take_profits=tuple(float(x) for x in rec["take_profits"]),
            created_at=str(rec["created_at"]),
            bar_close_ms=int(rec["bar_close_ms"]),
            confidence=None if rec.get("confidence") is None else float(rec["confidence"]),
            rationale=tuple(str(x) for x in rec.get("rationale", ())),
            metadata=dict(rec.get("metadata", {})),
            kind=str(rec.get("kind", "signal")),
        )


def record(
    id: str,
    kind: str,
    strategy: str,
    symbol: str,
    direction: str,
    timeframe: str,
    exchange: str,
    entry: float,
    stop_loss: float,
    take_profits: Sequence[float],
    created_at: str,
    bar_close_ms: int,
    confidence: float | None,
    rationale: Sequence[str],
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """A signal's journal record from its fields (`direction` as its name): `Signal.to_record`,
    for a replay that writes the records of signals it never builds with their words."""
    return {
        "id": id,
        "kind": kind,
        "strategy": strategy,
        "symbol": symbol,
        "direction": direction,
        "timeframe": timeframe,
        "exchange": exchange,
        "entry": entry,
        "stop_loss": stop_loss,
        "take_profits": list(take_profits),
        "created_at": created_at,
        "bar_close_ms": bar_close_ms,
        "confidence": confidence,
        "rationale": list(rationale),
        "metadata": dict(metadata),
    }


class SignalFields(NamedTuple):
    """Signals as columns, one sequence per Signal field: what a replay works on when it handles
    a year of signals at once (`zip(*signals)` transposes them at C speed)."""

    id: Sequence[str]
    strategy: Sequence[str]
    symbol: Sequence[str]
    direction: Sequence[Direction]
    timeframe: Sequence[str]
    exchange: Sequence[str]
    entry: Sequence[float]
    stop_loss: Sequence[float]
    take_profits: Sequence[tuple[float, ...]]
    created_at: Sequence[str]
    bar_close_ms: Sequence[int]
    confidence: Sequence[float | None]
    rationale: Sequence[tuple[str, ...]]
    metadata: Sequence[object]
    kind: Sequence[str]

    @classmethod
    def of(cls, signals: Sequence[Signal]) -> SignalFields:
        """The columns of `signals`."""
        if not signals:
            return cls(*([()] * len(Signal._fields)))
        return cls(*zip(*signals, strict=True))


if SignalFields._fields != Signal._fields:  # a field added to one must be added to the other
    raise TypeError("SignalFields must list Signal's fields in order")
