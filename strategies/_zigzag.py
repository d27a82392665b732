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

    The run still going at the last bar is left out — its extreme may yet move. Runs alternate
    colour, so proposals alternate high and low.
    """
    n = len(candles)
    empty_i = np.empty(0, dtype=np.int64)
    if n < 2:
        return np.empty(0), empty_i, np.empty(0, dtype=bool), empty_i
    up = candles.close >= candles.open
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(up[1:], up[:-1], out=boundary[1:])
    starts = np.flatnonzero(boundary)
    seg_up = up[starts]
    # Each bar's candidate extreme for its run, lows negated so one max finds highs and lows.
    own = np.where(up, candles.high, -candles.low)
    extreme = np.maximum.reduceat(own, starts)
    # The extreme's bar: the first bar of the run touching the run's extreme.
    at = np.flatnonzero(own == np.repeat(extreme, np.diff(starts, append=n)))
    run = np.cumsum(boundary)[at]
    first = np.empty(at.shape[0], dtype=bool)
    first[0] = True
    np.not_equal(run[1:], run[:-1], out=first[1:])
    price = np.where(seg_up, extreme, -extreme)
    return price[:-1], at[first][:-1].astype(np.int64), seg_up[:-1], starts[1:].astype(np.int64)


def zigzag_states(candles: Candles, threshold: FloatArray, depth: int = 5) -> ZigzagStates:
    """Walk the run proposals once, keeping pivots under the distance and alternation rules.

    `threshold[i]` is the minimum distance a new opposite pivot confirmed at bar i must keep
    from the last one (NaN: none can be kept yet).
    """
    price, bar, is_high, confirm = run_pivots(candles)
    kept, before = _walk(np.where(is_high, price, -price).tolist(), threshold[confirm].tolist())
    # The chain after each change is read back through the links.
    links = np.array(before, dtype=np.int64)  # links[-1] = -1 ends every chain
    chain = np.empty((len(kept), depth), dtype=np.int64)
    chain[:, depth - 1] = np.arange(len(kept))
    for col in range(depth - 2, -1, -1):
        chain[:, col] = links[chain[:, col + 1]]
    full = chain[:, 0] >= 0
    prop = np.array(kept, dtype=np.int64)[chain[full]]
    return ZigzagStates(
        confirm=confirm[prop[:, depth - 1]],
        price=price[prop],
        bar=bar[prop],
        is_high=is_high[prop],
    )


def _walk(signed: list[float], threshold: list[float]) -> tuple[list[int], list[int]]:
    """Every pivot ever kept (appended, or moved to a more extreme run), as a proposal index,
    and for each the position in that list of the pivot kept before it (-1: none), with a
    final -1 that ends every chain.

    `signed` holds the proposals' prices with lows negated, so "more extreme" is "greater"
    for both types and |price - last| is |signed + last_signed| for opposite types. This loop
    is the only path-dependent part and runs once per colour run, O(n); proposals alternate
    high and low, so whether one has the type of the last kept pivot just flips each step.
    """
    m = len(signed)
    start = 0
    while start < m and not threshold[start] >= 0.0:  # undefined (NaN): nothing can be kept yet
        start += 1
    if start == m:
        return [], [-1]
    kept, before = [start], [-1]
    # last kept: its position in `kept`, its link, its signed price
    last, link, last_q = 0, -1, signed[start]
    same = True  # flipped before use: the proposal after a kept one has the other type
    for j in range(start + 1, m):
        same = not same
        q = signed[j]
        if same:
            if not q > last_q:
                continue
            # a more extreme pivot of the same type replaces the last: same link
        elif abs(q + last_q) >= threshold[j]:
            link = last
        else:
            continue
        kept.append(j)
        before.append(link)
        last, last_q, same = last + 1, q, True
    before.append(-1)
    return kept, before
