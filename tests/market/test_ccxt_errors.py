from __future__ import annotations

import aiohttp
import pytest
from ccxt.base import errors as cx

from engine import errors as e
from engine.market.ccxt_errors import header, parse_retry_after, translate


@pytest.mark.parametrize(
    ("ccxt_error", "engine_error"),
    [
        (cx.RequestTimeout("binance GET /klines"), e.RequestTimeout),
        (cx.ExchangeNotAvailable("binance GET /klines 503"), e.ExchangeUnavailable),
        (cx.OnMaintenance("binance system maintenance"), e.ExchangeUnavailable),
        (cx.NetworkError("reset"), e.NetworkError),
        (cx.InvalidNonce("nonce"), e.NetworkError),
        (cx.BadResponse("not json"), e.BadResponse),
        (cx.NullResponse("empty"), e.BadResponse),
        (cx.CancelPending("pending"), e.TransportError),
        (cx.BadSymbol("binance does not have market symbol XRP/XYZ"), e.BadSymbol),
        (cx.BadRequest("binance {-1100}"), e.RequestError),
        (cx.ArgumentsRequired("since"), e.RequestError),
        (cx.NotSupported("fetchOHLCV"), e.RequestError),
        (cx.AuthenticationError("key"), e.RequestError),
        (cx.ExchangeError("binance {-1000}"), e.RequestError),
        (cx.RateLimitExceeded("binance GET /klines 429 Too Many Requests"), e.RateLimited),
    ],
)
def test_maps_to_the_most_specific_engine_error(ccxt_error: Exception, engine_error: type[Exception]) -> None:
    mapped = translate(ccxt_error, "binance")
    assert type(mapped) is engine_error
    assert "binance" in str(mapped)


def test_binance_429_is_rate_limited_with_retry_after() -> None:
    exc = cx.DDoSProtection('binance 429 Too Many Requests {"code":-1003,"msg":"Too many requests."}')
    mapped = translate(exc, "binance", {"Retry-After": "12", "X-MBX-USED-WEIGHT-1M": "6001"})
    assert type(mapped) is e.RateLimited
    assert isinstance(mapped, e.RateLimited) and mapped.retry_after == 12.0


def test_binance_418_is_an_ip_ban() -> None:
    exc = cx.DDoSProtection('binance 418 I\'m a teapot {"code":-1003,"msg":"banned until 1700000418000"}')
    mapped = translate(exc, "binance", {"retry-after": "600"})
    assert type(mapped) is e.IPBanned
    assert isinstance(mapped, e.IPBanned) and mapped.retry_after == 600.0


def test_base_class_418_message_is_an_ip_ban() -> None:
    exc = cx.DDoSProtection("kraken GET https://api.kraken.com/0/public/OHLC 418 I'm a teapot ")
    assert type(translate(exc, "kraken")) is e.IPBanned


def test_429_body_mentioning_418_is_not_a_ban() -> None:
    exc = cx.DDoSProtection('binance 429 Too Many Requests {"msg":"retry in 418 ms"}')
    assert type(translate(exc, "binance")) is e.RateLimited


def test_connection_refused_is_a_network_error_not_an_outage() -> None:
    exc = cx.ExchangeNotAvailable("binance GET http://127.0.0.1:1/api/v3/klines")
    exc.__cause__ = aiohttp.ClientConnectionError("refused")
    assert type(translate(exc, "binance")) is e.NetworkError


def test_aiohttp_payload_error_wrapped_as_exchange_error_is_transport() -> None:
    exc = cx.ExchangeError("binance GET /klines")
    exc.__cause__ = aiohttp.ClientPayloadError("truncated")
    assert type(translate(exc, "binance")) is e.NetworkError


def test_retryable_and_fatal_split_follows_the_engine_tree() -> None:
    assert isinstance(translate(cx.RequestTimeout("t"), "x"), e.RetryableError)
    assert isinstance(translate(cx.BadSymbol("s"), "x"), e.FatalError)


def test_raise_from_keeps_the_ccxt_error_as_cause() -> None:
    original = cx.RequestTimeout("slow")
    with pytest.raises(e.RequestTimeout) as info:
        try:
            raise original
        except cx.BaseError as exc:
            raise translate(exc, "binance") from exc
    assert info.value.__cause__ is original


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 UTC
    assert parse_retry_after(value, now) == expected


def test_header_lookup_ignores_case() -> None:
    assert header({"x-mbx-used-weight-1m": "7"}, "X-MBX-USED-WEIGHT-1M") == "7"
    assert header(None, "Retry-After") is None
