"""A local webhook receiver on 127.0.0.1 that checks X-Signature the way a user's server would.

POST /hook: the HMAC-SHA256 of the raw body, keyed with the shared secret, must equal the
`X-Signature: sha256=<hex>` header (constant-time compare), else 401. Verification is written
out here independently of engine.sinks.webhook, so the test proves interoperability rather
than agreement of one function with itself.

Faults are plain attributes a test sets before a call:
    fail_next_n / fail_status / retry_after   next N requests answer fail_status (Retry-After header)
    outage                                    every request answers 503
    delay_s                                   real delay before answering (timeouts)
`received` holds accepted bodies (parsed), `log` keeps (clock time, status) per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from engine.clock import Clock
from tests.support.loopback import LoopbackServer

SECRET = "s3cr3t-webhook-key-for-tests"


class WebhookReceiver(LoopbackServer):
    path = "/hook"

    def __init__(self, clock: Clock, *, secret: str = SECRET) -> None:
        super().__init__()
        self.clock = clock
        self.secret = secret.encode()
        self.fail_next_n = 0
        self.fail_status = 500
        self.retry_after: str | None = None
        self.outage = False
        self.delay_s = 0.0
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.log: list[tuple[float, int]] = []
        self.bad_signatures = 0

    def routes(self, app: web.Application) -> None:
        """POST /hook, the signed webhook endpoint."""
        app.router.add_post("/hook", self._hook)

    def _status(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> web.Response:
        self.log.append((self.clock.now(), status))
        return web.Response(status=status, text=text, headers=headers)

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.outage:
            return self._status(503, "down for maintenance")
        if self.fail_next_n > 0:
            self.fail_next_n -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
            return self._status(self.fail_status, "failing on purpose", headers)
        expected = "sha256=" + hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
            self.bad_signatures += 1
            return self._status(401, "bad signature")
        if request.content_type != "application/json":
            return self._status(415, "want application/json")
        self.received.append(json.loads(raw))
        self.headers.append(dict(request.headers))
        return self._status(204)
