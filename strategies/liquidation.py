"""liquidation — inferred liquidations at Bollinger extremes (spec §4.11).

Exchanges do not say which trades were forced, but a liquidation is a large market order on
the losing side: an unusually big taker buy is most likely a short being closed, a big taker
sell a long. When one kind dominates while price is stretched to a Bollinger band (shorts
squeezed at the lower band → LONG, longs flushed at the upper band → SHORT), and the book and
the flow lean the same way, the forced move is likely exhausted.

A snapshot strategy: trades, book and ticker exist only "now", so it proposes at most one
candidate, at the last closed bar, priced at the ticker's last trade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import talib
from pydantic import Field

from engine.market.snapshots import OrderBook, Trades
from engine.plugins.base import DataNeeds, Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction
from strategies._common import ATR_MODE_HELP, WARMUP_HELP, AtrMode, atr

# Candles the original fetched for BBANDS(20, 2, 2) and ATR; the engine adds `warmup` on top.
DATA_BARS = 60


class LiquidationParams(StrategyParams):
    """`[params]` of a liquidation instance: what counts as a liquidation, score factors, bands, ATR."""

    trades: int = Field(1000, ge=1, description="latest public trades scanned for liquidations and flow")
    book_levels: int = Field(50, ge=1, description="order-book levels per side summed for the bid/ask ratio")
    large_trade_mult: float = Field(
        20.0, gt=0, description="a trade is large at this many times the mean value of the last trades"
    )
    large_trade_sample: int = Field(100, ge=1, description="latest trades whose mean value sets the bar")
    large_trade_floor: float = Field(
        1000.0, ge=0, description="large-trade threshold floor, in quote currency"
    )
    large_trade_default: float = Field(10000.0, ge=0, description="threshold when there are no trades at all")
    liq_dominance: float = Field(
        1.5, gt=1, description="one side's liquidations must exceed the other's by this factor"
    )
    book_ratio: float = Field(1.3, gt=1, description="bid/ask value ratio scoring +1 (its inverse scores -1)")
    flow_buy_share: float = Field(
        0.6, gt=0.5, lt=1, description="taker buy share scoring +1 (1 - it scores -1)"
    )
    min_score: int = Field(2, ge=1, description="|score| needed, with a liquidation factor and a band touch")
    bb_period: int = Field(20, ge=2, description="Bollinger band period")
    bb_dev: float = Field(2.0, gt=0, description="Bollinger band width in standard deviations")
    atr_period: int = Field(14, ge=1, description="ATR period for the levels")
    atr_mode: AtrMode = Field("wilder", description=ATR_MODE_HELP)
    fallback_atr_pct: float = Field(0.75, gt=0, description="ATR as % of price when the candles give none")
    warmup: int = Field(400, ge=0, description=WARMUP_HELP)


def ratio(a: float, b: float) -> float | None:
    """a / b, inf when only b is zero, None when both are (nothing to compare)."""
    if b > 0:
        return a / b
    return math.inf if a > 0 else None


@dataclass(frozen=True, slots=True)
class Tape:
    """What the trades and the book say: inferred liquidations, flow, book balance."""

    large_threshold: float
    short_liq: float
    long_liq: float
    buy_share: float | None
    book_ratio: float | None


def read_tape(p: LiquidationParams, trades: Trades, book: OrderBook) -> Tape:
    """Large taker buys sum to short liquidations, large taker sells to long liquidations.

    "Large" is relative to the market's own recent trade size (mean of the last 100 trades,
    times the multiplier), with a floor so a dead tape does not make every trade large.
    """
    value = trades.value
    if value.size:
        threshold = max(
            p.large_trade_mult * float(value[-p.large_trade_sample :].mean()), p.large_trade_floor
        )
    else:
        threshold = p.large_trade_default
    buy = trades.buyer_taker
    large = value >= threshold
    buy_value = float(value[buy].sum())
    total = float(value.sum())
    bids, asks = book.bids[: p.book_levels], book.asks[: p.book_levels]
    bid_value = float((bids[:, 0] * bids[:, 1]).sum())
    ask_value = float((asks[:, 0] * asks[:, 1]).sum())
    return Tape(
        large_threshold=threshold,
        short_liq=float(value[large & buy].sum()),
        long_liq=float(value[large & ~buy].sum()),
        buy_share=buy_value / total if total > 0 else None,
        book_ratio=ratio(bid_value, ask_value),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The score plus the liquidation factor and band location that gate a signal, with reasons."""

    score: int
    liq_factor: int
    location: str | None
    reasons: tuple[str, ...]


def judge(p: LiquidationParams, tape: Tape, price: float, upper: float, lower: float) -> Verdict:
    """The original's score: liquidations ±2, book ±1, flow ±1; clamped to ±1 without a liquidation
    factor; zeroed when price is inside the bands. Bands that are not defined do not gate."""
    score = 0
    liq = 0
    reasons: list[str] = []
    if tape.short_liq > p.liq_dominance * tape.long_liq:
        liq = 2
        reasons.append(
            f"short liquidations {tape.short_liq:.6g} > {p.liq_dominance:g}x long {tape.long_liq:.6g} (+2)"
        )
    elif tape.long_liq > p.liq_dominance * tape.short_liq:
        liq = -2
        reasons.append(
            f"long liquidations {tape.long_liq:.6g} > {p.liq_dominance:g}x short {tape.short_liq:.6g} (-2)"
        )
    score += liq
    if tape.book_ratio is not None:
        if tape.book_ratio >= p.book_ratio:
            score += 1
            reasons.append(f"bid/ask value {tape.book_ratio:.2f} (+1)")
        elif tape.book_ratio <= 1.0 / p.book_ratio:
            score -= 1
            reasons.append(f"bid/ask value {tape.book_ratio:.2f} (-1)")
    if tape.buy_share is not None:
        if tape.buy_share >= p.flow_buy_share:
            score += 1
            reasons.append(f"taker buy share {tape.buy_share:.0%} (+1)")
        elif tape.buy_share <= 1.0 - p.flow_buy_share:
            score -= 1
            reasons.append(f"taker buy share {tape.buy_share:.0%} (-1)")
    if liq == 0:
        score = max(-1, min(1, score))
    location: str | None = None
    if math.isfinite(upper) and math.isfinite(lower):
        if price <= lower:
            location = "BULLISH"
            reasons.append(f"price {price:.8g} at or below the lower band {lower:.8g}")
        elif price >= upper:
            location = "BEARISH"
            reasons.append(f"price {price:.8g} at or above the upper band {upper:.8g}")
        else:
            location = "INSIDE"
            score = 0
    return Verdict(score, liq, location, tuple(reasons))


class LiquidationStrategy(Strategy[LiquidationParams]):
    """LONG on dominant short liquidations at the lower band (score ≥ 2); SHORT mirrored."""

    name = "liquidation"
    Params = LiquidationParams
    RISK = {"sl_mult": 1.8, "tp1_mult": 2.5, "tp2_mult": 4.0, "min_rr": 1.3}
    DEFAULT_TIMEFRAME = "15m"
    DEFAULT_COOLDOWN = 3600

    @property
    def lookback(self) -> int:
        return DATA_BARS + self.params.warmup

    def needs(self) -> DataNeeds:
        p = self.params
        return DataNeeds(
            timeframes=(self.timeframe,),
            lookback=self.lookback,
            ticker=True,
            trades=p.trades,
            order_book=p.book_levels,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "lookback": self.lookback,
            "warmup": self.params.warmup,
            "snapshots": "ticker, trades, order book",
        }

    # -- rule -------------------------------------------------------------------------------

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        if window.ticker is None or window.trades is None or window.order_book is None:
            raise ValueError(
                "liquidation needs the ticker, trades and order book snapshots it declares in needs()"
            )
        c = window.candles
        if len(c) < self.lookback:
            return []
        p = self.params
        trades = window.trades.last(p.trades)
        upper, _, lower = talib.BBANDS(c.close, timeperiod=p.bb_period, nbdevup=p.bb_dev, nbdevdn=p.bb_dev)
        price = window.ticker.last
        tape = read_tape(p, trades, window.order_book)
        v = judge(p, tape, price, float(upper[-1]), float(lower[-1]))
        if v.score >= p.min_score and v.liq_factor > 0 and v.location in ("BULLISH", None):
            direction = Direction.LONG
        elif v.score <= -p.min_score and v.liq_factor < 0 and v.location in ("BEARISH", None):
            direction = Direction.SHORT
        else:
            return []
        a = float(atr(c, p.atr_period, p.atr_mode)[-1])
        return [self._candidate(len(c) - 1, direction, price, a, tape, v, float(upper[-1]), float(lower[-1]))]

    # -- levels -----------------------------------------------------------------------------

    def _candidate(
        self,
        bar: int,
        direction: Direction,
        price: float,
        a: float,
        tape: Tape,
        v: Verdict,
        upper: float,
        lower: float,
    ) -> Candidate:
        """ATR method from the ticker price: SL 1.8 ATR (buffered), TP 2.5/4.0/4.5 ATR, min R:R 1.3.

        Without a usable ATR the distance is 0.75 % of price, the original's fallback.
        """
        fallback = not (math.isfinite(a) and a > 0)
        if fallback:
            a = self.params.fallback_atr_pct / 100.0 * price
        levels = self.levels.atr(direction, entry=price, atr=a)
        book = tape.book_ratio
        return Candidate(
            bar=bar,
            direction=direction,
            levels=levels,
            rationale=v.reasons,
            metadata={
                "score": v.score,
                "location": v.location,
                "short_liq": tape.short_liq,
                "long_liq": tape.long_liq,
                "large_threshold": tape.large_threshold,
                "buy_share": tape.buy_share,
                "book_ratio": book if book is not None and math.isfinite(book) else None,
                "bb_upper": upper,
                "bb_lower": lower,
                "atr": a,
                "atr_fallback": fallback,
            },
        )
