"""`engine download` against the exchange emulator: paging, the CSV format, resume, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.download import csv_name, download_symbol, last_timestamp
from engine.market.replay import ReplayMarket
from tests.market.conftest import ETH, KLINES, Rig
from tests.support.emulator import BinanceEmulator

STEP = 300_000
ROOT = Path(__file__).resolve().parents[2]


def on_disk(path: object) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1)  # type: ignore[arg-type]


async def test_pages_history_into_the_replay_csv_format_and_resumes(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    since = int(ETH[0, 0])
    res = await download_symbol(rig.market, rig.clock, rig.metrics, "ETH/BTC", "5m", since, None, tmp_path)
    path = tmp_path / "binance_ETH-BTC_5m.csv"
    assert res.path == path and path.read_text().startswith("timestamp,open,high,low,close,volume\n")
    rows = on_disk(path)
    # every closed candle up to now, none forming: the clock sits 90 s into candle 3000
    assert res.written == len(rows) == 3000
    assert np.array_equal(rows, ETH[:3000])  # exactly the exchange's data, ms timestamps
    pages = len(rig.emulator.hits(KLINES))
    assert pages == 3  # 1000 candles per request

    # the file is directly usable by replay
    market = ReplayMarket(tmp_path, "binance", rig.clock)
    assert await market.load_markets() == {"ETH/BTC"}

    # resume: 10 candles later only the missing ones are fetched and appended
    rig.clock.advance(10 * 300)
    again = await download_symbol(rig.market, rig.clock, rig.metrics, "ETH/BTC", "5m", since, None, tmp_path)
    assert again.resumed_from == int(ETH[3000, 0]) and again.written == 10
    assert len(rig.emulator.hits(KLINES)) == pages + 1
    assert np.array_equal(on_disk(path), ETH[:3010])
    assert last_timestamp(path) == int(ETH[3009, 0])


async def test_bad_rows_from_the_exchange_never_reach_the_file(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    emu: BinanceEmulator = rig.emulator
    since = int(ETH[2000, 0])
    bad = {int(ETH[2100, 0]): "nan", int(ETH[2200, 0]): "duplicate", int(ETH[2300, 0]): "negative_volume"}
    emu.faults.candles.update(bad)  # type: ignore[arg-type]
    res = await download_symbol(rig.market, rig.clock, rig.metrics, "ETH/BTC", "5m", since, None, tmp_path)
    rows = on_disk(tmp_path / csv_name("binance", "ETH/BTC", "5m"))
    assert (
        res.written == len(rows) == 1000 - 2
    )  # the NaN and negative-volume rows dropped, the duplicate once
    assert np.isfinite(rows).all() and (np.diff(rows[:, 0]) > 0).all() and (rows[:, 5] >= 0).all()
    assert int(ETH[2100, 0]) not in set(rows[:, 0].astype(np.int64))


async def test_until_bounds_the_range_and_names_follow_the_convention(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    since, until = int(ETH[100, 0]), int(ETH[150, 0])
    res = await download_symbol(rig.market, rig.clock, rig.metrics, "ETH/BTC", "5m", since, until, tmp_path)
    rows = on_disk(res.path)
    assert res.written == 50 and rows[0, 0] == since and rows[-1, 0] == until - STEP
    assert csv_name("binance", "BTC/USDT:USDT", "1h") == "binance_BTC-USDT_1h.csv"


async def test_engine_download_command_against_the_emulator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import sys
    from datetime import UTC, datetime, timedelta

    from engine.clock import RealClock

    async with BinanceEmulator(RealClock()) as emu:
        cfg = tmp_path / "cfg"
        cfg.mkdir()
        (cfg / "engine.toml").write_text(f'[market]\nsource = "exchange"\napi_url = "{emu.url}"\n')
        since = (datetime.now(UTC) - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
        args = [
            sys.executable,
            "-m",
            "engine.cli",
            "download",
            "--config",
            str(cfg),
            "--symbols",
            "BTC/USDT",
            "--timeframe",
            "5m",
            "--since",
            since,
            "--out",
            str(tmp_path / "out"),
        ]

        async def run() -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode is not None
            return proc.returncode, out.decode() + err.decode()

        code, text = await run()
        assert code == 0, text
        rows = on_disk(tmp_path / "out" / "binance_BTC-USDT_5m.csv")
        assert 70 <= len(rows) <= 73 and (np.diff(rows[:, 0]) == STEP).all()
        code, text = await run()
        assert code == 0 and "0 candles written" in text and "(resumed)" in text
        args[args.index("BTC/USDT")] = "NOPE/USDT"
        code, text = await run()
        assert code == 2 and "NOPE/USDT" in text
