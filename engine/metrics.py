"""Every Prometheus metric of the engine, named in one place.

One `Metrics` object per engine, on its own registry (not the global one), so several engines
in one test process never collide and `/metrics` shows exactly this engine's figures.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """The engine's metrics; components receive this object and update the fields they own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        # plugins
        self.plugin_runs = Counter(
            "engine_plugin_runs_total", "Strategy evaluations, by instance.", ["plugin"], registry=r
        )
        self.plugin_errors = Counter(
            "engine_plugin_errors_total",
            "Strategy evaluations that raised (isolated as StrategyError).",
            ["plugin"],
            registry=r,
        )
        self.plugin_quarantined = Gauge(
            "engine_plugin_quarantined", "1 while a plugin instance is quarantined.", ["plugin"], registry=r
        )
        self.plugin_duration = Histogram(
            "engine_plugin_duration_seconds",
            "Wall time of one strategy evaluation.",
            ["plugin"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
            registry=r,
        )
        self.plugin_load_errors = Counter(
            "engine_plugin_load_errors_total", "Plugins that failed to import.", ["plugin"], registry=r
        )
        # signals
        self.signals = Counter(
            "engine_signals_total",
            "Signals emitted, by strategy and direction.",
            ["strategy", "direction"],
            registry=r,
        )
        self.signals_rejected = Counter(
            "engine_signals_rejected_total",
            "Candidates not emitted, by strategy and reason (invalid_levels, cooldown).",
            ["strategy", "reason"],
            registry=r,
        )
        self.consensus = Counter(
            "engine_consensus_total", "Consensus alerts, by kind (new, update).", ["kind"], registry=r
        )
        self.outcomes = Counter(
            "engine_outcomes_total",
            "Closed signals, by strategy and result (TP1, TP2, TP3, SL, EXPIRED).",
            ["strategy", "result"],
            registry=r,
        )
        self.win_rate = Gauge(
            "engine_strategy_win_rate",
            "Share of closed signals that reached TP1 or better.",
            ["strategy"],
            registry=r,
        )
        self.avg_r = Gauge(
            "engine_strategy_avg_r", "Mean R multiple of closed signals.", ["strategy"], registry=r
        )
        self.open_signals = Gauge("engine_open_signals", "Signals being tracked.", registry=r)
        self.consensus_weight = Gauge(
            "engine_consensus_weight",
            "Current consensus weight (adaptive when enabled).",
            ["strategy"],
            registry=r,
        )
        # market
        self.exchange_requests = Counter(
            "engine_exchange_requests_total",
            "Requests sent to an exchange, by endpoint kind and outcome.",
            ["exchange", "kind", "outcome"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "engine_limiter_wait_seconds",
            "Time a request waited for the token bucket.",
            ["exchange"],
            buckets=(0.0, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0),
            registry=r,
        )
        self.breaker_state = Gauge(
            "engine_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["exchange"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "engine_breaker_transitions_total",
            "Breaker state changes, by new state.",
            ["exchange", "state"],
            registry=r,
        )
        self.exchange_paused = Gauge(
            "engine_exchange_paused", "1 while a Retry-After pause is in force.", ["exchange"], registry=r
        )
        self.exchange_pauses = Counter(
            "engine_exchange_pauses_total",
            "Pauses imposed by an exchange, by reason (rate_limited: 429, banned: 418).",
            ["exchange", "reason"],
            registry=r,
        )
        self.exchange_used_weight = Gauge(
            "engine_exchange_used_weight",
            "Request weight the exchange reports used in its current window (used-weight header).",
            ["exchange"],
            registry=r,
        )
        self.snapshot_cache_hits = Counter(
            "engine_snapshot_cache_hits_total",
            "Ticker, trades, order book and funding requests served without a fetch of their own.",
            ["exchange", "kind"],
            registry=r,
        )
        self.snapshot_rows_dropped = Counter(
            "engine_snapshot_rows_dropped_total",
            "Trades and order book levels dropped by validation (non-finite or negative).",
            ["exchange", "kind"],
            registry=r,
        )
        self.candles_reordered = Counter(
            "engine_candles_reordered_total",
            "Candles an exchange sent out of time order (ccxt sorts them; counted so the fault shows).",
            ["exchange"],
            registry=r,
        )
        self.cache_hits = Counter(
            "engine_ohlcv_cache_hits_total",
            "OHLCV requests served without a fetch.",
            ["exchange"],
            registry=r,
        )
        self.candles_dropped = Counter(
            "engine_candles_dropped_total",
            "Candles dropped by validation, by reason.",
            ["exchange", "reason"],
            registry=r,
        )
        # sinks and state
        self.sink_sent = Counter(
            "engine_sink_messages_total",
            "Messages handed to a sink, by outcome.",
            ["sink", "outcome"],
            registry=r,
        )
        self.sink_retries = Counter(
            "engine_sink_retries_total",
            "Failed delivery attempts that were retried, by sink and reason "
            "(rate_limited, server_error, network, timeout).",
            ["sink", "reason"],
            registry=r,
        )
        self.sink_redelivered = Counter(
            "engine_sink_redelivered_total",
            "Dead letters retried at start-up, by sink and outcome (ok, dead_letter, kept).",
            ["sink", "outcome"],
            registry=r,
        )
        self.state_saves = Counter(
            "engine_state_saves_total", "State snapshots written, by outcome.", ["outcome"], registry=r
        )
        self.reloads = Counter(
            "engine_reloads_total", "Config reloads, by outcome (success, failure).", ["outcome"], registry=r
        )
        # engine
        self.ticks = Counter("engine_ticks_total", "Scheduler ticks run.", registry=r)
        self.tick_duration = Histogram(
            "engine_tick_duration_seconds",
            "Wall time of one scheduler tick.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
            registry=r,
        )
        self.heartbeat = Gauge(
            "engine_heartbeat_timestamp_seconds",
            "Engine clock time of the scheduler's last heartbeat.",
            registry=r,
        )

    def render(self) -> bytes:
        """Prometheus text exposition of this engine's registry."""
        return generate_latest(self.registry)

    def set_breaker(self, exchange: str, state: str) -> None:
        """Publish a breaker state as a number (closed 0, half_open 1, open 2) so it can be alerted on."""
        self.breaker_state.labels(exchange).set(BREAKER_STATES[state])
