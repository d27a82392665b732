"""Client-side request budget for one exchange.

Exchanges meter REST calls by weight per minute and answer 429, then 418 (an IP ban), to
clients that overspend. Staying under a fraction of the published budget on our side is cheaper
than recovering from either, and one bucket per exchange is the only place that sees every
caller's requests.

Two limits apply together. The token bucket spreads requests out (a full bucket allows a burst
of `capacity`, then `refill_per_second`), which is what staggers a start-up that warms many
series at once. A bucket alone, though, can spend its burst at the end of one exchange window
and again over the next, i.e. up to twice its capacity in one fixed window; so once the
exchange reports its own count (`reconcile`), the bucket also never lets our estimate of the
exchange's count for its current window pass `refill_per_second * window` (= `capacity` for a
one-minute window).
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal

from engine.clock import Clock
from engine.errors import ExchangePaused
from engine.metrics import Metrics

# Float refill arithmetic can leave a residue of 1e-15 s; a virtual clock would then need a
# second advance for nothing.
_EPSILON = 1e-9
PauseReason = Literal["rate_limited", "banned"]


class TokenBucket:
    """Tokens refill continuously up to `capacity`; a request takes `cost` tokens or waits.

    Waiters are served strictly in arrival order (an `asyncio.Lock` hands itself over FIFO),
    so one heavy request cannot be starved by a stream of light ones. Only the head of the
    queue ever sleeps on the clock; it re-checks tokens, the window and the pause every time
    it wakes, so a pause or reconcile that arrives while it sleeps still holds.
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
        self._pause_reason: PauseReason | None = None
        self._window_s: float | None = None
        self._window_end = 0.0
        self._window_used = 0.0
        self._lock = asyncio.Lock()
        # Read at scrape time, so the gauge drops to 0 when the pause ends even if nothing
        # touches the bucket in between.
        metrics.exchange_paused.labels(exchange).set_function(self._paused_flag)

    @property
    def capacity(self) -> float:
        """The largest burst in tokens; changes only through `resize()`."""
        return self._capacity

    @property
    def tokens(self) -> float:
        """Tokens available now (negative after a reconcile that found us over budget)."""
        self._refill()
        return self._tokens

    @property
    def window_used(self) -> float | None:
        """Our estimate of what the exchange has counted in its current window, once it reports one."""
        if self._window_s is None:
            return None
        self._refill()
        return self._window_used

    @property
    def paused_until(self) -> float | None:
        """End of the exchange-imposed pause, or None when no pause is in force."""
        if self._paused_until > self._clock.now():
            return self._paused_until
        self._paused_until = 0.0
        self._pause_reason = None
        return None

    @property
    def pause_reason(self) -> PauseReason | None:
        """Why the exchange paused us ("rate_limited" for a 429, "banned" for a 418), if it did."""
        return self._pause_reason if self.paused_until is not None else None

    async def acquire(self, cost: float, max_pause_wait: float | None = None) -> None:
        """Wait until `cost` tokens are available and no pause is in force, then take them.

        A cost above the whole capacity is charged in full but only waits for a full bucket;
        otherwise such a request could never be sent. With `max_pause_wait`, a pause that ends
        later than that from now raises ExchangePaused at once (also for a request already
        queued when the pause arrives): waiting minutes for a ban to lift would only stall the
        caller's tick, and nothing may be sent before it lifts anyway.
        """
        start = self._clock.now()
        async with self._lock:
            need = min(float(cost), self._capacity)
            while True:
                now = self._clock.now()
                self._refill()
                if max_pause_wait is not None and self._paused_until - now > max_pause_wait:
                    raise ExchangePaused(self._exchange, self._paused_until)
                wait = max(
                    self._paused_until - now,
                    (need - self._tokens) / self._rate,
                    self._window_wait(float(cost), now),
                )
                if wait <= _EPSILON:
                    break
                await self._clock.sleep(wait)
            self._tokens -= float(cost)
            if self._window_s is not None:
                self._window_used += float(cost)
        self._metrics.limiter_wait.labels(self._exchange).observe(max(0.0, self._clock.now() - start))

    def pause_until(self, when: float, reason: PauseReason = "rate_limited") -> None:
        """Honour a Retry-After: no acquire completes before `when` (pauses only ever extend)."""
        banned = self.paused_until is not None and self._pause_reason == "banned"
        if when > self._paused_until:
            self._paused_until = when
            self._pause_reason = "banned" if banned else reason
            self._metrics.exchange_pauses.labels(self._exchange, reason).inc()

    def reconcile(self, used: float, window_s: float, sent_at: float | None = None) -> None:
        """Align with the exchange's own count, `used`, for its current window of `window_s` s.

        `used` is in this bucket's unit. The exchange sees every request from this IP, including
        other processes' and ours that we have not charged; so our estimate for the window only
        ever rises to it, and the tokens are lowered to what is left of the window's allowance.
        A header from a request sent in an earlier window (`sent_at`) says nothing about this one.
        """
        self._window_s = float(window_s)
        self._refill()
        if sent_at is not None and math.floor(sent_at / window_s) < math.floor(self._clock.now() / window_s):
            return
        self._window_used = max(self._window_used, float(used))
        self._tokens = min(self._tokens, self._window_allowance() - self._window_used)

    def resize(self, capacity: float, refill_per_second: float) -> None:
        """Change the budget (once the published limit is known), keeping the fill fraction."""
        if capacity <= 0 or refill_per_second <= 0:
            raise ValueError("token bucket capacity and refill rate must be > 0")
        self._refill()
        self._tokens *= capacity / self._capacity
        self._capacity = float(capacity)
        self._rate = float(refill_per_second)

    def _window_allowance(self) -> float:
        return self._rate * (self._window_s or 0.0)

    def _window_wait(self, cost: float, now: float) -> float:
        """Seconds until the exchange's window rolls over, if this request would overfill it.

        A request alone in an empty window always goes, however heavy, or it could never go.
        """
        if self._window_s is None or self._window_used <= 0:
            return 0.0
        if self._window_used + cost <= self._window_allowance() + _EPSILON:
            return 0.0
        return self._window_end - now

    def _paused_flag(self) -> float:
        return 1.0 if self.paused_until is not None else 0.0

    def _refill(self) -> None:
        now = self._clock.now()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        if self._window_s is not None and now >= self._window_end:
            self._window_used = 0.0
            self._window_end = (math.floor(now / self._window_s) + 1) * self._window_s
