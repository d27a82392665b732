"""The HTTP face an orchestrator and Prometheus look at: /health, /ready, /metrics.

The server knows nothing about the engine's parts; it asks a `StatusProbe`, so what "healthy"
and "ready" mean is decided where the components are wired together, and tests can flip them
with a fake.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from engine.metrics import Metrics

# Metrics.render() emits the classic 0.0.4 text format; prometheus_client >= 0.22 points
# CONTENT_TYPE_LATEST at 1.0.0, which would announce a format we do not produce.
METRICS_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class StatusProbe(Protocol):
    """Answers for the engine as a whole; details end up verbatim in the JSON bodies."""

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Is the process alive and making progress (a restart would help if not)?"""
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Can it do its job right now? Details should carry a `reasons` list when not."""
        ...


def _json(body: dict[str, Any], status: int) -> web.Response:
    # default=str: a probe detail JSON cannot encode must not turn a 503 into a 500.
    payload = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=payload, status=status, content_type="application/json")


class HealthServer:
    """An aiohttp app on its own runner, so it starts and stops with the engine, not the loop."""

    def __init__(
        self,
        host: str,
        port: int,
        probe: StatusProbe,
        metrics: Metrics,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._probe = probe
        self._metrics = metrics
        self._log = logger or logging.getLogger(__name__)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics_text)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        # No access log: probes and scrapes every few seconds would drown the engine's own lines.
        runner = web.AppRunner(self._app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._bound_port = None
        if runner is not None:
            await runner.cleanup()

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from `port` when 0 asked the OS to choose)."""
        if self._bound_port is None:
            raise RuntimeError("health server is not running")
        return self._bound_port

    async def _health(self, _request: web.Request) -> web.Response:
        try:
            ok, details = self._probe.health()
        except Exception as e:
            self._log.exception("health probe raised")
            return _json({"status": "error", "error": f"{type(e).__name__}: {e}"}, 503)
        rest = {k: v for k, v in details.items() if k != "status"}
        return _json({"status": "ok" if ok else "unhealthy", **rest}, 200 if ok else 503)

    async def _ready(self, _request: web.Request) -> web.Response:
        try:
            ready, details = self._probe.readiness()
        except Exception as e:
            self._log.exception("readiness probe raised")
            reason = f"readiness probe raised {type(e).__name__}: {e}"
            return _json({"ready": False, "reasons": [reason]}, 503)
        raw = details.get("reasons", ())
        reasons = [raw] if isinstance(raw, str) else [str(r) for r in raw]
        if not ready and not reasons:
            # An empty list on a 503 would leave whoever is paged with nothing to go on.
            reasons = ["not ready (probe gave no reason)"]
        rest = {k: v for k, v in details.items() if k not in ("ready", "reasons")}
        return _json({"ready": ready, "reasons": reasons, **rest}, 200 if ready else 503)

    async def _metrics_text(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})
