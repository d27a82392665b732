from __future__ import annotations

import logging

import numpy as np
import pytest

from engine.market.validate import check_rows, to_array, validate_rows
from engine.metrics import Metrics
from tests.support import metric

STEP = 300_000
T = 1_515_560_100_000
log = logging.getLogger("test.validate")


def row(
    i: int, o: float = 1.0, h: float = 1.2, lo: float = 0.9, c: float = 1.1, v: float = 5.0
) -> list[float]:
    return [T + i * STEP, o, h, lo, c, v]


def run(rows: list[list[float]], **kw: int) -> tuple[np.ndarray, Metrics]:
    metrics = Metrics()
    candles = validate_rows(rows, "ex", "ETH/BTC", "5m", metrics, log, **kw)
    return candles.ts, metrics


def dropped(metrics: Metrics, reason: str) -> float:
    return metric(metrics, "engine_candles_dropped_total", exchange="ex", reason=reason)


def test_clean_rows_pass_through_as_candles() -> None:
    metrics = Metrics()
    candles = validate_rows([row(0), row(1), row(2)], "ex", "ETH/BTC", "5m", metrics, log)
    assert candles.ts.dtype == np.int64
    assert list(candles.ts) == [T, T + STEP, T + 2 * STEP]
    assert list(candles.close) == [1.1, 1.1, 1.1]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row(1, h=float("nan")), "non_finite"),
        (row(1, v=float("inf")), "non_finite"),
        (row(1, h=1.05, c=1.1), "high_below_body"),
        (row(1, o=1.3, h=1.2), "high_below_body"),
        (row(1, lo=1.05), "low_above_body"),
        (row(1, v=-1.0), "negative_volume"),
    ],
)
def test_impossible_candles_are_dropped_with_reason(
    bad: list[float], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        ts, metrics = run([row(0), bad, row(2)])
    assert list(ts) == [T, T + 2 * STEP]
    assert dropped(metrics, reason) == 1
    assert reason in caplog.text and "ETH/BTC" in caplog.text


def test_duplicates_keep_the_first_and_out_of_order_rows_are_dropped() -> None:
    first = row(1, c=1.15)
    again = row(1, c=1.0)
    ts, metrics = run([row(0), first, again, row(3), row(2), row(4)])
    assert list(ts) == [T, T + STEP, T + 3 * STEP, T + 4 * STEP]
    assert dropped(metrics, "duplicate") == 1
    assert dropped(metrics, "out_of_order") == 1


def test_a_bad_first_copy_lets_the_good_repeat_through() -> None:
    ts, _ = run([row(0), row(1, v=-1), row(1), row(2)])
    assert list(ts) == [T, T + STEP, T + 2 * STEP]


def test_gaps_are_reported_not_filled(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ts, metrics = run([row(0), row(1), row(4), row(5), row(7)])
    assert list(ts) == [T + i * STEP for i in (0, 1, 4, 5, 7)]
    assert dropped(metrics, "gap") == 3
    assert "missing" in caplog.text


def test_after_ms_checks_order_and_gap_against_the_cached_tail() -> None:
    ts, metrics = run([row(5), row(6), row(8)], after_ms=T + 5 * STEP)
    assert list(ts) == [T + 6 * STEP, T + 8 * STEP]
    assert dropped(metrics, "duplicate") == 1
    assert dropped(metrics, "gap") == 1


def test_ragged_and_non_numeric_rows_are_malformed() -> None:
    rows: list[list[object]] = [row(0), [T + STEP, 1.0, 1.2], row(2), [T + 3 * STEP, "x", 1, 1, 1, 1], row(4)]
    metrics = Metrics()
    candles = validate_rows(rows, "ex", "ETH/BTC", "5m", metrics, log)
    assert list(candles.ts) == [T, T + 2 * STEP, T + 4 * STEP]
    assert dropped(metrics, "malformed") == 2


def test_none_values_from_ccxt_count_as_non_finite() -> None:
    rows: list[list[object]] = [row(0), [T + STEP, None, 1.2, 0.9, 1.1, 5.0]]
    metrics = Metrics()
    candles = validate_rows(rows, "ex", "ETH/BTC", "5m", metrics, log)
    assert len(candles) == 1
    assert dropped(metrics, "non_finite") == 1


def test_empty_input_gives_empty_candles() -> None:
    ts, _ = run([])
    assert ts.size == 0


def test_check_rows_labels_each_dropped_index() -> None:
    arr, malformed = to_array([row(0), row(1, v=-1), row(0)])
    check = check_rows(arr, malformed)
    assert list(check.keep) == [True, False, False]
    assert check.reasons == ((1, "negative_volume"), (2, "duplicate"))
