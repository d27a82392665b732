"""liquidation on hand-built snapshots: inferred liquidations, book, flow, band location, levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import talib
from pydantic import ValidationError

from engine.market.candles import Candles
from engine.market.snapshots import OrderBook, Ticker, Trades
from engine.metrics import Metrics
from engine.plugins.base import Window
from engine.signals.builder import Origin, SignalBuilder
from engine.signals.cooldown import Cooldowns
from engine.signals.levels import RiskSettings
from engine.signals.model import Candidate, Direction
from strategies.liquidation import LiquidationParams, LiquidationStrategy, Tape, judge, read_tape

START_MS, STEP_MS = 1_700_000_000_000, 900_000
BUFFERED_SL = 1.8 * 1.0075  # SL multiple x (1 + 0.75 % buffer)
P = LiquidationParams()


def make(**params: object) -> LiquidationStrategy:
    return LiquidationStrategy(
        LiquidationParams(**params), RiskSettings().merged(LiquidationStrategy.RISK), "15m"
    )


def candles(amplitude: float = 1.0, n: int = 460, wick: float = 0.001) -> Candles:
    """A sideways 15m market swinging ±`amplitude` around 100 every 10 bars."""
    c = 100.0 + amplitude * np.sin(2 * np.pi * np.arange(n) / 10)
    o = np.concatenate([[c[0]], c[:-1]])
    ts = START_MS + STEP_MS * np.arange(n, dtype=np.int64)
    return Candles(ts, o, np.maximum(o, c) * (1 + wick), np.minimum(o, c) * (1 - wick), c, np.ones(n))


SIDEWAYS = candles()
UPPER, _, LOWER = (float(x[-1]) for x in talib.BBANDS(SIDEWAYS.close, timeperiod=20, nbdevup=2, nbdevdn=2))


def trades(rows: Sequence[tuple[float, float, bool]]) -> Trades:
    """Trades (price, amount, taker bought), oldest first."""
    n = len(rows)
    return Trades(
        ts=START_MS + np.arange(n, dtype=np.int64),
        price=np.array([r[0] for r in rows], dtype=np.float64),
        amount=np.array([r[1] for r in rows], dtype=np.float64),
        buyer_taker=np.array([r[2] for r in rows], dtype=np.bool_),
    )


def book(bid_value: float, ask_value: float, levels: int = 50) -> OrderBook:
    """`levels` rows a side at 100 ± k·0.01, amounts splitting each side's total value evenly."""
    k = np.arange(levels)
    bid_px, ask_px = 100.0 - 0.01 * (k + 1), 100.0 + 0.01 * (k + 1)
    bids = np.column_stack([bid_px, bid_value / levels / bid_px])
    asks = np.column_stack([ask_px, ask_value / levels / ask_px])
    return OrderBook(bids=bids, asks=asks, ts_ms=START_MS)


SMALL = [(100.0, 0.5, i % 2 == 0) for i in range(150)]  # 150 trades of 50, half bought
SHORTS_SQUEEZED = trades([*SMALL, *[(100.0, 50.0, True)] * 3])  # three taker buys of 5 000
LONGS_FLUSHED = trades([*SMALL, *[(100.0, 50.0, False)] * 3])


def window(last: float, tape: Trades, ob: OrderBook, cs: Candles = SIDEWAYS) -> Window:
    return Window(
        symbol="BTC/USDT:USDT",
        timeframe="15m",
        candles=cs,
        ticker=Ticker(last=last, bid=last, ask=last, ts_ms=int(cs.ts[-1]) + STEP_MS),
        trades=tape,
        order_book=ob,
    )


def run(w: Window, **params: object) -> Sequence[Candidate]:
    return make(**params).evaluate(w)


def atr_of(cs: Candles) -> float:
    return float(talib.ATR(cs.high, cs.low, cs.close, timeperiod=14)[-1])


# -- the whole rule -------------------------------------------------------------------------------


def test_short_liquidations_at_the_lower_band_give_a_long_from_the_ticker_price() -> None:
    last = LOWER * 0.999
    out = run(window(last, SHORTS_SQUEEZED, book(1500.0, 1000.0)))

    assert len(out) == 1
    cand = out[0]
    assert cand.bar == len(SIDEWAYS) - 1
    assert cand.direction is Direction.LONG
    assert cand.entry == last
    a = atr_of(SIDEWAYS)
    assert cand.levels.stop_loss == pytest.approx(last - BUFFERED_SL * a, rel=1e-12)
    assert cand.levels.take_profits == pytest.approx([last + m * a for m in (2.5, 4.0, 4.5)], rel=1e-12)
    assert cand.levels.valid, cand.levels.reason
    assert cand.levels.rr1 == pytest.approx(2.5 / BUFFERED_SL)
    meta = cand.metadata
    assert meta["score"] == 4 and meta["location"] == "BULLISH"
    assert (meta["short_liq"], meta["long_liq"]) == (15000.0, 0.0)
    # 20 x the mean of the last 100 trades (97 of 50, 3 of 5 000) = 3 970
    assert meta["large_threshold"] == pytest.approx(20 * (97 * 50 + 3 * 5000) / 100)
    assert meta["book_ratio"] == pytest.approx(1.5)
    assert meta["buy_share"] == pytest.approx((75 * 50 + 15000) / (150 * 50 + 15000))
    assert cand.rationale[0].startswith("short liquidations 15000 > 1.5x long 0 (+2)")
    assert cand.rationale[-1].startswith("price ") and "lower band" in cand.rationale[-1]


def test_long_liquidations_at_the_upper_band_give_a_short() -> None:
    out = run(window(UPPER * 1.001, LONGS_FLUSHED, book(1000.0, 1500.0)))
    assert [c.direction for c in out] == [Direction.SHORT]
    assert out[0].metadata["score"] == -4  # -2 liquidations, -1 book, -1 flow (17 % taker buys)
    assert out[0].metadata["location"] == "BEARISH"
    lv = out[0].levels
    assert lv.stop_loss > lv.entry > lv.take_profits[0] > lv.take_profits[1] > lv.take_profits[2]
    assert lv.valid


def test_inside_the_bands_the_score_is_zeroed() -> None:
    assert run(window(100.0, SHORTS_SQUEEZED, book(1500.0, 1000.0))) == []


def test_a_bullish_score_at_the_upper_band_gives_nothing() -> None:
    assert run(window(UPPER * 1.001, SHORTS_SQUEEZED, book(1500.0, 1000.0))) == []
    assert run(window(LOWER * 0.999, LONGS_FLUSHED, book(1000.0, 1500.0))) == []


def test_book_and_flow_without_liquidations_never_reach_the_score() -> None:
    buyers = trades([(100.0, 0.5, True)] * 150)  # all taker buys, none large
    out = run(window(LOWER * 0.999, buyers, book(5000.0, 1000.0)))
    assert out == []
    v = judge(P, read_tape(P, buyers, book(5000.0, 1000.0)), LOWER * 0.999, UPPER, LOWER)
    assert (v.liq_factor, v.score) == (0, 1)  # +1 book +1 flow, clamped to +1


# -- large trades (inferred liquidations) ---------------------------------------------------------


def test_large_threshold_is_20x_the_mean_of_the_last_100_trades_with_a_1000_floor() -> None:
    empty_book = book(0.0, 0.0)
    small = trades([(100.0, 0.1, True)] * 200)  # mean value 10: 20 x 10 = 200, under the floor
    assert read_tape(P, small, empty_book).large_threshold == 1000.0
    # 100 old trades of 10 000 then 100 of 100: only the last 100 set the bar (20 x 100).
    mixed = trades([(100.0, 100.0, False)] * 100 + [(100.0, 1.0, True)] * 100)
    t = read_tape(P, mixed, empty_book)
    assert t.large_threshold == pytest.approx(2000.0)
    assert (t.long_liq, t.short_liq) == (1_000_000.0, 0.0)  # the old ones still count as liquidations


def test_a_trade_exactly_at_the_threshold_is_large() -> None:
    rows = [(100.0, 0.1, False)] * 199 + [(100.0, 10.0, True)]  # last: value 1 000, mean under 50
    t = read_tape(P, trades(rows), book(0.0, 0.0))
    assert t.large_threshold == 1000.0
    assert t.short_liq == pytest.approx(1000.0)


def test_without_trades_the_threshold_is_10000_and_flow_is_not_scored() -> None:
    t = read_tape(P, trades([]), book(1500.0, 1000.0))
    assert t.large_threshold == 10000.0
    assert (t.short_liq, t.long_liq, t.buy_share) == (0.0, 0.0, None)


def test_the_multiplier_is_a_parameter_not_an_environment_variable() -> None:
    rows = [(100.0, 1.0, True)] * 100  # mean value 100
    assert read_tape(P, trades(rows), book(0.0, 0.0)).large_threshold == 2000.0
    assert (
        read_tape(LiquidationParams(large_trade_mult=50), trades(rows), book(0.0, 0.0)).large_threshold
        == 5000.0
    )
    assert (
        read_tape(
            LiquidationParams(large_trade_floor=0), trades([(1.0, 1.0, True)]), book(0, 0)
        ).large_threshold
        == 20.0
    )


def test_only_the_latest_1000_trades_are_read() -> None:
    old_sell = [(100.0, 1000.0, False)]  # a 100 000 long liquidation, 1 001 trades back
    out = run(window(LOWER * 0.999, trades(old_sell + [(100.0, 0.5, i % 2 == 0) for i in range(997)]
                                            + [(100.0, 50.0, True)] * 3), book(1500.0, 1000.0)))  # fmt: skip
    assert [c.direction for c in out] == [Direction.LONG]
    assert out[0].metadata["long_liq"] == 0.0


# -- score components -----------------------------------------------------------------------------


def tape_of(
    short: float = 0.0, long: float = 0.0, share: float | None = None, ratio: float | None = None
) -> Tape:
    return Tape(large_threshold=1000.0, short_liq=short, long_liq=long, buy_share=share, book_ratio=ratio)


NO_BANDS = (math.nan, math.nan)


@pytest.mark.parametrize(
    ("short", "long", "factor"),
    [
        (3000.0, 1000.0, 2),
        (1500.0, 1000.0, 0),
        (1000.0, 1500.0, 0),
        (1000.0, 1500.01, -2),
        (1.0, 0.0, 2),
        (0.0, 0.0, 0),
    ],
)
def test_liquidation_factor_needs_one_side_above_1_5x_the_other(
    short: float, long: float, factor: int
) -> None:
    assert judge(P, tape_of(short, long), 100.0, *NO_BANDS).liq_factor == factor


@pytest.mark.parametrize(
    ("ratio", "pts"), [(1.3, 1), (1.29, 0), (1 / 1.3, -1), (0.77, 0), (math.inf, 1), (None, 0)]
)
def test_book_term(ratio: float | None, pts: int) -> None:
    assert judge(P, tape_of(short=3000.0, ratio=ratio), 100.0, *NO_BANDS).score == 2 + pts


@pytest.mark.parametrize(("share", "pts"), [(0.6, 1), (0.59, 0), (0.4, -1), (0.41, 0), (None, 0)])
def test_flow_term(share: float | None, pts: int) -> None:
    assert judge(P, tape_of(short=3000.0, share=share), 100.0, *NO_BANDS).score == 2 + pts


def test_without_a_liquidation_factor_the_score_is_clamped_to_one() -> None:
    v = judge(P, tape_of(1500.0, 1000.0, share=0.9, ratio=2.0), 100.0, *NO_BANDS)
    assert (v.liq_factor, v.score) == (0, 1)
    v = judge(P, tape_of(share=0.1, ratio=0.1), 100.0, *NO_BANDS)
    assert v.score == -1


def test_band_location() -> None:
    strong = tape_of(short=3000.0, share=0.9, ratio=2.0)
    assert judge(P, strong, 98.0, 102.0, 98.0).location == "BULLISH"  # at the band counts
    assert judge(P, strong, 102.0, 102.0, 98.0).location == "BEARISH"
    inside = judge(P, strong, 100.0, 102.0, 98.0)
    assert (inside.location, inside.score) == ("INSIDE", 0)
    no_bands = judge(P, strong, 100.0, *NO_BANDS)
    assert (no_bands.location, no_bands.score) == (None, 4)


# -- levels ---------------------------------------------------------------------------------------


def test_without_a_usable_atr_the_stop_is_0_75_percent_based() -> None:
    flat = candles(amplitude=0.0, wick=0.0)  # ATR 0, bands collapse onto 100
    out = run(window(99.0, SHORTS_SQUEEZED, book(1500.0, 1000.0), cs=flat))
    assert len(out) == 1
    a = 0.0075 * 99.0
    assert out[0].metadata["atr_fallback"] is True
    assert out[0].levels.stop_loss == pytest.approx(99.0 - BUFFERED_SL * a)
    assert out[0].levels.take_profits[0] == pytest.approx(99.0 + 2.5 * a)
    assert out[0].levels.valid


def test_defect_rejected_levels_give_neither_a_signal_nor_a_cooldown() -> None:
    # A market moving 0.01 %: the 1.8-ATR stop is under the 0.2 % minimum.
    tight = candles(amplitude=0.005, wick=0.00001)
    lower = float(talib.BBANDS(tight.close, timeperiod=20, nbdevup=2, nbdevdn=2)[2][-1])
    bad = run(window(lower * 0.9999, SHORTS_SQUEEZED, book(1500.0, 1000.0), cs=tight))
    assert len(bad) == 1 and not bad[0].levels.valid
    assert "under min" in bad[0].levels.reason

    cooldowns = Cooldowns()
    builder = SignalBuilder(cooldowns, Metrics())
    origin = Origin(
        "liquidation", "BTC/USDT:USDT", "15m", "binanceusdm", LiquidationStrategy.DEFAULT_COOLDOWN
    )
    assert builder.build(origin, tight, bad[0]) is None
    assert len(cooldowns) == 0
    good = run(window(LOWER * 0.999, SHORTS_SQUEEZED, book(1500.0, 1000.0)))
    assert builder.build(origin, SIDEWAYS, good[0]) is not None


# -- declared data and defaults -------------------------------------------------------------------


def test_only_the_first_50_book_levels_count() -> None:
    deep = book(1500.0, 1000.0, levels=50)
    extra = np.array([[90.0, 1000.0]] * 10)  # huge bids below level 50
    padded = OrderBook(np.vstack([deep.bids, extra]), deep.asks, deep.ts_ms)
    assert read_tape(P, trades([]), padded).book_ratio == pytest.approx(1.5)


def test_needs_declare_the_snapshots() -> None:
    needs = make().needs()
    assert (needs.timeframes, needs.lookback) == (("15m",), 460)
    assert (needs.ticker, needs.trades, needs.order_book, needs.funding) == (True, 1000, 50, False)
    assert not needs.ohlcv_only


def test_missing_snapshots_are_an_error_and_short_history_is_silence() -> None:
    w = window(LOWER * 0.999, SHORTS_SQUEEZED, book(1500.0, 1000.0))
    with pytest.raises(ValueError, match="order book"):
        make().evaluate(Window(w.symbol, w.timeframe, w.candles, ticker=w.ticker, trades=w.trades))
    assert run(window(LOWER * 0.999, SHORTS_SQUEEZED, book(1500.0, 1000.0), cs=SIDEWAYS.tail(459))) == []


def test_declared_defaults_follow_the_spec() -> None:
    p = LiquidationParams()
    assert (p.large_trade_mult, p.large_trade_sample, p.large_trade_floor, p.large_trade_default) == (
        20.0, 100, 1000.0, 10000.0,
    )  # fmt: skip
    assert (p.liq_dominance, p.book_ratio, p.flow_buy_share, p.min_score) == (1.5, 1.3, 0.6, 2)
    assert (p.bb_period, p.bb_dev, p.fallback_atr_pct, p.warmup, p.trades, p.book_levels) == (
        20, 2.0, 0.75, 400, 1000, 50,
    )  # fmt: skip
    assert (LiquidationStrategy.DEFAULT_TIMEFRAME, LiquidationStrategy.DEFAULT_COOLDOWN) == ("15m", 3600)
    risk = RiskSettings().merged(LiquidationStrategy.RISK)
    assert (risk.sl_mult, risk.tp1_mult, risk.tp2_mult, risk.tp3_mult, risk.min_rr) == (
        1.8,
        2.5,
        4.0,
        4.5,
        1.3,
    )


@pytest.mark.parametrize(
    "bad", [{"liq_dominance": 1.0}, {"flow_buy_share": 0.5}, {"large_trade_mult": 0}, {"x": 1}]
)
def test_bad_params_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LiquidationParams(**bad)
