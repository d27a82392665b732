"""Fast replay: each strategy called once per market over the whole history.

The candidates then go through the very classes the live path uses — SignalBuilder (level
and cooldown gates), ConsensusAggregator, OutcomeTracker — in the order live would meet
them: by candle close, then strategy, symbol and direction. Only the data access differs,
which is why the sameness test can demand identical signals from both.

Markets are independent (see engine/replay_unit.py), so they are replayed side by side in
worker processes and their columns merged into one time order here. Adaptive consensus
weights read hit rates across all markets as time passes, so that mode replays everything
in one process, interleaving outcomes with signals (engine/replay_interleaved.py).
"""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.clock import VirtualClock
from engine.config import LoadedConfig
from engine.errors import EdgesMismatch
from engine.market.csv_rows import load_csv
from engine.market.replay import ReplayMarket
from engine.plugins.instance import PluginInstance
from engine.replay_interleaved import Progress, run_interleaved
from engine.replay_plan import history_start, unreplayable_reason
from engine.replay_records import Document, write_document
from engine.replay_unit import (
    COLUMNS,
    SignalColumns,
    UnitResult,
    UnitSpec,
    release_free_memory,
    run_unit,
)
from engine.signals.consensus import ConsensusAggregator, HitCounts
from engine.signals.tally import StrategyStats
from engine.stats import consensus_settings

log = logging.getLogger("engine.replay")


@dataclass(slots=True)
class ReplayResult(SignalColumns):
    """Everything a replay found, as columns in time order, plus what it could not run and why.

    Row i is one signal (`kind` 0) or consensus signal (1): its strategy and symbol as codes
    into `names` / `symbols`, and its final outcome (`result` indexes RESULTS, -1 = still
    open). Full JSON records are spooled to disk, read back in this order by `write_document`.
    """

    names: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    source: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    sizes: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    record_files: list[Path | None] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    evaluations: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    charts: dict[str, tuple[list[int], list[float], float, float]] = field(default_factory=dict)
    spool: Path | None = None
    workers: int = 1

    @property
    def kind(self) -> npt.NDArray[np.bool_]:
        """True for consensus rows."""
        out: npt.NDArray[np.bool_] = self.strategy == self.names.index("consensus")
        return out

    @property
    def n_signals(self) -> int:
        """The strategies' own signals, without the consensus signals derived from them."""
        return int(np.count_nonzero(~self.kind))

    @property
    def n_consensus(self) -> int:
        """The aggregator's signals, counted apart so no strategy's signal is counted twice."""
        return int(np.count_nonzero(self.kind))

    def write_document(self, path: Path, head: bytes, tail: bytes) -> None:
        """`head`, every signal's JSON record (journal fields plus `outcome`) in time order, one
        per line and comma-separated, then `tail`: a JSON document with the `signals` list in
        place, written by as many processes as replayed the markets."""
        doc = Document.plan(head, tail, self.record_files, self.source, self.sizes)
        write_document(path, doc, self.workers)

    def close(self) -> None:
        """Remove the spooled records."""
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def replay_start_ms(instances: Sequence[PluginInstance], market: ReplayMarket) -> int:
    """Where `engine run`'s paced replay starts: the first close at which some instance has a
    full window (the same rule as `engine.replay_plan.plan_replay`)."""
    return int(min(history_start(market, inst)[0] for inst in instances) * 1000)


def run_replay(
    config: LoadedConfig,
    instances: Sequence[PluginInstance],
    data_dir: Path,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: Progress | None = None,
    records: bool = True,
    workers: int | None = None,
) -> ReplayResult:
    """Replay every instance over the files; signals in [start_ms, end_ms] (candle close) count.

    `workers` processes replay markets side by side (default: one per CPU); 1 runs all in
    this process. The result is the same either way. `records=False` skips the JSON records.

    Side by side, the span is planned from each file's first and last rows and every worker
    parses its own market's files, so parsing overlaps the replay itself; a worker whose file
    does not end with the rows the plan read stops the replay, which then parses every file
    first and runs again (see `ReplayMarket.read_edges`).
    """
    market = ReplayMarket(data_dir, config.settings.market.exchange, VirtualClock(float("inf")))
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    run = functools.partial(
        _replay, config, instances, market, start_ms, end_ms, progress, records, n_workers
    )
    if n_workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return run()
    market.read_edges({s for inst in instances for s in inst.symbols})
    try:
        return run()
    except EdgesMismatch as exc:
        log.warning("%s; parsing every file before replaying again", exc)
        market.drop_edges()
        _preload(market, n_workers)
        return run()


def _replay(
    config: LoadedConfig,
    instances: Sequence[PluginInstance],
    market: ReplayMarket,
    start_ms: int | None,
    end_ms: int | None,
    progress: Progress | None,
    records: bool,
    n_workers: int,
) -> ReplayResult:
    st = config.settings
    result = ReplayResult()
    runnable = _runnable(instances, market, result)
    if start_ms is None and runnable:
        start_ms = replay_start_ms(runnable, market)
    result.start_ms, result.end_ms = start_ms, end_ms
    symbols = tuple(sorted({s for inst in runnable for s in inst.symbols}))
    names = (*sorted(i.name for i in instances), "consensus")
    spool = Path(tempfile.mkdtemp(prefix="engine-replay-")) if records else None
    spec = UnitSpec(
        instances=tuple(runnable),
        market=market,
        exchange=st.market.exchange,
        quarantine_after=st.engine.quarantine_after,
        expiry_seconds=None if st.outcomes.expiry_hours is None else st.outcomes.expiry_hours * 3600,
        consensus=_consensus_factory(config, instances) if st.consensus.enabled else None,
        names=names,
        symbols=symbols,
        start_ms=start_ms,
        end_ms=end_ms,
        spool=spool,
    )
    try:
        if st.consensus.enabled and st.consensus.adaptive_weights:
            units = [run_interleaved(spec, progress)]
        else:
            units = _run_units(spec, n_workers, progress)
    except BaseException:
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
        raise
    _merge(result, units, names, symbols, spool)
    result.workers = n_workers
    _report_missing(result, units, runnable)
    return result


def _consensus_factory(
    config: LoadedConfig, instances: Sequence[PluginInstance]
) -> Callable[[HitCounts], ConsensusAggregator]:
    settings, weights = consensus_settings(config), config.settings.consensus.weights
    plugin_of = {i.name: i.plugin for i in instances}

    def make(hits: HitCounts) -> ConsensusAggregator:
        return ConsensusAggregator(settings, weights, plugin_of, hits=hits)

    return make


def _runnable(
    instances: Sequence[PluginInstance], market: ReplayMarket, result: ReplayResult
) -> list[PluginInstance]:
    keep = []
    for inst in instances:
        reason = unreplayable_reason(market, inst)
        if reason:
            result.skipped[inst.name] = reason
        else:
            keep.append(inst)
    return keep


# -- side by side ---------------------------------------------------------------------------

_SPEC: UnitSpec | None = None  # set before forking, so workers inherit it instead of unpickling it


def _unit_at(i: int) -> UnitResult:
    assert _SPEC is not None
    return _replay_market(_SPEC, _SPEC.symbols[i])


def _replay_market(spec: UnitSpec, symbol: str) -> UnitResult:
    spec.market.confirm_edges(symbol)  # parses the market's files if the plan read only their ends
    try:
        return run_unit(spec, symbol)
    finally:
        spec.market.forget(symbol)  # the next market needs none of it


def _load_file(path: Path) -> npt.NDArray[np.float64]:
    return load_csv(path, logging.getLogger("engine.market.replay"))


def _preload(market: ReplayMarket, workers: int) -> None:
    """Parse the CSV files in parallel (parsing floats is most of a replay's start-up)."""
    paths = market.unloaded_files()
    if len(paths) < 2:
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(paths))) as pool:
        for key, rows in zip(paths, pool.map(_load_file, list(paths.values()), chunksize=1), strict=True):
            market.adopt(key, rows)


def _run_units(spec: UnitSpec, workers: int, progress: Progress | None) -> list[UnitResult]:
    global _SPEC
    total = len(spec.symbols)
    out: list[UnitResult] = []
    if progress is not None:
        progress(0, total, "")
    if workers <= 1 or total <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for i, sym in enumerate(spec.symbols):
            out.append(_replay_market(spec, sym))
            if progress is not None:
                progress(i + 1, total, sym)
        return out
    _SPEC = spec
    # Objects inherited from this process stay put in the workers: without this, the workers'
    # garbage collector would write to every one of them and copy their pages.
    gc.collect()
    release_free_memory()  # what parsing and planning freed is not handed to every worker
    gc.freeze()
    try:
        # Workers go on from market to market: a fresh process per market would fault in
        # every page it touches again (about 60 thousand per market, a quarter of the kernel
        # time of a year-long replay), and the peak is one market's footprint either way.
        with multiprocessing.get_context("fork").Pool(min(workers, total)) as pool:
            for res in pool.imap_unordered(_unit_at, range(total)):
                out.append(res)
                if progress is not None:
                    progress(len(out), total, res.key)
    finally:
        _SPEC = None
        gc.unfreeze()
    return out


# -- merging ----------------------------------------------------------------------------------


def _merge(
    result: ReplayResult,
    units: list[UnitResult],
    names: tuple[str, ...],
    symbols: tuple[str, ...],
    spool: Path | None,
) -> None:
    """Units' columns into one time order: close time, strategy, symbol, side — a consensus
    row right after the signal that triggered it (it carries that signal's keys)."""
    units = sorted(units, key=lambda u: u.key)
    result.names, result.symbols, result.spool = names, symbols, spool
    result.record_files = [u.records for u in units]
    cat = np.concatenate
    seq = cat([np.arange(len(u.t)) for u in units]) if units else np.empty(0, np.int64)
    src = (
        cat([np.full(len(u.t), k, np.int16) for k, u in enumerate(units)]) if units else np.empty(0, np.int16)
    )
    cols = {c: cat([getattr(u, c) for u in units]) if units else getattr(result, c) for c in COLUMNS}
    order_strategy = cat([u.order_strategy for u in units]) if units else np.empty(0, np.int16)
    order = np.lexsort((seq, -cols["sign"], cols["symbol"], order_strategy, cols["t"]))
    for c, v in cols.items():
        setattr(result, c, v[order])
    result.source = src[order]
    if spool is not None:
        result.sizes = cat([u.sizes for u in units])[order] if units else result.sizes
    totals: dict[str, StrategyStats] = {}
    for u in units:
        result.evaluations += u.evaluations
        result.charts.update(u.charts)
        for name, d in u.stats.items():
            acc = totals.setdefault(name, StrategyStats())
            for k, v in d.items():
                setattr(acc, k, getattr(acc, k) + v)
    result.stats = {name: st.summary() for name, st in sorted(totals.items())}


def _report_missing(
    result: ReplayResult, units: list[UnitResult], runnable: Sequence[PluginInstance]
) -> None:
    missing: dict[str, list[str]] = {}
    for u in sorted(units, key=lambda u: u.key):
        for name, reason in u.missing:
            missing.setdefault(name, []).append(reason)
    for name, reasons in missing.items():
        inst_syms = next(i.symbols for i in runnable if i.name == name)
        if len(reasons) == len(inst_syms):
            result.skipped[name] = "no data: " + "; ".join(reasons)
        else:
            log.warning("%s: some symbols have no data and were skipped: %s", name, "; ".join(reasons))
