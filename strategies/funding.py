"""funding — funding squeeze bias (spec §4.10).

When a perpetual's funding is extreme, one side of the market is paying heavily to hold its
position; if price is already moving against that crowded side (below EMA(20) while longs
pay, above it while shorts pay), they are the fuel for a squeeze. Taker flow, and open
interest and the long/short ratio where a feed exists, add or subtract conviction.

A snapshot strategy: the funding rate, trades and ticker exist only "now", so it proposes at
most one candidate, at the last closed bar, priced at the ticker's last trade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import talib
from pydantic import Field

from engine.market.snapshots import Trades
from engine.plugins.base import DataNeeds, Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

# Candles the original fetched for EMA(20) and ATR; the engine adds `warmup` on top.
DATA_BARS = 50


class FundingParams(StrategyParams):
    """`[params]` of a funding instance: each factor's scoring thresholds and the ATR for levels."""

    trades: int = Field(500, ge=1, description="latest public trades the taker ratio is taken over")
    ema_period: int = Field(20, ge=1, description="EMA that says which way price is already going")
    extreme_funding_pct: float = Field(0.05, gt=0, description="|funding| in % per period scoring -/+3")
    high_funding_pct: float = Field(0.02, gt=0, description="|funding| in % per period scoring -/+2")
    oi_change_pct: float = Field(2.0, gt=0, description="open-interest change in % that scores ±1")
    long_short_high: float = Field(
        1.8, gt=0, description="long/short ratio at or above which -2 (crowded longs)"
    )
    long_short_low: float = Field(
        0.6, gt=0, description="long/short ratio at or below which +2 (crowded shorts)"
    )
    taker_buy_ratio: float = Field(1.2, gt=0, description="taker buy/sell value ratio at or above which +1")
    taker_sell_ratio: float = Field(0.8, gt=0, description="taker buy/sell value ratio at or below which -1")
    min_score: int = Field(2, ge=1, description="|score| needed: LONG if score ≥ this, SHORT if ≤ -this")
    atr_period: int = Field(14, ge=1, description="ATR period for the levels")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    fallback_atr_pct: float = Field(0.5, gt=0, description="ATR as % of price when the candles give none")
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


def taker_ratio(trades: Trades) -> float | None:
    """Taker buy value / taker sell value (price·amount); None without trades, inf without sells."""
    value = trades.value
    buy = float(value[trades.buyer_taker].sum())
    sell = float(value[~trades.buyer_taker].sum())
    if sell > 0:
        return buy / sell
    return math.inf if buy > 0 else None


@dataclass(frozen=True, slots=True)
class Score:
    """The funding score and a reason per scored factor, which become the signal's rationale."""

    total: int
    reasons: tuple[str, ...]


def score(
    p: FundingParams,
    *,
    funding_pct: float,
    price: float,
    ema: float,
    taker: float | None,
    oi_change_pct: float | None = None,
    long_short: float | None = None,
) -> Score:
    """The original's additive score, in its order (the OI term reads the score so far).

    Inputs that are None are not scored: the engine has no open-interest or long/short feed
    (the original never had one either), and a tape without trades has no taker ratio.
    """
    total = 0
    reasons: list[str] = []
    if price < ema and funding_pct >= p.high_funding_pct:
        pts = 3 if funding_pct >= p.extreme_funding_pct else 2
        total -= pts
        reasons.append(
            f"funding {funding_pct:+.4f}% with price below EMA{p.ema_period}: longs crowded (-{pts})"
        )
    elif price > ema and funding_pct <= -p.high_funding_pct:
        pts = 3 if funding_pct <= -p.extreme_funding_pct else 2
        total += pts
        reasons.append(
            f"funding {funding_pct:+.4f}% with price above EMA{p.ema_period}: shorts crowded (+{pts})"
        )
    if oi_change_pct is not None:
        if oi_change_pct >= p.oi_change_pct:
            pts = 1 if total > 0 else -1
            total += pts
            reasons.append(f"open interest {oi_change_pct:+.2f}% ({pts:+d})")
        elif oi_change_pct <= -p.oi_change_pct:
            total -= 1
            reasons.append(f"open interest {oi_change_pct:+.2f}% (-1)")
    if long_short is not None:
        if long_short >= p.long_short_high:
            total -= 2
            reasons.append(f"long/short {long_short:.2f} (-2)")
        elif long_short <= p.long_short_low:
            total += 2
            reasons.append(f"long/short {long_short:.2f} (+2)")
    if taker is not None:
        if taker >= p.taker_buy_ratio:
            total += 1
            reasons.append(f"taker buy/sell {taker:.2f} (+1)")
        elif taker <= p.taker_sell_ratio:
            total -= 1
            reasons.append(f"taker buy/sell {taker:.2f} (-1)")
    return Score(total, tuple(reasons))


class FundingStrategy(Strategy[FundingParams]):
    """LONG when shorts pay and price already rises (score ≥ 2); SHORT mirrored."""

    name = "funding"
    Params = FundingParams
    RISK = {"sl_mult": 1.5, "tp1_mult": 2.0, "tp2_mult": 3.0, "min_rr": 1.3}
    DEFAULT_TIMEFRAME = "5m"
    DEFAULT_COOLDOWN = 180

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def needs(self) -> DataNeeds:
        return DataNeeds(
            timeframes=(self.timeframe,),
            lookback=self.lookback,
            ticker=True,
            trades=self.params.trades,
            funding=True,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "lookback": self.lookback,
            "warmup": self.params.warmup,
            "snapshots": "ticker, trades, funding",
        }

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        if window.ticker is None or window.trades is None or window.funding is None:
            raise ValueError("funding needs the ticker, trades and funding snapshots it declares in needs()")
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        price = window.ticker.last
        ema = float(talib.EMA(c.close, timeperiod=p.ema_period)[-1])
        trades = window.trades.last(p.trades)
        funding_pct = window.funding.rate * 100.0
        taker = taker_ratio(trades)
        s = score(p, funding_pct=funding_pct, price=price, ema=ema, taker=taker)
        if s.total >= p.min_score:
            direction = Direction.LONG
        elif s.total <= -p.min_score:
            direction = Direction.SHORT
        else:
            return []
        a = float(atr(c, p.atr_period, p.atr_mode)[-1])
        return [self._candidate(len(c) - 1, direction, price, a, s, funding_pct, ema, taker)]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        bar: int,
        direction: Direction,
        price: float,
        a: float,
        s: Score,
        funding_pct: float,
        ema: float,
        taker: float | None,
    ) -> Candidate:
        """ATR method from the ticker price: SL 1.5 ATR (buffered), TP 2.0/3.0/4.5 ATR, min R:R 1.3.

        Without a usable ATR (flat or missing candles) the distance is 0.5 % of price, the
        original's fallback, not the calculator's generic 1 %.
        """
        fallback = not (math.isfinite(a) and a > 0)
        if fallback:
            a = self.params.fallback_atr_pct / 100.0 * price
        levels = self.levels.atr(direction, entry=price, atr=a)
        return Candidate(
            bar=bar,
            direction=direction,
            levels=levels,
            rationale=s.reasons,
            metadata={
                "score": s.total,
                "funding_rate_pct": funding_pct,
                "ema": ema,
                "taker_ratio": taker if taker is not None and math.isfinite(taker) else None,
                "atr": a,
                "atr_fallback": fallback,
            },
        )
