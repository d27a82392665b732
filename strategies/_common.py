"""Helpers shared by the built-in strategies.

Kept deliberately small: the ATR switch the spec requires for parity checks against the
originals, and the rule that ties a strategy's emitted bars to its `lookback`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import talib

from engine.market.candles import Candles, FloatArray

AtrMode = Literal["wilder", "sma"]

ATR_MODE_HELP = (
    '"wilder" = TA-Lib ATR (engine default); "sma" = plain mean of the last true ranges, '
    "as the originals computed it (spec §0), for parity checks"
)

WARMUP_HELP = (
    "extra bars before the spec's data window so recursive indicators (Wilder ADX/ATR, EMA, "
    "SAR) forget where the series started; the live window and replay then agree to float "
    "precision"
)


def atr(candles: Candles, period: int, mode: AtrMode) -> FloatArray:
    """ATR of every bar under the spec's `atr_mode` switch.

    The originals averaged the last `period` true ranges; the engine defaults to Wilder's
    smoothing. Both come from TA-Lib so neither is hand-written.
    """
    h, lo, c = candles.high, candles.low, candles.close
    if mode == "sma":
        return np.asarray(talib.SMA(talib.TRANGE(h, lo, c), timeperiod=period), dtype=np.float64)
    return np.asarray(talib.ATR(h, lo, c, timeperiod=period), dtype=np.float64)


def bars_from(mask: npt.NDArray[np.bool_], start: int) -> list[int]:
    """Indices where `mask` holds, from `start` on.

    Bars before `lookback - 1` have less history than the live path would hand the strategy,
    so reporting them would break live/replay parity; callers pass `lookback - 1`.
    """
    if start >= mask.shape[0]:
        return []
    return [int(i) for i in np.flatnonzero(mask[start:]) + start]
