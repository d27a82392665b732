"""The end of every signal's story at once: what a replay keeps of outcome tracking.

A replay tracks a year of signals and keeps only how each one closed. Walking them through
`OutcomeTracker.track` and `update` builds a Position per signal and an OutcomeEvent per step,
a few microseconds each, only to keep the last event. `settle` applies the same rules — the
same `locate` search and `climb` ladder as `OutcomeTracker.update` — and returns the final
outcomes as columns, recording the tracker's statistics in the same order.
tests/signals/test_settle.py holds it to `track` + `update`, event for event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.market.candles import Candles, FloatArray, IntArray
from engine.signals.hits import HOW_OPEN, HOW_STOP, HOW_TARGET, BoolArray, climb, ladders, locate
from engine.signals.model import Direction, Signal, SignalFields
from engine.signals.outcomes import RESULTS, OutcomeTracker, Position
from engine.signals.tally import StrategyStats
from engine.timeframes import timeframe_seconds

_SL, _EXPIRED = RESULTS.index("SL"), RESULTS.index("EXPIRED")


@dataclass(frozen=True, slots=True)
class Settled:
    """Final outcome per signal: `result` indexes RESULTS (-1 = still open), the close's time
    and price, its R multiple and PnL % (0 where open)."""

    result: npt.NDArray[np.int8]
    at_ms: IntArray
    price: FloatArray
    r: FloatArray
    pnl: FloatArray


@dataclass(frozen=True, slots=True)
class SignalArrays:
    """The numbers of signals as arrays: candle close, entry, stop, side and the padded target
    ladder (see `hits.ladders`). A replay builds them once for a market's signals; each
    series then takes its rows, and `tabulate` reuses them."""

    ms: IntArray
    entry: FloatArray
    stop: FloatArray
    long: BoolArray
    ladder: FloatArray
    lens: IntArray

    @classmethod
    def of(cls, cols: SignalFields) -> SignalArrays:
        """The arrays of these columns."""
        n = len(cols.id)
        ladder, lens = ladders(cols.take_profits)
        return cls(
            np.array(cols.bar_close_ms, dtype=np.int64).reshape(n),
            np.array(cols.entry, dtype=np.float64).reshape(n),
            np.array(cols.stop_loss, dtype=np.float64).reshape(n),
            np.fromiter(map(_LONG.__eq__, cols.direction), np.bool_, n),
            ladder,
            lens,
        )

    def take(self, rows: IntArray) -> SignalArrays:
        """These rows only."""
        return SignalArrays(*(getattr(self, name)[rows] for name in self.__slots__))


_LONG = Direction.LONG


def settle(tracker: OutcomeTracker, signals: Sequence[Signal], timeframe: str, candles: Candles) -> Settled:
    """`tracker.track(s)` for each signal, then one `tracker.update` over `candles`, keeping
    only each signal's final outcome.

    The signals must be of one market and timeframe, new to the tracker, and `candles` that
    series' history from before the first of them. Statistics are recorded as track/update
    would record them, in the same order; positions still open afterwards are left open in
    the tracker, as update leaves them. A signal whose id was tracked before it in `signals`
    shares that signal's outcome (the tracker keys positions by id).
    """
    cols = SignalFields.of(signals)
    return settle_columns(tracker, signals, cols.id, cols.strategy, SignalArrays.of(cols), timeframe, candles)


def settle_columns(
    tracker: OutcomeTracker,
    signals: Sequence[Signal],
    ids: Sequence[str],
    strategies: Sequence[str],
    arrays: SignalArrays,
    timeframe: str,
    candles: Candles,
) -> Settled:
    """`settle`, given the signals' ids, strategies and numbers as columns (a replay has them)."""
    n = len(signals)
    out = Settled(np.full(n, -1, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))
    if n == 0:
        return out
    for name in dict.fromkeys(strategies):  # track()'s bookkeeping: every strategy gets a tally
        if name not in tracker.stats:
            tracker.stats[name] = StrategyStats()
    eligible = arrays.lens > 0  # track() ignores signals without targets, and ids it already follows
    if tracker.open:
        eligible &= np.fromiter((sid not in tracker.open for sid in ids), np.bool_, n)
    owner = np.arange(n)
    if len(set(ids)) < n:  # a repeated id shares the outcome of its first eligible signal
        first: dict[str, int] = {}
        for i in np.flatnonzero(eligible).tolist():
            first.setdefault(ids[i], i)
        shared_ids = {sid for sid, k in Counter(ids).items() if k > 1}
        for i in [i for i, sid in enumerate(ids) if sid in shared_ids]:
            owner[i] = first.get(ids[i], i)
    rows = np.flatnonzero(eligible & (owner == np.arange(n)))
    for name, count in Counter(strategies[i] for i in rows.tolist()).items():
        tracker.stats[name].signals += count
    if len(rows):
        _resolve_rows(tracker, signals, strategies, arrays, rows, timeframe, candles, out)
    shared = np.flatnonzero(owner != np.arange(n))
    if len(shared):
        for col in (out.result, out.at_ms, out.price, out.r, out.pnl):
            col[shared] = col[owner[shared]]
    return out


def _resolve_rows(
    tracker: OutcomeTracker,
    signals: Sequence[Signal],
    strategies: Sequence[str],
    arrays: SignalArrays,
    rows: IntArray,
    timeframe: str,
    c: Candles,
    out: Settled,
) -> None:
    count = len(rows)
    tf_ms = timeframe_seconds(timeframe) * 1000
    opened = arrays.ms[rows]
    starts = c.ts.searchsorted(opened - tf_ms, side="right")  # first candle closing after the signal
    n = len(c)
    live = starts < n
    closes = c.ts + tf_ms
    long, stop, entry = arrays.long[rows], arrays.stop[rows], arrays.entry[rows]
    lens = arrays.lens[rows]
    k = max(1, int(lens.max()))  # the ladder's padding beyond these rows' targets is never hit
    ladder = arrays.ladder[rows, :k]
    end, j_stop, j_exp, hits = (
        np.full(count, n),
        np.full(count, n),
        np.full(count, n),
        np.full((count, k), n),
    )
    if n == 0:  # nothing to look at: every position stays open
        for i in rows.tolist():
            _leave_open(tracker, signals[i], signals[i].bar_close_ms, 0)
        return
    if live.any():
        found = locate(
            stop[live],
            ladder[live],
            lens[live],
            long[live],
            opened[live],
            starts[live],
            c,
            closes,
            tracker.expiry_age_ms(),
        )
        end[live], j_stop[live], j_exp[live] = found[:3]
        hits[np.flatnonzero(live)[:, None], np.arange(found[3].shape[1])] = found[3]  # fewer columns if
        # the live rows have shorter ladders; the rest stay "never"
    reached, how, j_close = climb(hits, lens, j_stop, j_exp, end, np.zeros(count, np.int64))
    full, stopped, closed = how == HOW_TARGET, how == HOW_STOP, how != HOW_OPEN
    idx = np.arange(count)
    last_tp = ladder[idx, lens - 1]
    reached_tp = ladder[idx, np.maximum(reached, 1) - 1]  # the R of a win stopped after TP1
    prices_at = c.close
    j_safe = np.minimum(j_close, n - 1)
    price = np.where(full, last_tp, np.where(stopped, stop, prices_at[j_safe]))
    r_price = np.where(full | (reached > 0), np.where(full, last_tp, reached_tp), price)
    sign = np.where(long, 1.0, -1.0)
    risk = np.abs(entry - stop)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(risk > 0, sign * (r_price - entry) / risk, 0.0)
        pnl = sign * (price - entry) / entry * 100.0
    code = np.where(full, lens - 1, np.where(reached > 0, reached - 1, np.where(stopped, _SL, _EXPIRED)))
    at = closes[j_safe]
    target = rows[closed]
    out.result[target] = code[closed]
    out.at_ms[target] = at[closed]
    out.price[target] = price[closed]
    out.r[target] = r[closed]
    out.pnl[target] = pnl[closed]
    _tally(tracker, [strategies[i] for i in target.tolist()], code[closed], r[closed])
    for i in np.flatnonzero(~closed).tolist():  # still open: left with the tracker, as update leaves them
        s = signals[int(rows[i])]
        _leave_open(tracker, s, int(closes[end[i] - 1]) if live[i] else s.bar_close_ms, int(reached[i]))


def _tally(tracker: OutcomeTracker, strategy: list[str], code: IntArray, r: FloatArray) -> None:
    """`StrategyStats.record` for each close, in order: per strategy, counts by result and the
    running sum of R (`np.cumsum` adds left to right, as the one-by-one tally does)."""
    names = np.array(strategy, dtype=object)
    for name in dict.fromkeys(strategy):
        mine = names == name
        st = tracker.stats[name]
        counts = np.bincount(code[mine], minlength=len(RESULTS)).tolist()
        for result, k in zip(RESULTS, counts, strict=True):
            if k:
                attr = result.lower()
                setattr(st, attr, getattr(st, attr) + k)
        st.sum_r = float(np.cumsum(np.concatenate(([st.sum_r], r[mine])))[-1])


def _leave_open(tracker: OutcomeTracker, s: Signal, seen_ms: int, reached: int) -> None:
    tracker.open[s.id] = Position(
        s.id,
        s.strategy,
        s.symbol,
        s.timeframe,
        s.direction,
        s.entry,
        s.stop_loss,
        tuple(s.take_profits),
        s.bar_close_ms,
        max(seen_ms, s.bar_close_ms),
        reached,
    )
