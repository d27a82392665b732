"""Signals on the terminal, one aligned line each, readable at a glance while the engine runs."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from engine.signals.model import Signal
from engine.sinks.base import SinkEvent

SIGNIFICANT_DIGITS = 8


def _decimals(price: float) -> int:
    """Decimals needed to show `price` to 8 significant digits, trailing zeros dropped."""
    if price == 0 or not math.isfinite(price):
        return 0
    places = max(0, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(price))))
    text = f"{price:.{places}f}"
    return len(text.partition(".")[2].rstrip("0"))


def _price_format(prices: Iterable[float]) -> str:
    """One decimal count for all prices of a line, so entry, SL and TPs line up digit by digit."""
    places = max((_decimals(p) for p in prices), default=0)
    return f"{{:.{places}f}}"


def _levels(entry: float | None, stop_loss: float | None, take_profits: Iterable[float]) -> str:
    tps = [float(t) for t in take_profits]
    known = [p for p in (entry, stop_loss, *tps) if p is not None]
    fmt = _price_format(known)

    def show(p: float | None) -> str:
        return "—" if p is None else fmt.format(p)

    tp_text = " / ".join(fmt.format(t) for t in tps) if tps else "—"
    return f"entry {show(entry)}  SL {show(stop_loss)}  TP {tp_text}"


def format_signal(signal: Signal) -> str:
    """The console line for one signal: when, who, what, and the levels to act on."""
    head = (
        f"{signal.created_at}  {signal.strategy:<14} {signal.symbol:<10} "
        f"{signal.timeframe:<4}{signal.direction.value:<7}"
    )
    parts = [head + _levels(signal.entry, signal.stop_loss, signal.take_profits)]
    risk = signal.risk
    if signal.take_profits and risk > 0:
        parts.append(f"R:R {abs(signal.take_profits[0] - signal.entry) / risk:.2f}")
    if signal.confidence is not None:
        parts.append(f"conf {signal.confidence:.2f}")
    return "  ".join(parts)


def format_outcome(record: Mapping[str, Any]) -> str:
    """The console line for a signal's progress: which level was hit, at what R."""
    price = float(record.get("price", math.nan))
    fmt = _price_format([price])
    state = "closed" if record.get("final") else "open"
    result = record.get("result")
    event = record.get("event")
    what = str(event) if result == event else f"{event} (result {result})"
    return (
        f"{record.get('at', '?')}  OUTCOME {record.get('strategy', '?')} {record.get('symbol', '?')} "
        f"{record.get('timeframe', '?')} {record.get('direction', '?')}  {what} at {fmt.format(price)}  "
        f"{float(record.get('r_multiple', 0.0)):+.2f}R  "
        f"{float(record.get('pnl_percent', 0.0)):+.2f}%  ({state})"
    )


def _field(record: Mapping[str, Any], key: str) -> Any:
    """A consensus value from the top level, else from `metadata` (the Signal-record shape)."""
    value = record.get(key)
    if value is None:
        meta = record.get("metadata")
        if isinstance(meta, Mapping):
            value = meta.get(key)
    return value


def _contributor(c: Mapping[str, Any]) -> str:
    weight = c.get("weight")
    age = c.get("age_minutes")
    bits = [f"{float(weight):g}" if weight is not None else "?"]
    if age is not None:
        bits.append(f"{float(age):.0f}m")
    return f"{c.get('strategy', '?')}({', '.join(bits)})"


def format_consensus(record: Mapping[str, Any]) -> str:
    """The console line for a consensus alert, ending with who agreed and how long ago.

    Accepts the flat alert dict and the consensus `Signal.to_record()` form (score, label,
    contributors and new/update under `metadata`). It is called on the publishing path, so
    a missing field prints as "?" instead of raising.
    """
    alert = _field(record, "alert")
    if alert is None and record.get("kind") in ("new", "update"):
        alert = record["kind"]
    label = "CONSENSUS" if alert in (None, "new") else f"CONSENSUS {str(alert).upper()}"
    words = [label] + [str(record.get(k) or "?") for k in ("symbol", "timeframe", "direction")]
    strength = _field(record, "label")
    if strength:
        words.append(str(strength))
    score = _field(record, "score")
    if score is not None:
        words.append(f"score {float(score):.2f}")
    line = " ".join(words)
    entry, tps = record.get("entry"), record.get("take_profits") or ()
    if entry is not None or tps:
        line += "  " + _levels(entry, record.get("stop_loss"), tps)
    contributors = _field(record, "contributors") or ()
    if contributors:
        line += "  ← " + ", ".join(_contributor(c) for c in contributors)
    created = record.get("created_at")
    return f"{created}  {line}" if created else line


class ConsoleSink:
    """Prints each event's line and flushes, so piped output (journald, docker logs) is live.

    The stream defaults to whatever `sys.stdout` is at construction, not at import, so a
    redirected or captured stdout is honoured.
    """

    def __init__(self, stream: IO[str] | None = None, *, name: str = "console") -> None:
        self.name = name
        self._stream = stream if stream is not None else sys.stdout

    async def send(self, event: SinkEvent) -> None:
        """Sink.send: the event's text as exactly one line, flushed so piped output is live."""
        # One event, one line: a stray newline in a rationale must not split it.
        line = " ".join(event.text.splitlines())
        self._stream.write(line + "\n")
        self._stream.flush()

    async def close(self) -> None:
        """Sink.close: flush only, since the stream is borrowed."""
        # The stream is borrowed (usually stdout), so it is flushed, never closed.
        self._stream.flush()
