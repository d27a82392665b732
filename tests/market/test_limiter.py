from __future__ import annotations

import asyncio

import pytest

from engine.clock import VirtualClock
from engine.errors import ExchangePaused
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


async def test_reconcile_lowers_tokens_to_what_is_left_of_the_window() -> None:
    b, _, _ = bucket(capacity=4800, rate=80)  # 4800 per 60 s window
    b.reconcile(used=3000, window_s=60)
    assert b.tokens == pytest.approx(1800)
    assert b.window_used == 3000
    b.reconcile(used=100, window_s=60)  # lagging header: never lowers our estimate
    assert b.tokens == pytest.approx(1800) and b.window_used == 3000


async def test_reconcile_over_budget_makes_the_next_acquire_wait_for_the_window() -> None:
    b, clock, _ = bucket(capacity=10, rate=1)  # T0 is 20 s into a minute
    b.reconcile(used=70, window_s=60)
    assert b.tokens == pytest.approx(-10)
    task = asyncio.create_task(b.acquire(1))
    await settle()
    clock.advance(39.9)
    await settle()
    assert not task.done()
    clock.advance(0.1)  # the window rolls over at the minute
    await settle()
    assert task.done()


async def test_a_full_bucket_cannot_spend_twice_its_capacity_in_one_window() -> None:
    """Without the window a bucket would allow its burst and then a minute of refill on top."""
    b, clock, _ = bucket(capacity=60, rate=1)
    clock.set(T0 - T0 % 60)  # the start of a minute
    b.reconcile(used=0, window_s=60)
    spent = 0.0
    while clock.now() < T0 - T0 % 60 + 59:
        task = asyncio.create_task(b.acquire(2))
        await settle()
        while not task.done():
            clock.advance(0.5)
            await settle()
        if clock.now() < T0 - T0 % 60 + 60:
            spent += 2
    assert spent <= 60
    assert clock.now() >= T0 - T0 % 60 + 60  # the 31st request waited for the next window


async def test_header_from_a_request_sent_in_an_earlier_window_is_ignored() -> None:
    b, clock, _ = bucket(capacity=100, rate=100 / 60)
    sent = clock.now()
    clock.advance(60)
    b.reconcile(used=95, window_s=60, sent_at=sent)
    assert b.window_used == 0 and b.tokens == pytest.approx(100)


async def test_a_pause_longer_than_the_caller_can_wait_fails_fast() -> None:
    b, clock, _ = bucket()
    b.pause_until(T0 + 120, "banned")
    with pytest.raises(ExchangePaused) as info:
        await b.acquire(1, max_pause_wait=10)
    assert info.value.until == T0 + 120
    queued = asyncio.create_task(b.acquire(1, max_pause_wait=10))
    await settle()
    assert queued.done() and isinstance(queued.exception(), ExchangePaused)
    assert b.pause_reason == "banned"
    clock.advance(115)
    waiter = asyncio.create_task(b.acquire(1, max_pause_wait=10))
    await settle()
    assert not waiter.done()
    clock.advance(5)
    await settle()
    assert waiter.done() and waiter.exception() is None
    assert b.pause_reason is None


async def test_paused_gauge_follows_the_clock_without_anyone_asking() -> None:
    b, clock, metrics = bucket()
    b.pause_until(T0 + 5)
    b.pause_until(T0 + 8, "banned")
    assert metric(metrics, "engine_exchange_paused", exchange="ex") == 1
    assert metric(metrics, "engine_exchange_pauses_total", exchange="ex", reason="rate_limited") == 1
    assert metric(metrics, "engine_exchange_pauses_total", exchange="ex", reason="banned") == 1
    clock.advance(8)
    assert metric(metrics, "engine_exchange_paused", exchange="ex") == 0


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
