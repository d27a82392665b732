"""Consensus per spec §5, on the spec's worked example and its edges."""

from __future__ import annotations

import pytest

from engine.config_sections import DEFAULT_WEIGHTS
from engine.signals.consensus import ConsensusAggregator, ConsensusSettings, strength_label
from engine.signals.model import Direction, Signal

T0 = 1_700_000_000_000
MIN = 60_000


def sig(
    strategy: str,
    age_min: float,
    entry: float,
    sl: float,
    tps: tuple[float, ...],
    *,
    now: int = T0,
    symbol: str = "ABC/USDT",
    direction: Direction = Direction.LONG,
) -> Signal:
    t = int(now - age_min * MIN)
    return Signal(
        id=f"{strategy}-{t}",
        strategy=strategy,
        symbol=symbol,
        direction=direction,
        timeframe="15m",
        exchange="binance",
        entry=entry,
        stop_loss=sl,
        take_profits=tps,
        created_at="",
        bar_close_ms=t,
    )


def agg(**kw: float) -> ConsensusAggregator:
    return ConsensusAggregator(ConsensusSettings(**kw), DEFAULT_WEIGHTS, {})  # type: ignore[arg-type]


def test_spec_example_new_then_update() -> None:
    a = agg()
    assert a.add(sig("psar", 20, 10.2, 9.8, (10.6, 11.0))) is None
    assert a.add(sig("candlestick", 10, 10.1, 9.7, (10.7, 11.1))) is None  # 1.75 < 3.0
    c = a.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2)))
    assert c is not None and c.kind == "consensus"
    m = c.metadata
    assert m["score"] == pytest.approx(3.75) and m["label"] == "HIGH" and m["alert"] == "new"
    assert c.entry == pytest.approx(10.0778, abs=1e-4)
    assert c.stop_loss == pytest.approx(9.7)
    assert c.take_profits == pytest.approx((10.7, 11.1))
    assert m["rr1"] == pytest.approx(1.647, abs=1e-3) and m["min_rr"] == 1.4
    names = {x["strategy"]: x for x in m["contributors"]}
    assert set(names) == {"psar", "candlestick", "harmonic"}
    assert names["harmonic"]["weight"] == 2.0 and names["harmonic"]["age_minutes"] == 0.0
    # nothing new: silent
    assert a.add(sig("psar", 0, 10.2, 9.8, (10.6, 11.0))) is None
    up = a.add(sig("mtf", 0, 10.1, 9.75, (10.7, 11.2), now=T0 + MIN))
    assert up is not None
    assert up.metadata["alert"] == "update" and up.metadata["new_contributors"] == ["mtf"]
    assert up.metadata["score"] == pytest.approx(5.25) and up.metadata["label"] == "EXTREME"


def test_below_threshold_and_one_strategy_twice_is_not_consensus() -> None:
    a = agg()
    a.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2)))
    assert a.add(sig("psar", 0, 10.2, 9.8, (10.6, 11.0))) is None  # 2.75
    b = agg(threshold=2.0)
    b.add(sig("harmonic", 10, 10.0, 9.6, (10.8, 11.2)))
    assert b.add(sig("harmonic", 0, 10.0, 9.6, (10.8, 11.2))) is None  # one strategy, 2 signals


def test_window_expiry_drops_old_signals() -> None:
    a = agg()
    a.add(sig("harmonic", 31, 10.0, 9.6, (10.8, 11.2)))
    a.add(sig("candlestick", 10, 10.1, 9.7, (10.7, 11.1)))
    assert a.add(sig("psar", 0, 10.2, 9.8, (10.6, 11.0))) is None  # harmonic fell out: 1.75


def test_directions_and_symbols_do_not_mix() -> None:
    a = agg(threshold=1.0)
    a.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2)))
    assert a.add(sig("psar", 0, 10.0, 10.4, (9.6, 9.2), direction=Direction.SHORT)) is None
    assert a.add(sig("psar", 0, 10.0, 9.6, (10.6, 11.0), symbol="XYZ/USDT")) is None


def test_rr_gate_rejects_poor_reward() -> None:
    a = agg()
    a.add(sig("harmonic", 3, 10.0, 9.0, (10.3, 10.5)))
    assert a.add(sig("strat", 0, 10.0, 9.0, (10.3, 10.5))) is None  # RR 0.5 < 1.7


def test_labels() -> None:
    assert [strength_label(x) for x in (7.0, 5.0, 3.5, 2.0, 1.9)] == [
        "LEGENDARY",
        "EXTREME",
        "HIGH",
        "MODERATE",
        "LOW",
    ]


def test_snapshot_restore_keeps_memory() -> None:
    a = agg()
    a.add(sig("psar", 20, 10.2, 9.8, (10.6, 11.0)))
    a.add(sig("candlestick", 10, 10.1, 9.7, (10.7, 11.1)))
    assert a.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2))) is not None
    b = agg()
    b.restore(a.snapshot())
    assert b.add(sig("psar", 0, 10.2, 9.8, (10.6, 11.0))) is None  # remembered: no repeat NEW


def test_adaptive_weights_follow_hit_rate() -> None:
    record = {"harmonic": (0, 10), "candlestick": (9, 10)}
    a = ConsensusAggregator(
        ConsensusSettings(adaptive=True), DEFAULT_WEIGHTS, {}, hits=lambda s: record.get(s, (0, 0))
    )
    assert a.weight("harmonic") == pytest.approx(2.0 * 0.5)  # losing: clamped at the floor
    assert a.weight("candlestick") == pytest.approx(1.5)  # (9+1)/(10+2)/0.5 = 1.67, clamped at 1.5
    assert a.weight("psar") == pytest.approx(0.75)  # nothing closed yet: Laplace gives 1.0
    # the spec example no longer reaches 3.0 once harmonic keeps losing
    a.add(sig("psar", 20, 10.2, 9.8, (10.6, 11.0)))
    a.add(sig("candlestick", 10, 10.1, 9.7, (10.7, 11.1)))
    assert a.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2))) is not None  # 0.75 + 1.5 + 1.0 = 3.25
    record["candlestick"] = (5, 10)
    b = ConsensusAggregator(
        ConsensusSettings(adaptive=True), DEFAULT_WEIGHTS, {}, hits=lambda s: record.get(s, (0, 0))
    )
    b.add(sig("psar", 20, 10.2, 9.8, (10.6, 11.0)))
    b.add(sig("candlestick", 10, 10.1, 9.7, (10.7, 11.1)))
    assert b.add(sig("harmonic", 3, 10.0, 9.6, (10.8, 11.2))) is None  # 0.75 + 1.0 + 1.0 = 2.75
