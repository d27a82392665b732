"""Strategy cost: live tick cost and full-history evaluation throughput (issue 4 figures).

- live tick: every OHLCV strategy evaluated on its live window (its `lookback` bars) for 100
  symbols, as one candle close would cause; CPU seconds per close (target < 0.3 s).
- full history: each strategy called once over each bundled market's whole history;
  candle·strategy evaluations per second (target >= 2 M/s).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.market.candles import Candles
from engine.plugins.base import AnyStrategy, Window
from engine.plugins.registry import Registry
from engine.signals.levels import RiskSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "sample"


def load_markets() -> dict[str, Candles]:
    out = {}
    for path in sorted(DATA.glob("binance_*_5m.csv")):
        rows = np.loadtxt(path, delimiter=",", skiprows=1)
        out[path.stem.split("_")[1].replace("-", "/")] = Candles.from_rows(rows)
    return out


def strategies() -> list[AnyStrategy]:
    reg = Registry.discover()
    found = []
    for name in reg.names():
        cls = reg.load(name)
        strat = cls(cls.Params(), RiskSettings().merged(cls.RISK), cls.DEFAULT_TIMEFRAME)
        if strat.needs().ohlcv_only and strat.needs().timeframes == (strat.timeframe,):
            found.append(strat)
    return found


def main() -> None:
    markets = load_markets()
    strats = strategies()
    names = ", ".join(type(s).name for s in strats)
    print(f"strategies ({len(strats)}): {names}")
    series = list(markets.values())
    # live tick: 100 symbols (the 10 bundled markets, each at 10 different points in history)
    windows: list[tuple[AnyStrategy, Window]] = []
    for s in strats:
        for k in range(100):
            c = series[k % len(series)]
            end = len(c) - 1 - (k // len(series)) * 37
            windows.append((s, Window("X/Y", s.timeframe, c.slice(end - s.lookback + 1, end + 1))))
    passes = []
    for _ in range(5):  # the median of five closes: one pass is at the mercy of a busy machine
        t0 = time.process_time()
        for s, w in windows:
            s.evaluate(w)
        passes.append(time.process_time() - t0)
    live = sorted(passes)[2]
    print(
        f"live tick, {len(strats)} strategies x 100 symbols: {live:.3f} CPU s per candle close"
        f" (median of 5; target < 0.3)"
    )
    # full history
    bars = 0
    t0 = time.perf_counter()
    for s in strats:
        for c in series:
            s.evaluate(Window("X/Y", s.timeframe, c))
            bars += len(c)
    dt = time.perf_counter() - t0
    print(
        f"full history: {bars:,} candle·strategy evaluations in {dt:.3f} s"
        f" = {bars / dt / 1e6:.2f} M/s (target >= 2)"
    )
    for s in strats:
        t0 = time.perf_counter()
        n = 0
        for c in series:
            s.evaluate(Window("X/Y", s.timeframe, c))
            n += len(c)
        print(f"  {type(s).name:<14} {n / (time.perf_counter() - t0) / 1e6:8.2f} M/s")


if __name__ == "__main__":
    main()
