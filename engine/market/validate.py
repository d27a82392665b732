"""Candle sanity checks, shared by the gateway (rows from an exchange) and the CSV replay.

Exchanges do occasionally serve impossible candles (a high below the close, a duplicated bar
after a maintenance window); a strategy fed one would emit a nonsense signal, so every row is
checked once, before it is cached, and bad rows are dropped rather than repaired. Gaps are
only reported: a missing candle usually means the market did not trade, and inventing one
would be worse than leaving the hole.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.market.candles import Candles, FloatArray
from engine.metrics import Metrics
from engine.timeframes import timeframe_seconds

BoolArray = npt.NDArray[np.bool_]

# Order matters only for the label: a row failing several checks is reported under the first.
REASONS = ("malformed", "non_finite", "high_below_body", "low_above_body", "negative_volume")
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class RowCheck:
    """Which rows of an (n, 6) array survive, and why each of the others does not."""

    keep: BoolArray
    reasons: tuple[tuple[int, str], ...]


def to_array(rows: Sequence[Sequence[object]] | FloatArray) -> tuple[FloatArray, BoolArray]:
    """Rows as an (n, 6) float array plus a mask of rows that were not six numbers at all.

    The fast path is one numpy conversion; only a ragged or non-numeric answer (which is
    what a half-broken exchange response looks like) pays for the per-row fallback.
    """
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] >= 6:
        return np.asarray(rows[:, :6], dtype=np.float64), np.zeros(rows.shape[0], dtype=np.bool_)
    if len(rows) == 0:
        return np.empty((0, 6), dtype=np.float64), np.zeros(0, dtype=np.bool_)
    with contextlib.suppress(TypeError, ValueError):
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] >= 6:
            return np.ascontiguousarray(arr[:, :6]), np.zeros(arr.shape[0], dtype=np.bool_)
    out = np.full((len(rows), 6), np.nan, dtype=np.float64)
    malformed = np.zeros(len(rows), dtype=np.bool_)
    for i, row in enumerate(rows):
        try:
            if len(row) < 6:
                raise ValueError("short row")
            out[i] = [float(x) if x is not None else np.nan for x in row[:6]]
        except (TypeError, ValueError):
            malformed[i] = True
    return out, malformed


def check_rows(arr: FloatArray, malformed: BoolArray | None = None, after_ms: int | None = None) -> RowCheck:
    """Apply every per-row rule; timestamps must strictly increase, and the first of a repeat wins.

    `after_ms` is the open time of the last candle already accepted (the cache's tail), so an
    incremental batch is checked for order against it too.
    """
    n = arr.shape[0]
    bad = np.zeros(n, dtype=np.bool_) if malformed is None else malformed.copy()
    labels = np.full(n, "", dtype=object)
    labels[bad] = "malformed"
    ts, o, h, lo, c, v = (arr[:, i] for i in range(6))
    with np.errstate(invalid="ignore"):
        rules = [
            ("non_finite", ~np.isfinite(arr).all(axis=1)),
            ("high_below_body", h < np.maximum(o, c)),
            ("low_above_body", lo > np.minimum(o, c)),
            ("negative_volume", v < 0),
        ]
    for reason, mask in rules:
        hit = np.asarray(mask, dtype=np.bool_) & ~bad
        labels[hit] = reason
        bad |= hit
    # Keep-first monotonicity over the rows still standing: a row is kept only if it is newer
    # than everything kept before it, which is exactly "newer than the running maximum".
    idx = np.flatnonzero(~bad)
    if idx.size:
        t = ts[idx]
        floor = -np.inf if after_ms is None else float(after_ms)
        prev = np.maximum.accumulate(np.concatenate(([floor], t[:-1])))
        late = t <= prev
        labels[idx[late & (t == prev)]] = "duplicate"
        labels[idx[late & (t != prev)]] = "out_of_order"
        bad[idx[late]] = True
    reasons = tuple((int(i), str(labels[i])) for i in np.flatnonzero(bad))
    return RowCheck(keep=~bad, reasons=reasons)


def validate_rows(
    rows: Sequence[Sequence[object]] | FloatArray,
    exchange: str,
    symbol: str,
    timeframe: str,
    metrics: Metrics,
    logger: logging.Logger,
    *,
    after_ms: int | None = None,
) -> Candles:
    """The valid rows as Candles; drops and gaps are logged once per reason and counted."""
    arr, malformed = to_array(rows)
    check = check_rows(arr, malformed, after_ms)
    by_reason: dict[str, list[int]] = {}
    for i, reason in check.reasons:
        by_reason.setdefault(reason, []).append(i)
    for reason, indices in by_reason.items():
        metrics.candles_dropped.labels(exchange, reason).inc(len(indices))
        examples = [_ts_label(arr[i, 0]) for i in indices[:_EXAMPLES]]
        logger.warning(
            "%s %s %s: dropped %d candle(s), %s, at ts %s",
            exchange,
            symbol,
            timeframe,
            len(indices),
            reason,
            ", ".join(examples),
        )
    kept = arr[check.keep]
    _report_gaps(kept[:, 0], after_ms, exchange, symbol, timeframe, metrics, logger)
    return Candles.from_rows(kept)


def _report_gaps(
    ts: FloatArray,
    after_ms: int | None,
    exchange: str,
    symbol: str,
    timeframe: str,
    metrics: Metrics,
    logger: logging.Logger,
) -> None:
    if ts.size == 0:
        return
    step = timeframe_seconds(timeframe) * 1000
    series = ts if after_ms is None else np.concatenate(([float(after_ms)], ts))
    missing = np.diff(series) // step - 1
    holes = np.flatnonzero(missing > 0)
    if holes.size == 0:
        return
    total = int(missing[holes].sum())
    metrics.candles_dropped.labels(exchange, "gap").inc(total)
    where = ", ".join(f"{int(missing[i])} after {_ts_label(series[i])}" for i in holes[:_EXAMPLES])
    logger.warning(
        "%s %s %s: %d missing candle(s) in %d gap(s): %s",
        exchange,
        symbol,
        timeframe,
        total,
        holes.size,
        where,
    )


def _ts_label(value: float) -> str:
    return str(int(value)) if np.isfinite(value) else repr(float(value))
