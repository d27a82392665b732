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

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.levels import LevelArrays
from engine.signals.model import Candidate
from strategies._common import WARMUP_HELP
from strategies._profile import centre, profile_frame, rolling_histograms, value_area

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
# Templates: {0} is the row's Facts, {1} its pattern name, {sma} the SMA period.
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

PATTERNS = ("", "hammer", "bullish engulfing", "shooting star", "bearish engulfing")


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
    out = np.zeros(at.shape[0], dtype=np.int8)
    for code, hit in ((4, bear_eng), (3, star), (2, bull_eng), (1, hammer)):  # first match wins
        out[hit] = code
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


def rolling_profiles(
    c: Candles, at: IntArray, bars: int, rows: int, share: float
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray, IntArray]:
    """Profile of the `bars` bars ending at each `at`: row volumes, bottom, row height (0 for a
    flat window), POC row, and the value area's lowest and highest row."""
    bottom, top, height = profile_frame(c, at, bars, rows)
    hist = rolling_histograms(c.low, c.high, c.volume, at, bottom, top, bars, rows)
    poc = hist.argmax(axis=1)
    va_lo, va_hi = value_area(hist, poc, share, ties_upper=False)
    return hist, bottom, height, poc, va_lo, va_hi


def near_hvn(
    hist: FloatArray, centres: FloatArray, height: FloatArray, close: FloatArray, mult: float, rows: float
) -> BoolArray:
    """Close within `rows` row heights of the nearest high-volume node (row > mult x mean row)."""
    return within_reach(hist > mult * hist.mean(axis=1, keepdims=True), centres, height, close, rows)


def within_reach(
    hvn: BoolArray, centres: FloatArray, height: FloatArray, close: FloatArray, rows: float
) -> BoolArray:
    """Whether a node among the columns of `hvn` (at prices `centres`) is closer to the close
    than `rows` row heights."""
    dist = np.where(hvn, np.abs(centres - close[:, None]), np.inf)
    nearest = dist[:, 0].copy()
    for j in range(1, dist.shape[1]):  # column by column: numpy's row-wise min is slow on short rows
        np.minimum(nearest, dist[:, j], out=nearest)
    out: BoolArray = nearest < rows * height
    return out


def near_node(
    hist: FloatArray, bottom: FloatArray, height: FloatArray, close: FloatArray, mult: float, rows: float
) -> BoolArray:
    """`near_hvn` looking only at the few rows around the close: a row more than `rows` + 1
    heights away cannot be within reach, so the (profiles x rows) table of centres is not needed."""
    reach = math.ceil(rows) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.floor((close - bottom) / height)  # a flat profile (height 0) reaches nothing
    np.nan_to_num(pos, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    k, n_rows = hist.shape
    cols = np.clip(pos[:, None] + np.arange(-reach, reach + 1), 0, n_rows - 1).astype(np.intp)
    cells = np.ascontiguousarray(hist).ravel()[cols + np.arange(0, k * n_rows, n_rows)[:, None]]
    hvn = cells > mult * hist.mean(axis=1, keepdims=True)
    return within_reach(hvn, centre(bottom[:, None], height[:, None], cols), height, close, rows)


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


# -- levels ---------------------------------------------------------------------------------


class Facts(NamedTuple):
    """The numbers an emitted candidate's rationale quotes (plain Python floats)."""

    rsi: float
    volume_ratio: float
    poc: float
    vah: float
    val: float
    row_height: float


class Profile(NamedTuple):
    """The firing bars' profile prices: POC, value-area high and low, and row height."""

    poc: FloatArray
    vah: FloatArray
    val: FloatArray
    row_height: FloatArray


def lesser(a: FloatArray, b: FloatArray) -> FloatArray:
    """Python's `min(a, b)` per element: b only where it is strictly smaller (so a NaN `a`
    stays, as in the scalar formula this replaces)."""
    out: FloatArray = np.where(b < a, b, a)
    return out


def greater(a: FloatArray, b: FloatArray) -> FloatArray:
    """Python's `max(a, b)` per element: b only where it is strictly greater."""
    out: FloatArray = np.where(b > a, b, a)
    return out


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
        long_f, short_f = v.long, v.short
        n_long = np.sum(long_f, axis=0)
        n_short = np.sum(short_f, axis=0)
        # The HVN factor adds one vote to exactly one side, so only bars one vote short of a
        # decision need the profile; the rest are settled without it.
        m = p.min_factors
        maybe = ((n_long + 1 >= m) & (n_long + 1 > n_short)) | ((n_short + 1 >= m) & (n_short + 1 > n_long))
        sel = np.flatnonzero(maybe)
        if sel.shape[0] == 0:
            return []
        i = at[sel]
        bottom, top, height = profile_frame(c, i, p.profile_bars, p.profile_rows)
        hist = rolling_histograms(c.low, c.high, c.volume, i, bottom, top, p.profile_bars, p.profile_rows)
        poc = hist.argmax(axis=1)
        close = c.close[i]
        near = near_node(hist, bottom, height, close, p.hvn_mult, p.hvn_distance_rows)
        poc_price = centre(bottom, height, poc)
        long_f[3][sel] = near & (close < poc_price)
        short_f[2][sel] = near & (close >= poc_price)
        n_long[sel] += long_f[3][sel]
        n_short[sel] += short_f[2][sel]

        is_long = (n_long >= m) & (n_long > n_short)
        is_short = (n_short >= m) & (n_short > n_long)
        fire = np.flatnonzero((is_long | is_short)[sel])
        f = sel[fire]
        # only the firing bars need their value area (it places the stop)
        b, h = bottom[fire], height[fire]
        va_lo, va_hi = value_area(hist, poc[fire], p.value_area_pct, ties_upper=False, of=fire)
        profile = Profile(poc_price[fire], centre(b, h, va_hi), centre(b, h, va_lo), h)
        return self._candidates(
            v, f, at[f], is_long[f], close[fire], long_f, short_f, n_long, n_short, profile
        )

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        v: Votes,
        f: IntArray,
        bar: IntArray,
        long: BoolArray,
        entry: FloatArray,
        long_f: list[BoolArray],
        short_f: list[BoolArray],
        n_long: IntArray,
        n_short: IntArray,
        pr: Profile,
    ) -> CandidateBatch:
        """Stop one row beyond the value area (at least 1.5 %), TP1 the POC if ≥ 2R, TP2 ≥ 3R.

        The risk unit is the stop distance, at least 1 % of entry; TP1 is the POC when it lies
        at least 2 units away, else 2 units; TP2 is one unit past TP1, at least 3 units. Both
        sides' formulas run over all rows and each row keeps its own side's; the words are built
        by `describe`, only for the candidates the engine emits. Rows `f` of the vote arrays are
        the firing bars `bar`.
        """
        h = pr.row_height
        sl_l = lesser(pr.val - h, (1.0 - MIN_STOP_FRACTION) * entry)
        risk_l = greater(entry - sl_l, MIN_RISK_FRACTION * entry)
        tp1_l = greater(pr.poc, entry + TP1_R * risk_l)
        tp2_l = greater(tp1_l + risk_l, entry + TP2_R * risk_l)
        sl_s = greater(pr.vah + h, (1.0 + MIN_STOP_FRACTION) * entry)
        risk_s = greater(sl_s - entry, MIN_RISK_FRACTION * entry)
        tp1_s = lesser(pr.poc, entry - TP1_R * risk_s)
        tp2_s = lesser(tp1_s - risk_s, entry - TP2_R * risk_s)
        sl = np.where(long, sl_l, sl_s)
        tps = np.stack([np.where(long, tp1_l, tp1_s), np.where(long, tp2_l, tp2_s)], axis=1)
        held_l = np.stack([x[f] for x in long_f], axis=1)
        held_s = np.stack([x[f] for x in short_f], axis=1)
        weights_l = np.array([w for _, w, _ in LONG_FACTORS])
        weights_s = np.array([w for _, w, _ in SHORT_FACTORS])
        conf = np.where(long, held_l @ weights_l, held_s @ weights_s).astype(np.float64)
        sign = np.where(long, 1, -1).astype(np.int8)
        nl, ns = n_long[f], n_short[f]
        rsi, sma, ratio, pattern = v.rsi[f], v.sma[f], v.volume_ratio[f], v.pattern[f]

        # plain lists once (a replay describes thousands of rows; element access on arrays is
        # slow), each row's factors as one bit mask: a list of lists of flags costs far more
        bits_l, bits_s = 1 << np.arange(held_l.shape[1]), 1 << np.arange(held_s.shape[1])
        is_long_l, held_ll, held_sl = long.tolist(), (held_l @ bits_l).tolist(), (held_s @ bits_s).tolist()
        rsi_l, ratio_l, sma_l, pattern_l = rsi.tolist(), ratio.tolist(), sma.tolist(), pattern.tolist()
        poc_l, vah_l, val_l, h_l = pr.poc.tolist(), pr.vah.tolist(), pr.val.tolist(), h.tolist()
        nl_l, ns_l = nl.tolist(), ns.tolist()

        held: dict[tuple[bool, int], tuple[list[str], list[str]]] = {}  # (side, mask) → templates, names

        def factors_of(is_long: bool, mask: int) -> tuple[list[str], list[str]]:
            factors = self._long_factors if is_long else self._short_factors
            on = [f for k, f in enumerate(factors) if mask >> k & 1]
            return [t for _, _, t in on], [n for n, _, _ in on]

        def describe(row: int) -> Detail:
            is_long = is_long_l[row]
            key = (is_long, held_ll[row] if is_long else held_sl[row])
            templates, names = held.get(key) or held.setdefault(key, factors_of(*key))
            facts = Facts(rsi_l[row], ratio_l[row], poc_l[row], vah_l[row], val_l[row], h_l[row])
            name = PATTERNS[pattern_l[row]]
            return tuple([t.format(facts, name) for t in templates]), {
                "factors": list(names),
                "long_votes": nl_l[row],
                "short_votes": ns_l[row],
                "rsi": facts.rsi,
                "sma": sma_l[row],
                "volume_ratio": facts.volume_ratio,
                "pattern": name,
                "poc": facts.poc,
                "vah": facts.vah,
                "val": facts.val,
                "row_height": facts.row_height,
            }

        return self.batch(bar, sign, entry, LevelArrays(sl, tps), describe=describe, confidence=conf)
