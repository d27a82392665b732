"""Timeframe strings ("1m", "5m", "1h", "1d", "1w") as durations and candle boundaries."""

from __future__ import annotations

import re

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^(\d+)([mhdw])$")


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle of `timeframe` in seconds; ValueError for anything else."""
    match = _PATTERN.match(timeframe)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"unknown timeframe {timeframe!r} (expected e.g. 1m, 5m, 15m, 1h, 4h, 1d, 1w)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def last_close(now: float, timeframe: str) -> float:
    """Close time (epoch s) of the most recent candle of `timeframe` that has closed at `now`.

    Candles are aligned to the Unix epoch, as exchanges do (weekly candles on Binance start
    on Monday, which is epoch + 4 days; that offset is applied here too).
    """
    step = timeframe_seconds(timeframe)
    offset = 4 * 86400 if timeframe.endswith("w") else 0
    return float(((int(now) - offset) // step) * step + offset)


def next_close(now: float, timeframe: str) -> float:
    """Close time (epoch s) of the first candle of `timeframe` that closes strictly after `now`."""
    return last_close(now, timeframe) + timeframe_seconds(timeframe)
