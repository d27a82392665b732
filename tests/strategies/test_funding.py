"""funding on hand-built snapshots: each score component, the EMA gate, the levels, the defect."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import talib
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.market.snapshots import Funding, Ticker, Trades
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.cooldown import Cooldowns
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.funding import FundingParams, FundingStrategy, score, taker_ratio

START_MS, STEP_MS = 1_700_000_000_000, 300_000
BUFFERED_SL = 1.5 * 1.0075  # SL multiple x (1 + 0.75 % buffer)


def make(**params: object) -> FundingStrategy:
    return FundingStrategy(FundingParams(**params), RiskSettings().merged(FundingStrategy.RISK), "5m")


def candles(step: float, n: int = 450, wick: float = 0.001) -> Candles:
    """`n` 5m bars moving `step` per bar, each opening at the previous close."""
    c = 100.0 * (1.0 + step) ** np.arange(n, dtype=np.float64)
    o = np.concatenate([[c[0]], c[:-1]])
    ts = START_MS + STEP_MS * np.arange(n, dtype=np.int64)
    return Candles(ts, o, np.maximum(o, c) * (1 + wick), np.minimum(o, c) * (1 - wick), c, np.ones(n))


RISING, FALLING = candles(0.001), candles(-0.001)


def tape(buys: Sequence[tuple[float, float]] = (), sells: Sequence[tuple[float, float]] = ()) -> Trades:
    """Trades as (price, amount): the buys (taker bought) then the sells."""
    rows = [(p, a, True) for p, a in buys] + [(p, a, False) for p, a in sells]
    n = len(rows)
    return Trades(
        ts=START_MS + np.arange(n, dtype=np.int64),
        price=np.array([r[0] for r in rows], dtype=np.float64),
        amount=np.array([r[1] for r in rows], dtype=np.float64),
        buyer_taker=np.array([r[2] for r in rows], dtype=np.bool_),
    )


BALANCED = tape(buys=[(100.0, 1.0)], sells=[(100.0, 1.0)])  # taker ratio 1.0: not scored


def window(cs: Candles, *, rate_pct: float, trades: Trades = BALANCED, last: float | None = None) -> Window:
    price = float(cs.close[-1]) if last is None else last
    return Window(
        symbol="BTC/USDT:USDT",
        timeframe="5m",
        candles=cs,
        ticker=Ticker(last=price, bid=price, ask=price, ts_ms=int(cs.ts[-1]) + STEP_MS),
        trades=trades,
        funding=Funding(rate=rate_pct / 100.0, ts_ms=int(cs.ts[-1])),
    )


def run(w: Window, **params: object) -> Sequence[Candidate]:
    return make(**params).evaluate(w)


def atr_of(cs: Candles) -> float:
    return float(talib.ATR(cs.high, cs.low, cs.close, timeperiod=14)[-1])


# -- the funding term and the EMA gate ----------------------------------------------------------


def test_longs_paying_while_price_falls_give_a_short_from_the_ticker_price() -> None:
    last = float(FALLING.close[-1]) * 0.999  # the ticker has moved on from the last close
    out = run(window(FALLING, rate_pct=0.06, last=last))

    assert len(out) == 1
    cand = out[0]
    assert cand.bar == len(FALLING) - 1
    assert cand.direction is Direction.SHORT
    assert cand.entry == last
    a = atr_of(FALLING)
    assert cand.levels.stop_loss == pytest.approx(last + BUFFERED_SL * a, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx([last - m * a for m in (2.0, 3.0, 4.5)], rel=1e-12)
    assert cand.levels.valid, cand.levels.reason
    assert cand.metadata["score"] == -3
    assert cand.metadata["funding_rate_pct"] == pytest.approx(0.06)
    assert cand.metadata["atr_fallback"] is False
    assert cand.rationale[0].startswith("funding +0.0600% with price below EMA20")


def test_shorts_paying_while_price_rises_give_a_long() -> None:
    out = run(window(RISING, rate_pct=-0.06))
    assert [c.direction for c in out] == [Direction.LONG]
    assert out[0].metadata["score"] == 3
    lv = out[0].levels
    assert lv.stop_loss < lv.entry < lv.take_profits[0] < lv.take_profits[1] < lv.take_profits[2]


@pytest.mark.parametrize(
    ("rate_pct", "expected"),
    [(0.05, -3), (0.0499, -2), (0.02, -2), (0.0199, None), (-0.0199, None)],
)
def test_funding_thresholds_are_inclusive(rate_pct: float, expected: int | None) -> None:
    out = run(window(FALLING, rate_pct=rate_pct))
    assert [c.metadata["score"] for c in out] == ([] if expected is None else [expected])


def test_funding_is_only_scored_when_price_is_already_moving_against_the_payers() -> None:
    # Longs pay 0.06 % but price is above its EMA: no squeeze yet, nothing to score.
    assert run(window(RISING, rate_pct=0.06)) == []
    assert run(window(FALLING, rate_pct=-0.06)) == []
    # Price judged from the ticker: a ticker back under the EMA turns the same candles bearish.
    ema = float(talib.EMA(RISING.close, timeperiod=20)[-1])
    out = run(window(RISING, rate_pct=0.06, last=ema * 0.999))
    assert [c.direction for c in out] == [Direction.SHORT]


# -- taker flow ----------------------------------------------------------------------------------


def test_taker_ratio_is_by_value_not_by_count_or_amount() -> None:
    # One taker buy of 12 at 100 (1 200) against ten sells of 1 at 100 (1 000): ratio 1.2.
    trades = tape(buys=[(100.0, 12.0)], sells=[(100.0, 1.0)] * 10)
    assert taker_ratio(trades) == pytest.approx(1.2)
    # Same amounts, different prices: value decides.
    assert taker_ratio(tape(buys=[(120.0, 1.0)], sells=[(100.0, 1.0)])) == pytest.approx(1.2)


def test_taker_buying_adds_one_and_lifts_a_plus_one_funding_bias_to_nothing_else() -> None:
    buyers = tape(buys=[(100.0, 12.0)], sells=[(100.0, 10.0)])  # ratio 1.2, inclusive
    out = run(window(RISING, rate_pct=-0.03, trades=buyers))
    assert [c.metadata["score"] for c in out] == [3]
    assert out[0].metadata["taker_ratio"] == pytest.approx(1.2)
    assert "taker buy/sell 1.20 (+1)" in out[0].rationale


def test_taker_selling_cancels_a_two_point_funding_bias() -> None:
    sellers = tape(buys=[(100.0, 8.0)], sells=[(100.0, 10.0)])  # ratio 0.8, inclusive
    assert run(window(RISING, rate_pct=-0.03)) != []
    assert run(window(RISING, rate_pct=-0.03, trades=sellers)) == []  # +2 - 1 = +1


def test_taker_flow_alone_never_reaches_the_score() -> None:
    only_buyers = tape(buys=[(100.0, 5.0)])
    assert taker_ratio(only_buyers) == float("inf")
    assert run(window(RISING, rate_pct=0.0, trades=only_buyers)) == []


def test_without_trades_the_taker_ratio_is_not_scored() -> None:
    empty = tape()
    assert taker_ratio(empty) is None
    out = run(window(RISING, rate_pct=-0.03, trades=empty))
    assert [c.metadata["score"] for c in out] == [2]
    assert out[0].metadata["taker_ratio"] is None


def test_only_the_latest_trades_count() -> None:
    # 100 old heavy sells, then 500 balanced trades: the old ones are past the 500-trade window.
    old = [(100.0, 50.0)] * 100
    recent = tape(buys=[(100.0, 13.0)] * 250, sells=[(100.0, 10.0)] * 250)
    trades = tape(sells=old)
    merged = Trades(
        np.concatenate([trades.ts, recent.ts + 1000]),
        np.concatenate([trades.price, recent.price]),
        np.concatenate([trades.amount, recent.amount]),
        np.concatenate([trades.buyer_taker, recent.buyer_taker]),
    )
    out = run(window(RISING, rate_pct=-0.03, trades=merged))
    assert out[0].metadata["taker_ratio"] == pytest.approx(1.3)
    assert make().needs().trades == 500


# -- optional inputs the engine has no feed for ---------------------------------------------------


def bias(funding_pct: float, **optional: float) -> int:
    """The score with price above its EMA and no taker term."""
    return score(
        FundingParams(), funding_pct=funding_pct, price=101.0, ema=100.0, taker=None, **optional
    ).total


def test_open_interest_and_long_short_terms() -> None:
    assert bias(-0.03, oi_change_pct=2.0) == 3  # rising OI backs a positive score...
    assert bias(0.0, oi_change_pct=2.0) == -1  # ...and counts against anything else
    assert bias(-0.03, oi_change_pct=-2.0) == 1
    assert bias(-0.03, oi_change_pct=1.99) == 2
    assert bias(0.0, long_short=1.8) == -2
    assert bias(0.0, long_short=0.6) == 2
    assert bias(0.0, long_short=1.0) == 0
    p = FundingParams()
    full = score(p, funding_pct=-0.06, oi_change_pct=3.0, long_short=0.5, taker=1.5, price=101.0, ema=100.0)
    assert full.total == 3 + 1 + 2 + 1
    assert len(full.reasons) == 4


def test_absent_open_interest_and_long_short_are_not_scored() -> None:
    p = FundingParams()
    assert score(p, funding_pct=-0.03, price=101.0, ema=100.0, taker=None).total == 2
    out = run(window(RISING, rate_pct=-0.03))
    assert not any("open interest" in r or "long/short" in r for r in out[0].rationale)


# -- levels ---------------------------------------------------------------------------------------


def test_without_a_usable_atr_the_stop_is_0_5_percent_based() -> None:
    flat = candles(0.0, wick=0.0)  # every bar 100/100/100/100: ATR 0
    out = run(window(flat, rate_pct=-0.03, last=101.0))
    assert len(out) == 1
    a = 0.005 * 101.0
    assert out[0].metadata["atr_fallback"] is True
    assert out[0].metadata["atr"] == pytest.approx(a)
    assert out[0].levels.stop_loss == pytest.approx(101.0 - BUFFERED_SL * a)
    assert out[0].levels.take_profits[0] == pytest.approx(101.0 + 2.0 * a)
    assert out[0].levels.valid


def test_defect_rejected_levels_give_neither_a_signal_nor_a_cooldown() -> None:
    # Bars 0.01 % tall: a 1.5-ATR stop is far under the 0.2 % minimum, so the levels are invalid.
    tight = candles(0.0001, wick=0.00001)
    bad = run(window(tight, rate_pct=-0.03))
    assert len(bad) == 1 and not bad[0].levels.valid
    assert bad[0].levels.reason.startswith("stop ") and "under min" in bad[0].levels.reason

    cooldowns = Cooldowns()
    builder = SignalBuilder(cooldowns, Metrics())
    origin = Origin("funding", "BTC/USDT:USDT", "5m", "binanceusdm", FundingStrategy.DEFAULT_COOLDOWN)
    assert builder.build(origin, tight, bad[0]) is None
    assert len(cooldowns) == 0  # the original started the cooldown anyway
    # The next scan, with usable levels, is emitted straight away.
    good = run(window(RISING, rate_pct=-0.03))
    signal = builder.build(origin, RISING, good[0])
    assert signal is not None and signal.direction is Direction.LONG
    assert len(cooldowns) == 1


# -- declared data and defaults -------------------------------------------------------------------


def test_needs_declare_the_snapshots() -> None:
    needs = make().needs()
    assert (needs.timeframes, needs.lookback) == (("5m",), 450)
    assert (needs.ticker, needs.trades, needs.funding, needs.order_book) == (True, 500, True, 0)
    assert not needs.ohlcv_only


def test_missing_snapshots_are_an_error_and_short_history_is_silence() -> None:
    w = window(RISING, rate_pct=-0.06)
    with pytest.raises(ValueError, match="funding"):
        make().evaluate(Window(w.symbol, w.timeframe, w.candles, ticker=w.ticker, trades=w.trades))
    short = window(RISING.tail(449), rate_pct=-0.06)
    assert make().evaluate(short) == []


def test_declared_defaults_follow_the_spec() -> None:
    p = FundingParams()
    assert (p.ema_period, p.extreme_funding_pct, p.high_funding_pct, p.oi_change_pct) == (20, 0.05, 0.02, 2.0)
    assert (p.long_short_high, p.long_short_low, p.taker_buy_ratio, p.taker_sell_ratio) == (
        1.8,
        0.6,
        1.2,
        0.8,
    )
    assert (p.min_score, p.fallback_atr_pct, p.atr_mode, p.warmup, p.trades) == (2, 0.5, "wilder", 400, 500)
    assert (FundingStrategy.DEFAULT_TIMEFRAME, FundingStrategy.DEFAULT_COOLDOWN) == ("5m", 180)
    risk = RiskSettings().merged(FundingStrategy.RISK)
    assert (risk.sl_mult, risk.tp1_mult, risk.tp2_mult, risk.tp3_mult, risk.min_rr) == (
        1.5,
        2.0,
        3.0,
        4.5,
        1.3,
    )


@pytest.mark.parametrize("bad", [{"min_score": 0}, {"fallback_atr_pct": 0}, {"trades": 0}, {"rate": 1}])
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FundingParams(**bad)
