"""Columnar candidates: what a strategy proposes over a whole history, as arrays.

A replay asks a busy strategy for tens of thousands of candidates per market, and most never
become signals (invalid levels, cooldown). Building a Candidate object — levels, rationale
strings, a metadata dict — for each cost more than finding them. A CandidateBatch keeps the
numbers the engine's gates need as numpy columns (bar, side, entry, stop, targets, validity)
and builds the words (rationale, metadata) only for the rows that are emitted, through the
strategy's `describe(row)` callback.

It is still a `Sequence[Candidate]`: indexing or iterating builds Candidates on demand, so
tests, the live path (one bar) and plugins that return plain lists all meet one type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from engine.signals.levels import LevelArrays, RiskSettings, validate_arrays, validate_levels
from engine.signals.model import Candidate, Direction, Levels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Detail = tuple[tuple[str, ...], Mapping[str, Any]]
"""A candidate's rationale lines and metadata."""

Describe = Callable[[int], Detail]
"""row → (rationale, metadata): called only for rows that are looked at (emitted ones)."""


def no_detail(_row: int) -> Detail:
    """The words of a strategy that gives none: no rationale, no metadata."""
    return (), {}


@dataclass(frozen=True, slots=True, eq=False)
class CandidateBatch(Sequence[Candidate]):
    """Candidates as columns. Build with `TpSlCalculator.batch` (or `from_candidates`).

    `take_profits` is (rows, k); trailing NaNs mark targets a row does not have. `row` is the
    index handed to `describe` (a batch cut with `take` keeps pointing at the right rows).
    `valid` is the calculator's verdict, computed for all rows at once and equal to what
    `validate_levels` says for each row alone.
    """

    bar: IntArray
    sign: npt.NDArray[np.int8]
    entry: FloatArray
    stop_loss: FloatArray
    take_profits: FloatArray
    valid: BoolArray
    gate: BoolArray
    confidence: FloatArray
    row: IntArray
    settings: RiskSettings
    describe: Describe = no_detail
    sub_keys: tuple[str, ...] | None = None
    items: tuple[Candidate, ...] | None = None

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        settings: RiskSettings,
        bar: npt.ArrayLike,
        sign: npt.ArrayLike,
        entry: npt.ArrayLike,
        levels: LevelArrays,
        *,
        describe: Describe = no_detail,
        gate: bool | npt.ArrayLike = True,
        confidence: npt.ArrayLike | None = None,
        sub_keys: Sequence[str] | None = None,
    ) -> CandidateBatch:
        """Columns from a strategy's arrays, judged by the central gates (`validate_arrays`).

        `describe(i)` is called with the row's position in these arrays; `confidence` NaN
        means none. Rows are put in replay order (bar, then LONG first).
        """
        b = np.asarray(bar, dtype=np.int64).reshape(-1)
        n = b.shape[0]
        if n == 0:
            return cls.empty(settings)
        sg = np.asarray(sign, dtype=np.int8).reshape(-1)
        en = np.asarray(entry, dtype=np.float64).reshape(-1)
        sl = np.asarray(levels.stop_loss, dtype=np.float64).reshape(-1)
        gt = np.broadcast_to(np.asarray(gate, dtype=np.bool_), (n,)).copy()
        conf = (
            np.full(n, np.nan)
            if confidence is None
            else np.broadcast_to(np.asarray(confidence, dtype=np.float64), (n,)).copy()
        )
        if not (sg.shape[0] == en.shape[0] == sl.shape[0] == n):
            raise ValueError(
                f"column lengths differ: bar {n}, sign {sg.shape[0]}, entry {en.shape[0]}, stop {sl.shape[0]}"
            )
        tps = np.asarray(levels.take_profits, dtype=np.float64)
        if tps.shape[0] != n:
            raise ValueError(f"column lengths differ: bar {n}, take_profits {tps.shape[0]}")
        tps = tps.reshape(n, tps.shape[1] if tps.ndim == 2 else (tps.size // n if n else 0))
        if not bool(((sg == 1) | (sg == -1)).all()):
            raise ValueError("sign must be +1 (LONG) or -1 (SHORT)")
        if sub_keys is not None and len(sub_keys) != n:
            raise ValueError(f"{len(sub_keys)} sub-keys for {n} rows")
        batch = cls(
            bar=b,
            sign=sg,
            entry=en,
            stop_loss=sl,
            take_profits=tps,
            valid=_verdicts(sg, en, sl, tps, gt, settings),
            gate=gt,
            confidence=conf,
            row=np.arange(n, dtype=np.int64),
            settings=settings,
            describe=describe,
            sub_keys=None if sub_keys is None else tuple(sub_keys),
        )
        return batch.sorted()

    @classmethod
    def empty(cls, settings: RiskSettings | None = None) -> CandidateBatch:
        """No candidates (the live path's usual answer, so it costs next to nothing)."""
        f, i = _EMPTY_F, _EMPTY_I
        return cls(i, _EMPTY_I8, f, f, _EMPTY_TPS, _EMPTY_B, _EMPTY_B, f, i, settings or _DEFAULT_RISK)

    @classmethod
    def from_candidates(
        cls, cands: Sequence[Candidate], settings: RiskSettings | None = None
    ) -> CandidateBatch:
        """Wrap a plugin's plain list: the columns come from the objects, which are kept as they
        are, in replay order (bar, then LONG first)."""
        items = tuple(cands)
        n = len(items)
        k = max((len(c.levels.take_profits) for c in items), default=0)
        tps = np.full((n, k), np.nan)
        for i, c in enumerate(items):
            tps[i, : len(c.levels.take_profits)] = c.levels.take_profits
        return cls(
            bar=np.fromiter((c.bar for c in items), dtype=np.int64, count=n),
            sign=np.fromiter((c.direction.sign for c in items), dtype=np.int8, count=n),
            entry=np.fromiter((c.levels.entry for c in items), dtype=np.float64, count=n),
            stop_loss=np.fromiter((c.levels.stop_loss for c in items), dtype=np.float64, count=n),
            take_profits=tps,
            valid=np.fromiter((c.levels.valid for c in items), dtype=np.bool_, count=n),
            gate=np.ones(n, dtype=np.bool_),
            confidence=np.fromiter(
                (np.nan if c.confidence is None else c.confidence for c in items),
                dtype=np.float64,
                count=n,
            ),
            row=np.arange(n, dtype=np.int64),
            settings=settings or RiskSettings(),
            sub_keys=tuple(c.sub_key for c in items) if any(c.sub_key for c in items) else None,
            items=items,
        ).sorted()

    # -- selection --------------------------------------------------------------------------

    def take(self, idx: IntArray | BoolArray) -> CandidateBatch:
        """The rows at `idx` (indices or a mask), with everything needed to describe them."""
        ix = np.flatnonzero(idx) if idx.dtype == np.bool_ else np.asarray(idx, dtype=np.int64)
        return CandidateBatch(
            bar=self.bar[ix],
            sign=self.sign[ix],
            entry=self.entry[ix],
            stop_loss=self.stop_loss[ix],
            take_profits=self.take_profits[ix],
            valid=self.valid[ix],
            gate=self.gate[ix],
            confidence=self.confidence[ix],
            row=self.row[ix],
            settings=self.settings,
            describe=self.describe,
            sub_keys=None if self.sub_keys is None else tuple(self.sub_keys[i] for i in ix.tolist()),
            items=self.items,
        )

    def sorted(self) -> CandidateBatch:
        """Rows by bar, then LONG before SHORT (stable), the order replay processes them in."""
        order = np.lexsort((-self.sign, self.bar))
        if order.shape[0] < 2 or bool((order[1:] > order[:-1]).all()):
            return self
        return self.take(order)

    def at_bar(self, bar: int) -> list[Candidate]:
        """The candidates at one bar (the live path keeps those of the last bar only)."""
        return list(self.take(self.bar == bar))

    def sub_key(self, i: int) -> str:
        """Row i's cooldown sub-key ("" when the strategy uses none)."""
        return "" if self.sub_keys is None else self.sub_keys[i]

    # -- Sequence[Candidate] ------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.bar.shape[0])

    @overload
    def __getitem__(self, i: int) -> Candidate: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, i: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(i, slice):
            return [self.candidate(j) for j in range(len(self))[i]]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return self.candidate(i % n)

    def __iter__(self) -> Iterator[Candidate]:
        for i in range(len(self)):
            yield self.candidate(i)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same Candidates, as a list would be."""
        if isinstance(other, CandidateBatch | list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def targets(self, i: int) -> tuple[float, ...]:
        """Row i's take-profits without the NaN padding."""
        tps = self.take_profits[i].tolist()
        while tps and tps[-1] != tps[-1]:  # trailing NaN: a target this row does not have
            tps.pop()
        return tuple(tps)

    def levels(self, i: int) -> Levels:
        """Row i's Levels with the full verdict (reason text included), as `validate_levels` gives it."""
        if self.valid[i]:
            # Known valid (the array gate agrees with the scalar one, a property test holds
            # them to it): only the ratios are left, by validate_levels' own formulas.
            entry, sl = float(self.entry[i]), float(self.stop_loss[i])
            tps = self.targets(i)
            risk = abs(entry - sl)
            rr2 = abs(tps[1] - entry) / risk if len(tps) > 1 else None
            return Levels(entry, sl, tps, risk, abs(tps[0] - entry) / risk, rr2, True, "")
        st = self.settings
        return validate_levels(
            Direction.LONG if self.sign[i] > 0 else Direction.SHORT,
            float(self.entry[i]),
            float(self.stop_loss[i]),
            self.targets(i),
            min_rr=st.min_rr,
            max_sl_percent=st.max_sl_percent,
            min_sl_percent=st.min_sl_percent,
            gate=bool(self.gate[i]),
        )

    def candidate(self, i: int) -> Candidate:
        """Row i as a Candidate, its words built now by the strategy's `describe`."""
        r = int(self.row[i])
        if self.items is not None:
            return self.items[r]
        rationale, metadata = self.describe(r)
        conf = float(self.confidence[i])
        return Candidate(
            bar=int(self.bar[i]),
            direction=Direction.LONG if self.sign[i] > 0 else Direction.SHORT,
            levels=self.levels(i),
            confidence=None if conf != conf else conf,
            rationale=tuple(rationale),
            metadata=metadata,
            sub_key=self.sub_key(i),
        )


# Below this many rows the scalar gate is cheaper than some thirty array operations; the
# live path usually has zero or one candidate per call. Both gates agree (tests/signals).
SCALAR_ROWS = 16


def _verdicts(
    sign: npt.NDArray[np.int8],
    entry: FloatArray,
    stop_loss: FloatArray,
    take_profits: FloatArray,
    gate: BoolArray,
    settings: RiskSettings,
) -> BoolArray:
    n = entry.shape[0]
    if n > SCALAR_ROWS:
        return validate_arrays(sign, entry, stop_loss, take_profits, gate, settings)
    out = np.empty(n, dtype=np.bool_)
    for i, (s, e, sl, tps, g) in enumerate(
        zip(
            sign.tolist(),
            entry.tolist(),
            stop_loss.tolist(),
            take_profits.tolist(),
            gate.tolist(),
            strict=True,
        )
    ):
        while tps and tps[-1] != tps[-1]:  # trailing NaN: padding
            tps.pop()
        out[i] = validate_levels(
            Direction.LONG if s > 0 else Direction.SHORT,
            e,
            sl,
            tps,
            min_rr=settings.min_rr,
            max_sl_percent=settings.max_sl_percent,
            min_sl_percent=settings.min_sl_percent,
            gate=g,
        ).valid
    return out


_EMPTY_F: FloatArray = np.empty(0, dtype=np.float64)
_EMPTY_I: IntArray = np.empty(0, dtype=np.int64)
_EMPTY_I8: npt.NDArray[np.int8] = np.empty(0, dtype=np.int8)
_EMPTY_B: BoolArray = np.empty(0, dtype=np.bool_)
_EMPTY_TPS: FloatArray = np.empty((0, 0), dtype=np.float64)
_DEFAULT_RISK = RiskSettings()
for _a in (_EMPTY_F, _EMPTY_I, _EMPTY_I8, _EMPTY_B, _EMPTY_TPS):
    _a.flags.writeable = False


def as_batch(result: Sequence[Candidate], settings: RiskSettings | None = None) -> CandidateBatch:
    """A plugin's answer as a batch: batches pass through, plain sequences are wrapped."""
    if isinstance(result, CandidateBatch):
        return result
    return CandidateBatch.from_candidates(list(result), settings)
