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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
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
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.cooldown import Cooldowns
from engine.signals.model import Signal, iso_utc
from engine.signals.outcomes import RESULTS, OutcomeEvent, OutcomeTracker
from engine.signals.settle import Settled, settle
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
    words: dict[int, bytes] | None = None,
) -> tuple[list[Signal], int, list[tuple[str, str]]]:
    """Every instance watching `symbol` over its history, through the level and cooldown gates.

    Returns the emitted signals (in instance, then bar order), the evaluations made, and the
    instances that had no data for this symbol, with the reason.
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
                    origin, candles, batch, start_ms=spec.start_ms, end_ms=spec.end_ms, words=words
                )
            )
        except Exception as exc:  # the plugin's describe() runs here; isolated like evaluate
            runner.failed(inst, symbol, exc)
    return emitted, evaluations, missing


def release_free_memory() -> None:
    """Hand memory the strategies' array temporaries freed back to the system (glibc keeps it
    otherwise, and two workers' worth shows in a replay's footprint); a no-op elsewhere."""
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


def in_time_order(signals: Iterable[Signal]) -> list[Signal]:
    """Live meets signals by candle close, then strategy, symbol and side; so does replay."""
    return sorted(signals, key=lambda s: (s.bar_close_ms, s.strategy, s.symbol, s.direction.value))


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
    words: dict[int, bytes] | None = {} if spec.spool is not None else None
    emitted, evaluations, missing = evaluate_market(spec, symbol, runner, builder, histories, words)
    release_free_memory()
    consensus = spec.consensus(lambda s: (0, 0)) if spec.consensus is not None else None
    ordered: list[tuple[Signal, Signal]] = []  # (signal, the strategy signal it sorts with)
    for sig in in_time_order(emitted):
        ordered.append((sig, sig))
        agreed = consensus.add(sig) if consensus is not None else None
        if agreed is not None:
            ordered.append((agreed, sig))
    # every signal tracked in this order, then each series' candles: only the ends are kept
    tracker = OutcomeTracker(expiry_seconds=spec.expiry_seconds)
    series: dict[tuple[str, str], list[int]] = {}
    for i, (sig, _) in enumerate(ordered):
        series.setdefault((sig.symbol, sig.timeframe), []).append(i)
    n = len(ordered)
    ends = Settled(np.full(n, -1, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))
    for key in sorted(series):
        rows = np.asarray(series[key])
        part = settle(tracker, [ordered[i][0] for i in series[key]], key[1], histories[key])
        for col in ("result", "at_ms", "price", "r", "pnl"):
            getattr(ends, col)[rows] = getattr(part, col)
    out = tabulate(spec, symbol, ordered, ends, tracker.stats, words or {})
    out.evaluations, out.missing = evaluations, missing
    out.charts = charts(histories)
    return out


def tabulate(
    spec: UnitSpec,
    key: str,
    ordered: Sequence[tuple[Signal, Signal]],
    ends: Settled,
    stats: dict[str, StrategyStats],
    words: dict[int, bytes],
) -> UnitResult:
    """Columns (and spooled JSON records) of signals already in time order; `words` holds the
    records of signals that carry no words themselves, as JSON text without the closing brace."""
    code = {name: i for i, name in enumerate(spec.names)}
    sym = {name: i for i, name in enumerate(spec.symbols)}
    n = len(ordered)
    res = UnitResult(key=key, stats={k: asdict(v) for k, v in stats.items()})
    res.t = np.fromiter((s.bar_close_ms for s, _ in ordered), np.int64, n)
    res.order_strategy = np.fromiter((code[o.strategy] for _, o in ordered), np.int16, n)
    res.strategy = np.fromiter((code[s.strategy] for s, _ in ordered), np.int16, n)
    res.symbol = np.fromiter((sym[s.symbol] for s, _ in ordered), np.int16, n)
    res.sign = np.fromiter((s.direction.sign for s, _ in ordered), np.int8, n)
    res.entry = np.fromiter((s.entry for s, _ in ordered), np.float64, n)
    res.result, res.closed_ms, res.r, res.pnl = ends.result, ends.at_ms, ends.r, ends.pnl
    if spec.spool is not None:
        res.records = spec.spool / f"{key.replace('/', '-')}.jsonl"
        opts = orjson.OPT_SERIALIZE_NUMPY
        with res.records.open("wb", buffering=1 << 20) as fh:
            cols = zip(
                ends.result.tolist(), ends.at_ms.tolist(), ends.price.tolist(), ends.r.tolist(), strict=True
            )
            for (s, _), (result, at, price, r) in zip(ordered, cols, strict=True):
                outcome = (
                    None
                    if result < 0
                    else {"result": RESULTS[result], "at": iso_utc(at), "price": price, "r_multiple": r}
                )
                head = words.get(id(s))
                if head is None:
                    rec = s.to_record()
                    rec["outcome"] = outcome
                    fh.write(orjson.dumps(rec, option=opts) + b"\n")
                else:  # the same bytes as the whole record serialised at once
                    fh.write(b"".join((head, b',"outcome":', orjson.dumps(outcome), b"}\n")))
    return res


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
