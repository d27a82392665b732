"""Fixtures shared across test packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.market.candles import Candles

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"


@pytest.fixture(scope="session")
def sample_candles() -> Callable[[str], Candles]:
    """Loader of the bundled real 5m candles by pair, e.g. `sample_candles("ETH-BTC")`.

    Cached per session because several parametrised tests read the same file; callers must
    not write into the arrays.
    """
    cache: dict[str, Candles] = {}

    def load(pair: str) -> Candles:
        if pair not in cache:
            path = SAMPLE_DIR / f"binance_{pair}_5m.csv"
            cache[pair] = Candles.from_rows(np.loadtxt(path, delimiter=",", skiprows=1))
        return cache[pair]

    return load
