"""The shared TP/SL calculator and its gates (spec §1, §2).

Every strategy's levels come from here so the rules a user relies on — stop on the losing
side, targets ordered away from entry, a minimum reward:risk — are enforced in one place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from engine.signals.model import Direction, Levels

RR_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """Effective TP/SL settings for one plugin instance (global ← plugin default ← config)."""

    sl_atr: float = 1.5
    tp1_atr: float = 2.0
    tp2_atr: float = 3.0
    tp3_atr: float | None = 4.5
    min_rr: float = 1.3
    sl_buffer_percent: float = 0.75
    max_sl_percent: float = 5.0
    min_sl_percent: float = 0.2

    def merged(self, overrides: Mapping[str, float | None]) -> RiskSettings:
        """A copy with the given fields replaced; unknown names are a programming error."""
        return replace(self, **dict(overrides))  # type: ignore[arg-type]


def validate_levels(
    direction: Direction,
    entry: float,
    stop_loss: float,
    take_profits: Sequence[float],
    *,
    min_rr: float,
    max_sl_percent: float,
    min_sl_percent: float,
) -> Levels:
    """Apply every gate of spec §1 and the engine's ordering rule; never raises."""
    tps = tuple(float(t) for t in take_profits)
    risk = abs(entry - stop_loss)
    rr1 = abs(tps[0] - entry) / risk if tps and risk > 0 else 0.0
    rr2 = abs(tps[1] - entry) / risk if len(tps) > 1 and risk > 0 else None

    def verdict(valid: bool, reason: str = "") -> Levels:
        return Levels(entry, stop_loss, tps, risk, rr1, rr2, valid, reason)

    values = (entry, stop_loss, *tps)
    if not all(math.isfinite(v) for v in values) or entry <= 0:
        return verdict(False, "non-finite or non-positive price")
    if not tps:
        return verdict(False, "no take-profit")
    s = direction.sign
    if s * (entry - stop_loss) <= 0:
        return verdict(False, "stop-loss on the wrong side of entry")
    if s * (tps[0] - entry) <= 0:
        return verdict(False, "TP1 on the wrong side of entry")
    if any(s * (b - a) <= 0 for a, b in itertools.pairwise(tps)):
        return verdict(False, "take-profits not strictly ordered away from entry")
    sl_pct = risk / entry * 100.0
    if sl_pct > max_sl_percent + RR_TOLERANCE:
        return verdict(False, f"stop {sl_pct:.2f}% away exceeds max {max_sl_percent}%")
    if sl_pct < min_sl_percent - RR_TOLERANCE:
        return verdict(False, f"stop {sl_pct:.2f}% away is under min {min_sl_percent}%")
    if rr1 < min_rr - RR_TOLERANCE:
        return verdict(False, f"R:R {rr1:.2f} below minimum {min_rr}")
    return verdict(True)


class TpSlCalculator:
    """Levels from a risk setting; methods are added as strategies need them (spec §1)."""

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings

    def _validate(self, direction: Direction, entry: float, sl: float, tps: Sequence[float]) -> Levels:
        st = self.settings
        return validate_levels(
            direction,
            entry,
            sl,
            tps,
            min_rr=st.min_rr,
            max_sl_percent=st.max_sl_percent,
            min_sl_percent=st.min_sl_percent,
        )

    def atr(
        self,
        direction: Direction,
        entry: float,
        atr: float,
        *,
        custom_sl: float | None = None,
    ) -> Levels:
        """ATR method: SL at `custom_sl` or entry ∓ ATR·(1+buffer)·sl_mult, TP_k at entry ± ATR·mult_k.

        A missing or non-positive ATR falls back to 1% of entry, as the original did.
        """
        st = self.settings
        if not math.isfinite(atr) or atr <= 0:
            atr = 0.01 * entry
        s = direction.sign
        b = st.sl_buffer_percent / 100.0
        sl = custom_sl if custom_sl is not None else entry - s * atr * (1.0 + b) * st.sl_atr
        mults = [st.tp1_atr, st.tp2_atr] + ([st.tp3_atr] if st.tp3_atr is not None else [])
        tps = [entry + s * atr * m for m in mults]
        return self._validate(direction, entry, sl, tps)
