"""Delivery retries shared by the HTTP sinks (Telegram, webhook).

A send is retried only when trying again can help: a 429 (after the wait the server asked
for), a 5xx, a network error or a timeout. A refusal (400/401/403/404…) is raised at once, so
the dispatcher dead-letters it instead of hammering a server that already said no. Waiting
happens on the injected clock, so tests advance time instead of sleeping.

Backoff is exponential with "equal jitter": before retry n the delay is uniform in
[d/2, d] with d = min(max_delay, base_delay·2^n), so many engines that failed together do not
come back at the same instant, yet each one always backs off.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from engine.clock import Clock
from engine.errors import EngineError, FatalError, RetryableError
from engine.metrics import Metrics

log = logging.getLogger("engine.sinks")

MASK = "***"


class DeliveryError(EngineError):
    """A sink could not deliver a message."""


class PermanentDeliveryError(DeliveryError, FatalError):
    """The receiver refused the message itself; sending it again cannot succeed."""


class TransientDeliveryError(DeliveryError, RetryableError):
    """This attempt failed but a later one may succeed.

    `reason` labels the retry metric (rate_limited, server_error, network, timeout);
    `retry_after` is the wait the receiver asked for, in seconds, when it said.
    """

    def __init__(self, message: str, *, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message)


class DeliveryGaveUp(DeliveryError, FatalError):
    """Every attempt failed (or the receiver asked for a longer wait than we allow)."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """At most `max_attempts` requests per message.

    A Retry-After longer than `max_retry_after` is not waited out: the message is given up
    (dead-lettered, and retried at the next start) rather than blocking the sink for that long.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0

    def backoff(self, retry: int, rand: Callable[[], float]) -> float:
        """Delay before retry number `retry` (0-based), equal jitter."""
        cap = min(self.max_delay, self.base_delay * 2.0**retry)
        return cap / 2 + rand() * cap / 2


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by ***, for anything that may reach a log or a file."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class Deliverer:
    """Runs one delivery attempt function under a `DeliveryPolicy`, waiting on the clock."""

    def __init__(
        self,
        sink: str,
        policy: DeliveryPolicy,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
        logger: logging.Logger | None = None,
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.rand = rand
        self.log = logger or log

    async def run(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Call `attempt` until it returns, raises a non-retryable error, or attempts run out."""
        total = self.policy.max_attempts
        for n in range(total):
            try:
                await attempt()
                return
            except TransientDeliveryError as exc:
                if n + 1 >= total:
                    raise DeliveryGaveUp(f"gave up after {total} attempts; last: {exc}") from None
                delay = self._delay(exc, n)
                if self.metrics is not None:
                    self.metrics.sink_retries.labels(self.sink, exc.reason).inc()
                self.log.warning(
                    "sink %s: attempt %d/%d failed (%s); retrying in %.1fs",
                    self.sink,
                    n + 1,
                    total,
                    exc,
                    delay,
                )
            await self.clock.sleep(delay)

    def _delay(self, exc: TransientDeliveryError, retry: int) -> float:
        if exc.retry_after is None:
            return self.policy.backoff(retry, self.rand)
        if exc.retry_after > self.policy.max_retry_after:
            raise DeliveryGaveUp(
                f"asked to wait {exc.retry_after:.0f}s, more than the {self.policy.max_retry_after:.0f}s "
                f"allowed; last: {exc}"
            ) from None
        return exc.retry_after
