"""Webhook: each event POSTed as JSON, signed so the receiver can tell it came from us.

Body: {"kind": ..., "record": ..., "text": ...} (orjson). Header `X-Signature:
sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the secret>`; the receiver
recomputes it over the raw body it got and compares in constant time (see `signature`).
The secret comes only from env ENGINE_WEBHOOK_SECRET (or a 0600 secret file) and never
appears in a log. 5xx, 429, network errors and timeouts are retried with backoff (honouring
Retry-After); any other 4xx is a refusal and is not retried.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
from collections.abc import Callable

from engine.clock import Clock
from engine.metrics import Metrics
from engine.sinks.base import SinkEvent
from engine.sinks.dispatch import dumps
from engine.sinks.http import HttpPoster
from engine.sinks.retry import (
    Deliverer,
    DeliveryPolicy,
    PermanentDeliveryError,
    TransientDeliveryError,
    parse_retry_after,
    redact,
)

log = logging.getLogger("engine.sinks.webhook")

SIGNATURE_HEADER = "X-Signature"
USER_AGENT = "signal-engine-webhook/1"


def signature(secret: bytes, body: bytes) -> str:
    """The X-Signature value for `body`: "sha256=" + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Receiver side: does `header` sign exactly these body bytes? Constant-time compare."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)


def webhook_body(event: SinkEvent) -> bytes:
    """The exact bytes that are signed and posted, so receivers verify the signature over them."""
    return dumps({"kind": event.kind, "record": dict(event.record), "text": event.text})


class WebhookSink:
    """POSTs each event to one URL; one aiohttp session, opened on first use."""

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        clock: Clock,
        *,
        timeout_s: float = 10.0,
        policy: DeliveryPolicy | None = None,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
        name: str = "webhook",
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret.encode() if isinstance(secret, str) else secret
        if not self._secret:
            raise ValueError("webhook secret is empty")
        self._secret_text = self._secret.decode("utf-8", "replace")
        self._clock = clock
        self._http = HttpPoster(timeout_s, url, self._redact)
        self._deliverer = Deliverer(
            name, policy or DeliveryPolicy(), clock, metrics=metrics, rand=rand, logger=log
        )

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, url={self.url!r})"

    async def send(self, event: SinkEvent) -> None:
        """Sink.send: a signed POST retried per the delivery policy; redeliveries carry X-Redelivery."""
        body = webhook_body(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature(self._secret, body),
        }
        if "dead_letter" in event.context:
            headers["X-Redelivery"] = "1"
        await self._deliverer.run(lambda: self._post(body, headers))

    async def _post(self, body: bytes, headers: dict[str, str]) -> None:
        answer = await self._http.post(self.url, body, headers)
        status = answer.status
        retry_after = answer.headers.get("Retry-After")
        text = answer.body[:200].decode("utf-8", "replace").strip()
        if 200 <= status < 300:
            return
        message = self._redact(f"{self.url} answered HTTP {status}: {text or 'no body'}")
        if status == 429:
            raise TransientDeliveryError(
                message, reason="rate_limited", retry_after=parse_retry_after(retry_after, self._clock.now())
            )
        if status >= 500:
            raise TransientDeliveryError(
                message, reason="server_error", retry_after=parse_retry_after(retry_after, self._clock.now())
            )
        raise PermanentDeliveryError(message)

    def _redact(self, text: str) -> str:
        return redact(text, (self._secret_text,))

    async def close(self) -> None:
        """Sink.close: close the HTTP session if one was opened."""
        await self._http.close()
