"""The contract between the engine and a strategy plugin.

A strategy is a pure function of market data: it gets a window of *closed* candles and
returns candidates for every bar of that window — a plain list of Candidates, or (much
faster over long histories) one CandidateBatch of columns built with `self.batch`. The live
path keeps the candidates at the last bar; replay calls it once over a whole history. That
only works if the answer at bar t depends on nothing after t and nothing older than
`lookback` bars before t — the parity test in tests/strategies checks exactly that for every
built-in strategy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from engine.market.candles import Candles
from engine.market.snapshots import Funding, OrderBook, Ticker, Trades
from engine.signals.batch import CandidateBatch, Describe, no_detail
from engine.signals.levels import ArrayLevels, LevelArrays, RiskSettings, TpSlCalculator
from engine.signals.model import Candidate


class StrategyParams(BaseModel):
    """Base for each plugin's parameter model; unknown keys are config errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=StrategyParams)


@dataclass(frozen=True, slots=True)
class DataNeeds:
    """What the engine must fetch before calling `evaluate`.

    `lookback` is the number of closed bars of each timeframe the strategy is handed (and the
    horizon its answer may depend on). The non-OHLCV kinds are declared here so the gateway
    can fetch them through the same limiter; replay skips strategies whose needs the files
    cannot meet, saying why.
    """

    timeframes: tuple[str, ...]
    lookback: int
    ticker: bool = False
    trades: int = 0
    order_book: int = 0
    funding: bool = False

    @property
    def ohlcv_only(self) -> bool:
        """True when candles alone suffice, which is all CSV replay can serve."""
        return not (self.ticker or self.trades or self.order_book or self.funding)


@dataclass(frozen=True, slots=True)
class Window:
    """The read-only data handed to one `evaluate` call.

    `candles` is the primary timeframe; `frames` holds every timeframe of `needs()` (the
    primary included) for multi-timeframe strategies — each frame's last candle is the last
    one closed at the time of the call. The snapshot fields are filled only when declared in
    `needs()` and are None otherwise.
    """

    symbol: str
    timeframe: str
    candles: Candles
    frames: Mapping[str, Candles] = field(default_factory=dict)
    ticker: Ticker | None = None
    trades: Trades | None = None
    order_book: OrderBook | None = None
    funding: Funding | None = None


class Strategy(ABC, Generic[P]):
    """Base class of every strategy plugin.

    Subclasses set `name`, `Params`, and optionally `RISK` (the spec's per-strategy TP/SL
    overrides), `DEFAULT_TIMEFRAME` and `DEFAULT_COOLDOWN`, and implement `evaluate`.
    """

    INTERFACE_VERSION: ClassVar[int] = 1
    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]]
    RISK: ClassVar[Mapping[str, float | None]] = {}
    DEFAULT_TIMEFRAME: ClassVar[str] = "5m"
    DEFAULT_COOLDOWN: ClassVar[int] = 1800

    def __init__(self, params: P, risk: RiskSettings, timeframe: str) -> None:
        self.params: P = params
        self.risk = risk
        self.timeframe = timeframe
        self.levels = TpSlCalculator(risk)
        self.arrays = ArrayLevels(risk)
        self.on_load()

    # -- the contract ---------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, window: Window) -> Sequence[Candidate]:
        """Candidates for every bar of `window.candles` (each tagged with its bar index):
        a list of Candidates or a CandidateBatch (see `batch`)."""

    def batch(
        self,
        bar: npt.ArrayLike,
        sign: npt.ArrayLike,
        entry: npt.ArrayLike,
        levels: LevelArrays,
        *,
        describe: Describe = no_detail,
        gate: bool | npt.ArrayLike = True,
        confidence: npt.ArrayLike | None = None,
        sub_keys: Sequence[str] | None = None,
    ) -> CandidateBatch:
        """Candidates as columns: `sign` +1 LONG / -1 SHORT, `levels` from `self.arrays`.

        `describe(i)` returns row i's (rationale, metadata); the engine calls it only for
        candidates it emits, which is what makes a year-long replay cheap.
        """
        return CandidateBatch.build(
            self.risk,
            bar,
            sign,
            entry,
            levels,
            describe=describe,
            gate=gate,
            confidence=confidence,
            sub_keys=sub_keys,
        )

    @property
    def lookback(self) -> int:
        """Closed bars of the primary timeframe this strategy needs; override when params say."""
        return 100

    def needs(self) -> DataNeeds:
        """Data to fetch before each call; default: `lookback` bars of the primary timeframe."""
        return DataNeeds(timeframes=(self.timeframe,), lookback=self.lookback)

    # -- no-op hooks --------------------------------------------------------------------------

    def on_load(self) -> None:
        """Called once after construction; precompute constants from params here."""

    def describe(self) -> dict[str, Any]:
        """Extra facts shown by `engine plugins`; the default shows nothing extra."""
        return {}


AnyStrategy = Strategy[Any]
"""A strategy whose parameter model is not known statically (the registry's view)."""
