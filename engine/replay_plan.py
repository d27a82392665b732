"""Where a paced replay of CSV files starts and ends, and which instances it can feed.

`engine run` on `source = "replay"` and `engine replay` share these rules, so both start at the
same candle and skip the same strategies for the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from engine.clock import Clock, RealClock
from engine.config import LoadedConfig
from engine.errors import EngineError
from engine.market.replay import ReplayMarket
from engine.plugins.instance import PluginInstance
from engine.timeframes import timeframe_seconds


class DeferredClock:
    """A clock whose implementation is chosen after the data it depends on is known.

    Replay needs the CSVs' time range to place its virtual clock, and the replay source needs
    a clock; this breaks that knot without either knowing about the other.
    """

    def __init__(self) -> None:
        self.inner: Clock = RealClock()

    def now(self) -> float:
        """Clock.now of the clock chosen so far."""
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        """Clock.sleep on the clock chosen so far."""
        await self.inner.sleep(seconds)

    async def sleep_until(self, when: float) -> None:
        """Clock.sleep_until on the clock chosen so far."""
        await self.inner.sleep_until(when)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """A replay's span in epoch seconds: the first full window to the last candle close."""

    start: float
    end: float


def history_start(market: ReplayMarket, inst: PluginInstance) -> tuple[float, float]:
    """(first time the instance has full windows on every timeframe, last candle close) in epoch s."""
    needs = inst.strategy.needs()
    first, last = 0.0, float("inf")
    for tf in needs.timeframes:
        tf_s = timeframe_seconds(tf)
        first_ms, last_ms = market.time_range(tf)
        first = max(first, first_ms / 1000 + (needs.lookback + 1) * tf_s)
        last = min(last, last_ms / 1000 + tf_s)
    return first, last


def plan_replay(config: LoadedConfig, market: ReplayMarket, instances: list[PluginInstance]) -> ReplayPlan:
    """Start as soon as some instance has a full window (the others stay silent until theirs
    fill, as they would live); end after the last candle closes."""
    spans = [history_start(market, inst) for inst in instances]
    if not spans:
        raise EngineError("replay: no strategy instance can run on these files")
    start = min(s for s, _ in spans)
    end = max(e for _, e in spans)
    if config.settings.market.replay_start:
        ts = datetime.fromisoformat(config.settings.market.replay_start)
        start = ts.timestamp() if ts.tzinfo else ts.replace(tzinfo=UTC).timestamp()
    return ReplayPlan(start=start, end=end)


def unreplayable_reason(market: ReplayMarket, inst: PluginInstance) -> str:
    """Why the files cannot feed this instance ("" when they can): CSV files hold candles only,
    and an instance needs `lookback` bars of every timeframe it reads."""
    needs = inst.strategy.needs()
    missing = [
        kind
        for kind, wanted in (
            ("ticker", needs.ticker),
            ("trades", needs.trades > 0),
            ("order book", needs.order_book > 0),
            ("funding rate", needs.funding),
        )
        if wanted
    ]
    if missing:
        return f"replay files have no {', '.join(missing)} data"
    try:
        first, last = history_start(market, inst)
    except EngineError as exc:
        return str(exc)
    if first >= last:
        return f"the files hold less history than its lookback of {needs.lookback} bars"
    return ""
