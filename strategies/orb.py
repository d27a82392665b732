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
from engine.signals.model import Candidate, Direction
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


def run_starts(code: npt.NDArray[np.int8]) -> IntArray:
    """For each bar, the index where its run of equal codes began."""
    n = code.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = code[1:] != code[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(n), 0))


def first_in_run(cond: npt.NDArray[np.bool_], start: IntArray) -> npt.NDArray[np.bool_]:
    """Bars where `cond` holds for the first time within their run."""
    cc = np.cumsum(cond)
    before: IntArray = cc[start] - cond[start]
    out: npt.NDArray[np.bool_] = cond & (cc - before == 1)
    return out


def count_in_session(flag: npt.NDArray[np.bool_], session_start: IntArray) -> IntArray:
    """How many times `flag` held in the bar's session up to and including the bar."""
    cc = np.cumsum(flag)
    return np.asarray(cc - (cc[session_start] - flag[session_start]), dtype=np.int64)


def stage_events(
    code: npt.NDArray[np.int8],
    vol_ok: npt.NDArray[np.bool_],
    session_start: IntArray,
    min_bars: int,
    max_cycles: int,
) -> npt.NDArray[np.int8]:
    """The state machine of one stage, solved on runs of equal position codes.

    `code` is +1 above the range, -1 below, 0 inside, INACTIVE before the range exists. A
    breakout closes on the first bar that leaves its side (inside: retest; opposite side or
    new session: silently), so no breakout is ever open when a run starts. Hence each run
    outside fires at most one breakout — its first bar from the `min_bars`-th on that passes
    the volume filter — subject to the session's cycle cap, and a run that fired is followed
    by a retest exactly when the next bar is inside.
    """
    n = code.shape[0]
    start = run_starts(code)
    out = np.zeros(n, dtype=np.int8)
    runpos = np.arange(n) - start
    for side, brk, ret in ((1, BREAKOUT_UP, RETEST_UP), (-1, BREAKOUT_DOWN, RETEST_DOWN)):
        qualifies = first_in_run((code == side) & (runpos >= min_bars - 1) & vol_ok, start)
        fired = qualifies & (count_in_session(qualifies, session_start) <= max_cycles)
        run_fired = np.zeros(n, dtype=bool)
        run_fired[start[fired]] = True
        retest = np.zeros(n, dtype=bool)
        retest[1:] = (code[1:] == 0) & (code[:-1] == side) & run_fired[start[:-1]]
        out[fired] = brk
        out[retest] = ret
    return out


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
    return np.where(full, hi, np.nan), np.where(full, lo, np.nan)


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
        session_start = np.maximum.accumulate(np.where(new_session, np.arange(n), 0))
        pos = np.arange(n) - session_start
        lengths = np.diff(np.append(starts, n))
        session = np.cumsum(new_session) - 1

        if p.volume_filter:
            vma = np.asarray(talib.SMA(c.volume, timeperiod=p.volume_ma_length), dtype=np.float64)
            vol_ok = c.volume > p.volume_mult * vma
        else:
            vol_ok = np.ones(n, dtype=bool)

        # All stages at once: rows are stages, laid end to end for the run logic. Each row
        # starts with an INACTIVE bar (position 0 of a session), so no run crosses rows.
        sizes = np.asarray(p.stages, dtype=np.int64)
        rows = sizes.shape[0]
        hi_s, lo_s = session_ranges(c, starts, lengths, sizes)
        hi, lo = hi_s[:, session], lo_s[:, session]
        buf = p.breakout_buffer_pct / 100.0
        code = np.where(c.close > hi * (1.0 + buf), 1, np.where(c.close < lo * (1.0 - buf), -1, 0))
        code = np.where(pos >= sizes[:, None], code, INACTIVE).astype(np.int8)
        flat_start = (session_start + n * np.arange(rows)[:, None]).ravel()
        ev = stage_events(
            code.ravel(), np.tile(vol_ok, rows), flat_start, p.min_bars_outside, p.max_cycles
        ).reshape(rows, n)
        has = ev != 0
        row = has.argmax(axis=0)  # the first stage, in the configured order, with an event
        cols = np.arange(n)
        event = np.where(has.any(axis=0), ev[row, cols], 0)

        atr_ = atr(c, p.atr_period, p.atr_mode)
        first = self.lookback - 1
        return [
            self._candidate(
                int(i), int(event[i]), int(sizes[row[i]]), c, hi[row[i], i], lo[row[i], i], atr_[i]
            )
            for i in np.flatnonzero(event[first:]) + first
        ]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(self, i: int, ev: int, size: int, c: Candles, hi: float, lo: float, a: float) -> Candidate:
        """ATR method with global risk: SL 1.5 ATR (+0.75 % buffer), TP1/2/3 at 2.0/3.0/4.5 ATR."""
        direction = Direction.LONG if ev in (BREAKOUT_UP, RETEST_UP) else Direction.SHORT
        entry = float(c.close[i])
        levels = self.levels.atr(direction, entry=entry, atr=float(a))
        name = EVENTS[ev]
        edge = "high" if direction is Direction.LONG else "low"
        if ev in (BREAKOUT_UP, BREAKOUT_DOWN):
            side = "above" if direction is Direction.LONG else "below"
            what = f"{self.params.min_bars_outside} consecutive closes {side} the ORB{size} {edge}"
        else:
            what = f"close back inside ORB{size} after a breakout of its {edge}: retest"
        return Candidate(
            bar=i,
            direction=direction,
            levels=levels,
            rationale=(f"ORB{size} {lo:.8g} to {hi:.8g} (session from 00:00 UTC)", what),
            metadata={
                "kind": name,
                "stage": size,
                "orb_high": float(hi),
                "orb_low": float(lo),
                "atr": float(a),
            },
        )
