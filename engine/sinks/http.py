"""One HTTP POST for the sinks that speak HTTP (Telegram, webhook).

Both need the same lazily opened session, the same per-request timeout and the same mapping
of "no answer" (timeout, refused, reset) to a transient delivery error whose text has the
sink's secret removed; what an answer *means* stays with each sink.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from engine.sinks.retry import TransientDeliveryError


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: status, headers and at most the first `MAX_BODY` bytes of the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


MAX_BODY = 64 * 1024


class HttpPoster:
    """A reusable session; `shown_url` is what error messages may print (secrets masked)."""

    def __init__(self, timeout_s: float, shown_url: str, redact: Callable[[str], str]) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._shown_url = shown_url
        self._redact = redact
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST and read the answer; TransientDeliveryError when no answer came at all."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=dict(headers)) as resp:
                # header names stay case-insensitive, as HTTP says they are
                return Answer(resp.status, CIMultiDict(resp.headers), await resp.content.read(MAX_BODY))
        except TimeoutError:
            raise TransientDeliveryError(
                f"no answer from {self._shown_url} within {self._timeout_s:g}s", reason="timeout"
            ) from None
        except aiohttp.ClientError as exc:
            detail = self._redact(f"{type(exc).__name__}: {exc}")
            raise TransientDeliveryError(f"network error: {detail}", reason="network") from None

    async def close(self) -> None:
        """Close the session if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None
