"""Circuit breaker for one exchange.

When an exchange is down, every tick would otherwise spend its whole timeout per request,
for every symbol, and then retry. After a run of transport failures the breaker refuses calls
at once for a while, then lets a single probe through to find out whether it is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from engine.clock import Clock
from engine.errors import CircuitOpen, TransportError
from engine.metrics import Metrics

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """closed → open after `failure_threshold` consecutive transport failures; open → half-open
    after `reset_timeout` seconds; half-open lets exactly one probe through at a time.

    Only `TransportError` says anything about the exchange's health. A rejected request
    (`RequestError`), a 429, or a cancelled call neither counts as a failure nor resets the
    count: the exchange answered, but not in a way that proves the path works for others.
    """

    def __init__(
        self,
        exchange: str,
        clock: Clock,
        metrics: Metrics,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        self._exchange = exchange
        self._clock = clock
        self._metrics = metrics
        self._threshold = failure_threshold
        self._reset_timeout = reset_timeout
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        metrics.set_breaker(exchange, "closed")

    @property
    def state(self) -> State:
        """Current state; an open breaker whose timeout has elapsed reads (and becomes) half-open."""
        if self._state == "open" and self._clock.now() >= self.retry_at:
            self._move("half_open")
        return self._state

    @property
    def retry_at(self) -> float:
        """When an open breaker will let a probe through."""
        return self._opened_at + self._reset_timeout

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run one call under the breaker: refused with CircuitOpen, or its outcome recorded."""
        probe = self._admit()
        try:
            yield
        except TransportError:
            self._failure(probe)
            raise
        except BaseException:
            if probe:
                self._probing = False
            raise
        self._success()

    def _admit(self) -> bool:
        """Raise CircuitOpen unless a call may go out now; True if this call is the half-open probe."""
        state = self.state
        if state == "open":
            raise CircuitOpen(self._exchange, self.retry_at)
        if state == "half_open":
            if self._probing:
                raise CircuitOpen(self._exchange, self._clock.now())
            self._probing = True
            return True
        return False

    def _success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._state != "closed":
            self._move("closed")

    def _failure(self, probe: bool) -> None:
        self._failures += 1
        if probe:
            self._probing = False
        if (probe and self._state == "half_open") or (
            self._state == "closed" and self._failures >= self._threshold
        ):
            self._opened_at = self._clock.now()
            self._move("open")

    def _move(self, state: State) -> None:
        self._state = state
        self._metrics.breaker_transitions.labels(self._exchange, state).inc()
        self._metrics.set_breaker(self._exchange, state)
