"""Columnar candidates decide exactly what one-at-a-time Candidates would.

The fast path (arrays, one validity pass, cooldown by binary search) is only allowed to be
faster: every verdict, level, signal and rejection count must equal the scalar path's.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.candles import Candles
from engine.metrics import Metrics
from engine.signals.batch import CandidateBatch, as_batch
from engine.signals.builder import Origin, SignalBuilder, rounded
from engine.signals.cooldown import Cooldowns
from engine.signals.levels import (
    ArrayLevels,
    LevelArrays,
    RiskSettings,
    TpSlCalculator,
    validate_arrays,
    validate_levels,
)
from engine.signals.model import Candidate, Direction

price = st.one_of(
    st.floats(min_value=-2.0, max_value=200.0),
    st.sampled_from([100.0, 99.0, 101.0, 0.0, math.nan, math.inf, -math.inf]),
)
row = st.tuples(
    st.sampled_from([1, -1]),
    st.floats(min_value=0.5, max_value=200.0),
    price,
    st.lists(price, min_size=0, max_size=3),
    st.booleans(),
)
risk_settings = st.builds(
    RiskSettings,
    min_rr=st.sampled_from([0.0, 1.3, 2.0]),
    max_sl_percent=st.sampled_from([1.0, 5.0, 50.0]),
    min_sl_percent=st.sampled_from([0.0, 0.2, 1.0]),
)


def columns(rows: list[tuple[int, float, float, list[float], bool]]) -> tuple[np.ndarray, ...]:
    k = max((len(r[3]) for r in rows), default=0)
    tps = np.full((len(rows), k), np.nan)
    for i, r in enumerate(rows):
        tps[i, : len(r[3])] = r[3]
    return (
        np.array([r[0] for r in rows], dtype=np.int8),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        tps,
        np.array([r[4] for r in rows], dtype=bool),
    )


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=12), rs=risk_settings)
def test_array_verdict_equals_the_scalar_gate_row_by_row(
    rows: list[tuple[int, float, float, list[float], bool]], rs: RiskSettings
) -> None:
    sign, entry, sl, tps, gate = columns(rows)
    arrays = validate_arrays(sign, entry, sl, tps, gate, rs)  # what long batches use
    # padded to many rows, so build() takes the array gate too
    many = CandidateBatch.build(
        rs,
        np.arange(len(rows) * 3),
        np.tile(sign, 3),
        np.tile(entry, 3),
        LevelArrays(np.tile(sl, 3), np.tile(tps, (3, 1))),
        gate=np.tile(gate, 3),
    )
    small = CandidateBatch.build(rs, np.arange(len(rows)), sign, entry, LevelArrays(sl, tps), gate=gate)
    for i, r in enumerate(rows):
        # trailing NaNs are padding; what the row really has is what the scalar gate sees
        targets = list(r[3]) + [math.nan] * (tps.shape[1] - len(r[3]))
        while targets and math.isnan(targets[-1]):
            targets.pop()
        want = validate_levels(
            Direction.LONG if r[0] > 0 else Direction.SHORT,
            r[1],
            r[2],
            targets,
            min_rr=rs.min_rr,
            max_sl_percent=rs.max_sl_percent,
            min_sl_percent=rs.min_sl_percent,
            gate=r[4],
        )
        assert bool(arrays[i]) == want.valid, (r, want.reason)
        assert bool(small.valid[i]) == want.valid and small.levels(i).reason == want.reason
        assert bool(many.valid[many.row == i][0]) == want.valid


def same_floats(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    assert isinstance(a, tuple | list) and isinstance(b, tuple | list)
    return len(a) == len(b) and all(same_floats(x, y) for x, y in zip(a, b, strict=True))


finite = st.floats(min_value=0.001, max_value=1e6)


@settings(max_examples=200, deadline=None)
@given(
    entry=finite,
    atr=st.one_of(finite, st.sampled_from([0.0, -1.0, math.nan])),
    swing=finite,
    other=finite,
    custom=st.one_of(st.none(), finite),
    unit=st.one_of(st.none(), finite),
    tp3=st.sampled_from([None, 4.5]),
)
def test_array_methods_give_the_scalar_methods_floats_bit_for_bit(
    entry: float,
    atr: float,
    swing: float,
    other: float,
    custom: float | None,
    unit: float | None,
    tp3: float | None,
) -> None:
    rs = RiskSettings(tp3_mult=tp3)
    calc, arr = TpSlCalculator(rs), ArrayLevels(rs)
    for d in Direction:
        s = np.array([d.sign], dtype=np.int8)
        e = np.array([entry])

        def check(scalar: object, arrays: LevelArrays) -> None:
            lv = scalar  # a Levels
            assert same_floats(float(arrays.stop_loss[0]), lv.stop_loss)  # type: ignore[attr-defined]
            assert same_floats(tuple(arrays.take_profits[0].tolist()), lv.take_profits)  # type: ignore[attr-defined]

        cs = None if custom is None else np.array([custom])
        check(calc.atr(d, entry, atr, custom_sl=custom), arr.atr(s, e, np.array([atr]), custom_sl=cs))
        check(calc.percentage(d, entry, 1.5), arr.percentage(s, e, 1.5))
        kw = {"swing_low": swing} if d is Direction.LONG else {"swing_high": swing}
        check(calc.structure(d, entry, **kw), arr.structure(s, e, np.array([swing])))
        lo, hi = min(swing, other), max(swing, other)
        check(
            calc.fibonacci(d, entry, swing_low=lo, swing_high=hi),
            arr.fibonacci(s, e, np.array([lo]), np.array([hi])),
        )
        u = None if unit is None else np.array([unit])
        check(
            calc.fixed_r(d, entry, swing, (1.0, 2.0), unit=unit),
            arr.fixed_r(s, e, np.array([swing]), (1.0, 2.0), unit=u),
        )


def test_missing_structure_swing_makes_the_row_invalid() -> None:
    arr = ArrayLevels(RiskSettings())
    s = np.array([1, -1], dtype=np.int8)
    lv = arr.structure(s, np.array([100.0, 100.0]), np.array([np.nan, 102.0]))
    batch = CandidateBatch.build(RiskSettings(), [0, 1], s, [100.0, 100.0], lv)
    assert batch.valid.tolist() == [False, True]
    assert not batch[0].levels.valid and batch[1].levels.valid


# -- the builder ---------------------------------------------------------------------------

FIVE_MIN = 300_000


def candles(n: int) -> Candles:
    ts = np.arange(n, dtype=np.int64) * FIVE_MIN
    one = np.ones(n)
    return Candles(ts, one, one, one, one, one)


cand_row = st.tuples(
    st.integers(0, 39),  # bar
    st.sampled_from([1, -1]),
    st.booleans(),  # valid
    st.sampled_from(["", "a", "b"]),
)


def batch_of(rows: list[tuple[int, int, bool, str]], subs: bool) -> CandidateBatch:
    n = len(rows)
    sign = np.array([r[1] for r in rows], dtype=np.int8)
    entry = np.full(n, 100.0)
    # a valid row: stop 1 away on the losing side, targets 2 and 3 away; invalid: stop on the wrong side
    sl = np.array([100.0 - r[1] * (1.0 if r[2] else -1.0) for r in rows])
    tps = np.stack([100.0 + sign * 2.0, 100.0 + sign * 3.0], axis=1)

    def describe(i: int) -> tuple[tuple[str, ...], dict[str, object]]:
        return (f"row {i}",), {"row": i}

    return CandidateBatch.build(
        RiskSettings(),
        [r[0] for r in rows],
        sign,
        entry,
        LevelArrays(sl, tps),
        describe=describe,
        sub_keys=[r[3] for r in rows] if subs else None,
    )


def rejected(m: Metrics, reason: str) -> float:
    return (
        m.registry.get_sample_value("engine_signals_rejected_total", {"strategy": "s", "reason": reason})
        or 0.0
    )


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(cand_row, min_size=0, max_size=30),
    cooldown=st.sampled_from([0, 1, 299, 300, 600, 1500, 3600]),
    subs=st.booleans(),
    start=st.one_of(st.none(), st.integers(0, 40)),
    end=st.one_of(st.none(), st.integers(0, 40)),
    prior=st.one_of(st.none(), st.integers(0, 20)),
)
def test_batch_gating_equals_building_candidates_one_by_one(
    rows: list[tuple[int, int, bool, str]],
    cooldown: int,
    subs: bool,
    start: int | None,
    end: int | None,
    prior: int | None,
) -> None:
    cs = candles(40)
    batch = batch_of(rows, subs)
    origin = Origin("s", "ETH/BTC", "5m", "binance", cooldown)
    start_ms = None if start is None else start * FIVE_MIN
    end_ms = None if end is None else end * FIVE_MIN
    entries = {} if prior is None else {"s|ETH/BTC|5m|LONG": prior * FIVE_MIN / 1000.0}
    m1, m2 = Metrics(), Metrics()
    fast, slow = SignalBuilder(Cooldowns(entries), m1), SignalBuilder(Cooldowns(entries), m2)
    got = fast.build_batch(origin, cs, batch, start_ms=start_ms, end_ms=end_ms)
    want = []
    for cand in batch:  # replay order: bar, then LONG first
        close = int(cs.ts[cand.bar]) + FIVE_MIN
        if (start_ms is None or close >= start_ms) and (end_ms is None or close <= end_ms):
            sig = slow.build(origin, cs, cand)
            if sig is not None:
                want.append(sig)
    assert got == want
    assert fast.cooldowns.snapshot() == slow.cooldowns.snapshot()
    # a replay's variant: the words leave the Signal, its record is kept as JSON text
    records: list[bytes] = []
    bare = SignalBuilder(Cooldowns(entries), Metrics()).build_batch(
        origin, cs, batch, start_ms=start_ms, end_ms=end_ms, records=records
    )
    assert [s._replace(rationale=(), metadata={}) for s in want] == bare
    # the very bytes of each record serialised whole
    assert records == [orjson.dumps(s.to_record(), option=orjson.OPT_SERIALIZE_NUMPY)[:-1] for s in want]
    for reason in ("invalid_levels", "cooldown"):
        assert rejected(m1, reason) == rejected(m2, reason)
    for side in ("LONG", "SHORT"):
        labels = {"strategy": "s", "direction": side}
        got_n = m1.registry.get_sample_value("engine_signals_total", labels) or 0.0
        assert got_n == (m2.registry.get_sample_value("engine_signals_total", labels) or 0.0)


def test_only_emitted_rows_are_described() -> None:
    described: list[int] = []
    sign = np.ones(10, dtype=np.int8)
    entry = np.full(10, 100.0)
    levels = ArrayLevels(RiskSettings()).atr(sign, entry, np.full(10, 1.0))

    def describe(i: int) -> tuple[tuple[str, ...], dict[str, object]]:
        described.append(i)
        return (), {}

    batch = CandidateBatch.build(RiskSettings(), np.arange(10), sign, entry, levels, describe=describe)
    origin = Origin("s", "ETH/BTC", "5m", "binance", 1200)  # 4 bars
    sigs = SignalBuilder(Cooldowns(), Metrics()).build_batch(origin, candles(10), batch)
    assert [s.bar_close_ms // FIVE_MIN - 1 for s in sigs] == [0, 4, 8]
    assert described == [0, 4, 8]


# -- the sequence view ---------------------------------------------------------------------


def test_a_batch_reads_like_the_list_of_its_candidates() -> None:
    batch = batch_of([(3, -1, True, ""), (1, 1, True, ""), (3, 1, False, "")], subs=False)
    cands = list(batch)
    assert [(c.bar, c.direction) for c in cands] == [
        (1, Direction.LONG),
        (3, Direction.LONG),
        (3, Direction.SHORT),
    ]
    assert len(batch) == 3 and batch[-1] == cands[2] and batch[0:2] == cands[:2]
    assert batch == cands and batch != cands[:2] and batch != "abc"
    assert cands[0].rationale == ("row 1",) and cands[0].metadata == {"row": 1}
    assert [c.direction for c in batch.at_bar(3)] == [Direction.LONG, Direction.SHORT]
    with pytest.raises(IndexError):
        batch[3]
    shuffled = batch.take(np.array([2, 0, 1]))  # rows cut and reordered keep their words
    assert list(shuffled) == [cands[2], cands[0], cands[1]] and list(shuffled.sorted()) == cands


def test_a_plain_list_passes_through_unchanged() -> None:
    calc = TpSlCalculator(RiskSettings())
    cands = [
        Candidate(5, Direction.SHORT, calc.atr(Direction.SHORT, 100.0, 1.0), 0.5, ("x",), {"k": 1}, "sub"),
        Candidate(2, Direction.LONG, calc.atr(Direction.LONG, 100.0, 0.0)),
    ]
    batch = as_batch(cands)
    assert list(batch) == [cands[1], cands[0]]  # bar order; the objects themselves
    assert batch[1] is cands[0] and batch.sub_key(1) == "sub" and batch.sub_key(0) == ""
    assert as_batch(batch) is batch


def test_mismatched_columns_are_refused() -> None:
    lv = LevelArrays(np.ones(2), np.ones((2, 1)))
    with pytest.raises(ValueError, match="column lengths differ"):
        CandidateBatch.build(RiskSettings(), [0, 1, 2], [1, 1], [1.0, 1.0], lv)
    with pytest.raises(ValueError, match="sign must be"):
        CandidateBatch.build(RiskSettings(), [0, 1], [1, 0], [1.0, 1.0], lv)


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(0, 1000),
            # ties and near-ties at the fourth decimal, where a product's error could flip them
            st.builds(
                lambda k, e: (k + 0.5) / 1e4 + e,
                st.integers(-(10**8), 10**8),
                st.sampled_from([0.0, 1e-17, -1e-17, 5e-13, -5e-13]),
            ),
        ),
        max_size=40,
    )
)
def test_ratios_are_rounded_exactly_as_python_rounds(values: list[float]) -> None:
    got = rounded(np.array(values, dtype=np.float64), 4)
    want = [None if x != x else round(x, 4) for x in values]
    assert [repr(x) for x in got] == [repr(x) for x in want]
