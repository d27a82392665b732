"""The HTTP face an orchestrator and Prometheus look at: /health, /ready, /metrics, and /admin.

The server knows nothing about the engine's parts; it asks a `StatusProbe`, so what "healthy"
and "ready" mean is decided where the components are wired together, and tests can flip them
with a fake.

Admin endpoints (`POST /admin/reload`) exist only when an admin token is configured; without
one they answer 404 like any unknown path. With one, every admin request must carry
`Authorization: Bearer <token>` (compared in constant time) or gets 401. The server binds
127.0.0.1 by default and warns when it listens on anything else without a token. The JSON
bodies of /health, /ready and /admin answers pass through the log redactor, so a secret that
slipped into a probe detail is masked rather than served.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from engine.metrics import Metrics
from engine.redaction import redact, redact_obj, register_secret

ReloadCallback = Callable[[], Awaitable[dict[str, Any]]]

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


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> web.Response:
    # default=str: a probe detail JSON cannot encode must not turn a 503 into a 500.
    payload = orjson.dumps(redact_obj(body), default=str, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=payload, status=status, content_type="application/json", headers=headers)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IPs; a wildcard ("", 0.0.0.0, ::) or other name is not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        admin_token: str | None = None,
        on_reload: ReloadCallback | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._probe = probe
        self._metrics = metrics
        self._log = logger or logging.getLogger(__name__)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._admin_token = admin_token or None
        if self._admin_token is not None:
            register_secret(self._admin_token)
        self._on_reload = on_reload
        self._reload_lock = asyncio.Lock()

    @property
    def admin_enabled(self) -> bool:
        """Whether the /admin routes are mounted (an admin token is configured)."""
        return self._admin_token is not None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics_text)
        if self._admin_token is not None:
            app.router.add_post("/admin/reload", self._admin_reload)
        return app

    async def start(self) -> None:
        """Bind and serve (idempotent); warns when open beyond loopback without an admin token."""
        if self._runner is not None:
            return
        if not is_loopback(self.host) and self._admin_token is None:
            self._log.warning(
                "health server binds %r, which is not a loopback address, and no admin token is set "
                "(env ENGINE_ADMIN_TOKEN): /health, /ready and /metrics are open to the network; "
                "bind 127.0.0.1 or put it behind a firewall",
                self.host,
            )
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
        """Stop serving and free the port; safe to call when not started."""
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

    # -- admin ----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        token = self._admin_token
        if token is None:
            return False
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    def _unauthorized(self, request: web.Request) -> web.Response:
        self._log.warning(
            "admin request %s %s refused: missing or wrong bearer token (from %s)",
            request.method,
            request.path,
            request.remote,
        )
        return _json({"ok": False, "error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})

    async def _admin_reload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        if self._on_reload is None:
            return _json({"ok": False, "error": "reload is not available in this engine"}, 501)
        if self._reload_lock.locked():
            return _json({"ok": False, "error": "a reload is already in progress"}, 409)
        async with self._reload_lock:
            try:
                result = await self._on_reload()
            except Exception as e:
                self._log.exception("reload raised")
                return _json({"ok": False, "error": redact(f"reload raised {type(e).__name__}: {e}")}, 500)
        if not isinstance(result, dict):
            self._log.error("reload callback returned %s, not a dict", type(result).__name__)
            return _json({"ok": False, "error": "reload returned no result"}, 500)
        return _json(result, 200 if result.get("ok") is True else 422)
