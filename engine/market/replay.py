"""CSV history served as if it were an exchange, for the paced demo and replay tests.

It answers exactly what an exchange would at the clock's current time, forming candle
included, so the gateway, cache and scheduler run unchanged on top of it. Files are parsed once
with numpy, checked with the same rules as live rows, and coarser timeframes are built from
finer ones on first use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.clock import Clock
from engine.errors import DataUnavailable, EdgesMismatch
from engine.market.candles import Candles, FloatArray
from engine.market.csv_rows import Edges, load_csv, read_edges
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades
from engine.timeframes import timeframe_seconds

_FILE = re.compile(r"^(?P<base>[A-Za-z0-9]+)-(?P<quote>[A-Za-z0-9]+)_(?P<tf>\d+[mhdw])\.csv$")
_WEEK_OFFSET_MS = 4 * 86_400_000


class ReplayMarket:
    """`MarketData` over `{exchange}_{BASE}-{QUOTE}_{timeframe}.csv` files in `data_dir`."""

    def __init__(
        self, data_dir: Path, exchange: str, clock: Clock, logger: logging.Logger | None = None
    ) -> None:
        self.exchange = exchange
        self._dir = Path(data_dir)
        self._clock = clock
        self._log = logger or logging.getLogger(__name__)
        self._files: dict[tuple[str, str], Path] = {}
        prefix = f"{exchange}_"
        for path in sorted(self._dir.glob(f"{prefix}*.csv")):
            match = _FILE.match(path.name[len(prefix) :])
            if match:
                symbol = f"{match['base'].upper()}/{match['quote'].upper()}"
                self._files[(symbol, match["tf"])] = path
        self._series: dict[tuple[str, str], FloatArray] = {}
        self._edges: dict[tuple[str, str], Edges] = {}  # files known by their ends only (read_edges)

    @property
    def symbols(self) -> frozenset[str]:
        """Symbols with at least one CSV file: the replay's whole market list."""
        return frozenset(symbol for symbol, _ in self._files)

    def timeframes(self, symbol: str) -> tuple[str, ...]:
        """Timeframes that have a file for `symbol`, shortest first (coarser ones are derived)."""
        return tuple(sorted((tf for s, tf in self._files if s == symbol), key=timeframe_seconds))

    def time_range(self, timeframe: str) -> tuple[int, int]:
        """(first, last) candle open time in ms over every symbol that can serve `timeframe`."""
        firsts, lasts = [], []
        for symbol in sorted(self.symbols):
            source_tf = self._source_timeframe(symbol, timeframe)
            if source_tf is None:
                continue
            span = self._span_from_edges(symbol, source_tf, timeframe)
            if span is None:
                ts = self._get(symbol, timeframe)[:, 0]
                span = (int(ts[0]), int(ts[-1])) if ts.size else None
            if span is not None:
                firsts.append(span[0])
                lasts.append(span[1])
        if not firsts:
            raise DataUnavailable(f"{self.exchange} replay in {self._dir}: no data for timeframe {timeframe}")
        return min(firsts), max(lasts)

    def read_edges(self, symbols: Iterable[str]) -> None:
        """Know these symbols' unparsed files by their first and last rows only, which is all
        `time_range` needs: a parallel replay plans from them and leaves the parsing to the
        worker replaying each market, which confirms them (`confirm_edges`). A file whose ends
        are short or unusual is parsed here instead."""
        wanted = set(symbols)
        for key, path in self.unloaded_files().items():
            if key[0] in wanted:
                edges = read_edges(path)
                if edges is None:
                    self._get(*key)
                else:
                    self._edges[key] = edges

    def confirm_edges(self, symbol: str) -> None:
        """Parse the symbol's files known by their edges; EdgesMismatch if one does not begin
        and end with the rows `read_edges` found (a plan made from them may be wrong)."""
        for key, edges in list(self._edges.items()):
            if key[0] == symbol:
                rows = self._get(*key)
                if not edges.matches(rows):
                    raise EdgesMismatch(
                        f"{self._files[key]}: its parsed rows do not begin and end with the rows its "
                        "edges held (rows were dropped near the end of the file)"
                    )

    def drop_edges(self) -> None:
        """Forget what `read_edges` found; `time_range` goes back to parsing."""
        self._edges.clear()

    def forget(self, symbol: str) -> None:
        """Drop the symbol's parsed series (a replay worker keeps one market at a time)."""
        for key in [k for k in self._series if k[0] == symbol]:
            del self._series[key]

    def _span_from_edges(self, symbol: str, source_tf: str, timeframe: str) -> tuple[int, int] | None:
        """(first, last) open time of the series from its file's edges, if they tell: a derived
        series' first and last buckets depend only on the rows near the file's two ends."""
        edges = self._edges.get((symbol, source_tf))
        if edges is None or (symbol, timeframe) in self._series:
            return None
        head, tail = edges.head, edges.tail
        if source_tf != timeframe:
            head, tail = resample(head, source_tf, timeframe), resample(tail, source_tf, timeframe)
        if head.shape[0] == 0 or tail.shape[0] == 0:
            return None
        return int(head[0, 0]), int(tail[-1, 0])

    def unloaded_files(self) -> dict[tuple[str, str], Path]:
        """(symbol, timeframe) → file, for the files not parsed yet (see `adopt`)."""
        return {k: p for k, p in self._files.items() if k not in self._series}

    def adopt(self, key: tuple[str, str], rows: FloatArray) -> None:
        """Take the rows of one of `unloaded_files()` parsed elsewhere (by `load_csv`), e.g. in
        parallel by worker processes."""
        if key not in self._files:
            raise KeyError(f"no file for {key}")
        self._series[key] = rows

    def history(self, symbol: str, timeframe: str) -> Candles:
        """Every candle of the file (or derived series), regardless of the clock, for fast replay."""
        return Candles.from_rows(self._get(symbol, timeframe))

    async def load_markets(self) -> set[str]:
        """MarketData.load_markets: the symbols that have files; no I/O beyond the scan at construction."""
        return set(self.symbols)

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None, limit: int
    ) -> list[list[float]]:
        """MarketData.fetch_ohlcv from the CSV, cut at the clock's now so replay never sees the future."""
        rows = self._get(symbol, timeframe)
        if limit <= 0 or rows.shape[0] == 0:
            return []
        now_ms = int(self._clock.now() * 1000)
        end = int(np.searchsorted(rows[:, 0], now_ms, side="right"))
        if since_ms is None:
            start = max(0, end - limit)
        else:
            start = int(np.searchsorted(rows[:, 0], since_ms, side="left"))
            end = min(end, start + limit)
        out: list[list[float]] = rows[start:end].tolist() if end > start else []
        return out

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """MarketData.fetch_ticker: CSV history has no tickers, so always DataUnavailable."""
        raise self._no_snapshot("ticker", symbol)

    async def fetch_trades(self, symbol: str, limit: int) -> Trades:
        """MarketData.fetch_trades: CSV history has no trades, so always DataUnavailable."""
        raise self._no_snapshot("recent trades", symbol)

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        """MarketData.fetch_order_book: CSV history has no books, so always DataUnavailable."""
        raise self._no_snapshot("order book", symbol)

    async def fetch_funding(self, symbol: str) -> Funding:
        """MarketData.fetch_funding: CSV history has no funding, so always DataUnavailable."""
        raise self._no_snapshot("funding rate", symbol)

    async def close(self) -> None:
        """MarketData.close: drop the loaded series; there is no connection to close."""
        self._series.clear()

    def _no_snapshot(self, kind: str, symbol: str) -> DataUnavailable:
        """Snapshots exist only "now"; candle files cannot tell what the book looked like then."""
        return DataUnavailable(
            f"{self.exchange} replay of {self._dir} has candles only: no {kind} for {symbol} "
            "(strategies that need tickers, trades, order books or funding run live only)"
        )

    def status(self) -> dict[str, object]:
        """MarketData.status: a replay has no breaker or pause, so it is always ready."""
        return {"source": "replay", "files": len(self._files), "markets_loaded": True}

    def _get(self, symbol: str, timeframe: str) -> FloatArray:
        key = (symbol, timeframe)
        cached = self._series.get(key)
        if cached is not None:
            return cached
        source_tf = self._source_timeframe(symbol, timeframe)
        if source_tf is None:
            raise DataUnavailable(
                f"{self.exchange} replay has no {symbol} {timeframe} candles: no file "
                f"{self.exchange}_{symbol.replace('/', '-')}_{timeframe}.csv in {self._dir} "
                f"and no finer timeframe that divides {timeframe}"
            )
        if source_tf == timeframe:
            series = load_csv(self._files[key], self._log)
        else:
            series = resample(self._get(symbol, source_tf), source_tf, timeframe)
        self._series[key] = series
        return series

    def _source_timeframe(self, symbol: str, timeframe: str) -> str | None:
        """The file to read for `timeframe`: its own, else the coarsest finer one dividing it."""
        if (symbol, timeframe) in self._files:
            return timeframe
        target = timeframe_seconds(timeframe)
        finer = [tf for tf in self.timeframes(symbol) if target % timeframe_seconds(tf) == 0]
        return finer[-1] if finer else None


def resample(rows: FloatArray, source_tf: str, timeframe: str) -> FloatArray:
    """Aggregate epoch-aligned buckets: first open, max high, min low, last close, summed volume.

    Buckets cut by the start or end of the file are dropped, since their open or close would
    be wrong; holes inside the data are kept as they are, as the exchange would have built
    the candle from whatever trades there were.
    """
    if rows.shape[0] == 0:
        return rows
    src_ms = timeframe_seconds(source_tf) * 1000
    step = timeframe_seconds(timeframe) * 1000
    offset = _WEEK_OFFSET_MS if timeframe.endswith("w") else 0
    ts = rows[:, 0].astype(np.int64)
    bucket = (ts - offset) // step * step + offset
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [ts.size]))
    out = np.column_stack(
        [
            bucket[starts].astype(np.float64),
            rows[starts, 1],
            np.maximum.reduceat(rows[:, 2], starts),
            np.minimum.reduceat(rows[:, 3], starts),
            rows[ends - 1, 4],
            np.add.reduceat(rows[:, 5], starts),
        ]
    )
    keep = np.ones(starts.size, dtype=np.bool_)
    if ts[0] != bucket[0]:
        keep[0] = False
    if ts[-1] != bucket[-1] + step - src_ms:
        keep[-1] = False
    return np.ascontiguousarray(out[keep])
