"""Cooldowns in candle time.

Keyed by (instance, symbol, timeframe, direction[, sub-key]) and measured from the signal
bar's close, so live and replay agree and a restart (state reload) keeps them. Only a signal
that is actually emitted starts one — a rejected candidate never silences the next good one.
"""

from __future__ import annotations

from collections.abc import Mapping


def cooldown_key(strategy: str, symbol: str, timeframe: str, direction: str, sub_key: str = "") -> str:
    """The key a cooldown is kept under; `sub_key` lets a strategy cool down per setup, not per side."""
    key = f"{strategy}|{symbol}|{timeframe}|{direction}"
    return f"{key}|{sub_key}" if sub_key else key


class Cooldowns:
    """key → time (epoch s) until which new signals for that key are dropped."""

    def __init__(self, entries: Mapping[str, float] | None = None) -> None:
        self._until: dict[str, float] = dict(entries or {})

    def blocked(self, key: str, at: float) -> bool:
        """Whether a signal at candle time `at` falls inside this key's cooldown."""
        return self._until.get(key, float("-inf")) > at

    def start(self, key: str, at: float, seconds: float) -> None:
        """Begin the cooldown of `key` at `at`; it only ever extends, and 0 seconds means none."""
        if seconds > 0:
            self._until[key] = max(self._until.get(key, float("-inf")), at + seconds)

    def until(self, key: str) -> float | None:
        """When the cooldown of `key` ends, or None if none was ever started."""
        return self._until.get(key)

    def prune(self, now: float) -> None:
        """Forget expired entries so the state file does not grow forever."""
        self._until = {k: v for k, v in self._until.items() if v > now}

    def snapshot(self) -> dict[str, float]:
        """key → end time in plain types, for the state file."""
        return dict(self._until)

    def __len__(self) -> int:
        return len(self._until)
