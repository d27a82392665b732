"""Bounded retries with exponential backoff and full jitter.

Full jitter (a uniform delay in [0, base·2^n]) spreads the retries of many callers that failed
together, so they do not all come back at the same instant and fail together again. Only
`RetryableError` is retried; a refusal that is our own decision (breaker open, exchange pause)
is passed straight up, because waiting inside a tick for it would only stall the scheduler.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.clock import Clock
from engine.errors import CircuitOpen, ExchangePaused, RateLimited, RetryableError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` extra attempts; delays are capped at `max_delay` seconds.

    A 429 whose Retry-After is longer than `max_delay` is not waited out here: the limiter
    keeps the pause for every caller, and this call gives up.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int, rand: Callable[[], float]) -> float:
        """Full-jitter delay before retry number `attempt` (0-based)."""
        return rand() * min(self.max_delay, self.base_delay * 2.0**attempt)


class Retrier:
    """Runs a call, sleeping on the injected clock between attempts."""

    def __init__(self, policy: RetryPolicy, clock: Clock, rand: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._clock = clock
        self._rand = rand

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await `call` until it succeeds; retryable errors back off, an open breaker or pause re-raises."""
        attempt = 0
        while True:
            try:
                return await call()
            except (CircuitOpen, ExchangePaused):
                raise
            except RetryableError as exc:
                delay = self._delay(exc, attempt)
                if delay is None:
                    raise
            attempt += 1
            await self._clock.sleep(delay)

    def _delay(self, exc: RetryableError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if attempt >= self._policy.max_retries:
            return None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self._policy.max_delay else None
        return self._policy.backoff(attempt, self._rand)
