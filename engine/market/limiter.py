"""Client-side request budget for one exchange.

Exchanges meter REST calls by weight per rolling minute and answer 429, then 418 (an IP ban),
to clients that overspend. Staying under a fraction of the published budget on our side is
cheaper than recovering from either, and one bucket per exchange is the only place that sees
every caller's requests.
"""

from __future__ import annotations

import asyncio

from engine.clock import Clock
from engine.metrics import Metrics

# Float refill arithmetic can leave a residue of 1e-15 s; a virtual clock would then need a
# second advance for nothing.
_EPSILON = 1e-9


class TokenBucket:
    """Tokens refill continuously up to `capacity`; a request takes `cost` tokens or waits.

    Waiters are served strictly in arrival order (an `asyncio.Lock` hands itself over FIFO),
    so one heavy request cannot be starved by a stream of light ones. Only the head of the
    queue ever sleeps on the clock; it re-checks tokens and the pause every time it wakes, so
    a pause or reconcile that arrives while it sleeps still holds.
    """

    def __init__(
        self, capacity: float, refill_per_second: float, clock: Clock, metrics: Metrics, exchange: str
    ) -> None:
        if capacity <= 0 or refill_per_second <= 0:
            raise ValueError("token bucket capacity and refill rate must be > 0")
        self._capacity = float(capacity)
        self._rate = float(refill_per_second)
        self._clock = clock
        self._metrics = metrics
        self._exchange = exchange
        self._tokens = self._capacity
        self._stamp = clock.now()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def capacity(self) -> float:
        return self._capacity

    @property
    def tokens(self) -> float:
        """Tokens available now (negative after a reconcile that found us over budget)."""
        self._refill()
        return self._tokens

    @property
    def paused_until(self) -> float | None:
        """End of the exchange-imposed pause, or None when no pause is in force."""
        if self._paused_until > self._clock.now():
            return self._paused_until
        self._end_pause()
        return None

    async def acquire(self, cost: float) -> None:
        """Wait until `cost` tokens are available and no pause is in force, then take them.

        A cost above the whole capacity is charged in full but only waits for a full bucket;
        otherwise such a request could never be sent.
        """
        start = self._clock.now()
        async with self._lock:
            need = min(float(cost), self._capacity)
            while True:
                now = self._clock.now()
                self._refill()
                wait = max(self._paused_until - now, (need - self._tokens) / self._rate)
                if wait <= _EPSILON:
                    break
                await self._clock.sleep(wait)
            self._tokens -= float(cost)
        if self._paused_until <= self._clock.now():
            self._end_pause()
        self._metrics.limiter_wait.labels(self._exchange).observe(max(0.0, self._clock.now() - start))

    def pause_until(self, when: float) -> None:
        """Honour a Retry-After: no acquire completes before `when` (pauses only ever extend)."""
        if when > self._paused_until:
            self._paused_until = when
            self._metrics.exchange_paused.labels(self._exchange).set(1)

    def reconcile(self, used_weight: float, window_capacity: float) -> None:
        """Align with the exchange's own count of weight used in its current window.

        The exchange sees every request from this IP, including other processes' and ours
        that we have not yet charged; its figure is scaled to our share (`capacity` of its
        `window_capacity`). Tokens are only ever lowered: the header lags requests still in
        flight, so raising on it could overspend.
        """
        if window_capacity <= 0:
            return
        self._refill()
        allowed = self._capacity * (1.0 - float(used_weight) / float(window_capacity))
        self._tokens = min(self._tokens, allowed)

    def resize(self, capacity: float, refill_per_second: float) -> None:
        """Change the budget (once the published limit is known), keeping the fill fraction."""
        if capacity <= 0 or refill_per_second <= 0:
            raise ValueError("token bucket capacity and refill rate must be > 0")
        self._refill()
        self._tokens *= capacity / self._capacity
        self._capacity = float(capacity)
        self._rate = float(refill_per_second)

    def _end_pause(self) -> None:
        if self._paused_until:
            self._paused_until = 0.0
            self._metrics.exchange_paused.labels(self._exchange).set(0)

    def _refill(self) -> None:
        now = self._clock.now()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
