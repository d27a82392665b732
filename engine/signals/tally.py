"""Per-strategy tallies of closed signals: the figures `engine stats` and replay report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
        name = result.lower()
        setattr(self, name, getattr(self, name) + 1)
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
