"""Fakes shared by tests: strategies with scripted behaviour, a candle factory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from engine.market.candles import Candles
from engine.plugins.base import DataNeeds, Strategy, StrategyParams, Window
from engine.signals.model import Candidate, Direction


def make_candles(
    closes: Sequence[float], *, start_ms: int = 1_515_560_100_000, step_ms: int = 300_000
) -> Candles:
    """Candles whose open equals the previous close; high/low 0.5% around the body."""
    c = np.asarray(closes, dtype=np.float64)
    o = np.concatenate([[c[0]], c[:-1]])
    hi = np.maximum(o, c) * 1.005
    lo = np.minimum(o, c) * 0.995
    ts = start_ms + step_ms * np.arange(len(c), dtype=np.int64)
    return Candles(ts, o, hi, lo, c, np.full(len(c), 100.0))


class EveryBarParams(StrategyParams):
    direction: str = Field("LONG", description="Direction proposed at every bar.")
    lookback: int = Field(5, ge=1)


class EveryBarStrategy(Strategy[EveryBarParams]):
    """Proposes a valid signal at every bar: makes cooldown and pipeline behaviour visible."""

    name = "every_bar"
    Params = EveryBarParams
    DEFAULT_COOLDOWN = 0

    @property
    def lookback(self) -> int:
        return self.params.lookback

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        d = Direction(self.params.direction)
        out = []
        for i in range(len(window.candles)):
            entry = float(window.candles.close[i])
            out.append(Candidate(i, d, self.levels.atr(d, entry, entry * 0.01), rationale=("every bar",)))
        return out


class BrokenParams(StrategyParams):
    pass


class BrokenStrategy(Strategy[BrokenParams]):
    """Raises on every call, like a plugin with a bug."""

    name = "broken"
    Params = BrokenParams

    @property
    def lookback(self) -> int:
        return 3

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        raise ZeroDivisionError("plugin bug")


class RecordingParams(StrategyParams):
    pass


class FramesAndTickerStrategy(Strategy[RecordingParams]):
    """Declares a higher timeframe and a ticker; remembers the windows it was handed."""

    name = "frames_and_ticker"
    Params = RecordingParams

    def on_load(self) -> None:
        self.seen: list[Window] = []

    @property
    def lookback(self) -> int:
        return 3

    def needs(self) -> DataNeeds:
        return DataNeeds(timeframes=(self.timeframe, "15m"), lookback=3, ticker=True)

    def evaluate(self, window: Window) -> Sequence[Candidate]:
        self.seen.append(window)
        assert window.ticker is not None
        last = len(window.candles) - 1
        entry = window.ticker.last
        return [Candidate(last, Direction.LONG, self.levels.atr(Direction.LONG, entry, entry * 0.01))]
