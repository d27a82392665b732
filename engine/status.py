"""What /health and /ready say about a running engine: its `StatusProbe` (engine/server.py).

Liveness is about progress: the heartbeat must be fresh and the scheduler task alive, or a
restart would help. Readiness is about doing the job right now, with every reason it cannot:
shutting down, markets not loaded, the state directory not writable, the circuit breaker
open, or the exchange having banned this IP.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.app import Engine

HEALTH_STALE_SECONDS = 60.0


class EngineStatus:
    """The engine's StatusProbe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: false once the heartbeat is stale or the scheduler task crashed."""
        e = self.engine
        age = time.monotonic() - e.heartbeat
        task = e.scheduler_task
        crashed = task is not None and task.done() and not task.cancelled() and task.exception() is not None
        ok = age < HEALTH_STALE_SECONDS and not crashed
        return ok, {"heartbeat_age_seconds": round(age, 3), "scheduler_crashed": crashed}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness, with every reason (stopping, markets, state dir, breaker, ban) it is not."""
        e = self.engine
        reasons: list[str] = []
        if e.stopping:
            reasons.append("shutting down")
        if not e.markets_loaded:
            reasons.append("markets not loaded")
        if not e.store.writable():
            reasons.append("state directory not writable")
        market = e.gateway.status()
        if market.get("breaker") == "open":
            reasons.append("circuit breaker open for every exchange")
        if market.get("pause_reason") == "banned":
            reasons.append(f"exchange banned this IP; paused for {market.get('pause_remaining_s')} s")
        details: dict[str, Any] = {
            "ready": not reasons,
            "reasons": reasons,
            "market": market,
            "ticks": e.scheduler.ticks,
            "last_tick": e.scheduler.last_tick,
            "quarantined": sorted(i.name for i in e.instances if i.quarantined),
            "skipped": e.skipped,
            "instances": len(e.instances),
            "replay_done": e.replay_done,
            "last_reload": e.last_reload,
        }
        return not reasons, details
