"""Market gateway under load (issue 3 figures): real ccxt against the Binance emulator over HTTP.

14 plugins watch the same 50 symbols on 5m, 15m and 1h; at every candle close each due plugin
asks for its own window of every symbol, concurrently, as independent plugins would. The clock
is virtual and jumps from close to close, so two hours of closes take seconds; every request is
still a real HTTP round trip through the limiter, breaker and ccxt.

Printed: klines requests per (symbol, timeframe) per closed candle after warm-up (target 1.00:
coalescing and the cache turn 14 callers into one request), HTTP 429 and 418 answers (target 0),
the limiter's own cost per acquire, and the process's peak RSS (target < 200 MB; the emulator
runs in the same process, so this is an upper bound for the engine).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from dataclasses import dataclass

import ccxt.async_support as ccxt_async

from engine.clock import VirtualClock
from engine.market.exchange import ExchangeMarket
from engine.market.gateway import MarketGateway
from engine.market.limiter import TokenBucket
from engine.metrics import Metrics
from engine.timeframes import timeframe_seconds
from tests.support.emulator import BinanceEmulator, synthetic_symbols

SYMBOLS = 50
CLOSES = 24  # of the 5m timeframe: two hours, so 8 closes of 15m and 2 of 1h
CLOSE_DELAY_S = 2.0
START = 1_700_006_400.0  # a whole hour: every timeframe is due at the first tick
KLINES = "/api/v3/klines"
ACQUIRES = 100_000


@dataclass(frozen=True, slots=True)
class Plugin:
    timeframe: str
    lookback: int


PLUGINS = (
    *(Plugin("5m", lb) for lb in (60, 100, 120, 150, 200, 250, 300, 400, 500)),
    *(Plugin("15m", lb) for lb in (50, 100, 200)),
    *(Plugin("1h", lb) for lb in (100, 200)),
)


@dataclass(frozen=True, slots=True)
class Figures:
    """What one run measured; `closed` and `requests` count per timeframe, after warm-up."""

    closed: Counter[str]
    requests: Counter[str]
    warm_up: int
    status_429: int
    status_418: int
    calls: int
    wall_s: float


def due(plugin: Plugin, now: float) -> bool:
    return int(now - CLOSE_DELAY_S) % timeframe_seconds(plugin.timeframe) == 0


async def tick(gateway: MarketGateway, symbols: tuple[str, ...], now: float) -> Counter[str]:
    """Every due plugin asks for every symbol at once; returns closed series per timeframe."""
    calls = [(p, s) for p in PLUGINS if due(p, now) for s in symbols]
    results = await asyncio.gather(*(gateway.candles(s, p.timeframe, p.lookback) for p, s in calls))
    for (plugin, _), candles in zip(calls, results, strict=True):
        if len(candles) != plugin.lookback:
            raise RuntimeError(f"{plugin} got {len(candles)} candles")
    return Counter(tf for tf in {p.timeframe for p, _ in calls} for _ in symbols)


async def run_gateway() -> Figures:
    clock = VirtualClock(start=START + CLOSE_DELAY_S, auto=True)
    metrics = Metrics()
    symbols = synthetic_symbols(SYMBOLS)
    async with BinanceEmulator(clock, symbols, ()) as emulator:
        client = ccxt_async.binance({"timeout_on_exit": 0})
        market = ExchangeMarket("binance", "spot", clock, metrics, api_url=emulator.url, client=client)
        gateway = MarketGateway(market, clock, metrics)
        started = time.perf_counter()
        await gateway.start()
        for plugin in PLUGINS:
            for symbol in symbols:
                gateway.subscribe(symbol, plugin.timeframe, plugin.lookback)
        await tick(gateway, symbols, clock.now())
        warm_up = emulator.requests[KLINES]
        closed: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        for n in range(1, CLOSES + 1):
            clock.set(START + n * 300 + CLOSE_DELAY_S)
            before = len(emulator.log)
            closed += await tick(gateway, symbols, clock.now())
            requests += Counter(h.query["interval"] for h in emulator.log[before:] if h.path == KLINES)
        wall = time.perf_counter() - started
        await gateway.close()
        return Figures(
            closed=closed,
            requests=requests,
            warm_up=warm_up,
            status_429=emulator.statuses[429],
            status_418=emulator.statuses[418],
            calls=sum(closed[tf] * sum(p.timeframe == tf for p in PLUGINS) for tf in closed),
            wall_s=wall,
        )


async def limiter_overhead_us() -> float:
    """Mean cost of one acquire that never waits: the limiter's own price on every request."""
    bucket = TokenBucket(1e12, 1e12, VirtualClock(start=START), Metrics(), "bench")
    for _ in range(1000):
        await bucket.acquire(1.0)
    started = time.perf_counter()
    for _ in range(ACQUIRES):
        await bucket.acquire(1.0)
    return (time.perf_counter() - started) / ACQUIRES * 1e6


def main() -> None:
    figures = asyncio.run(run_gateway())
    overhead = asyncio.run(limiter_overhead_us())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    closed, requests = figures.closed, figures.requests
    per_close = sum(requests.values()) / sum(closed.values())
    rows = [("klines requests per (symbol, timeframe) per closed candle", f"{per_close:.2f}", "1.00")]
    for tf in sorted(closed, key=timeframe_seconds):
        n = sum(p.timeframe == tf for p in PLUGINS)
        label = f"  {tf}: {n} plugins, {closed[tf] // SYMBOLS} closes x {SYMBOLS} symbols"
        rows.append((label, f"{requests[tf] / closed[tf]:.2f}", "1.00"))
    rows += [
        ("gateway.candles calls served after warm-up", f"{figures.calls:,}", ""),
        ("klines requests at warm-up (one per series)", f"{figures.warm_up}", f"{SYMBOLS * len(closed)}"),
        ("HTTP 429 / 418 answers", f"{figures.status_429} / {figures.status_418}", "0 / 0"),
        ("limiter overhead per acquire", f"{overhead:.1f} us", ""),
        ("peak RSS (engine + emulator, one process)", f"{peak_mb:.0f} MB", "< 200 MB"),
        ("wall time", f"{figures.wall_s:.1f} s", ""),
    ]
    print(f"market gateway: {len(PLUGINS)} plugins x {SYMBOLS} symbols, {CLOSES} closes of 5m, real ccxt")
    width = max(len(label) for label, _, _ in rows)
    print(f"{'figure':<{width}}  {'value':>12}  target")
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>12}  {target}".rstrip())


if __name__ == "__main__":
    main()
