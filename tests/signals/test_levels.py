"""The shared TP/SL calculator: the spec §1 numbers and every gate that can reject a signal."""

from __future__ import annotations

import math

import pytest

from engine.signals.levels import RiskSettings, TpSlCalculator, validate_levels
from engine.signals.model import Direction, Levels

LONG, SHORT = Direction.LONG, Direction.SHORT
PSAR_MOST_RISK = {"sl_mult": 1.0, "tp1_mult": 2.0, "tp2_mult": 3.5}


def calc(**overrides: float | None) -> TpSlCalculator:
    return TpSlCalculator(RiskSettings().merged(overrides))


def gate(direction: Direction, entry: float, sl: float, tps: tuple[float, ...]) -> Levels:
    return validate_levels(direction, entry, sl, tps, min_rr=1.3, max_sl_percent=5.0, min_sl_percent=0.2)


def test_spec_example_long_entry_100_atr_2() -> None:
    lv = calc().atr(LONG, entry=100.0, atr=2.0)
    assert lv.stop_loss == pytest.approx(96.9775, abs=1e-12)
    assert lv.take_profits == pytest.approx((104.0, 106.0, 109.0), abs=1e-12)
    assert lv.risk == pytest.approx(3.0225, abs=1e-12)
    assert lv.rr1 == pytest.approx(1.323, abs=5e-4)
    assert lv.rr2 == pytest.approx(6.0 / 3.0225)
    assert lv.valid and lv.reason == ""


def test_short_is_the_mirror_image() -> None:
    lv = calc().atr(SHORT, entry=100.0, atr=2.0)
    assert lv.stop_loss == pytest.approx(103.0225, abs=1e-12)
    assert lv.take_profits == pytest.approx((96.0, 94.0, 91.0), abs=1e-12)
    assert lv.valid


def test_psar_and_most_overrides_tighten_the_stop_and_stretch_tp2() -> None:
    lv = calc(**PSAR_MOST_RISK).atr(LONG, entry=100.0, atr=2.0)
    assert lv.stop_loss == pytest.approx(100.0 - 2.0 * 1.0075, abs=1e-12)
    assert lv.take_profits == pytest.approx((104.0, 107.0, 109.0), abs=1e-12)
    assert lv.valid


def test_custom_stop_replaces_the_atr_stop_but_not_the_targets() -> None:
    lv = calc().atr(LONG, entry=100.0, atr=2.0, custom_sl=98.5)
    assert lv.stop_loss == 98.5
    assert lv.take_profits == pytest.approx((104.0, 106.0, 109.0))
    assert lv.rr1 == pytest.approx(4.0 / 1.5)


def test_no_tp3_when_its_multiple_is_unset() -> None:
    lv = calc(tp3_mult=None).atr(LONG, entry=100.0, atr=2.0)
    assert lv.take_profits == pytest.approx((104.0, 106.0))


@pytest.mark.parametrize("atr", [math.nan, 0.0, -1.0, math.inf])
def test_missing_or_non_positive_atr_falls_back_to_one_percent_of_entry(atr: float) -> None:
    lv = calc().atr(LONG, entry=100.0, atr=atr)
    assert lv.stop_loss == pytest.approx(100.0 - 1.0 * 1.0075 * 1.5)
    assert lv.take_profits == pytest.approx((102.0, 103.0, 104.5))


# -- rejections: each gate, with the reason a user sees in the rejection counters -----------


@pytest.mark.parametrize(
    ("direction", "entry", "sl", "tps", "reason"),
    [
        (LONG, math.nan, 95.0, (104.0,), "non-finite or non-positive price"),
        (LONG, 100.0, math.inf, (104.0,), "non-finite or non-positive price"),
        (LONG, 0.0, -1.0, (1.0,), "non-finite or non-positive price"),
        (LONG, 100.0, 97.0, (), "no take-profit"),
        (LONG, 100.0, 101.0, (104.0,), "stop-loss on the wrong side of entry"),
        (LONG, 100.0, 100.0, (104.0,), "stop-loss on the wrong side of entry"),
        (SHORT, 100.0, 99.0, (96.0,), "stop-loss on the wrong side of entry"),
        (LONG, 100.0, 97.0, (99.0, 104.0), "TP1 on the wrong side of entry"),
        (SHORT, 100.0, 103.0, (101.0,), "TP1 on the wrong side of entry"),
        (LONG, 100.0, 97.0, (104.0, 103.0), "take-profits not strictly ordered away from entry"),
        (SHORT, 100.0, 103.0, (96.0, 96.0), "take-profits not strictly ordered away from entry"),
        (LONG, 100.0, 94.0, (110.0,), "stop 6.00% away exceeds max 5.0%"),
        (LONG, 100.0, 99.9, (104.0,), "stop 0.10% away is under min 0.2%"),
        (LONG, 100.0, 96.0, (104.0,), "R:R 1.00 below minimum 1.3"),
        (SHORT, 100.0, 104.0, (96.0,), "R:R 1.00 below minimum 1.3"),
    ],
)
def test_each_gate_rejects_with_its_reason(
    direction: Direction, entry: float, sl: float, tps: tuple[float, ...], reason: str
) -> None:
    lv = gate(direction, entry, sl, tps)
    assert not lv.valid
    assert lv.reason == reason
    assert lv.stop_loss == sl or math.isnan(sl)


def test_calculator_flags_a_stop_that_leaves_too_little_reward() -> None:
    """The typical rejection of a strategy stop (SAR, MOST line) far from entry."""
    lv = calc(**PSAR_MOST_RISK).atr(LONG, entry=100.0, atr=2.0, custom_sl=96.0)
    assert not lv.valid
    assert lv.reason == "R:R 1.00 below minimum 1.3"
    assert lv.take_profits == pytest.approx((104.0, 107.0, 109.0))


def test_calculator_flags_a_custom_stop_on_the_wrong_side() -> None:
    lv = calc().atr(SHORT, entry=100.0, atr=2.0, custom_sl=99.0)
    assert not lv.valid
    assert lv.reason == "stop-loss on the wrong side of entry"


def test_first_failing_gate_is_the_reported_one() -> None:
    lv = gate(LONG, 100.0, 101.0, (100.5,))  # wrong-side stop and hopeless R:R
    assert lv.reason == "stop-loss on the wrong side of entry"


# -- boundaries: equality passes, within the 1e-9 tolerance for R:R -------------------------


def test_rr_exactly_at_minimum_passes_despite_float_rounding() -> None:
    entry, sl = 3.3, 3.2
    lv = gate(LONG, entry, sl, (entry + 1.3 * (entry - sl),))
    assert lv.rr1 < 1.3  # the float quotient lands just under…
    assert lv.valid  # …and the tolerance keeps it


def test_stop_distance_at_the_percent_limits_passes() -> None:
    assert gate(LONG, 100.0, 95.0, (107.0,)).valid
    assert gate(LONG, 100.0, 99.8, (101.0,)).valid


def test_unknown_risk_field_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        RiskSettings().merged({"tp4_atr": 6.0})
