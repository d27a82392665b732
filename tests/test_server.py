"""/health, /ready and /metrics over real HTTP, with a probe the test flips by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from engine.metrics import Metrics
from engine.server import HealthServer


class FakeProbe:
    def __init__(self) -> None:
        self.healthy = True
        self.ready = True
        self.reasons: list[str] = []
        self.raise_on_ready = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        return self.healthy, {"heartbeat_age_seconds": 1.5}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.raise_on_ready:
            raise RuntimeError("probe bug")
        return self.ready, {"reasons": list(self.reasons), "exchanges": {"binance": "closed"}}


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(probe: FakeProbe, metrics: Metrics) -> AsyncIterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, probe, metrics)
    await srv.start()
    yield srv
    await srv.stop()


async def get(server: HealthServer, path: str) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.bound_port}{path}") as resp,
    ):
        return resp.status, resp.headers["Content-Type"], await resp.read()


async def test_port_zero_binds_a_real_port(server: HealthServer) -> None:
    assert server.bound_port > 0


async def test_health(server: HealthServer, probe: FakeProbe) -> None:
    status, ctype, body = await get(server, "/health")
    assert (status, ctype) == (200, "application/json")
    assert orjson.loads(body) == {"status": "ok", "heartbeat_age_seconds": 1.5}

    probe.healthy = False
    status, _, body = await get(server, "/health")
    assert status == 503
    assert orjson.loads(body)["status"] == "unhealthy"


async def test_ready(server: HealthServer, probe: FakeProbe) -> None:
    status, _, body = await get(server, "/ready")
    assert status == 200
    assert orjson.loads(body) == {
        "ready": True,
        "reasons": [],
        "exchanges": {"binance": "closed"},
    }

    probe.ready = False
    probe.reasons = ["breaker open: binance", "state dir not writable"]
    status, _, body = await get(server, "/ready")
    assert status == 503
    doc = orjson.loads(body)
    assert doc["ready"] is False
    assert doc["reasons"] == ["breaker open: binance", "state dir not writable"]
    assert doc["exchanges"] == {"binance": "closed"}


async def test_not_ready_without_reasons_still_explains(server: HealthServer, probe: FakeProbe) -> None:
    probe.ready = False
    status, _, body = await get(server, "/ready")
    assert status == 503
    assert orjson.loads(body)["reasons"]


async def test_a_raising_probe_is_a_503_not_a_500(server: HealthServer, probe: FakeProbe) -> None:
    probe.raise_on_ready = True
    status, _, body = await get(server, "/ready")
    assert status == 503
    assert "probe bug" in orjson.loads(body)["reasons"][0]


async def test_metrics(server: HealthServer, metrics: Metrics) -> None:
    metrics.ticks.inc()
    metrics.signals.labels("psar", "LONG").inc(2)
    status, ctype, body = await get(server, "/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    assert "engine_ticks_total 1.0" in text
    assert 'engine_signals_total{direction="LONG",strategy="psar"} 2.0' in text


async def test_stop_releases_the_port(probe: FakeProbe, metrics: Metrics) -> None:
    srv = HealthServer("127.0.0.1", 0, probe, metrics)
    await srv.start()
    port = srv.bound_port
    await srv.stop()
    with pytest.raises(RuntimeError):
        _ = srv.bound_port
    again = HealthServer("127.0.0.1", port, probe, metrics)
    await again.start()
    assert again.bound_port == port
    await again.stop()
