"""A candle file known by its two ends: the rows read from each end are the rows the whole
file parses to, a plan made from them spans what the parsed files span, and a file whose
parsed rows end elsewhere is caught."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.clock import VirtualClock
from engine.errors import EdgesMismatch
from engine.market.csv_rows import EDGE_BYTES, load_csv, read_edges
from engine.market.replay import ReplayMarket

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
ETH = SAMPLE / "binance_ETH-BTC_5m.csv"
LOG = logging.getLogger("test.csv_rows")


def test_the_ends_are_the_first_and_last_rows_of_the_parsed_file() -> None:
    assert ETH.stat().st_size > 4 * EDGE_BYTES  # long enough to be read by its ends
    rows = load_csv(ETH, LOG)
    edges = read_edges(ETH)
    assert edges is not None
    h, t = len(edges.head), len(edges.tail)
    assert h > 500 and t > 500
    assert np.array_equal(edges.head, rows[:h]) and np.array_equal(edges.tail, rows[-t:])
    assert edges.matches(rows)
    assert not edges.matches(rows[:-1]) and not edges.matches(rows[1:])


def test_short_or_unusual_files_are_left_to_the_full_parser(tmp_path: Path) -> None:
    lines = ETH.read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:1000]) + "\n")
    assert read_edges(short) is None
    for where in (3, len(lines) - 3):  # a bad row in the head, then in the tail
        bad = list(lines)
        bad[where] = bad[where].rsplit(",", 1)[0] + ",-5"  # negative volume
        path = tmp_path / f"bad{where}.csv"
        path.write_text("\n".join(bad) + "\n")
        assert read_edges(path) is None
    header = tmp_path / "header.csv"
    header.write_text("\n".join(["time,o,h,l,c,v", *lines[1:]]) + "\n")
    assert read_edges(header) is None


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "4h", "1d"])
def test_a_span_planned_from_the_ends_is_the_span_of_the_parsed_files(timeframe: str) -> None:
    planned = ReplayMarket(SAMPLE, "binance", VirtualClock())
    planned.read_edges(planned.symbols)
    assert planned.unloaded_files()  # nothing was parsed to plan
    parsed = ReplayMarket(SAMPLE, "binance", VirtualClock())
    assert planned.time_range(timeframe) == parsed.time_range(timeframe)
    for symbol in sorted(planned.symbols):
        planned.confirm_edges(symbol)  # the files begin and end as read
        planned.forget(symbol)


def test_a_file_whose_parsed_rows_end_elsewhere_is_caught(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(ETH, data / ETH.name)
    lines = ETH.read_text().splitlines()
    # a candle far in the future mid-file: parsed whole, every later row is out of order and
    # dropped, but the rows read at either end look fine on their own
    mid = len(lines) // 2
    t, *rest = lines[mid].split(",")
    lines[mid] = ",".join([str(int(t) + 10**12), *rest])
    (data / "binance_LTC-BTC_5m.csv").write_text("\n".join(lines) + "\n")
    market = ReplayMarket(data, "binance", VirtualClock())
    market.read_edges(market.symbols)
    market.confirm_edges("ETH/BTC")
    with pytest.raises(EdgesMismatch, match="LTC-BTC"):
        market.confirm_edges("LTC/BTC")
