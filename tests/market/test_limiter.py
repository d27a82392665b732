from __future__ import annotations

import asyncio

import pytest

from engine.clock import VirtualClock
from engine.market.limiter import TokenBucket
from engine.metrics import Metrics
from tests.support import metric, settle

T0 = 1_700_000_000.0


def bucket(capacity: float = 10, rate: float = 1) -> tuple[TokenBucket, VirtualClock, Metrics]:
    clock = VirtualClock(start=T0)
    metrics = Metrics()
    return TokenBucket(capacity, rate, clock, metrics, "ex"), clock, metrics


async def test_acquire_within_capacity_does_not_wait() -> None:
    b, clock, metrics = bucket()
    await b.acquire(4)
    await b.acquire(6)
    assert clock.now() == T0
    assert b.tokens == pytest.approx(0)
    assert metric(metrics, "engine_limiter_wait_seconds_sum", exchange="ex") == 0


async def test_acquire_waits_for_refill_on_the_clock() -> None:
    b, clock, metrics = bucket()
    await b.acquire(10)
    task = asyncio.create_task(b.acquire(5))
    await settle()
    clock.advance(4.9)
    await settle()
    assert not task.done()
    clock.advance(0.1)
    await settle()
    assert task.done()
    assert metric(metrics, "engine_limiter_wait_seconds_sum", exchange="ex") == pytest.approx(5.0)


async def test_waiters_are_served_in_arrival_order() -> None:
    b, clock, _ = bucket()
    await b.acquire(10)
    heavy = asyncio.create_task(b.acquire(8))
    await settle()
    light = asyncio.create_task(b.acquire(1))
    await settle()
    clock.advance(1)  # one token: enough for `light`, but `heavy` is first in line
    await settle()
    assert not heavy.done() and not light.done()
    clock.advance(7)
    await settle()
    assert heavy.done() and not light.done()
    clock.advance(1)
    await settle()
    assert light.done()


async def test_pause_holds_every_acquire_until_its_end() -> None:
    b, clock, metrics = bucket()
    b.pause_until(T0 + 30)
    assert b.paused_until == T0 + 30
    assert metric(metrics, "engine_exchange_paused", exchange="ex") == 1
    task = asyncio.create_task(b.acquire(1))
    await settle()
    clock.advance(29.5)
    await settle()
    assert not task.done()
    clock.advance(0.5)
    await settle()
    assert task.done()
    assert b.paused_until is None
    assert metric(metrics, "engine_exchange_paused", exchange="ex") == 0


async def test_pause_only_extends() -> None:
    b, _, _ = bucket()
    b.pause_until(T0 + 30)
    b.pause_until(T0 + 10)
    assert b.paused_until == T0 + 30


async def test_reconcile_lowers_tokens_to_our_share_of_what_the_exchange_has_left() -> None:
    b, _, _ = bucket(capacity=4800, rate=80)
    b.reconcile(used_weight=3000, window_capacity=6000)
    assert b.tokens == pytest.approx(2400)
    b.reconcile(used_weight=100, window_capacity=6000)  # lagging header: never raises tokens
    assert b.tokens == pytest.approx(2400)


async def test_reconcile_over_budget_makes_the_next_acquire_wait() -> None:
    b, clock, _ = bucket(capacity=10, rate=1)
    b.reconcile(used_weight=12, window_capacity=10)
    assert b.tokens == pytest.approx(-2)
    task = asyncio.create_task(b.acquire(1))
    await settle()
    clock.advance(2.9)
    await settle()
    assert not task.done()
    clock.advance(0.1)
    await settle()
    assert task.done()


async def test_resize_keeps_the_fill_fraction() -> None:
    b, _, _ = bucket(capacity=10, rate=1)
    await b.acquire(5)
    b.resize(100, 10)
    assert b.capacity == 100
    assert b.tokens == pytest.approx(50)


async def test_cost_above_capacity_waits_for_a_full_bucket_then_goes_negative() -> None:
    b, clock, _ = bucket(capacity=10, rate=1)
    await b.acquire(1)
    task = asyncio.create_task(b.acquire(25))
    await settle()
    assert not task.done()
    clock.advance(1)
    await settle()
    assert task.done()
    assert b.tokens == pytest.approx(-15)


async def test_cancelled_waiter_frees_the_queue() -> None:
    b, clock, _ = bucket()
    await b.acquire(10)
    first = asyncio.create_task(b.acquire(10))
    await settle()
    second = asyncio.create_task(b.acquire(1))
    await settle()
    first.cancel()
    await settle()
    clock.advance(1)
    await settle()
    assert second.done() and not second.cancelled()


def test_rejects_a_bucket_that_never_refills() -> None:
    with pytest.raises(ValueError):
        TokenBucket(10, 0, VirtualClock(), Metrics(), "ex")
