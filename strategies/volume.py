"""volume — a vote of trend, momentum, candle and volume-profile factors (spec §4.14).

Each closed bar is scored by simple factors for each side: trend (close vs SMA20), momentum
(RSI bands), a reversal candle, a volume spike in the bar's colour, recent buying pressure,
and whether price sits near a high-volume node of the last 100 bars' profile — below the POC
for a LONG (support under price), at or above it for a SHORT. Three or more factors that
outnumber the other side make a signal; its confidence is the weighted sum of its factors.
The profile also places the stop (beyond the value area) and TP1 (the POC, if far enough).

The original allowed one open signal per symbol; tracking open signals is engine state, not
a function of candles, so here the engine's per-symbol cooldown (30 min) is what spaces the
signals out — see docs/strategies/volume.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import WARMUP_HELP
from strategies._profile import value_area

BoolArray = npt.NDArray[np.bool_]

# Bars the original fetched per scan; the engine adds `warmup` on top (see `lookback`).
DATA_BARS = 200

# RSI bands of the momentum factors and the midline of the RSI-and-trend factor.
RSI_LONG_BAND = (45.0, 80.0)
RSI_SHORT_BAND = (20.0, 55.0)
RSI_MID = 50.0

# Levels (spec §4.14): stop at least 1.5 % away, risk unit at least 1 % of entry, TPs 2R/3R.
MIN_STOP_FRACTION = 0.015
MIN_RISK_FRACTION = 0.01
TP1_R, TP2_R = 2.0, 3.0

# (name, weight, rationale) of each factor, in the order the masks are built in `votes`.
# Templates: {0} is the bar's Facts, {1} its pattern name, {sma} the SMA period.
LONG_FACTORS: tuple[tuple[str, int, str], ...] = (
    ("trend", 1, "close above SMA{sma}"),
    ("rsi_band", 1, "RSI {0.rsi:.1f} in 45-80"),
    ("rsi_trend", 1, "RSI above 50 with close above SMA{sma}"),
    ("near_hvn", 2, "near a high-volume node, below the POC {0.poc:.8g}"),
    ("pattern", 1, "candle pattern: {1}"),
    ("volume_spike", 2, "volume {0.volume_ratio:.2f} x its SMA{sma} on a green bar"),
    ("buying_pressure", 2, "latest green bars out-trade the latest red ones"),
)
SHORT_FACTORS: tuple[tuple[str, int, str], ...] = (
    ("trend", 1, "close at or below SMA{sma}"),
    ("rsi_band", 1, "RSI {0.rsi:.1f} in 20-55 (and not 45-80)"),
    ("near_hvn", 2, "near a high-volume node, at or above the POC {0.poc:.8g}"),
    ("pattern", 1, "candle pattern: {1}"),
    ("volume_spike", 2, "volume {0.volume_ratio:.2f} x its SMA{sma} on a red bar"),
)
# Windows profiled per array pass: keeps the (windows x bars) temporaries cache-sized.
PROFILE_CHUNK = 256

PATTERNS = ("", "hammer", "bullish engulfing", "shooting star", "bearish engulfing")


class Facts(NamedTuple):
    """What one firing bar's candidate is built from (plain Python values)."""

    bar: int
    long: bool
    long_votes: list[bool]
    short_votes: list[bool]
    n_long: int
    n_short: int
    entry: float
    rsi: float
    sma: float
    volume_ratio: float
    pattern: int
    poc: float
    vah: float
    val: float
    row_height: float


class VolumeParams(StrategyParams):
    """`[params]` of a volume instance: profile, trend, momentum and pressure factors, votes needed."""

    profile_bars: int = Field(100, ge=2, description="bars of the volume profile (ending at the signal bar)")
    profile_rows: int = Field(24, ge=2, description="equal-height price rows of the profile")
    value_area_pct: float = Field(0.70, gt=0, le=1, description="share of the profile in the value area")
    hvn_mult: float = Field(1.5, gt=0, description="high-volume node: row volume > mult x mean row")
    hvn_distance_rows: float = Field(2.0, gt=0, description="near an HVN: its centre < this many rows away")
    sma_period: int = Field(20, ge=1, description="SMA of closes (trend) and of volume (spike)")
    rsi_period: int = Field(14, ge=2, description="RSI period (Wilder)")
    volume_spike_mult: float = Field(1.5, gt=0, description="spike: volume > mult x SMA(volume)")
    pressure_bars: int = Field(20, ge=2, description="bars searched for the latest green and red bars")
    pressure_count: int = Field(3, ge=1, description="latest green / red bars averaged")
    pressure_mult: float = Field(1.2, gt=0, description="buying pressure: green mean > mult x red mean")
    min_factors: int = Field(3, ge=1, description="factors a side needs (and more than the other side)")
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


def candle_patterns(c: Candles, at: IntArray) -> npt.NDArray[np.int8]:
    """Index into PATTERNS of each `at` bar's pattern vs the bar before (first match, 0 = none)."""
    o, h, lo, cl = c.open[at], c.high[at], c.low[at], c.close[at]
    before = np.maximum(at - 1, 0)
    po, pc = c.open[before], c.close[before]
    body = np.abs(cl - o)
    upper = h - np.maximum(o, cl)
    lower = np.minimum(o, cl) - lo
    green, red = cl > o, cl < o
    hammer = green & (lower > 2 * body) & (upper < 0.3 * body)
    bull_eng = (pc < po) & green & (cl > po) & (o < pc)
    star = red & (upper > 2 * body) & (lower < 0.3 * body)
    bear_eng = (pc > po) & red & (cl < po) & (o > pc)
    out = np.select([hammer, bull_eng, star, bear_eng], [1, 2, 3, 4], 0).astype(np.int8)
    out[at == 0] = 0  # no bar before the first one
    return out


def latest_mean_volume(
    flag: BoolArray, volume: FloatArray, at: IntArray, bars: int, count: int
) -> tuple[FloatArray, FloatArray]:
    """Sum and number of the volumes of the latest `count` flagged bars within `bars` of each `at`."""
    where = np.flatnonzero(flag)
    seen = np.cumsum(flag)[at]
    total = np.zeros(at.shape[0])
    n = np.zeros(at.shape[0])
    if where.shape[0] == 0:
        return total, n
    for k in range(1, count + 1):
        j = where[np.maximum(seen - k, 0)]
        ok = (seen - k >= 0) & (j > at - bars)
        total = total + np.where(ok, volume[j], 0.0)
        n = n + ok
    return total, n


def covered_rows(
    lo_b: FloatArray, hi_b: FloatArray, base: FloatArray, height: FloatArray, rows: int
) -> tuple[IntArray, IntArray]:
    """First and last row whose centre `base + (j + 0.5)·height` lies in each bar's [low, high].

    The closed form can miss by one row when a price sits on a centre (common on coarse tick
    grids), so it is checked against a table of the centres themselves and nudged.
    """
    k = base.shape[0]
    table = np.empty((k, rows + 2))
    table[:, 0], table[:, -1] = -np.inf, np.inf
    table[:, 1:-1] = base + (np.arange(rows) + 0.5) * height
    flat_t = table.ravel()
    row0 = (np.arange(k) * (rows + 2) + 1)[:, None]
    a = np.clip(np.ceil((lo_b - base) / height - 0.5), 0, rows).astype(np.int64)
    a = a - (flat_t[row0 + a - 1] >= lo_b) + (flat_t[row0 + a] < lo_b)
    e = np.clip(np.floor((hi_b - base) / height - 0.5), -1, rows - 1).astype(np.int64)
    e = e + (flat_t[row0 + e + 1] <= hi_b) - (flat_t[row0 + e] > hi_b)
    return a, e


def rolling_profiles(
    c: Candles, at: IntArray, bars: int, rows: int, share: float
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray, IntArray]:
    """Profile of the `bars` bars ending at each `at`: row volumes, bottom, row height, POC
    row, and the value area's lowest and highest row.

    A bar adds its whole volume to every row whose centre lies in [low, high] — a contiguous
    run of rows, so it costs two entries of a difference array, not a test per row. Windows
    are processed in chunks small enough for the temporaries to stay in cache.
    """
    k = at.shape[0]
    bottom = np.asarray(talib.MIN(c.low, timeperiod=bars), dtype=np.float64)[at]
    top = np.asarray(talib.MAX(c.high, timeperiod=bars), dtype=np.float64)[at]
    height = (top - bottom) / rows
    flat = height <= 0
    safe = np.where(flat, 1.0, height)
    hist = np.empty((k, rows))
    width = rows + 1
    for s in range(0, k, PROFILE_CHUNK):
        part = slice(s, min(s + PROFILE_CHUNK, k))
        idx = at[part, None] + np.arange(1 - bars, 1)
        lo_b, hi_b, vol = c.low[idx], c.high[idx], c.volume[idx]
        a, e = covered_rows(lo_b, hi_b, bottom[part, None], safe[part, None], rows)
        a = np.where(flat[part, None], 0, a)
        e = np.where(flat[part, None], rows - 1, e)
        w = np.where(e >= a, vol, 0.0).ravel()
        m = idx.shape[0]
        off = (np.arange(m) * width)[:, None]
        diff = np.bincount((off + a).ravel(), weights=w, minlength=m * width)
        diff -= np.bincount((off + e + 1).ravel(), weights=w, minlength=m * width)
        hist[part] = np.cumsum(diff.reshape(m, width), axis=1)[:, :rows]
    poc = hist.argmax(axis=1)
    va_lo, va_hi = value_area(hist, poc, share, ties_upper=False)
    return hist, bottom, np.where(flat, 0.0, height), poc, va_lo, va_hi


def near_hvn(
    hist: FloatArray, centres: FloatArray, height: FloatArray, close: FloatArray, mult: float, rows: float
) -> BoolArray:
    """Close within `rows` row heights of the nearest high-volume node (row > mult x mean row)."""
    hvn = hist > mult * hist.mean(axis=1, keepdims=True)
    dist = np.where(hvn, np.abs(centres - close[:, None]), np.inf).min(axis=1)
    out: BoolArray = dist < rows * height
    return out


class Votes(NamedTuple):
    """Each side's factor masks (in LONG_FACTORS / SHORT_FACTORS order) and the values behind
    them, for the bars `at`. The near-HVN masks are all False here: only the profile decides
    them, and only where they can change the outcome."""

    long: list[BoolArray]
    short: list[BoolArray]
    rsi: FloatArray
    sma: FloatArray
    volume_ratio: FloatArray
    pattern: npt.NDArray[np.int8]


def factor_votes(c: Candles, p: VolumeParams, at: IntArray) -> Votes:
    """Every factor but the profile's, for each bar in `at`."""
    close = c.close[at]
    sma = np.asarray(talib.SMA(c.close, timeperiod=p.sma_period), dtype=np.float64)[at]
    vsma = np.asarray(talib.SMA(c.volume, timeperiod=p.sma_period), dtype=np.float64)[at]
    rsi = np.asarray(talib.RSI(c.close, timeperiod=p.rsi_period), dtype=np.float64)[at]
    pattern = candle_patterns(c, at)
    green, red = c.close > c.open, c.close < c.open
    # Defect fixed: the original counted every spike for LONG; the bar's colour decides here.
    spike = c.volume[at] > p.volume_spike_mult * vsma
    g_sum, g_n = latest_mean_volume(green, c.volume, at, p.pressure_bars, p.pressure_count)
    r_sum, r_n = latest_mean_volume(red, c.volume, at, p.pressure_bars, p.pressure_count)
    pressure = (g_n > 0) & (r_n > 0) & (g_sum * r_n > p.pressure_mult * r_sum * g_n)
    rsi_long = (RSI_LONG_BAND[0] < rsi) & (rsi < RSI_LONG_BAND[1])
    none = np.zeros(at.shape[0], dtype=bool)
    long_f = [
        close > sma,
        rsi_long,
        (rsi > RSI_MID) & (close > sma),
        none.copy(),
        (pattern == 1) | (pattern == 2),
        spike & green[at],
        pressure,
    ]
    short_f = [
        close <= sma,
        ~rsi_long & (RSI_SHORT_BAND[0] < rsi) & (rsi < RSI_SHORT_BAND[1]),  # the original's elif
        none.copy(),
        (pattern == 3) | (pattern == 4),
        spike & red[at],
    ]
    return Votes(long_f, short_f, rsi, sma, c.volume[at] / vsma, pattern)


class VolumeStrategy(Strategy[VolumeParams]):
    """LONG/SHORT when ≥ 3 factors vote for a side and outnumber the other side."""

    name = "volume"
    Params = VolumeParams
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 1800

    def on_load(self) -> None:
        # Rationale templates with the SMA period filled in; {0} is the Facts, {1} the pattern.
        n = str(self.params.sma_period)
        self._long_factors = tuple((k, w, t.replace("{sma}", n)) for k, w, t in LONG_FACTORS)
        self._short_factors = tuple((k, w, t.replace("{sma}", n)) for k, w, t in SHORT_FACTORS)

    @property
    def lookback(self) -> int:
        return max(DATA_BARS, self.params.profile_bars) + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        n = len(c)
        if n < self.lookback:
            return []
        p = self.params
        at = np.arange(self.lookback - 1, n)
        v = factor_votes(c, p, at)
        long_f, short_f, close = v.long, v.short, c.close[at]
        n_long = np.sum(long_f, axis=0)
        n_short = np.sum(short_f, axis=0)
        # The HVN factor adds one vote to exactly one side, so only bars one vote short of a
        # decision need the profile; the rest are settled without it.
        m = p.min_factors
        maybe = ((n_long + 1 >= m) & (n_long + 1 > n_short)) | ((n_short + 1 >= m) & (n_short + 1 > n_long))
        sel = np.flatnonzero(maybe)
        if sel.shape[0] == 0:
            return []
        hist, bottom, height, poc, va_lo, va_hi = rolling_profiles(
            c, at[sel], p.profile_bars, p.profile_rows, p.value_area_pct
        )
        centres = bottom[:, None] + (np.arange(p.profile_rows) + 0.5) * height[:, None]
        near = near_hvn(hist, centres, height, close[sel], p.hvn_mult, p.hvn_distance_rows)
        poc_price = centres[np.arange(sel.shape[0]), poc]
        long_f[3][sel] = near & (close[sel] < poc_price)
        short_f[2][sel] = near & (close[sel] >= poc_price)
        n_long[sel] += long_f[3][sel]
        n_short[sel] += short_f[2][sel]

        is_long = (n_long >= m) & (n_long > n_short)
        is_short = (n_short >= m) & (n_short > n_long)
        fire = np.flatnonzero((is_long | is_short)[sel])
        f = sel[fire]
        i = at[f]
        rows = [
            i,
            is_long[f],
            np.stack(long_f)[:, f].T,
            np.stack(short_f)[:, f].T,
            n_long[f],
            n_short[f],
            c.close[i],
            v.rsi[f],
            v.sma[f],
            v.volume_ratio[f],
            v.pattern[f],
            poc_price[fire],
            centres[fire, va_hi[fire]],
            centres[fire, va_lo[fire]],
            height[fire],
        ]
        return [self._candidate(Facts._make(r)) for r in zip(*(x.tolist() for x in rows), strict=True)]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(self, f: Facts) -> Candidate:
        """Stop one row beyond the value area (at least 1.5 %), TP1 the POC if ≥ 2R, TP2 ≥ 3R.

        The risk unit is the stop distance, at least 1 % of entry; TP1 is the POC when it lies
        at least 2 units away, else 2 units; TP2 is one unit past TP1, at least 3 units.
        """
        entry, h = f.entry, f.row_height
        if f.long:
            direction = Direction.LONG
            sl = min(f.val - h, (1.0 - MIN_STOP_FRACTION) * entry)
            risk = max(entry - sl, MIN_RISK_FRACTION * entry)
            tp1 = max(f.poc, entry + TP1_R * risk)
            tp2 = max(tp1 + risk, entry + TP2_R * risk)
            held = [k for k, v in enumerate(f.long_votes) if v]
            factors = self._long_factors
        else:
            direction = Direction.SHORT
            sl = max(f.vah + h, (1.0 + MIN_STOP_FRACTION) * entry)
            risk = max(sl - entry, MIN_RISK_FRACTION * entry)
            tp1 = min(f.poc, entry - TP1_R * risk)
            tp2 = min(tp1 - risk, entry - TP2_R * risk)
            held = [k for k, v in enumerate(f.short_votes) if v]
            factors = self._short_factors
        pattern = PATTERNS[f.pattern]
        return Candidate(
            bar=f.bar,
            direction=direction,
            levels=self.levels.explicit(direction, entry, sl, [tp1, tp2]),
            confidence=float(sum(factors[k][1] for k in held)),
            rationale=tuple(factors[k][2].format(f, pattern) for k in held),
            metadata={
                "factors": [factors[k][0] for k in held],
                "long_votes": f.n_long,
                "short_votes": f.n_short,
                "rsi": f.rsi,
                "sma": f.sma,
                "volume_ratio": f.volume_ratio,
                "pattern": pattern,
                "poc": f.poc,
                "vah": f.vah,
                "val": f.val,
                "row_height": h,
            },
        )
