"""/health, /ready, /metrics and /admin over real HTTP, with a probe the test flips by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from engine.metrics import Metrics
from engine.server import HealthServer, is_loopback


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


# --- admin endpoints -----------------------------------------------------------------------------

ADMIN_TOKEN = "adm-test-token-0123456789"


class Reloader:
    def __init__(self) -> None:
        self.calls = 0
        self.result: dict[str, Any] = {"ok": True, "changes": ["psar retuned"]}
        self.raise_with: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.raise_with is not None:
            raise self.raise_with
        return self.result


@pytest.fixture
def reloader() -> Reloader:
    return Reloader()


@pytest.fixture
async def admin_server(probe: FakeProbe, metrics: Metrics, reloader: Reloader) -> AsyncIterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, probe, metrics, admin_token=ADMIN_TOKEN, on_reload=reloader)
    await srv.start()
    yield srv
    await srv.stop()


async def post(
    server: HealthServer, path: str, auth: str | None = None, method: str = "POST"
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": auth} if auth is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{server.bound_port}{path}", headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_admin_routes_do_not_exist_without_a_token(
    probe: FakeProbe, metrics: Metrics, reloader: Reloader
) -> None:
    srv = HealthServer("127.0.0.1", 0, probe, metrics, admin_token=None, on_reload=reloader)
    await srv.start()
    try:
        assert not srv.admin_enabled
        for auth in (None, f"Bearer {ADMIN_TOKEN}"):
            status, _, _ = await post(srv, "/admin/reload", auth)
            assert status == 404
    finally:
        await srv.stop()
    assert reloader.calls == 0


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-0123456789",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
    ],
)
async def test_admin_needs_the_bearer_token(
    admin_server: HealthServer, reloader: Reloader, auth: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.server"):
        status, headers, body = await post(admin_server, "/admin/reload", auth)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert orjson.loads(body) == {"ok": False, "error": "unauthorized"}
    assert reloader.calls == 0
    assert "refused" in caplog.text and ADMIN_TOKEN not in caplog.text


async def test_admin_reload_ok_is_200_with_the_callbacks_json(
    admin_server: HealthServer, reloader: Reloader
) -> None:
    for auth in (f"Bearer {ADMIN_TOKEN}", f"bearer   {ADMIN_TOKEN}  "):
        status, _, body = await post(admin_server, "/admin/reload", auth)
        assert status == 200
        assert orjson.loads(body) == {"ok": True, "changes": ["psar retuned"]}
    assert reloader.calls == 2


async def test_admin_reload_invalid_config_is_422_with_the_errors(
    admin_server: HealthServer, reloader: Reloader
) -> None:
    reloader.result = {"ok": False, "errors": ["config/strategies/psar.toml: symbols: required"]}
    status, _, body = await post(admin_server, "/admin/reload", f"Bearer {ADMIN_TOKEN}")
    assert status == 422
    assert orjson.loads(body) == reloader.result


async def test_admin_reload_raising_is_500_and_redacted(
    admin_server: HealthServer, reloader: Reloader
) -> None:
    reloader.raise_with = RuntimeError("boom at /bot123456:AAF3kQx9Zr2mVb8LpT4sWn6Hc1Jy5Ed0GuI/getMe")
    status, _, body = await post(admin_server, "/admin/reload", f"Bearer {ADMIN_TOKEN}")
    assert status == 500
    doc = orjson.loads(body)
    assert doc["ok"] is False and "RuntimeError: boom at /bot***/getMe" in doc["error"]


async def test_admin_reload_one_at_a_time(admin_server: HealthServer, reloader: Reloader) -> None:
    reloader.gate = asyncio.Event()
    first = asyncio.create_task(post(admin_server, "/admin/reload", f"Bearer {ADMIN_TOKEN}"))
    await asyncio.wait_for(reloader.entered.wait(), 5)
    status, _, body = await post(admin_server, "/admin/reload", f"Bearer {ADMIN_TOKEN}")
    assert status == 409 and "in progress" in orjson.loads(body)["error"]
    reloader.gate.set()
    assert (await first)[0] == 200
    assert reloader.calls == 1


async def test_admin_reload_is_post_only_and_absent_callback_is_501(
    probe: FakeProbe, metrics: Metrics
) -> None:
    srv = HealthServer("127.0.0.1", 0, probe, metrics, admin_token=ADMIN_TOKEN)
    await srv.start()
    try:
        status, _, _ = await post(srv, "/admin/reload", f"Bearer {ADMIN_TOKEN}", method="GET")
        assert status == 405
        status, _, body = await post(srv, "/admin/reload", f"Bearer {ADMIN_TOKEN}")
        assert status == 501 and orjson.loads(body)["ok"] is False
        status, _, _ = await post(srv, "/admin/reload", None)
        assert status == 401
    finally:
        await srv.stop()


async def test_ready_body_never_carries_a_registered_secret(server: HealthServer, probe: FakeProbe) -> None:
    from engine.redaction import register_secret

    register_secret("leaky-secret-value-77")
    probe.reasons = ["sink failed: apikey=leaky-secret-value-77"]
    probe.ready = False
    status, _, body = await get(server, "/ready")
    assert status == 503
    assert b"leaky-secret-value-77" not in body
    assert orjson.loads(body)["reasons"] == ["sink failed: apikey=***"]


# --- bind address ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("engine.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [("0.0.0.0", None, True), ("0.0.0.0", ADMIN_TOKEN, False), ("127.0.0.1", None, False)],
)
async def test_warns_when_exposed_without_a_token(
    probe: FakeProbe,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    host: str,
    token: str | None,
    warns: bool,
) -> None:
    srv = HealthServer(host, 0, probe, metrics, admin_token=token)
    with caplog.at_level(logging.WARNING, logger="engine.server"):
        await srv.start()
        await srv.stop()
    warned = [r for r in caplog.records if "not a loopback address" in r.getMessage()]
    assert bool(warned) is warns
    if warned:
        assert warned[0].levelno == logging.WARNING


def test_server_binds_loopback_by_default() -> None:
    from engine.config import EngineSettings

    assert EngineSettings().server.host == "127.0.0.1"
    assert EngineSettings().server.admin_token_file is None
