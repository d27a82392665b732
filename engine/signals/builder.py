"""Turns a strategy's candidate into an emitted Signal, or says why not.

This is the central gate: levels must be valid (the calculator's verdict), and the cooldown
must be clear. Rejections are counted by reason so a user can see a strategy that keeps
proposing unusable levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson
from prometheus_client import Counter

from engine.market.candles import Candles, FloatArray, IntArray
from engine.metrics import Metrics
from engine.signals.batch import CandidateBatch
from engine.signals.cooldown import Cooldowns, cooldown_key
from engine.signals.model import (
    NO_METADATA,
    Candidate,
    Direction,
    Signal,
    iso_utc,
    record,
    signal_id,
    signal_ids,
)
from engine.timeframes import timeframe_seconds

_LONG, _SHORT = Direction.LONG, Direction.SHORT
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class Origin:
    """Who proposed the candidate and with which cooldown."""

    strategy: str
    symbol: str
    timeframe: str
    exchange: str
    cooldown: int


class SignalBuilder:
    """Applies the level and cooldown gates; starts the cooldown of what it emits."""

    def __init__(self, cooldowns: Cooldowns, metrics: Metrics) -> None:
        self.cooldowns = cooldowns
        self.metrics = metrics
        self._children: dict[tuple[int, str, str], Any] = {}

    def _count(self, counter: Counter, a: str, b: str) -> None:
        self._add(counter, a, b, 1)

    def _add(self, counter: Counter, a: str, b: str, amount: int) -> None:
        # labels() costs microseconds per call; a replay counts millions of candidates
        key = (id(counter), a, b)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(a, b)
        child.inc(amount)

    def build(self, origin: Origin, candles: Candles, cand: Candidate) -> Signal | None:
        """The Signal for `cand`, or None (counted by reason) for invalid levels or an active cooldown."""
        if not cand.levels.valid:
            self._count(self.metrics.signals_rejected, origin.strategy, "invalid_levels")
            return None
        bar_close_ms = int(candles.ts[cand.bar]) + timeframe_seconds(origin.timeframe) * 1000
        at = bar_close_ms / 1000.0
        key = cooldown_key(
            origin.strategy, origin.symbol, origin.timeframe, cand.direction.value, cand.sub_key
        )
        if self.cooldowns.blocked(key, at):
            self._count(self.metrics.signals_rejected, origin.strategy, "cooldown")
            return None
        self.cooldowns.start(key, at, origin.cooldown)
        self._count(self.metrics.signals, origin.strategy, cand.direction.value)
        return self._emit(origin, bar_close_ms, cand)

    def _emit(self, origin: Origin, bar_close_ms: int, cand: Candidate) -> Signal:
        lv = cand.levels
        return _signal(
            origin,
            signal_id(origin.strategy, origin.symbol, origin.timeframe, bar_close_ms, cand.direction),
            bar_close_ms,
            cand.direction,
            lv.entry,
            lv.stop_loss,
            lv.take_profits,
            cand.confidence,
            cand.rationale,
            _with_ratios(cand.metadata, lv.rr1, lv.rr2),
        )

    def build_batch(
        self,
        origin: Origin,
        candles: Candles,
        batch: CandidateBatch,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        records: list[bytes] | None = None,
    ) -> list[Signal]:
        """`build` for every row of a batch in bar order, deciding with arrays what `build` would.

        With `records`, each returned signal's journal record is appended there, in order, as
        JSON text without its closing brace, and the Signal carries no rationale or metadata:
        a replay keeps a year of signals and needs the words only to write the records out.

        Rows whose bar closes outside [start_ms, end_ms] are ignored. A cooldown key belongs
        to one side (and sub-key) of one stream, so each key's rows are gated on their own:
        after an emitted row, the next candidate is the first one at or past the cooldown's
        end — one binary search per emitted signal, not a Python step per candidate. Only
        the emitted rows are turned into Candidates (and described).
        """
        n = len(batch)
        if n == 0:
            return []
        tf_ms = timeframe_seconds(origin.timeframe) * 1000
        close_ms = candles.ts[batch.bar] + tf_ms
        inside = np.ones(n, dtype=np.bool_)
        if start_ms is not None:
            inside &= close_ms >= start_ms
        if end_ms is not None:
            inside &= close_ms <= end_ms
        n_invalid = int(np.count_nonzero(inside & ~batch.valid))
        if n_invalid:
            self._add(self.metrics.signals_rejected, origin.strategy, "invalid_levels", n_invalid)
        ok = np.flatnonzero(inside & batch.valid)
        groups: dict[tuple[int, str], list[int]] = {}
        if batch.sub_keys is None:
            for s in (1, -1):
                groups[(s, "")] = ok[batch.sign[ok] == s].tolist()
        else:
            for i in ok.tolist():
                groups.setdefault((int(batch.sign[i]), batch.sub_keys[i]), []).append(i)
        chosen: list[int] = []
        for (s, sub), rows in groups.items():
            if rows:
                key = cooldown_key(
                    origin.strategy, origin.symbol, origin.timeframe, "LONG" if s > 0 else "SHORT", sub
                )
                chosen.extend(self._gate_key(key, close_ms[rows] / 1000.0, rows, origin.cooldown))
        if len(ok) > len(chosen):
            self._add(self.metrics.signals_rejected, origin.strategy, "cooldown", len(ok) - len(chosen))
        chosen.sort()
        signs = batch.sign[chosen]
        for s, name in ((1, "LONG"), (-1, "SHORT")):
            emitted = int(np.count_nonzero(signs == s))
            if emitted:
                self._add(self.metrics.signals, origin.strategy, name, emitted)
        if batch.items is not None:  # a plugin's own Candidate objects
            signals = [self._emit(origin, int(close_ms[i]), batch.candidate(i)) for i in chosen]
            if records is not None:
                records.extend(orjson.dumps(s.to_record(), option=_JSON_OPTS)[:-1] for s in signals)
            return signals
        return self._emit_rows(origin, close_ms, batch, chosen, records)

    def _gate_key(self, key: str, at: FloatArray, rows: list[int], cooldown: float) -> list[int]:
        """The rows of one cooldown key (times `at`, ascending) that a one-by-one `build` emits.

        An emitted row's cooldown ends at its time + `cooldown` (the end only ever extends), so
        after row j the next emitted row is the first at or past that end: one binary search
        per row, all at once, then a walk along the chain from the first row past any cooldown
        already running."""
        until = self.cooldowns.until(key)
        if cooldown <= 0:  # nothing new starts; only a cooldown already running blocks
            return (
                rows if until is None else [r for r, a in zip(rows, at.tolist(), strict=True) if a >= until]
            )
        n = len(rows)
        j = 0 if until is None else int(np.searchsorted(at, until, side="left"))
        if j >= n:
            return []
        # the next row is at least the following one, even for a cooldown too small to move a float
        after: list[int] = np.maximum(
            np.searchsorted(at, at + cooldown, side="left"), np.arange(1, n + 1)
        ).tolist()
        out: list[int] = []
        while j < n:
            out.append(rows[j])
            last, j = j, after[j]
        self.cooldowns.start(key, float(at[last]), cooldown)
        return out

    def _emit_rows(
        self,
        origin: Origin,
        close_ms: IntArray,
        batch: CandidateBatch,
        chosen: list[int],
        records: list[bytes] | None,
    ) -> list[Signal]:
        """`_emit(batch.candidate(i))` for each chosen row, without the intermediate objects:
        the levels' ratios by `validate_levels`' formulas (the rows are known valid), and the
        signals made from columns in one pass."""
        ix = np.asarray(chosen, dtype=np.int64)
        n = len(chosen)
        closes = close_ms[ix].tolist()
        long = batch.sign[ix] > 0
        sides = np.where(long, "LONG", "SHORT").tolist()
        entry, sl, tps = batch.entry[ix], batch.stop_loss[ix], batch.take_profits[ix]
        if np.isnan(tps).any():  # padding: each row's own targets
            ladders = [tuple(x for x in row if x == x) for row in tps.tolist()]
        else:
            ladders = list(map(tuple, tps.tolist()))
        risk = np.abs(entry - sl)
        rr1 = np.abs(tps[:, 0] - entry) / risk
        rr2 = np.abs(tps[:, 1] - entry) / risk if tps.shape[1] > 1 else np.full(n, np.nan)
        confidence = [None if c != c else c for c in batch.confidence[ix].tolist()]  # NaN: none given
        signals = list(
            map(
                Signal._make,
                zip(
                    signal_ids(origin.strategy, origin.symbol, origin.timeframe, closes, sides),
                    repeat(origin.strategy, n),
                    repeat(origin.symbol, n),
                    [_LONG if x else _SHORT for x in long.tolist()],
                    repeat(origin.timeframe, n),
                    repeat(origin.exchange, n),
                    entry.tolist(),
                    sl.tolist(),
                    ladders,
                    map(iso_utc, closes),
                    closes,
                    confidence,
                    repeat((), n),
                    repeat(NO_METADATA, n),
                    repeat("signal", n),
                    strict=True,
                ),
            )
        )
        details = map(batch.describe, batch.row[ix].tolist())
        r1s = rounded(rr1, 4)
        r2s = rounded(rr2, 4)  # NaN (one target, padded): None
        if records is None:
            return [
                sig._replace(rationale=tuple(rationale), metadata=_ratio_meta(metadata, r1, r2))
                for sig, (rationale, metadata), r1, r2 in zip(signals, details, r1s, r2s, strict=True)
            ]
        # the journal records as text, so a replay keeps no words as objects; made from the
        # columns rather than from each Signal (`to_record` and a copy of its metadata)
        heads = []
        dumps, opts = orjson.dumps, _JSON_OPTS
        strategy, symbol, timeframe, exchange = (
            origin.strategy,
            origin.symbol,
            origin.timeframe,
            origin.exchange,
        )
        for sig, side, (rationale, metadata), r1, r2 in zip(signals, sides, details, r1s, r2s, strict=True):
            rec = record(
                sig.id,
                "signal",
                strategy,
                symbol,
                side,
                timeframe,
                exchange,
                sig.entry,
                sig.stop_loss,
                sig.take_profits,
                sig.created_at,
                sig.bar_close_ms,
                sig.confidence,
                rationale,
                NO_METADATA,
            )
            rec["metadata"] = _ratio_meta(metadata, r1, r2)  # a copy already: not copied twice
            heads.append(dumps(rec, option=opts)[:-1])
        records.extend(heads)  # only once every row is described: a failing describe adds none
        return signals


def _with_ratios(metadata: Mapping[str, Any], rr1: float, rr2: float | None) -> dict[str, Any]:
    """A signal's metadata: the candidate's, plus its reward:risk ratios (rounded)."""
    return _ratio_meta(metadata, round(rr1, 4), None if rr2 is None else round(rr2, 4))


def rounded(values: FloatArray, digits: int) -> list[float | None]:
    """`round(x, digits)` of each value (None for NaN), exactly as Python rounds, with arrays.

    Python rounds the exact value half to even and returns the double nearest that decimal;
    numpy's `x * 10**digits` is off by at most half an ulp, so `rint` of it picks the same
    integer k unless that product lies within an ulp of a half-integer — those few values
    (and huge or infinite ones) go through `round` itself. k / 10**digits is correctly
    rounded, as Python's result is. A replay rounds two ratios of every signal it emits."""
    scale = 10.0**digits
    with np.errstate(invalid="ignore", over="ignore"):
        p = values * scale
        k = np.rint(p)
        risky = ~(np.abs(p - np.floor(p) - 0.5) > np.abs(np.spacing(p))) | ~(np.abs(p) < 2.0**52)
    out: list[float | None] = (k / scale).tolist()
    for i in np.flatnonzero(risky).tolist():
        x = float(values[i])
        out[i] = None if x != x else round(x, digits)
    return out


def _ratio_meta(metadata: Mapping[str, Any], rr1: float | None, rr2: float | None) -> dict[str, Any]:
    meta = dict(metadata)
    meta["rr1"] = rr1
    if rr2 is not None:
        meta["rr2"] = rr2
    return meta


def _signal(
    origin: Origin,
    sig_id: str,
    bar_close_ms: int,
    direction: Direction,
    entry: float,
    stop_loss: float,
    take_profits: tuple[float, ...],
    confidence: float | None,
    rationale: Sequence[str],
    metadata: dict[str, Any],
) -> Signal:
    return Signal(
        id=sig_id,
        strategy=origin.strategy,
        symbol=origin.symbol,
        direction=direction,
        timeframe=origin.timeframe,
        exchange=origin.exchange,
        entry=entry,
        stop_loss=stop_loss,
        take_profits=take_profits,
        created_at=iso_utc(bar_close_ms),
        bar_close_ms=bar_close_ms,
        confidence=confidence,
        rationale=tuple(rationale),
        metadata=metadata,
    )
