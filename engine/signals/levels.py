"""The shared TP/SL calculator and its gates (spec §1, §2).

Every strategy's levels come from here so the rules a user relies on — stop on the losing
side, targets ordered away from entry, a minimum reward:risk — are enforced in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from engine.signals.model import Direction, Levels

FloatArray = npt.NDArray[np.float64]

RR_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class RiskSettings:
    """Effective TP/SL settings for one plugin instance (global ← plugin default ← config)."""

    sl_mult: float = 1.5
    tp1_mult: float = 2.0
    tp2_mult: float = 3.0
    tp3_mult: float | None = 4.5
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
    gate: bool = True,
) -> Levels:
    """Apply every gate of spec §1 and the engine's ordering rule; never raises.

    The side and ordering rules always apply; `gate=False` skips the stop-distance and R:R
    gates for strategies whose spec says "no calculator gate".
    """
    # Runs once per candidate, thousands of times in a replay: plain float arithmetic only.
    tps = tuple(map(float, take_profits))
    entry, stop_loss = float(entry), float(stop_loss)
    risk = abs(entry - stop_loss)
    n = len(tps)
    rr1 = abs(tps[0] - entry) / risk if n and risk > 0 else 0.0
    rr2 = abs(tps[1] - entry) / risk if n > 1 and risk > 0 else None
    reason = ""
    # a NaN or infinity anywhere makes the sum non-finite
    if not math.isfinite(entry + stop_loss + sum(tps)) or entry <= 0:
        reason = "non-finite or non-positive price"
    elif not n:
        reason = "no take-profit"
    else:
        s = 1.0 if direction is Direction.LONG else -1.0
        if s * (entry - stop_loss) <= 0:
            reason = "stop-loss on the wrong side of entry"
        elif s * (tps[0] - entry) <= 0:
            reason = "TP1 on the wrong side of entry"
        elif n > 1 and not _ordered(tps, s):
            reason = "take-profits not strictly ordered away from entry"
        elif gate:
            sl_pct = risk / entry * 100.0
            if sl_pct > max_sl_percent + RR_TOLERANCE:
                reason = f"stop {sl_pct:.2f}% away exceeds max {max_sl_percent}%"
            elif sl_pct < min_sl_percent - RR_TOLERANCE:
                reason = f"stop {sl_pct:.2f}% away is under min {min_sl_percent}%"
            elif rr1 < min_rr - RR_TOLERANCE:
                reason = f"R:R {rr1:.2f} below minimum {min_rr}"
    return Levels(entry, stop_loss, tps, risk, rr1, rr2, not reason, reason)


def _ordered(tps: tuple[float, ...], s: float) -> bool:
    prev = tps[0]
    for t in tps[1:]:
        if s * (t - prev) <= 0:
            return False
        prev = t
    return True


class TpSlCalculator:
    """Levels from a risk setting; methods are added as strategies need them (spec §1)."""

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings

    def _validate(
        self, direction: Direction, entry: float, sl: float, tps: Sequence[float], *, gate: bool = True
    ) -> Levels:
        st = self.settings
        return validate_levels(
            direction,
            entry,
            sl,
            tps,
            min_rr=st.min_rr,
            max_sl_percent=st.max_sl_percent,
            min_sl_percent=st.min_sl_percent,
            gate=gate,
        )

    def _mults(self) -> list[float]:
        st = self.settings
        return [st.tp1_mult, st.tp2_mult] + ([st.tp3_mult] if st.tp3_mult is not None else [])

    def _invalid(self, entry: float, reason: str) -> Levels:
        return Levels(entry, math.nan, (), 0.0, 0.0, None, False, reason)

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
        sl = custom_sl if custom_sl is not None else entry - s * atr * (1.0 + b) * st.sl_mult
        tps = [entry + s * atr * m for m in self._mults()]
        return self._validate(direction, entry, sl, tps)

    def percentage(self, direction: Direction, entry: float, pct: float = 1.0) -> Levels:
        """PERCENTAGE method: SL `pct`% from entry, TP_k at that distance times mult_k."""
        s = direction.sign
        dist = entry * pct / 100.0
        return self._validate(
            direction, entry, entry - s * dist, [entry + s * dist * m for m in self._mults()]
        )

    def _structure_stop(
        self, direction: Direction, swing_low: float | None, swing_high: float | None
    ) -> float | None:
        b = self.settings.sl_buffer_percent / 100.0
        if direction is Direction.LONG:
            return None if swing_low is None else swing_low * (1.0 - b)
        return None if swing_high is None else swing_high * (1.0 + b)

    def structure(
        self,
        direction: Direction,
        entry: float,
        *,
        swing_low: float | None = None,
        swing_high: float | None = None,
    ) -> Levels:
        """STRUCTURE method: SL beyond the swing (LONG swing low, SHORT swing high) by the buffer;
        TP_k at entry ± risk·mult_k. A missing swing makes the levels invalid."""
        sl = self._structure_stop(direction, swing_low, swing_high)
        if sl is None:
            return self._invalid(entry, "structure method needs the swing on the stop side")
        risk = abs(entry - sl)
        s = direction.sign
        return self._validate(direction, entry, sl, [entry + s * risk * m for m in self._mults()])

    def fibonacci(
        self,
        direction: Direction,
        entry: float,
        *,
        swing_low: float | None,
        swing_high: float | None,
        extensions: Sequence[float] = (0.618, 1.0, 1.618),
    ) -> Levels:
        """FIBONACCI method: SL as STRUCTURE; TP_k at entry ± R·ext_k with R the swing range."""
        if swing_low is None or swing_high is None:
            return self._invalid(entry, "fibonacci method needs both swings")
        sl = self._structure_stop(direction, swing_low, swing_high)
        assert sl is not None
        rng = abs(swing_high - swing_low)
        s = direction.sign
        return self._validate(direction, entry, sl, [entry + s * rng * e for e in extensions])

    def fixed_r(
        self,
        direction: Direction,
        entry: float,
        stop_loss: float,
        r_multiples: Sequence[float],
        *,
        unit: float | None = None,
        gate: bool = True,
    ) -> Levels:
        """Fixed-R: the strategy's own stop, TP_k at entry ± unit·r_k (unit defaults to the risk)."""
        u = abs(entry - stop_loss) if unit is None else unit
        s = direction.sign
        return self._validate(
            direction, entry, stop_loss, [entry + s * u * r for r in r_multiples], gate=gate
        )

    def explicit(
        self,
        direction: Direction,
        entry: float,
        stop_loss: float,
        take_profits: Sequence[float],
        *,
        gate: bool = True,
    ) -> Levels:
        """Levels computed entirely by the strategy's own formula, still held to the central rules."""
        return self._validate(direction, entry, stop_loss, take_profits, gate=gate)


# -- columns ------------------------------------------------------------------------------
# The same formulas over arrays, for strategies that answer with a CandidateBatch. Each one
# repeats its scalar twin's operations in the same order, so both give bit-identical floats
# (tests/signals/test_levels_arrays.py holds them to that).


class LevelArrays(NamedTuple):
    """Stops (rows,) and take-profits (rows, k) of many candidates; NaN marks what is missing."""

    stop_loss: FloatArray
    take_profits: FloatArray


def validate_arrays(
    sign: npt.NDArray[np.int8],
    entry: FloatArray,
    stop_loss: FloatArray,
    take_profits: FloatArray,
    gate: npt.NDArray[np.bool_],
    settings: RiskSettings,
) -> npt.NDArray[np.bool_]:
    """`validate_levels(...).valid` of every row at once; trailing NaN targets are absent ones."""
    n, k = take_profits.shape if take_profits.ndim == 2 else (entry.shape[0], 0)
    s = sign.astype(np.float64)
    present = ~np.isnan(take_profits)
    # a target counts when it or any later one is not NaN (only trailing NaNs are padding)
    counted = np.flip(np.logical_or.accumulate(np.flip(present, axis=1), axis=1), axis=1)
    total = np.zeros(n)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for j in range(k):
            total = total + np.where(counted[:, j], take_profits[:, j], 0.0)
        ok = np.isfinite(entry + stop_loss + total) & (entry > 0)
        ok &= counted[:, 0] if k else np.zeros(n, dtype=bool)
        if not k:
            return ok
        ok &= s * (entry - stop_loss) > 0
        ok &= s * (take_profits[:, 0] - entry) > 0
        for j in range(1, k):
            ok &= ~counted[:, j] | (s * (take_profits[:, j] - take_profits[:, j - 1]) > 0)
        risk = np.abs(entry - stop_loss)
        rr1 = np.where(risk > 0, np.abs(take_profits[:, 0] - entry) / np.where(risk > 0, risk, 1.0), 0.0)
        sl_pct = risk / entry * 100.0
        gated = (
            (sl_pct > settings.max_sl_percent + RR_TOLERANCE)
            | (sl_pct < settings.min_sl_percent - RR_TOLERANCE)
            | (rr1 < settings.min_rr - RR_TOLERANCE)
        )
    out: npt.NDArray[np.bool_] = ok & ~(gate & gated)
    return out


def _column(values: Sequence[FloatArray], n: int) -> FloatArray:
    return np.stack(values, axis=1) if values else np.empty((n, 0))


class ArrayLevels:
    """The calculator's methods over arrays of candidates (`sign` is +1 LONG / -1 SHORT)."""

    def __init__(self, settings: RiskSettings) -> None:
        self.settings = settings

    def _mults(self) -> list[float]:
        st = self.settings
        return [st.tp1_mult, st.tp2_mult] + ([st.tp3_mult] if st.tp3_mult is not None else [])

    def atr(
        self,
        sign: npt.NDArray[np.int8],
        entry: FloatArray,
        atr: FloatArray,
        *,
        custom_sl: FloatArray | None = None,
    ) -> LevelArrays:
        """ATR method; a missing or non-positive ATR falls back to 1% of entry (as the scalar one)."""
        st = self.settings
        with np.errstate(invalid="ignore"):
            atr = np.where(np.isfinite(atr) & (atr > 0), atr, 0.01 * entry)
        s = sign.astype(np.float64)
        b = st.sl_buffer_percent / 100.0
        sl = custom_sl if custom_sl is not None else entry - s * atr * (1.0 + b) * st.sl_mult
        return LevelArrays(sl, _column([entry + s * atr * m for m in self._mults()], entry.shape[0]))

    def percentage(self, sign: npt.NDArray[np.int8], entry: FloatArray, pct: float = 1.0) -> LevelArrays:
        """PERCENTAGE method: SL `pct`% from entry, TP_k at that distance times mult_k."""
        s = sign.astype(np.float64)
        dist = entry * pct / 100.0
        return LevelArrays(
            entry - s * dist, _column([entry + s * dist * m for m in self._mults()], entry.shape[0])
        )

    def _structure_stop(self, sign: npt.NDArray[np.int8], swing: FloatArray) -> FloatArray:
        b = self.settings.sl_buffer_percent / 100.0
        out: FloatArray = np.where(sign > 0, swing * (1.0 - b), swing * (1.0 + b))
        return out

    def structure(self, sign: npt.NDArray[np.int8], entry: FloatArray, swing: FloatArray) -> LevelArrays:
        """STRUCTURE method; `swing` is the swing low of LONG rows and the swing high of SHORT
        rows, NaN where there is none (such rows are invalid)."""
        sl = self._structure_stop(sign, swing)
        risk = np.abs(entry - sl)
        s = sign.astype(np.float64)
        return LevelArrays(sl, _column([entry + s * risk * m for m in self._mults()], entry.shape[0]))

    def fibonacci(
        self,
        sign: npt.NDArray[np.int8],
        entry: FloatArray,
        swing_low: FloatArray,
        swing_high: FloatArray,
        extensions: Sequence[float] = (0.618, 1.0, 1.618),
    ) -> LevelArrays:
        """FIBONACCI method: SL as STRUCTURE; TP_k at entry ± R·ext_k with R the swing range."""
        sl = self._structure_stop(sign, np.where(sign > 0, swing_low, swing_high))
        rng = np.abs(swing_high - swing_low)
        s = sign.astype(np.float64)
        return LevelArrays(sl, _column([entry + s * rng * e for e in extensions], entry.shape[0]))

    def fixed_r(
        self,
        sign: npt.NDArray[np.int8],
        entry: FloatArray,
        stop_loss: FloatArray,
        r_multiples: Sequence[float],
        *,
        unit: FloatArray | None = None,
    ) -> LevelArrays:
        """Fixed-R: the strategy's own stop, TP_k at entry ± unit·r_k (unit defaults to the risk)."""
        u = np.abs(entry - stop_loss) if unit is None else unit
        s = sign.astype(np.float64)
        return LevelArrays(stop_loss, _column([entry + s * u * r for r in r_multiples], entry.shape[0]))
