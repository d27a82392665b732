"""diy - nine indicators vote, weighted by whether the market trends (spec §4.7).

Each indicator casts a vote (LONG, SHORT or NEUTRAL) with a strength in 0-100. Trend-following
votes count double when ADX says the market trends and mean-reversion votes count double when
it does not, so the same nine indicators read a trend and a range differently. A side's score
is its weighted strengths over 900 (nine votes of 100); a signal needs one side at 60% or more,
ahead of the other - that percentage is the confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import talib
from pydantic import Field

from engine.market.candles import Candles, FloatArray, IntArray
from engine.plugins.base import Strategy, StrategyParams, Window
from engine.signals.batch import CandidateBatch, Detail
from engine.signals.model import Candidate
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

# Bars the original fetched per scan; the engine adds `warmup` on top (see `lookback`).
DATA_BARS = 300
# Votes are +1 LONG, -1 SHORT, 0 NEUTRAL, each with a strength.
SideArray = npt.NDArray[np.int8]
Vote = tuple[SideArray, FloatArray]

VOTES = ("rsi", "macd", "ema", "adx", "bb", "volume", "roc", "stoch_rsi", "trend")
# ADX > 25: trend votes (EMA, MACD, Trend) x2, Bollinger x0; otherwise BB, RSI, ROC x2, Trend x0.
TRENDING_WEIGHTS = np.array([1, 2, 2, 1, 0, 1, 1, 1, 2], dtype=np.float64)
RANGING_WEIGHTS = np.array([2, 1, 1, 1, 2, 1, 2, 1, 0], dtype=np.float64)
FULL_SCORE = 900.0
LABEL = {1: "LONG", -1: "SHORT", 0: "NEUTRAL"}


class DiyParams(StrategyParams):
    """`[params]` of a diy instance: vote thresholds and the ATR its levels are built from."""

    trending_adx: float = Field(25.0, ge=0, description="ADX above this selects the trending weights")
    min_lead: float = Field(40.0, ge=0, le=100, description="a side wins only above this score (%)")
    min_score: float = Field(60.0, ge=0, le=100, description="the winning side's score (%) needed to emit")
    atr_period: int = Field(14, ge=1, description="ATR period for the stop and targets")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    warmup: int = Field(1700, ge=0, description=WARMUP_HELP + "; EMA(200) needs the most")


# -- the nine votes (each a function of indicator arrays, so each is testable alone) -----------


def _side(long: npt.NDArray[np.bool_], short: npt.NDArray[np.bool_]) -> SideArray:
    """+1 where `long`, else -1 where `short`, else 0 (two array operations: bools are 0/1 bytes)."""
    side: SideArray = long.view(np.int8) - (short > long).view(np.int8)
    return side


def rsi_vote(rsi: FloatArray) -> Vote:
    """Oversold/overbought (<30 LONG, >70 SHORT, 100) or momentum either side of 50 (3 per point);
    exactly 30, 50 or 70 is NEUTRAL. Strengths clamped to 20-100."""
    low, high = rsi < 30, rsi > 70
    long = low | ((rsi > 50) & (rsi < 70))
    short = high | ((rsi > 30) & (rsi < 50))
    raw = np.where(low | high, 100.0, 3.0 * np.abs(rsi - 50.0))
    return _side(long, short), np.minimum(np.maximum(raw, 20.0), 100.0)


def macd_vote(macd: FloatArray, signal: FloatArray) -> Vote:
    """MACD above its signal LONG, else SHORT; 1000 per unit of difference, capped at 100."""
    diff = macd - signal
    above = diff > 0
    return _side(above, ~above), np.minimum(1000.0 * np.abs(diff), 100.0)


def ema_vote(fast: FloatArray, slow: FloatArray) -> Vote:
    """EMA(9) above EMA(21) LONG, else SHORT; 1000 x the relative gap, capped at 100 (the
    original left it uncapped, so one vote could outweigh all others)."""
    strength = np.minimum(1000.0 * np.abs(fast - slow) / slow, 100.0)
    above = fast > slow
    return _side(above, ~above), strength


def adx_vote(adx: FloatArray, plus_di: FloatArray, minus_di: FloatArray) -> Vote:
    """The dominant directional index, only when ADX > 20; strength max(ADX, 20)."""
    strong = adx > 20
    return _side(strong & (plus_di > minus_di), strong & (minus_di > plus_di)), np.maximum(adx, 20.0)


def bb_vote(close: FloatArray, upper: FloatArray, lower: FloatArray) -> Vote:
    """Position in trailing Bollinger bands: lower 30% LONG, upper 30% SHORT; |pos - 50| capped at 100.

    The original's middle band came from a centred, zero-padded convolution (about 0.55 x price),
    so every bar read as far above the band: always SHORT with a huge strength.
    """
    width = upper - lower
    # Flat prices give a zero width in theory; TA-Lib's running sums leave a ~1e-16 residue.
    flat = ~(width > 1e-9 * np.abs(close))
    pos = np.where(flat, 50.0, (close - lower) / np.where(flat, 1.0, width) * 100.0)
    return _side(pos < 30, pos > 70), np.minimum(np.abs(pos - 50.0), 100.0)


def volume_vote(volume: FloatArray, average: FloatArray, close: FloatArray, prev_close: FloatArray) -> Vote:
    """A volume spike (> 1.2 x the trailing 20-bar average) votes the way the close moved: 60;
    no spike, or an unchanged close, is NEUTRAL (30 without a spike)."""
    # A zero volume is never a spike (the average of zeros can come out a hair below 0).
    spike = (volume > 1.2 * average) & (volume > 0)
    side = _side(spike & (close > prev_close), spike & (close < prev_close))
    return side, np.where(spike, 60.0, 30.0)


def roc_vote(roc: FloatArray) -> Vote:
    """5-bar rate of change (%) above 0 LONG, else SHORT; 10 per percent, capped at 100."""
    up = roc > 0
    return _side(up, ~up), np.minimum(10.0 * np.abs(roc), 100.0)


def stoch_rsi(rsi: FloatArray, start: int = 0) -> tuple[FloatArray, FloatArray]:
    """%K and %D of STOCH(14, 3, 3) over the RSI series, both smoothed by a trailing SMA(3)
    (TA-Lib's default matype), where the original used a centred, zero-padded convolution.

    TA-Lib's SMA is a running sum whose rounding (~1e-13) depends on where the series starts,
    while K and D often tie exactly (both 0 or 100 while RSI sits at a 14-bar extreme); they
    are rounded to 1e-8 so a tie reads as a tie in a live window and in replay alike. Only
    bars `start`.. are returned (and rounded).
    """
    k, d = talib.STOCH(rsi, rsi, rsi, fastk_period=14, slowk_period=3, slowd_period=3)
    return _rounded(k[start:]), _rounded(d[start:])


def _rounded(x: Any) -> FloatArray:
    return np.asarray(np.round(np.asarray(x, dtype=np.float64), 8), dtype=np.float64)


def stoch_rsi_vote(k: FloatArray, d: FloatArray) -> Vote:
    """Stochastic of RSI turning up below 20 (K > D) LONG 100, turning down above 80 SHORT 100;
    otherwise NEUTRAL with max(|K - D|, 20). The original's LONG strength came out as 5·K."""
    long = (k < 20) & (k > d)
    short = (k > 80) & (k < d)
    return _side(long, short), np.where(long | short, 100.0, np.maximum(np.abs(k - d), 20.0))


def trend_vote(close: FloatArray, ema50: FloatArray, ema200: FloatArray) -> Vote:
    """Close above both EMA(50) and EMA(200) LONG, below both SHORT (80); else NEUTRAL (40)."""
    long = (close > ema50) & (close > ema200)
    short = (close < ema50) & (close < ema200)
    return _side(long, short), np.where(long | short, 80.0, 40.0)


def score(
    sides: SideArray, strengths: FloatArray, trending: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray]:
    """(long %, short %) per bar from (bars x 9) votes: weighted strengths of each side over 900."""
    return _score([(sides[:, j], strengths[:, j]) for j in range(len(VOTES))], trending)


def _score(cast: Sequence[Vote], trending: npt.NDArray[np.bool_]) -> tuple[FloatArray, FloatArray]:
    """`score` of the nine votes as separate arrays.

    Kept vote by vote: (bars x 9) blocks and a sum along their rows cost more than the arithmetic
    (a loop per bar, and blocks big enough that the allocator hands their pages back to the
    system after every call). The nine terms are added in the order numpy's row sum added
    them, ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)) + v8 (its pairwise summation), so the scores
    are the same floats.
    """
    long: list[FloatArray] = []
    short: list[FloatArray] = []
    for (side, strength), tw, rw in zip(
        cast, TRENDING_WEIGHTS.tolist(), RANGING_WEIGHTS.tolist(), strict=True
    ):
        w = (tw if tw == rw else np.where(trending, tw, rw)) * strength
        long.append(np.where(side == 1, w, 0.0))
        short.append(np.where(side == -1, w, 0.0))
    return _percent(long), _percent(short)


def _percent(t: list[FloatArray]) -> FloatArray:
    total = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])) + t[8]
    out: FloatArray = np.minimum(np.maximum(total / FULL_SCORE * 100.0, 0.0), 100.0)
    return out


def decide(long: FloatArray, short: FloatArray, min_lead: float, min_score: float) -> SideArray:
    """+1/-1 where a side is ahead of the other, above `min_lead` and at least `min_score`; else 0."""
    go_long = (long > short) & (long > min_lead) & (long >= min_score)
    go_short = (short > long) & (short > min_lead) & (short >= min_score)
    return _side(go_long, go_short)


def votes(c: Candles, start: int = 0) -> tuple[SideArray, FloatArray, FloatArray]:
    """Every vote for bars `start`.. : sides and strengths as (bars x 9) arrays, and ADX."""
    cast, adx = cast_votes(c, start)
    return np.stack([s for s, _ in cast], axis=1), np.stack([st for _, st in cast], axis=1), adx


def cast_votes(c: Candles, start: int = 0) -> tuple[list[Vote], FloatArray]:
    """The nine votes for bars `start`.. (in VOTES order), and ADX.

    Indicators run over all of `c` (their warm-up); only the bars asked for are voted on, which
    in a live window is just the last one.
    """
    h, lo, cl, v = c.high, c.low, c.close, c.volume

    def ta(fn: Any, *args: Any, **kw: Any) -> FloatArray:
        return np.asarray(fn(*args, **kw), dtype=np.float64)[start:]

    rsi_full = np.asarray(talib.RSI(cl, timeperiod=14), dtype=np.float64)
    rsi = rsi_full[start:]
    macd, signal, _ = (np.asarray(x, dtype=np.float64)[start:] for x in talib.MACD(cl, 12, 26, 9))
    adx = ta(talib.ADX, h, lo, cl, timeperiod=14)
    upper, _, lower = (np.asarray(x, dtype=np.float64)[start:] for x in talib.BBANDS(cl, 20, 2.0, 2.0))
    k, d = stoch_rsi(rsi_full, start)
    close = cl[start:]
    prev_close = np.concatenate([[np.nan], cl[:-1]])[start:]
    cast = [
        rsi_vote(rsi),
        macd_vote(macd, signal),
        ema_vote(ta(talib.EMA, cl, timeperiod=9), ta(talib.EMA, cl, timeperiod=21)),
        adx_vote(
            adx, ta(talib.PLUS_DI, h, lo, cl, timeperiod=14), ta(talib.MINUS_DI, h, lo, cl, timeperiod=14)
        ),
        bb_vote(close, upper, lower),
        volume_vote(v[start:], ta(talib.SMA, v, timeperiod=20), close, prev_close),
        roc_vote(ta(talib.ROC, cl, timeperiod=5)),
        stoch_rsi_vote(k, d),
        trend_vote(close, ta(talib.EMA, cl, timeperiod=50), ta(talib.EMA, cl, timeperiod=200)),
    ]
    return cast, adx


class DiyStrategy(Strategy[DiyParams]):
    """LONG/SHORT when the weighted vote of nine indicators reaches 60% for one side."""

    name = "diy"
    Params = DiyParams
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0, "min_rr": 1.3}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 180

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def describe(self) -> dict[str, Any]:
        return {"lookback": self.lookback, "warmup": self.params.warmup}

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        first = self.lookback - 1
        cast, adx = cast_votes(c, first)
        trending = adx > p.trending_adx
        long, short = _score(cast, trending)
        side = decide(long, short, p.min_lead, p.min_score)
        k = np.flatnonzero(side)
        if k.shape[0] == 0:
            return []
        atr_ = atr(c, p.atr_period, p.atr_mode)[first + k]
        sides = np.stack([s[k] for s, _ in cast], axis=1)
        strengths = np.stack([st[k] for _, st in cast], axis=1)
        return self._candidates(
            c, first + k, side[k], long[k], short[k], sides, strengths, trending[k], adx[k], atr_
        )

    # -- levels -----------------------------------------------------------------------------

    def _candidates(
        self,
        c: Candles,
        i: IntArray,
        sign: SideArray,
        long: FloatArray,
        short: FloatArray,
        sides: SideArray,
        strengths: FloatArray,
        trending: npt.NDArray[np.bool_],
        adx: FloatArray,
        atr_: FloatArray,
    ) -> CandidateBatch:
        """ATR method: SL 1.5 ATR (plus the 0.75% buffer), TP1/TP2/TP3 at 2.0/3.0/4.5 ATR, min R:R 1.3."""
        entry = c.close[i]
        levels = self.arrays.atr(sign, entry, atr_)
        confidence = np.where(sign == 1, long, short)

        def describe(row: int) -> Detail:
            s, trend = int(sign[row]), bool(trending[row])
            pct = (float(long[row]), float(short[row]))
            side_of, strength = sides[row], strengths[row]
            weights = TRENDING_WEIGHTS if trend else RANGING_WEIGHTS
            mine = [
                f"{name} {strength[j]:.0f} x{weights[j]:.0f}"
                for j, name in enumerate(VOTES)
                if side_of[j] == s and weights[j] > 0
            ]
            conf, other = pct if s == 1 else pct[::-1]
            return (
                f"{'trending' if trend else 'ranging'} market (ADX {float(adx[row]):.1f})",
                f"{LABEL[s]} score {conf:.1f}% vs {other:.1f}%",
                "votes for it: " + ", ".join(mine),
            ), {
                "long_pct": pct[0],
                "short_pct": pct[1],
                "trending": trend,
                "adx": float(adx[row]),
                "atr": float(atr_[row]),
                "votes": {n: [LABEL[int(side_of[j])], float(strength[j])] for j, n in enumerate(VOTES)},
            }

        return self.batch(i, sign, entry, levels, describe=describe, confidence=confidence)
