"""The Binance emulator the market tests, the benchmark and demos talk to with the real ccxt client.

`BinanceEmulator` (server.py) serves spot and USDⓈ-M futures over HTTP on 127.0.0.1 from
`MarketBook` data (markets.py), meters weight like Binance (weights.py) and misbehaves on
demand (faults.py). `python -m tests.support.emulator --port 9000` runs one by hand.
"""

from tests.support.emulator.faults import CandleFault, Faults
from tests.support.emulator.markets import SAMPLE_DIR, MarketBook, market_id, synthetic_symbols
from tests.support.emulator.server import SPOT_DEFAULT, SWAP_DEFAULT, USED_WEIGHT, BinanceEmulator, Hit

__all__ = [
    "SAMPLE_DIR",
    "SPOT_DEFAULT",
    "SWAP_DEFAULT",
    "USED_WEIGHT",
    "BinanceEmulator",
    "CandleFault",
    "Faults",
    "Hit",
    "MarketBook",
    "market_id",
    "synthetic_symbols",
]
