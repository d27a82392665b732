from __future__ import annotations

import asyncio

import pytest

from engine.clock import VirtualClock
from engine.errors import BadSymbol, CircuitOpen, ExchangeUnavailable, RateLimited, RequestTimeout
from engine.market.breaker import CircuitBreaker
from engine.metrics import Metrics
from tests.support import metric, settle

T0 = 1_700_000_000.0


def make() -> tuple[CircuitBreaker, VirtualClock, Metrics]:
    clock = VirtualClock(start=T0)
    metrics = Metrics()
    return CircuitBreaker("ex", clock, metrics, failure_threshold=5, reset_timeout=30.0), clock, metrics


async def fail(breaker: CircuitBreaker, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breaker.guard():
            raise exc


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker.guard():
        pass


async def test_opens_after_five_consecutive_transport_failures() -> None:
    breaker, _, metrics = make()
    for _ in range(4):
        await fail(breaker, ExchangeUnavailable("500"))
    assert breaker.state == "closed"
    await fail(breaker, RequestTimeout("slow"))
    assert breaker.state == "open"
    assert metric(metrics, "engine_breaker_state", exchange="ex") == 2
    assert metric(metrics, "engine_breaker_transitions_total", exchange="ex", state="open") == 1


async def test_success_resets_the_count() -> None:
    breaker, _, _ = make()
    for _ in range(4):
        await fail(breaker, ExchangeUnavailable("500"))
    await succeed(breaker)
    for _ in range(4):
        await fail(breaker, ExchangeUnavailable("500"))
    assert breaker.state == "closed"


async def test_non_transport_outcomes_neither_count_nor_reset() -> None:
    breaker, _, _ = make()
    for _ in range(4):
        await fail(breaker, ExchangeUnavailable("500"))
    await fail(breaker, BadSymbol("nope"))
    await fail(breaker, RateLimited("429", 1.0))
    assert breaker.state == "closed"
    await fail(breaker, ExchangeUnavailable("500"))
    assert breaker.state == "open"


async def test_open_refuses_without_running_the_call() -> None:
    breaker, clock, _ = make()
    for _ in range(5):
        await fail(breaker, ExchangeUnavailable("500"))
    ran = False
    with pytest.raises(CircuitOpen) as info:
        async with breaker.guard():
            ran = True
    assert not ran
    assert info.value.retry_at == T0 + 30
    clock.advance(29.9)
    assert breaker.state == "open"


async def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    breaker, clock, metrics = make()
    for _ in range(5):
        await fail(breaker, ExchangeUnavailable("500"))
    clock.advance(30)
    assert breaker.state == "half_open"
    release = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            await release.wait()

    task = asyncio.create_task(probe())
    await settle()
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            await succeed(breaker)
    release.set()
    await task
    assert breaker.state == "closed"
    assert metric(metrics, "engine_breaker_state", exchange="ex") == 0
    for state in ("open", "half_open", "closed"):
        assert metric(metrics, "engine_breaker_transitions_total", exchange="ex", state=state) == 1


async def test_failed_probe_reopens_for_another_timeout() -> None:
    breaker, clock, _ = make()
    for _ in range(5):
        await fail(breaker, ExchangeUnavailable("500"))
    clock.advance(30)
    await fail(breaker, ExchangeUnavailable("still down"))
    assert breaker.state == "open"
    assert breaker.retry_at == T0 + 60


async def test_cancelled_or_rejected_probe_frees_the_slot() -> None:
    breaker, clock, _ = make()
    for _ in range(5):
        await fail(breaker, ExchangeUnavailable("500"))
    clock.advance(30)

    async def hang() -> None:
        async with breaker.guard():
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await settle()
    task.cancel()
    await settle()
    await fail(breaker, BadSymbol("nope"))
    assert breaker.state == "half_open"
    await succeed(breaker)
    assert breaker.state == "closed"
