"""The market data source a config asks for.

`[market] source = "exchange"` gets the rate-limited ccxt client (`ExchangeMarket`); "replay"
gets the CSV files of `data_dir` on the engine's clock (`ReplayMarket`, the offline demo).
"""

from __future__ import annotations

from engine.clock import Clock
from engine.config import EngineSettings, resolve_path
from engine.market.exchange import ExchangeMarket
from engine.market.replay import ReplayMarket
from engine.market.source import MarketData
from engine.metrics import Metrics


def market_source(st: EngineSettings, clock: Clock, metrics: Metrics) -> MarketData:
    """The source `st.market` describes, on `clock`."""
    if st.market.source == "replay":
        return ReplayMarket(resolve_path(st.market.data_dir), st.market.exchange, clock)
    return exchange_market(st, clock, metrics)


def exchange_market(st: EngineSettings, clock: Clock, metrics: Metrics) -> ExchangeMarket:
    """The exchange `st.market` names, whatever its `source` (`engine download` always wants it)."""
    m = st.market
    return ExchangeMarket(
        m.exchange,
        m.type,
        clock,
        metrics,
        api_url=m.api_url,
        rate_budget=m.rate_budget,
        timeout_s=m.timeout_seconds,
        max_retries=m.max_retries,
    )
