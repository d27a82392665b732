"""The colour-run zigzag harmonic patterns are measured on (spec §4.5).

Price is cut into runs of same-colour candles (up: close ≥ open). Each run, once the next run
has started, proposes one pivot — an up-run its highest high (H), a down-run its lowest low
(L). A proposal opposite in type to the last kept pivot is kept only if it lies at least a
threshold (2·ATR) away from it; one of the same type replaces the last kept pivot when it is
more extreme (the swing simply went further), so kept pivots always alternate H, L, H...

The chain is built in one pass from the start of the data, so in principle it depends on
where the data starts. It forgets that quickly: two chains started at different bars agree
from the first pivot both keep, because every later decision depends only on the last kept
pivot. A warm-up of a few hundred bars before the bars that are reported makes the live
window and a full-history replay give the same pivots (tests/strategies/test_harmonic.py and
test_parity.py check this on the bundled markets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.market.candles import Candles, FloatArray, IntArray


@dataclass(frozen=True, slots=True)
class ZigzagStates:
    """The last `depth` kept pivots after every change of the chain that left at least `depth`.

    Row k describes the chain right after the change made at bar `confirm[k]` (the first bar
    of the run that followed the pivot's run, i.e. the first bar at which the pivot is known).
    Columns run oldest to newest; the newest is the pivot that was just kept or moved.
    """

    confirm: IntArray
    price: FloatArray
    bar: IntArray
    is_high: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.confirm.shape[0])


def run_pivots(candles: Candles) -> tuple[FloatArray, IntArray, npt.NDArray[np.bool_], IntArray]:
    """One proposal per completed colour run: (price, bar of the extreme, is high, confirm bar).

    The run still going at the last bar is left out — its extreme may yet move.
    """
    n = len(candles)
    empty_i = np.empty(0, dtype=np.int64)
    if n < 2:
        return np.empty(0), empty_i, np.empty(0, dtype=bool), empty_i
    up = candles.close >= candles.open
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    boundary[1:] = up[1:] != up[:-1]
    starts = np.flatnonzero(boundary)
    seg_up = up[starts]
    hi = np.maximum.reduceat(candles.high, starts)
    lo = np.minimum.reduceat(candles.low, starts)
    price = np.where(seg_up, hi, lo)
    # The extreme's bar: the first bar of the run touching the run's extreme.
    seg = np.cumsum(boundary) - 1
    own = np.where(seg_up[seg], candles.high, candles.low)
    idx = np.where(own == price[seg], np.arange(n), n)
    bar = np.minimum.reduceat(idx, starts)
    return price[:-1], bar[:-1].astype(np.int64), seg_up[:-1], starts[1:].astype(np.int64)


def zigzag_states(candles: Candles, threshold: FloatArray, depth: int = 5) -> ZigzagStates:
    """Walk the run proposals once, keeping pivots under the distance and alternation rules.

    `threshold[i]` is the minimum distance a new opposite pivot confirmed at bar i must keep
    from the last one (NaN: none can be kept yet). This loop is the only path-dependent part
    and runs once per colour run, O(n).
    """
    price, bar, is_high, confirm = run_pivots(candles)
    th = threshold[confirm]
    kp: list[float] = []
    kb: list[int] = []
    kh: list[bool] = []
    rows_c: list[int] = []
    rows_p: list[list[float]] = []
    rows_b: list[list[int]] = []
    rows_h: list[list[bool]] = []
    for p, b, h, c, t in zip(price.tolist(), bar.tolist(), is_high.tolist(), confirm.tolist(), th.tolist(), strict=True):
        if not kp:
            if not t >= 0.0:  # threshold still undefined (NaN): nothing is known yet
                continue
            kp.append(p)
            kb.append(b)
            kh.append(h)
        elif h == kh[-1]:
            if not (p > kp[-1] if h else p < kp[-1]):
                continue
            kp[-1] = p
            kb[-1] = b
        elif abs(p - kp[-1]) >= t:
            kp.append(p)
            kb.append(b)
            kh.append(h)
        else:
            continue
        if len(kp) >= depth:
            rows_c.append(c)
            rows_p.append(kp[-depth:])
            rows_b.append(kb[-depth:])
            rows_h.append(kh[-depth:])
    m = len(rows_c)
    return ZigzagStates(
        confirm=np.asarray(rows_c, dtype=np.int64),
        price=np.asarray(rows_p, dtype=np.float64).reshape(m, depth),
        bar=np.asarray(rows_b, dtype=np.int64).reshape(m, depth),
        is_high=np.asarray(rows_h, dtype=bool).reshape(m, depth),
    )
