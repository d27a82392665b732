"""Test support: the exchange emulator, fakes, and helpers for stepping the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.metrics import Metrics


async def settle(rounds: int = 10) -> None:
    """Let every runnable task run until it blocks (on a virtual clock, a future, or I/O)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll for a condition that depends on real I/O (the emulator's HTTP), never on clock time."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of the engine's registry (0 when the series was never touched)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
