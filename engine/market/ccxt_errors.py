"""ccxt exceptions, translated into the engine's error tree.

This is the only module (with exchange.py) that knows ccxt's exception classes, so the retry
policy, the breaker and everything above the gateway reason about one hierarchy.

Two details ccxt does not hand over directly:

* 418 versus 429. Binance's `handle_errors` raises `DDoSProtection` for both, and the base
  class maps 418 to `DDoSProtection` and 429 to `RateLimitExceeded`; in both code paths the
  status code is in the message (`"binance 418 I'm a teapot {...}"`, or
  `"<id> GET <url> 429 Too Many Requests <body>"`), before the body, so it is read from there.
* Retry-After. ccxt stores the headers of the last response on the client
  (`last_response_headers`) before it raises, and nothing awaits between that and the
  exception reaching the caller, so the caller passes those headers in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import aiohttp
from ccxt.base import errors as cx

from engine.errors import (
    BadResponse,
    BadSymbol,
    ExchangeUnavailable,
    IPBanned,
    MarketError,
    NetworkError,
    RateLimited,
    RequestError,
    RequestTimeout,
    TransportError,
)

_STATUS = re.compile(r"(?:^|\s)(418|429)(?:\s|$)")


def translate(
    exc: BaseException, exchange: str, headers: Mapping[str, str] | None = None, now: float = 0.0
) -> MarketError:
    """The engine error for a ccxt exception; callers `raise translate(...) from exc`.

    `now` (clock seconds) only matters when Retry-After is an HTTP date rather than seconds.
    """
    text = f"{exchange}: {type(exc).__name__}: {exc}"
    if isinstance(exc, cx.DDoSProtection | cx.RateLimitExceeded):
        retry_after = parse_retry_after(header(headers, "Retry-After"), now)
        match = _STATUS.search(str(exc))
        if match and match.group(1) == "418":
            return IPBanned(text, retry_after)
        return RateLimited(text, retry_after)
    if isinstance(exc, cx.RequestTimeout):
        return RequestTimeout(text)
    if isinstance(exc, cx.ExchangeNotAvailable):
        # ccxt reports a refused or reset connection as "not available"; ours is more precise.
        if isinstance(exc.__cause__, aiohttp.ClientConnectionError | OSError):
            return NetworkError(text)
        return ExchangeUnavailable(text)
    if isinstance(exc, cx.NetworkError):
        return NetworkError(text)
    if isinstance(exc, cx.BadResponse):
        return BadResponse(text)
    if isinstance(exc, cx.OperationFailed):
        return TransportError(text)
    if isinstance(exc, cx.BadSymbol):
        return BadSymbol(text)
    if isinstance(exc, cx.ExchangeError) and isinstance(exc.__cause__, aiohttp.ClientError):
        # ccxt wraps aiohttp's payload and protocol errors as a plain ExchangeError.
        return NetworkError(text)
    return RequestError(text)


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A response header by case-insensitive name (ccxt keeps aiohttp's spelling)."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After in seconds from now: either delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
