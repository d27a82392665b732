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
) -> npt.NDArray[np.int8]:
    """The state machine of a stage, solved on runs of equal position codes.

    `code` is +1 above the range, -1 below, 0 inside, INACTIVE before the range exists. A
    breakout ends on the first bar that leaves its side (inside: the retest; the opposite side
    or a new session: silently), so no breakout is ever open when a run starts. Hence each run
    outside fires at most one breakout — on its `min_bars`-th bar, or with the volume filter
    the first bar from there on that passes it — subject to the session's cycle cap, and a run
    that fired is followed by a retest exactly when the next run is inside. Only run starts
    and fired bars are touched, so the cost is in runs, not bars.
    """
    n = code.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = code[1:] != code[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    rcode = code[starts]
    ok_bars = None if vol_ok is None else np.flatnonzero(vol_ok)
    out = np.zeros(n, dtype=np.int8)
    for side, brk, ret in ((1, BREAKOUT_UP, RETEST_UP), (-1, BREAKOUT_DOWN, RETEST_DOWN)):
        runs = np.flatnonzero((rcode == side) & (ends - starts >= min_bars))
        at = starts[runs] + (min_bars - 1)
        if ok_bars is not None:
            k = np.searchsorted(ok_bars, at)
            nxt = ok_bars[np.minimum(k, ok_bars.shape[0] - 1)] if ok_bars.shape[0] else at
            inside_run = (k < ok_bars.shape[0]) & (nxt < ends[runs])
            runs, at = runs[inside_run], nxt[inside_run]
        keep = rank_in_group(session[at]) <= max_cycles
        runs, at = runs[keep], at[keep]
        out[at] = brk
        following = runs[runs + 1 < starts.shape[0]] + 1
        out[starts[following[rcode[following] == 0]]] = ret
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
        session = np.cumsum(new_session) - 1
        pos = np.arange(n) - starts[session]

        vol_ok = None
        if p.volume_filter:
            vma = np.asarray(talib.SMA(c.volume, timeperiod=p.volume_ma_length), dtype=np.float64)
            vol_ok = np.tile(c.volume > p.volume_mult * vma, len(p.stages))

        # All stages at once: rows are stages, laid end to end for the run logic. Each row
        # starts with an INACTIVE bar (position 0 of a session), so no run crosses rows.
        sizes = np.asarray(p.stages, dtype=np.int64)
        rows = sizes.shape[0]
        hi_s, lo_s = session_ranges(c, starts, lengths, sizes)
        hi, lo = np.repeat(hi_s, lengths, axis=1), np.repeat(lo_s, lengths, axis=1)
        buf = p.breakout_buffer_pct / 100.0
        code = (c.close > hi * (1.0 + buf)).view(np.int8) - (c.close < lo * (1.0 - buf)).view(np.int8)
        code[pos < sizes[:, None]] = INACTIVE
        flat_session = (session + (int(session[-1]) + 1) * np.arange(rows)[:, None]).ravel()
        flat = stage_events(code.ravel(), flat_session, vol_ok, p.min_bars_outside, p.max_cycles)
        ev = flat.reshape(rows, n)
        # One event per bar: the first stage, in the configured order, that has one.
        event = np.zeros(n, dtype=np.int8)
        row = np.zeros(n, dtype=np.int64)
        for k in range(rows - 1, -1, -1):
            hit = np.flatnonzero(ev[k])
            event[hit], row[hit] = ev[k, hit], k

        atr_ = atr(c, p.atr_period, p.atr_mode)
        first = self.lookback - 1
        at = np.flatnonzero(event[first:]) + first
        r = row[at]
        return [
            self._candidate(*args)
            for args in zip(
                at.tolist(),
                event[at].tolist(),
                sizes[r].tolist(),
                c.close[at].tolist(),
                hi[r, at].tolist(),
                lo[r, at].tolist(),
                atr_[at].tolist(),
                strict=True,
            )
        ]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self, i: int, ev: int, size: int, entry: float, hi: float, lo: float, a: float
    ) -> Candidate:
        """ATR method with global risk: SL 1.5 ATR (+0.75 % buffer), TP1/2/3 at 2.0/3.0/4.5 ATR."""
        long = ev in (BREAKOUT_UP, RETEST_UP)
        direction = Direction.LONG if long else Direction.SHORT
        edge = "high" if long else "low"
        if ev in (BREAKOUT_UP, BREAKOUT_DOWN):
            side = "above" if long else "below"
            what = f"{self.params.min_bars_outside}+ consecutive closes {side} the ORB{size} {edge}"
        else:
            what = f"close back inside ORB{size} after a breakout of its {edge}: retest"
        return Candidate(
            bar=i,
            direction=direction,
            levels=self.levels.atr(direction, entry=entry, atr=a),
            rationale=(f"ORB{size} {lo:.8g} to {hi:.8g} (session from 00:00 UTC)", what),
            metadata={"kind": EVENTS[ev], "stage": size, "orb_high": hi, "orb_low": lo, "atr": a},
        )
