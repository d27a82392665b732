from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import VirtualClock
from engine.errors import DataUnavailable
from engine.market.csv_rows import load_csv
from engine.market.replay import ReplayMarket
from engine.market.source import MarketData
from engine.market.validate import check_rows

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
ETH = SAMPLE / "binance_ETH-BTC_5m.csv"
STEP = 300_000


def eth_rows() -> np.ndarray:
    return np.loadtxt(ETH, delimiter=",", skiprows=1)


def test_discovers_symbols_and_timeframes_from_file_names() -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock())
    assert isinstance(market, MarketData)
    assert {"ETH/BTC", "LTC/BTC", "NXT/BTC"} <= market.symbols
    assert len(market.symbols) == 10
    assert market.timeframes("ETH/BTC") == ("5m",)
    assert ReplayMarket(SAMPLE, "kraken", VirtualClock()).symbols == frozenset()


async def test_load_markets_returns_the_symbols() -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock())
    assert await market.load_markets() == set(market.symbols)


async def test_fetch_returns_rows_open_at_the_clock_including_the_forming_one() -> None:
    rows = eth_rows()
    k = 100
    clock = VirtualClock(start=rows[k, 0] / 1000 + 60)  # one minute into candle k
    market = ReplayMarket(SAMPLE, "binance", clock)
    got = await market.fetch_ohlcv("ETH/BTC", "5m", None, 10)
    assert len(got) == 10
    assert got[-1][0] == rows[k, 0]
    assert np.allclose(got, rows[k - 9 : k + 1])
    clock.advance(240)  # candle k+1 opens
    got = await market.fetch_ohlcv("ETH/BTC", "5m", None, 10)
    assert got[-1][0] == rows[k + 1, 0]


async def test_fetch_from_since_is_inclusive_and_bounded_by_limit_and_clock() -> None:
    rows = eth_rows()
    clock = VirtualClock(start=rows[50, 0] / 1000)
    market = ReplayMarket(SAMPLE, "binance", clock)
    got = await market.fetch_ohlcv("ETH/BTC", "5m", int(rows[10, 0]), 5)
    assert [r[0] for r in got] == list(rows[10:15, 0])
    got = await market.fetch_ohlcv("ETH/BTC", "5m", int(rows[45, 0]), 100)
    assert [r[0] for r in got] == list(rows[45:51, 0])
    assert await market.fetch_ohlcv("ETH/BTC", "5m", int(rows[60, 0]), 5) == []


async def test_before_the_first_candle_there_is_nothing() -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock(start=1_000_000_000))
    assert await market.fetch_ohlcv("ETH/BTC", "5m", None, 10) == []


async def test_resamples_5m_to_15m_aligned_and_aggregated() -> None:
    rows = eth_rows()
    clock = VirtualClock(start=rows[-1, 0] / 1000 + 86400)
    market = ReplayMarket(SAMPLE, "binance", clock)
    got = np.asarray(await market.fetch_ohlcv("ETH/BTC", "15m", None, 5000))
    assert np.all(got[:, 0] % 900_000 == 0)
    assert np.all(np.diff(got[:, 0]) >= 900_000)
    # The file starts mid-bucket: that partial bucket is not served.
    assert rows[0, 0] % 900_000 != 0
    assert got[0, 0] > rows[0, 0]
    for candle in (got[0], got[len(got) // 2], got[-1]):
        part = rows[(rows[:, 0] >= candle[0]) & (rows[:, 0] < candle[0] + 900_000)]
        assert len(part) == 3
        assert candle[1] == part[0, 1]
        assert candle[2] == part[:, 2].max()
        assert candle[3] == part[:, 3].min()
        assert candle[4] == part[-1, 4]
        assert candle[5] == pytest.approx(part[:, 5].sum())


async def test_hourly_is_derived_once_and_kept(tmp_path: Path) -> None:
    shutil.copy(ETH, tmp_path / ETH.name)
    market = ReplayMarket(tmp_path, "binance", VirtualClock(start=1_517_000_000))
    first = await market.fetch_ohlcv("ETH/BTC", "1h", None, 3)
    (tmp_path / ETH.name).unlink()
    assert await market.fetch_ohlcv("ETH/BTC", "1h", None, 3) == first
    assert all(r[0] % 3_600_000 == 0 for r in first)


async def test_missing_series_names_symbol_and_timeframe() -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock())
    with pytest.raises(DataUnavailable, match=r"DOGE/BTC 5m"):
        await market.fetch_ohlcv("DOGE/BTC", "5m", None, 10)
    with pytest.raises(DataUnavailable, match=r"ETH/BTC 7m"):
        await market.fetch_ohlcv("ETH/BTC", "7m", None, 10)
    with pytest.raises(DataUnavailable, match="1m"):
        await market.fetch_ohlcv("ETH/BTC", "1m", None, 10)


def test_time_range_spans_every_file() -> None:
    market = ReplayMarket(SAMPLE, "binance", VirtualClock())
    first, last = market.time_range("5m")
    starts = [
        np.loadtxt(p, delimiter=",", skiprows=1, max_rows=1)[0] for p in SAMPLE.glob("binance_*_5m.csv")
    ]
    assert first == min(starts)
    assert last >= int(eth_rows()[-1, 0])
    first15, _ = market.time_range("15m")
    assert first15 % 900_000 == 0 and first15 >= first
    with pytest.raises(DataUnavailable):
        market.time_range("7m")


def test_bad_rows_are_dropped_with_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "binance_ETH-BTC_5m.csv"
    t = 1_515_560_400_000
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        f"{t},1,1.2,0.9,1.1,5\n"
        f"{t + STEP},1,1.2,0.9,1.1,5\n"
        f"{t + 2 * STEP},1,0.5,0.9,1.1,5\n"
        f"{t + 3 * STEP},1,1.2,0.9,1.1,5\n"
        f"{t + 4 * STEP},abc,1.2,0.9,1.1,5\n"
        f"{t + 5 * STEP},1,1.2,0.9\n"
        f"{t + 3 * STEP},1,1.2,0.9,1.1,5\n"
        f"{t + 6 * STEP},1,1.2,0.9,1.1,5\n"
    )
    with caplog.at_level(logging.WARNING):
        rows = load_csv(path, logging.getLogger("test.replay"))
    assert list(rows[:, 0]) == [t, t + STEP, t + 3 * STEP, t + 6 * STEP]
    for line, reason in ((4, "high_below_body"), (6, "malformed"), (7, "malformed"), (8, "duplicate")):
        assert f"{path}:{line}: row dropped ({reason})" in caplog.text


def test_wrong_header_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "binance_ETH-BTC_5m.csv"
    path.write_text("time,o,h,l,c,v\n1,1,1,1,1,1\n")
    with pytest.raises(DataUnavailable, match="expected header"):
        load_csv(path, logging.getLogger("test.replay"))


def test_the_bundled_day_loads_whole() -> None:
    rows = load_csv(ETH, logging.getLogger("test.replay"))
    assert rows.shape == (5760, 6)
    assert np.array_equal(rows, eth_rows())


_CELL = st.sampled_from(["repr", "plus", "g", "exp", "dot"])


def _cell(x: float, style: str) -> str:
    return {
        "repr": repr(x),
        "plus": "+" + repr(x),  # not JSON: the slower reader takes these files
        "g": f"{x:.6g}",
        "exp": f"{x:.17e}",
        "dot": repr(x).lstrip("0") if x < 1 else repr(x),  # ".5"
    }[style]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(*(st.floats(1e-8, 1e6) for _ in range(4)), st.floats(0, 1e9)), min_size=1, max_size=30
    ),
    styles=st.lists(_CELL, min_size=1, max_size=3),
    crlf=st.booleans(),
    extra=st.booleans(),
    trailing=st.sampled_from(["", "\n", "\n\n"]),
)
def test_every_spelling_of_the_numbers_loads_the_same_rows(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[float, float, float, float, float]],
    styles: list[str],
    crlf: bool,
    extra: bool,
    trailing: str,
) -> None:
    """The quick reader (plain numbers) and the general one must agree to the bit; a file
    either reads fast or falls back, never reads differently."""
    lines, expect = ["timestamp,open,high,low,close,volume" + (",note" if extra else "")], []
    for i, (a, b, up, down, vol) in enumerate(rows):
        o, c = a, b
        hi, lo = max(o, c) + up, max(min(o, c) - down, 0.0)
        t = 1_515_560_400_000 + i * STEP
        vals = [o, hi, lo, c, vol]
        cells = [str(t)] + [_cell(v, styles[(i + k) % len(styles)]) for k, v in enumerate(vals)]
        lines.append(",".join(cells) + (",7" if extra else ""))  # a number: only the count tells
        expect.append([float(t), *(float(x) for x in cells[1:6])])
    path = tmp_path_factory.mktemp("csv") / "binance_ETH-BTC_5m.csv"
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + trailing.encode())
    got = load_csv(path, logging.getLogger("test.replay"))
    want = np.array(expect)
    keep = check_rows(want).keep  # a rounded cell can make a row inconsistent: dropped by both
    assert got.shape == want[keep].shape
    assert np.array_equal(got, want[keep])
