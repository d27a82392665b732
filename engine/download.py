"""`engine download`: page OHLCV history into the CSV format replay reads.

It goes through the same ExchangeMarket as the live engine (token bucket, breaker, retries),
so a big download cannot get the IP banned either. Files are appended page by page and the
next run resumes after the last candle on disk; only closed, validated candles are written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.clock import Clock
from engine.market.candles import Candles
from engine.market.source import MarketData
from engine.market.validate import validate_rows
from engine.metrics import Metrics
from engine.timeframes import timeframe_seconds

log = logging.getLogger("engine.download")

HEADER = "timestamp,open,high,low,close,volume"
PAGE = 1000

Progress = Callable[[str, int, int], None]
"""(symbol, candles written so far, candles expected in total)."""


def csv_name(exchange: str, symbol: str, timeframe: str) -> str:
    """`binance_ETH-BTC_5m.csv` for ETH/BTC; a perpetual's settle suffix (":USDT") is dropped."""
    base, _, quote = symbol.partition("/")
    quote = quote.split(":")[0]
    return f"{exchange}_{base}-{quote}_{timeframe}.csv"


def last_timestamp(path: Path) -> int | None:
    """Open time of the last complete row already on disk, None for a new or empty file."""
    if not path.exists():
        return None
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        tail = fh.read().decode(errors="replace")
    for line in reversed(tail.splitlines()):
        first = line.split(",")[0].strip()
        if first.isdigit():
            return int(first)
    return None


def _append(path: Path, candles: Candles) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a") as fh:
        if new:
            fh.write(HEADER + "\n")
        elif not _ends_with_newline(path):
            fh.write("\n")  # a previous run was cut mid-line: start clean
        # shortest round-trip float text (repr of a Python float), as the exchange sent it
        cols = zip(
            candles.ts.tolist(),
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            strict=True,
        )
        fh.writelines(f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for t, o, h, lo, c, v in cols)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What one symbol's download did; `resumed_from` is set when an existing file was extended."""

    symbol: str
    path: Path
    written: int
    resumed_from: int | None


async def download_symbol(
    market: MarketData,
    clock: Clock,
    metrics: Metrics,
    symbol: str,
    timeframe: str,
    since_ms: int,
    until_ms: int | None,
    out_dir: Path,
    progress: Progress | None = None,
) -> DownloadResult:
    """Fetch [since, until) (until defaults to now) page by page, appending closed candles."""
    tf_ms = timeframe_seconds(timeframe) * 1000
    path = out_dir / csv_name(market.exchange, symbol, timeframe)
    last = last_timestamp(path)
    start = since_ms if last is None else max(since_ms, last + tf_ms)
    now_ms = int(clock.now() * 1000)
    end = min(until_ms, now_ms) if until_ms is not None else now_ms
    expected = max(0, (end - start) // tf_ms)
    written = 0
    cursor = start
    while cursor < end:
        rows = await market.fetch_ohlcv(symbol, timeframe, cursor, PAGE)
        arr = np.asarray([r for r in rows if r and r[0] is not None and r[0] >= cursor], dtype=np.float64)
        if arr.size == 0:
            break
        candles = validate_rows(arr, market.exchange, symbol, timeframe, metrics, log, after_ms=last)
        # only candles closed by now and opening before `end`: never the forming one
        stop = int(np.searchsorted(candles.ts + tf_ms, now_ms, side="right"))
        stop = min(stop, int(np.searchsorted(candles.ts, end, side="left")))
        closed = candles.slice(0, stop)
        if len(closed):
            _append(path, closed)
            written += len(closed)
            last = int(closed.ts[-1])
        if progress is not None:
            progress(symbol, written, expected)
        next_cursor = int(arr[-1, 0]) + tf_ms
        if len(rows) < PAGE or next_cursor <= cursor or next_cursor + tf_ms > now_ms:
            break  # the exchange has nothing further that is closed yet
        cursor = next_cursor
    return DownloadResult(symbol, path, written, None if start == since_ms else start)
