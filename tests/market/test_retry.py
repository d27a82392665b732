from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from engine.errors import (
    BadSymbol,
    CircuitOpen,
    EngineError,
    ExchangePaused,
    ExchangeUnavailable,
    IPBanned,
    RateLimited,
    RequestError,
)
from engine.market.retry import Retrier, RetryPolicy


class RecordingClock:
    """Sleeps return at once but move time and are recorded, so delays can be asserted."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def sleep_until(self, when: float) -> None:
        await self.sleep(max(0.0, when - self.t))


def failing(errors: list[EngineError], result: str = "ok") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


async def test_retries_retryable_errors_then_succeeds() -> None:
    clock = RecordingClock()
    call, calls = failing([ExchangeUnavailable("a"), ExchangeUnavailable("b")])
    assert await Retrier(RetryPolicy(max_retries=3), clock, lambda: 1.0).run(call) == "ok"
    assert len(calls) == 3
    assert clock.sleeps == [0.5, 1.0]


async def test_gives_up_after_max_retries() -> None:
    clock = RecordingClock()
    call, calls = failing([ExchangeUnavailable(str(i)) for i in range(10)])
    with pytest.raises(ExchangeUnavailable, match="3"):
        await Retrier(RetryPolicy(max_retries=3), clock, lambda: 1.0).run(call)
    assert len(calls) == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("seed", range(5))
async def test_full_jitter_stays_within_the_exponential_bound(seed: int) -> None:
    clock = RecordingClock()
    policy = RetryPolicy(max_retries=8, base_delay=0.5, max_delay=10.0)
    call, _ = failing([ExchangeUnavailable("x") for _ in range(20)])
    with pytest.raises(ExchangeUnavailable):
        await Retrier(policy, clock, random.Random(seed).random).run(call)
    assert len(clock.sleeps) == 8
    for attempt, delay in enumerate(clock.sleeps):
        assert 0.0 <= delay <= min(10.0, 0.5 * 2**attempt)
    assert len(set(clock.sleeps)) > 1


def test_backoff_is_capped_and_scaled_by_the_random_draw() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0)
    assert policy.backoff(10, lambda: 1.0) == 5.0
    assert policy.backoff(2, lambda: 0.25) == 1.0
    assert policy.backoff(2, lambda: 0.0) == 0.0


@pytest.mark.parametrize(
    "error", [RequestError("bad"), BadSymbol("XXX/YYY"), CircuitOpen("ex", 30.0), ExchangePaused("ex", 99.0)]
)
async def test_non_retryable_and_own_refusals_are_raised_at_once(error: EngineError) -> None:
    clock = RecordingClock()
    call, calls = failing([error])
    with pytest.raises(type(error)):
        await Retrier(RetryPolicy(), clock).run(call)
    assert len(calls) == 1
    assert clock.sleeps == []


async def test_rate_limited_waits_exactly_retry_after() -> None:
    clock = RecordingClock()
    call, calls = failing([RateLimited("429", retry_after=7.0)])
    assert await Retrier(RetryPolicy(), clock, lambda: 1.0).run(call) == "ok"
    assert clock.sleeps == [7.0]
    assert len(calls) == 2


async def test_rate_limited_longer_than_max_delay_gives_up() -> None:
    clock = RecordingClock()
    call, calls = failing([IPBanned("418", retry_after=3600.0)])
    with pytest.raises(IPBanned):
        await Retrier(RetryPolicy(max_delay=30.0), clock).run(call)
    assert len(calls) == 1
    assert clock.sleeps == []


async def test_rate_limited_without_retry_after_backs_off() -> None:
    clock = RecordingClock()
    call, _ = failing([RateLimited("429")])
    await Retrier(RetryPolicy(), clock, lambda: 0.5).run(call)
    assert clock.sleeps == [0.25]
