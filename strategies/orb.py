"""orb — opening-range breakout per UTC session (spec §4.1).

The first N candles after 00:00 UTC set a range (ORB_N); two consecutive closes beyond it
(by a 0.2 % buffer) commit a breakout, and the first close back inside afterwards is a
retest of the broken edge, traded in the breakout's direction. Several stages (N = 5, 15,
30, 60) run side by side; the shortest stage with an event on a bar speaks for it.

The state is per session, so the answer at bar t depends only on the candles of t's UTC day:
once `lookback` covers a whole day of the timeframe, live windows and replay agree. The whole
state machine is solved with array operations — see `stage_events` for why that is exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field, field_validator

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from engine.timeframes import timeframe_seconds
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

DAY_MS = 86_400_000

# Event codes per bar and stage; 0 = nothing.
BREAKOUT_UP, BREAKOUT_DOWN, RETEST_UP, RETEST_DOWN = 1, 2, 3, 4
EVENTS = {
    BREAKOUT_UP: "breakout_up",
    BREAKOUT_DOWN: "breakout_down",
    RETEST_UP: "retest_up",
    RETEST_DOWN: "retest_down",
}
# Bars before a stage's range is complete: a code of their own, so runs never cross sessions.
INACTIVE = 2


class OrbParams(StrategyParams):
    """`[params]` of an orb instance: opening-range stages, breakout rules and an optional volume filter."""

    stages: tuple[int, ...] = Field(
        (5, 15, 30, 60),
        description="opening-range lengths in candles from 00:00 UTC, checked in this order",
    )
    breakout_buffer_pct: float = Field(
        0.2, ge=0, description="a close counts as outside beyond the range by this %"
    )
    min_bars_outside: int = Field(2, ge=1, description="consecutive closes outside that commit a breakout")
    max_cycles: int = Field(6, ge=1, description="breakouts per direction, stage and session")
    volume_filter: bool = Field(
        False, description="breakout bar also needs volume > volume_mult x SMA(volume)"
    )
    volume_mult: float = Field(1.5, gt=0, description="volume filter multiple")
    volume_ma_length: int = Field(20, ge=1, description="volume filter SMA length")
    atr_period: int = Field(14, ge=1, description="ATR period for the levels")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)

    @field_validator("stages")
    @classmethod
    def _ascending(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or v[0] < 1 or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("stages must be one or more strictly ascending positive candle counts")
        return v


def rank_in_group(group: IntArray) -> IntArray:
    """1-based position of each element among the equal values of a non-decreasing array."""
    return np.arange(1, group.shape[0] + 1) - np.searchsorted(group, group, side="left")


def stage_events(
    code: npt.NDArray[np.int8],
    session: IntArray,
    vol_ok: npt.NDArray[np.bool_] | None,
    min_bars: int,
    max_cycles: int,
) -> tuple[IntArray, npt.NDArray[np.int8]]:
    """The state machine of every stage, solved on runs of equal position codes.

    `code` is (stages, bars): +1 above the range, -1 below, 0 inside, INACTIVE before the
    range exists. A breakout ends on the first bar that leaves its side (inside: the retest;
    the opposite side or a new session: silently), so no breakout is ever open when a run
    starts. Hence each run outside fires at most one breakout — on its `min_bars`-th bar, or
    with the volume filter the first bar from there on that passes it — subject to the
    session's cycle cap, and a run that fired is followed by a retest exactly when the next
    run is inside. The stages are laid end to end (each starts INACTIVE, so no run crosses
    two) and only run starts and fired bars are touched, so the cost is in runs, not bars.

    Returns the events as flat positions (stage · bars + bar, distinct) and their codes.
    """
    rows, n = code.shape
    flat = code.ravel()
    m = flat.shape[0]
    new = np.ones(m, dtype=bool)
    new[1:] = flat[1:] != flat[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], m)
    rcode = flat[starts]
    long_enough = ends - starts >= min_bars
    ok_bars = None if vol_ok is None else (np.flatnonzero(vol_ok) + n * np.arange(rows)[:, None]).ravel()
    sessions = int(session[-1]) + 1
    where: list[IntArray] = []
    what: list[npt.NDArray[np.int8]] = []
    for side, brk, ret in ((1, BREAKOUT_UP, RETEST_UP), (-1, BREAKOUT_DOWN, RETEST_DOWN)):
        runs = np.flatnonzero((rcode == side) & long_enough)
        at = starts[runs] + (min_bars - 1)
        if ok_bars is not None:
            k = np.searchsorted(ok_bars, at)
            nxt = ok_bars[np.minimum(k, ok_bars.shape[0] - 1)] if ok_bars.shape[0] else at
            inside_run = (k < ok_bars.shape[0]) & (nxt < ends[runs])
            runs, at = runs[inside_run], nxt[inside_run]
        stage, bar = np.divmod(at, n)
        keep = rank_in_group(stage * sessions + session[bar]) <= max_cycles
        runs, at = runs[keep], at[keep]
        following = runs[runs + 1 < starts.shape[0]] + 1
        retest = starts[following[rcode[following] == 0]]
        where += [at, retest]
        what += [np.full(at.shape[0], brk, dtype=np.int8), np.full(retest.shape[0], ret, dtype=np.int8)]
    return np.concatenate(where), np.concatenate(what)


def session_ranges(
    c: Candles, starts: IntArray, lengths: IntArray, sizes: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Per stage (row) and session (column): max high and min low of the session's first
    `size` candles, NaN for a session with fewer."""
    width = int(sizes[-1])
    idx = np.minimum(starts[:, None] + np.arange(width), c.high.shape[0] - 1)
    hi = np.maximum.accumulate(c.high[idx], axis=1)[:, sizes - 1].T
    lo = np.minimum.accumulate(c.low[idx], axis=1)[:, sizes - 1].T
    full = lengths >= sizes[:, None]
    return np.where(full, hi, np.nan), np.where(full, lo, np.nan)  # contiguous (stages, sessions)


class OrbStrategy(Strategy[OrbParams]):
    """Breakout of each UTC session's opening ranges and the first retest after it."""

    name = "orb"
    Params = OrbParams
    RISK: ClassVar[Mapping[str, float]] = {}  # global risk (spec §2)
    DEFAULT_TIMEFRAME = "1m"
    DEFAULT_COOLDOWN = 0

    def on_load(self) -> None:
        step = timeframe_seconds(self.timeframe)
        if step >= 86_400 or 86_400 % step:
            raise ValueError(f"orb needs a timeframe that divides a UTC day, got {self.timeframe!r}")
        self.bars_per_day = 86_400 // step

    @property
    def lookback(self) -> int:
        # A whole session of the timeframe, plus the ATR warm-up.
        return self.bars_per_day + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup, "stages": list(self.params.stages)}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        day = c.ts // DAY_MS
        new_session = np.ones(n, dtype=bool)
        new_session[1:] = day[1:] != day[:-1]
        starts = np.flatnonzero(new_session)
        lengths = np.diff(np.append(starts, n))
        session = np.repeat(np.arange(starts.shape[0]), lengths)
        pos = np.arange(n) - np.repeat(starts, lengths)

        vol_ok = None
        if p.volume_filter:
            vma = np.asarray(talib.SMA(c.volume, timeperiod=p.volume_ma_length), dtype=np.float64)
            vol_ok = c.volume > p.volume_mult * vma

        # All stages at once: rows are stages, columns bars.
        sizes = np.asarray(p.stages, dtype=np.int64)
        hi_s, lo_s = session_ranges(c, starts, lengths, sizes)
        buf = p.breakout_buffer_pct / 100.0
        # Each bar's upper threshold, then (in the same buffer) its lower one.
        level = np.take(hi_s * (1.0 + buf), session, axis=1)
        above = c.close > level
        np.take(lo_s * (1.0 - buf), session, axis=1, out=level)
        code = above.view(np.int8) - (c.close < level).view(np.int8)
        code[pos < sizes[:, None]] = INACTIVE
        flat, ev = stage_events(code, session, vol_ok, p.min_bars_outside, p.max_cycles)

        # One event per bar: the first stage, in the configured order, that has one.
        r, at = np.divmod(flat, n)
        order = np.lexsort((r, at))
        at, r, ev = at[order], r[order], ev[order]
        first = np.ones(at.shape[0], dtype=bool)
        first[1:] = at[1:] != at[:-1]
        first &= at >= self.lookback - 1
        at, r, ev = at[first], r[first], ev[first]

        atr_ = atr(c, p.atr_period, p.atr_mode)
        d = session[at]
        return self._candidates(at, ev, sizes[r], c.close[at], hi_s[r, d], lo_s[r, d], atr_[at])

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        at: IntArray,
        ev: npt.NDArray[np.int8],
        size: IntArray,
        entry: FloatArray,
        hi: FloatArray,
        lo: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """ATR method with global risk: SL 1.5 ATR (+0.75 % buffer), TP1/2/3 at 2.0/3.0/4.5 ATR."""
        long = (ev == BREAKOUT_UP) | (ev == RETEST_UP)
        sign = np.where(long, 1, -1).astype(np.int8)
        levels = self.arrays.atr(sign, entry, atr_)
        min_bars = self.params.min_bars_outside

        def describe(row: int) -> Detail:
            e, n = int(ev[row]), int(size[row])
            h, lw = float(hi[row]), float(lo[row])
            up = e in (BREAKOUT_UP, RETEST_UP)
            edge = "high" if up else "low"
            if e in (BREAKOUT_UP, BREAKOUT_DOWN):
                what = f"{min_bars}+ consecutive closes {'above' if up else 'below'} the ORB{n} {edge}"
            else:
                what = f"close back inside ORB{n} after a breakout of its {edge}: retest"
            return (f"ORB{n} {lw:.8g} to {h:.8g} (session from 00:00 UTC)", what), {
                "kind": EVENTS[e],
                "stage": n,
                "orb_high": h,
                "orb_low": lw,
                "atr": float(atr_[row]),
            }

        return self.batch(at, sign, entry, levels, describe=describe)
