"""Builds the object graph from config and owns start-up and shutdown order.

Start: lock state → load state → serve /health → load markets → schedule.
Stop (first SIGINT/SIGTERM): /ready turns 503, no new ticks, the running tick gets a grace
period, sinks drain, state is saved, clients close, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from engine.clock import Clock, PacedClock, RealClock, VirtualClock
from engine.config import LoadedConfig, resolve_path
from engine.errors import EngineError
from engine.market.build import market_source
from engine.market.gateway import MarketGateway
from engine.market.replay import ReplayMarket
from engine.market.source import MarketData
from engine.metrics import Metrics
from engine.pipeline import Pipeline
from engine.plugins.instance import PluginInstance
from engine.plugins.registry import Registry
from engine.plugins.runner import SafeRunner
from engine.reload import apply_reload
from engine.replay_plan import DeferredClock, ReplayPlan, plan_replay, unreplayable_reason
from engine.scheduler import Scheduler
from engine.secret_files import admin_token, check_state_permissions
from engine.server import HealthServer
from engine.signals.builder import SignalBuilder
from engine.signals.consensus import ConsensusAggregator
from engine.signals.cooldown import Cooldowns
from engine.signals.outcomes import OutcomeTracker
from engine.sinks.build import build_sinks
from engine.sinks.dispatch import DeadLetters, Dispatcher
from engine.sinks.journal import Journal
from engine.sinks.redeliver import redeliver
from engine.state import EngineState, StateStore
from engine.stats import consensus_settings
from engine.status import EngineStatus

log = logging.getLogger("engine")

HEARTBEAT_SECONDS = 5.0
STATE_SAVE_SECONDS = 30.0


class Engine:
    """The running engine: one per process."""

    def __init__(
        self,
        config: LoadedConfig,
        instances: list[PluginInstance],
        *,
        state_dir: Path | None = None,
        stdout: IO[str] | None = None,
        source: MarketData | None = None,
        clock: Clock | None = None,
        registry: Registry | None = None,
    ) -> None:
        st = config.settings
        self.config = config
        self.registry = registry or Registry.discover()
        self.instances = instances
        self.metrics = Metrics()
        self.state_dir = state_dir or resolve_path(st.engine.state_dir)
        self.store = StateStore(self.state_dir)
        self._deferred = DeferredClock()
        self.clock: Clock = clock or self._deferred
        self.replay_plan: ReplayPlan | None = None
        self.replay_market: ReplayMarket | None = None
        if source is None:
            source = market_source(st, self.clock, self.metrics)
            if isinstance(source, ReplayMarket):
                self.replay_market = source
        self.gateway = MarketGateway(source, self.clock, self.metrics)
        self.cooldowns = Cooldowns()
        self.runner = SafeRunner(self.metrics, quarantine_after=st.engine.quarantine_after)
        self.builder = SignalBuilder(self.cooldowns, self.metrics)
        exp = st.outcomes.expiry_hours
        self.tracker = OutcomeTracker(expiry_seconds=None if exp is None else exp * 3600)
        cs = st.consensus
        self.consensus = (
            ConsensusAggregator(
                consensus_settings(config),
                cs.weights,
                {i.name: i.plugin for i in instances},
                hits=self._hits,
            )
            if cs.enabled
            else None
        )
        self.journal = Journal(
            self.state_dir / st.sinks.journal.file,
            max_bytes=st.sinks.journal.max_bytes,
            backups=st.sinks.journal.backups,
        )
        # Sinks wait on real time even in a replay: a Telegram retry_after is seconds of the
        # real world, not of the replay's accelerated clock.
        sinks = build_sinks(st, RealClock(), self.metrics, stdout)
        self.dead_letter_path = self.state_dir / "dead-letter.jsonl"
        self.dispatcher = Dispatcher(
            sinks,
            self.metrics,
            DeadLetters(self.dead_letter_path, clock=self.clock),
            queue_size=st.sinks.queue_size,
        )
        self.pipeline = Pipeline(
            exchange=st.market.exchange,
            market=self.gateway,
            runner=self.runner,
            builder=self.builder,
            consensus=self.consensus,
            journal=self.journal,
            publisher=self.dispatcher,
            tracker=self.tracker,
            metrics=self.metrics,
        )
        close_delay = 0.0 if st.market.source == "replay" else st.engine.close_delay_seconds
        self.scheduler = Scheduler(instances, self.clock, self._tick, close_delay=close_delay)
        self.server = (
            HealthServer(
                st.server.host,
                st.server.port,
                EngineStatus(self),
                self.metrics,
                admin_token=admin_token(st),
                on_reload=self.reload,
            )
            if st.server.enabled
            else None
        )
        self.skipped: dict[str, str] = {}
        self.markets_loaded = False
        self.stopping = False
        self.replay_done = False
        self.heartbeat = time.monotonic()  # the last beat (monotonic s): /health reads it
        self._stop_requests = 0
        self._saved_changes = -1
        self._saved_at = 0.0
        self._stop_event = asyncio.Event()
        self.scheduler_task: asyncio.Task[None] | None = None  # /health: crashed or not
        self._tick_lock = asyncio.Lock()
        self.last_reload: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGINT/SIGTERM: finish the current tick, then shut down; a second request exits at once."""
        self._stop_requests += 1
        if self._stop_requests > 1:
            log.warning("second stop signal: exiting immediately")
            os._exit(1)
        log.info("stop requested: finishing the current tick, then shutting down")
        self.stopping = True
        self.scheduler.stop()
        self._stop_event.set()

    def install_signal_handlers(self) -> None:
        """Stop on SIGINT/SIGTERM and reload on SIGHUP; must run inside the event loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    def _reload_soon(self) -> None:
        self._reload_task = asyncio.ensure_future(self.reload())

    async def reload(self) -> dict[str, Any]:
        """Re-read the config directory and apply the difference; keep running the old config
        (and say why) when the new one is invalid."""
        async with self._tick_lock:
            result = apply_reload(self)
        self.last_reload = result
        self.metrics.reloads.labels("success" if result["ok"] else "failure").inc()
        return result

    def prepare(self, instances: list[PluginInstance]) -> None:
        """Drop symbols the exchange does not list and subscribe the gateway to the rest."""
        known = self.gateway.markets
        for inst in instances:
            missing = [s for s in inst.symbols if s not in known]
            if missing:
                log.error(
                    "%s: unknown symbols on %s skipped: %s",
                    inst.name,
                    self.config.settings.market.exchange,
                    ", ".join(missing),
                )
                inst.symbols = tuple(s for s in inst.symbols if s in known)
            for sym in inst.symbols:
                for tf in inst.strategy.needs().timeframes:
                    self.gateway.subscribe(sym, tf, inst.lookback)

    async def run(self) -> None:
        """Run until stopped; raises StateLocked if another engine owns the state dir."""
        self.store.lock()
        try:
            check_state_permissions(self.state_dir)
            self._restore(self.store.load())
            self.dispatcher.start()
            redelivery = asyncio.create_task(
                redeliver(self.dead_letter_path, self.dispatcher), name="redeliver"
            )
            heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
            if self.server is not None:
                await self.server.start()
                log.info("health server on http://%s:%d", self.server.host, self.server.bound_port)
            try:
                await self._startup()
                if not self.stopping:
                    self.scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
                    watch = None
                    if self.replay_market is None and self.config.settings.outcomes.ticker_seconds > 0:
                        watch = asyncio.create_task(self._watch_prices(), name="price-watch")
                    await self._stop_event.wait()
                    if watch is not None:
                        watch.cancel()
            finally:
                await self._shutdown()
                redelivery.cancel()
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        finally:
            self.store.unlock()

    async def _startup(self) -> None:
        st = self.config.settings
        if self.replay_market is not None:
            self._skip_unreplayable()
            self.replay_plan = plan_replay(self.config, self.replay_market, self.instances)
            speed = st.market.speed
            self._deferred.inner = (
                PacedClock(self.replay_plan.start, speed)
                if speed > 0
                else VirtualClock(self.replay_plan.start, auto=True)
            )
            self.scheduler = Scheduler(self.instances, self.clock, self._tick, close_delay=0.0)
            log.info(
                "replay from %s to %s at %s",
                datetime.fromtimestamp(self.replay_plan.start).isoformat(),
                datetime.fromtimestamp(self.replay_plan.end).isoformat(),
                f"{speed:g}x" if speed > 0 else "full speed",
            )
        backoff = 1.0
        real = RealClock()
        while not self.stopping:
            try:
                await self.gateway.start()
                break
            except EngineError as exc:
                log.error("could not load markets (%s); retrying in %.0fs", exc, backoff)
                sleeper = asyncio.ensure_future(real.sleep(backoff))
                stopper = asyncio.ensure_future(self._stop_event.wait())
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                stopper.cancel()
                backoff = min(backoff * 2, 60.0)
        if self.stopping:
            return
        self.prepare(self.instances)
        self.markets_loaded = True
        log.info(
            "engine started: %d strategy instances, %d markets watched",
            len(self.instances),
            len({s for i in self.instances for s in i.symbols}),
        )

    def _skip_unreplayable(self) -> None:
        """Drop instances the files cannot feed, with the reason logged and shown in /ready."""
        assert self.replay_market is not None
        keep: list[PluginInstance] = []
        for inst in self.instances:
            reason = unreplayable_reason(self.replay_market, inst)
            if reason:
                self.skipped[inst.name] = reason
                log.warning("%s: skipped in replay: %s", inst.name, reason)
            else:
                keep.append(inst)
        self.instances = keep

    async def _tick(self, now: float, due: list[PluginInstance]) -> None:
        started = time.perf_counter()
        async with self._tick_lock:
            await self.pipeline.tick(now, due)
        self.metrics.ticks.inc()
        self.metrics.tick_duration.observe(time.perf_counter() - started)
        self.metrics.heartbeat.set(now)
        # Snapshot when something a restart must not repeat or lose happened (a signal, an
        # outcome), and at least every STATE_SAVE_SECONDS otherwise: an fsync per tick would
        # dominate a fast replay and buys nothing, since re-walking quiet candles is idempotent.
        if (
            self.pipeline.changes != self._saved_changes
            or time.monotonic() - self._saved_at > STATE_SAVE_SECONDS
        ):
            self._save_state()
        if self.replay_plan is not None and now >= self.replay_plan.end:
            self.replay_done = True
            log.info("replay reached the end of the data")
            self.scheduler.stop()
            if self.config.settings.market.exit_at_end:
                self.request_stop()

    async def _watch_prices(self) -> None:
        """Between candle closes, check open signals against the ticker (live only), so a hit
        target or stop is reported within `outcomes.ticker_seconds` instead of at the close."""
        while not self.stopping:
            await self.clock.sleep(self.config.settings.outcomes.ticker_seconds)
            for sym in sorted({p.symbol for p in self.tracker.open.values()}):
                try:
                    ticker = await self.gateway.ticker(sym)
                except EngineError as exc:
                    log.debug("no ticker for %s: %s", sym, exc)
                    continue
                async with self._tick_lock:
                    at_ms = int(self.clock.now() * 1000)
                    for ev in self.tracker.update_price(sym, ticker.last, at_ms):
                        self.pipeline.emit_outcome(ev)

    async def _beat(self) -> None:
        real = RealClock()
        while True:
            self.heartbeat = time.monotonic()
            await real.sleep(HEARTBEAT_SECONDS)

    async def _shutdown(self) -> None:
        self.stopping = True
        self.scheduler.stop()
        grace = self.config.settings.engine.shutdown_grace_seconds
        if self.scheduler_task is not None:
            done, _ = await asyncio.wait({self.scheduler_task}, timeout=grace)
            if not done:
                log.warning("tick still running after %.0fs grace; cancelling it", grace)
                self.scheduler_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.scheduler_task
        await self.dispatcher.close(grace=grace)
        self._save_state()
        self.journal.close()
        with contextlib.suppress(Exception):
            await self.gateway.close()
        if self.server is not None:
            await self.server.stop()
        log.info("engine stopped cleanly")

    # -- state -------------------------------------------------------------------------------

    def _hits(self, strategy: str) -> tuple[int, int]:
        st = self.tracker.stats.get(strategy)
        return (st.wins, st.closed) if st is not None else (0, 0)

    def _restore(self, state: EngineState) -> None:
        self.cooldowns = Cooldowns(state.cooldowns)
        self.builder.cooldowns = self.cooldowns
        self.tracker.restore(state.open_signals, state.outcomes.get("stats", {}))
        if self.consensus is not None and state.consensus:
            self.consensus.restore(state.consensus)
        if state.cooldowns or state.open_signals:
            log.info(
                "restored %d cooldowns and %d open signals", len(state.cooldowns), len(self.tracker.open)
            )

    def _save_state(self) -> None:
        self.cooldowns.prune(self.clock.now() - 1)
        positions, stats = self.tracker.snapshot()
        self.metrics.open_signals.set(len(positions))
        if self.consensus is not None:
            for name in {i.name for i in self.instances} | set(stats):
                self.metrics.consensus_weight.labels(name).set(self.consensus.weight(name))
        doc = EngineState(
            saved_at=time.time(),
            cooldowns=self.cooldowns.snapshot(),
            open_signals=positions,
            consensus=self.consensus.snapshot() if self.consensus is not None else {},
            outcomes={"stats": stats},
        )
        try:
            self.store.save(doc)
            self._saved_changes = self.pipeline.changes
            self._saved_at = time.monotonic()
            self.metrics.state_saves.labels("ok").inc()
        except EngineError as exc:
            self.metrics.state_saves.labels("error").inc()
            log.error("state not saved: %s", exc)
