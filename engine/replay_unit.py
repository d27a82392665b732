"""One unit of a fast replay: every instance over one market, through the live classes.

Consensus groups signals by (symbol, direction, timeframe) and outcomes follow one market's
candles, so without adaptive weights a market's whole story — candidates, cooldowns,
consensus alerts, outcomes — depends on nothing outside that market. That makes the market
the unit of work: units run side by side in worker processes, and what each returns is
small (numeric columns, plus its JSON records in a spool file), so a year of signals never
sits in memory as objects.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from engine.errors import EngineError
from engine.market.candles import Candles
from engine.market.replay import ReplayMarket
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.plugins.instance import PluginInstance
from engine.plugins.runner import SafeRunner
from engine.replay_records import SEPARATOR, write_spool
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.cooldown import Cooldowns
from engine.signals.model import Signal, SignalFields, iso_utc_bytes
from engine.signals.outcomes import RESULTS, OutcomeEvent, OutcomeTracker
from engine.signals.settle import Settled, SignalArrays, settle_columns
from engine.signals.tally import StrategyStats

CHART_POINTS = 1500


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What every unit shares: the instances, the gates' settings and where records go."""

    instances: tuple[PluginInstance, ...]
    market: ReplayMarket
    exchange: str
    quarantine_after: int
    expiry_seconds: float | None
    consensus: Callable[[Callable[[str], tuple[int, int]]], ConsensusAggregator] | None
    names: tuple[str, ...]  # instance names sorted, then "consensus": the table's strategy codes
    symbols: tuple[str, ...]  # sorted: the table's symbol codes
    start_ms: int | None
    end_ms: int | None
    spool: Path | None  # directory for JSON records; None = no records wanted


COLUMNS = ("t", "strategy", "symbol", "sign", "entry", "result", "closed_ms", "r", "pnl")


@dataclass(slots=True)
class SignalColumns:
    """Signals as columns: close time, strategy and symbol codes, side, entry, and the final
    outcome (`result` indexes RESULTS, -1 = still open; when, and its R and PnL %)."""

    t: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    strategy: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    symbol: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    sign: npt.NDArray[np.int8] = field(default_factory=lambda: np.empty(0, np.int8))
    entry: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    result: npt.NDArray[np.int8] = field(default_factory=lambda: np.empty(0, np.int8))
    closed_ms: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    r: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    pnl: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))


@dataclass(slots=True)
class UnitResult(SignalColumns):
    """A unit's signals as columns in its own time order, plus its tallies. `order_strategy`
    is the code of the strategy signal each row sorts with (a consensus row's trigger)."""

    key: str = ""
    order_strategy: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    records: Path | None = None
    sizes: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))  # bytes per line
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    charts: dict[str, tuple[list[int], list[float], float, float]] = field(default_factory=dict)


def evaluate_market(
    spec: UnitSpec,
    symbol: str,
    runner: SafeRunner,
    builder: SignalBuilder,
    histories: dict[tuple[str, str], Candles],
    records: list[bytes] | None = None,
) -> tuple[list[Signal], int, list[tuple[str, str]]]:
    """Every instance watching `symbol` over its history, through the level and cooldown gates.

    Returns the emitted signals (in instance, then bar order), the evaluations made, and the
    instances that had no data for this symbol, with the reason. With `records`, the signals'
    JSON records are appended there in the same order (see `SignalBuilder.build_batch`).
    """
    emitted: list[Signal] = []
    evaluations = 0
    missing: list[tuple[str, str]] = []
    for inst in spec.instances:
        if symbol not in inst.symbols:
            continue
        try:
            frames = {
                tf: history(spec.market, histories, symbol, tf) for tf in inst.strategy.needs().timeframes
            }
        except EngineError as exc:
            missing.append((inst.name, f"{symbol}: {exc}"))
            continue
        candles = frames[inst.timeframe]
        evaluations += len(candles)
        origin = Origin(inst.name, symbol, inst.timeframe, spec.exchange, inst.cooldown)
        batch = runner.run_all(inst, Window(symbol, inst.timeframe, candles, frames))
        try:
            emitted.extend(
                builder.build_batch(
                    origin, candles, batch, start_ms=spec.start_ms, end_ms=spec.end_ms, records=records
                )
            )
        except Exception as exc:  # the plugin's describe() runs here; isolated like evaluate
            runner.failed(inst, symbol, exc)
    return emitted, evaluations, missing


def release_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise), so what the parent
    freed is not inherited by every worker it forks; a no-op elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def history(market: ReplayMarket, cache: dict[tuple[str, str], Candles], symbol: str, tf: str) -> Candles:
    """The (symbol, timeframe) history, built once per unit."""
    key = (symbol, tf)
    if key not in cache:
        cache[key] = market.history(symbol, tf)
    return cache[key]


def in_time_order(signals: Sequence[Signal]) -> list[Signal]:
    """Live meets signals by candle close, then strategy, symbol and side; so does replay."""
    return [signals[i] for i in time_order(signals)]


def time_order(signals: Sequence[Signal]) -> list[int]:
    """The positions of `signals` in time order (`in_time_order`): a stable sort on the keys as
    columns, since a replay orders a year of signals at once."""
    n = len(signals)
    if n < 2:
        return list(range(n))
    keys = []
    for name in ("direction", "symbol", "strategy"):  # names as their ranks: sorting ints is cheaper
        col = list(map(itemgetter(Signal._fields.index(name)), signals))
        rank = {v: i for i, v in enumerate(sorted(set(col)))}  # LONG before SHORT, as live
        keys.append(np.fromiter(map(rank.__getitem__, col), np.int64, n))
    keys.append(np.fromiter(map(itemgetter(Signal._fields.index("bar_close_ms")), signals), np.int64, n))
    out: list[int] = np.lexsort(keys).tolist()
    return out


_SECOND = itemgetter(1)
_STRATEGY_OF = itemgetter(Signal._fields.index("strategy"))


def run_unit(spec: UnitSpec, symbol: str) -> UnitResult:
    """One market end to end: gated signals, consensus in time order, then every outcome."""
    # A market's replay creates a few hundred thousand objects and frees them together at the
    # end, with hardly a reference cycle among them; collecting garbage along the way would
    # only rescan them again and again (about a fifth of the time).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_unit(spec, symbol)
    finally:
        if enabled:
            gc.enable()


def _run_unit(spec: UnitSpec, symbol: str) -> UnitResult:
    metrics = Metrics()
    runner = SafeRunner(metrics, quarantine_after=spec.quarantine_after)
    builder = SignalBuilder(Cooldowns(), metrics)
    histories: dict[tuple[str, str], Candles] = {}
    records: list[bytes] | None = [] if spec.spool is not None else None
    # what the strategies' arrays freed stays with this worker for the signals and the next
    # market: handing it back to the system would only fault it in again
    emitted, evaluations, missing = evaluate_market(spec, symbol, runner, builder, histories, records)
    consensus = spec.consensus(lambda s: (0, 0)) if spec.consensus is not None else None
    ordered: list[tuple[Signal, Signal]] = []  # (signal, the strategy signal it sorts with)
    heads: list[bytes | None] = []  # each row's record text, None for a signal that has its words
    for i in time_order(emitted):
        sig = emitted[i]
        ordered.append((sig, sig))
        heads.append(None if records is None else records[i])
        agreed = consensus.add(sig) if consensus is not None else None
        if agreed is not None:
            ordered.append((agreed, sig))
            heads.append(None)
    # every signal tracked in this order, then each series' candles: only the ends are kept
    tracker = OutcomeTracker(expiry_seconds=spec.expiry_seconds)
    signals = [sig for sig, _ in ordered]
    cols = SignalFields.of(signals)
    arrays = SignalArrays.of(cols)
    ends = _settle_series(tracker, signals, cols, arrays, histories)
    out = tabulate(spec, symbol, ordered, ends, tracker.stats, heads, cols, arrays)
    out.evaluations, out.missing = evaluations, missing
    out.charts = charts(histories)
    return out


def _settle_series(
    tracker: OutcomeTracker,
    signals: list[Signal],
    cols: SignalFields,
    arrays: SignalArrays,
    histories: dict[tuple[str, str], Candles],
) -> Settled:
    """`settle` for each (symbol, timeframe) series of the signals, in sorted series order."""
    n = len(signals)
    ends = Settled(np.full(n, -1, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))
    series = list(zip(cols.symbol, cols.timeframe, strict=True))
    keys = sorted(set(series))
    code = {k: i for i, k in enumerate(keys)}
    if len(keys) == 1:
        key = keys[0]
        return settle_columns(tracker, signals, cols.id, cols.strategy, arrays, key[1], histories[key])
    of = np.fromiter(map(code.__getitem__, series), np.int64, n)
    for i, key in enumerate(keys):
        rows = np.flatnonzero(of == i)
        pick = _picker(rows.tolist())
        ids, strategies = pick(cols.id), pick(cols.strategy)
        part = settle_columns(
            tracker, pick(signals), ids, strategies, arrays.take(rows), key[1], histories[key]
        )
        for col in ("result", "at_ms", "price", "r", "pnl"):
            getattr(ends, col)[rows] = getattr(part, col)
    return ends


def _picker(rows: list[int]) -> Callable[[Sequence[Any]], list[Any]]:
    """A function taking these rows of a sequence, as a list."""
    if len(rows) < 2:
        return lambda seq: [seq[i] for i in rows]
    get = itemgetter(*rows)
    return lambda seq: list(get(seq))


def tabulate(
    spec: UnitSpec,
    key: str,
    ordered: Sequence[tuple[Signal, Signal]],
    ends: Settled,
    stats: dict[str, StrategyStats],
    heads: Sequence[bytes | None],
    cols: SignalFields | None = None,
    arrays: SignalArrays | None = None,
) -> UnitResult:
    """Columns (and spooled JSON records) of signals already in time order; `heads[i]` is the
    record of row i as JSON text without the closing brace, or None if the row's signal
    carries its words (its record is made here)."""
    code = {name: i for i, name in enumerate(spec.names)}
    sym = {name: i for i, name in enumerate(spec.symbols)}
    n = len(ordered)
    res = UnitResult(key=key, stats={k: asdict(v) for k, v in stats.items()})
    res.result, res.closed_ms, res.r, res.pnl = ends.result, ends.at_ms, ends.r, ends.pnl
    if n == 0:
        return res
    signals = [s for s, _ in ordered]
    if cols is None:
        cols = SignalFields.of(signals)
    if arrays is None:
        arrays = SignalArrays.of(cols)
    res.t = arrays.ms
    res.strategy = np.fromiter(map(code.__getitem__, cols.strategy), np.int16, n)
    triggers = map(_STRATEGY_OF, map(_SECOND, ordered))
    res.order_strategy = np.fromiter(map(code.__getitem__, triggers), np.int16, n)
    res.symbol = np.fromiter(map(sym.__getitem__, cols.symbol), np.int16, n)
    res.sign = np.where(arrays.long, 1, -1).astype(np.int8)
    res.entry = arrays.entry
    if spec.spool is not None:
        res.records = spec.spool / f"{key.replace('/', '-')}.jsonl"
        lines = _record_lines(signals, ends, heads)  # head, tail, head, tail, ...
        sizes = np.fromiter(map(len, lines), np.int32, 2 * n)
        res.sizes = sizes[0::2] + sizes[1::2]
        write_spool(res.records, lines)
    return res


def _record_lines(signals: list[Signal], ends: Settled, given: Sequence[bytes | None]) -> list[bytes]:
    """Each signal's JSON record with its outcome, as two pieces (the head, and the outcome with
    the closing brace and the list's separator, see engine/replay_records.py). The numbers are formatted by
    one orjson call per column, so they read exactly as in a whole record serialised at once."""
    heads = list(given)
    opts = orjson.OPT_SERIALIZE_NUMPY
    for i in [i for i, h in enumerate(heads) if h is None]:  # signals with their words (consensus)
        heads[i] = orjson.dumps(signals[i].to_record(), option=opts)[:-1]
    tails = [b',"outcome":null}' + SEPARATOR] * len(signals)
    closed = np.flatnonzero(ends.result >= 0)
    results = np.array([r.encode() for r in RESULTS])[ends.result[closed]].tolist()
    ats = iso_utc_bytes(ends.at_ms[closed])
    prices = orjson.dumps(ends.price[closed].tolist())[1:-1].split(b",")
    rs = orjson.dumps(ends.r[closed].tolist())[1:-1].split(b",")
    for i, result, at, price, r in zip(closed.tolist(), results, ats, prices, rs, strict=True):
        tails[i] = b',"outcome":{"result":"%s","at":"%s","price":%s,"r_multiple":%s}}%s' % (
            result,
            at,
            price,
            r,
            SEPARATOR,
        )
    out: list[bytes] = [b""] * (2 * len(heads))
    out[0::2] = heads  # type: ignore[assignment]
    out[1::2] = tails
    return out


def settled_from(ordered: Sequence[tuple[Signal, Signal]], finals: dict[str, OutcomeEvent]) -> Settled:
    """Final events (by signal id) as the columns `tabulate` takes."""
    evs = [finals.get(s.id) for s, _ in ordered]
    n = len(evs)
    return Settled(
        np.fromiter((-1 if e is None else RESULTS.index(e.result) for e in evs), np.int8, n),
        np.fromiter((0 if e is None else e.at_ms for e in evs), np.int64, n),
        np.fromiter((0.0 if e is None else e.price for e in evs), np.float64, n),
        np.fromiter((0.0 if e is None else e.r_multiple for e in evs), np.float64, n),
        np.fromiter((0.0 if e is None else e.pnl_percent for e in evs), np.float64, n),
    )


def charts(
    histories: dict[tuple[str, str], Candles],
) -> dict[str, tuple[list[int], list[float], float, float]]:
    """Per symbol, a thinned close line (and the price range) of its first series, for the report."""
    out: dict[str, tuple[list[int], list[float], float, float]] = {}
    for (symbol, _tf), c in sorted(histories.items()):
        if symbol in out or len(c) == 0:
            continue
        step = max(1, len(c) // CHART_POINTS)
        out[symbol] = (
            c.ts[::step].tolist(),
            c.close[::step].tolist(),
            float(c.low.min()),
            float(c.high.max()),
        )
    return out
