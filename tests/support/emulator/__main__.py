"""`python -m tests.support.emulator --port 9000`: the Binance emulator by hand, for demos.

It runs on the real clock. The bundled CSV markets (January 2018) are moved forward by whole
weeks so that their first candle lies two days in the past: a live engine pointed at the
emulator (`market.api_url`) then finds a warm-up history and weeks of candles still to close.
Synthetic USDT markets (spot and perpetual) exist at any time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from engine.clock import RealClock
from tests.support.emulator.markets import SAMPLE_DIR, WEEK_MS, MarketBook
from tests.support.emulator.server import BinanceEmulator
from tests.support.emulator.weights import FAPI_LIMIT, SPOT_LIMIT

USDT_BASES = ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "DOT", "LINK", "LTC", "AVAX")
_WARM_UP_MS = 2 * 86_400_000


def csv_shift(first_ms: int, now_ms: int) -> int:
    """Whole weeks that put `first_ms` at least two days before `now_ms` (and no earlier than that)."""
    return max(0, (now_ms - _WARM_UP_MS - first_ms) // WEEK_MS * WEEK_MS)


async def serve(port: int, weight_limit: int, fapi_weight_limit: int) -> None:
    clock = RealClock()
    probe = MarketBook(clock, SAMPLE_DIR, seed=7)
    first_ms, _ = probe.csv_range_ms()
    shift = csv_shift(first_ms, int(clock.now() * 1000))
    spot = (*sorted(probe.csv_symbols), *(f"{b}/USDT" for b in USDT_BASES))
    swap = tuple(f"{b}/USDT:USDT" for b in USDT_BASES)
    emulator = BinanceEmulator(
        clock,
        spot,
        swap,
        weight_limit=weight_limit,
        fapi_weight_limit=fapi_weight_limit,
        csv_shift_ms=shift,
        port=port,
    )
    url = await emulator.start()
    print(f"Binance emulator on {url}", flush=True)
    print(f"  spot (/api/v3): {len(spot)} markets, {weight_limit} weight/min: {', '.join(spot)}")
    print(f"  USDⓈ-M (/fapi/v1): {len(swap)} perpetuals, {fapi_weight_limit} weight/min")
    print(f"  CSV markets moved forward {shift // WEEK_MS} weeks; point the engine at it with")
    print(f"  ENGINE__MARKET__SOURCE=exchange ENGINE__MARKET__API_URL={url} .venv/bin/engine run", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--weight-limit", type=int, default=SPOT_LIMIT, help="spot weight per minute")
    parser.add_argument("--fapi-weight-limit", type=int, default=FAPI_LIMIT, help="futures weight per minute")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.weight_limit, args.fapi_weight_limit))


if __name__ == "__main__":
    main()
