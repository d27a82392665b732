"""Webhook: signed JSON the receiver can verify, retries with backoff, config and secrets.

The receiver in tests/support recomputes the HMAC itself over the raw body it received.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.clock import Clock, VirtualClock
from engine.config import load_config
from engine.errors import ConfigError
from engine.metrics import Metrics
from engine.sinks.base import SinkEvent
from engine.sinks.build import build_sinks, check_sinks
from engine.sinks.retry import (
    DeliveryGaveUp,
    DeliveryPolicy,
    PermanentDeliveryError,
    parse_retry_after,
    redact,
)
from engine.sinks.webhook import WebhookSink, signature, verify, webhook_body
from tests.support import metric, settle, wait_until
from tests.support.telegram_server import InstantClock
from tests.support.webhook_server import SECRET, WebhookReceiver

T0 = 1_700_000_000.0


def event(n: int = 1) -> SinkEvent:
    record = {
        "id": f"sig{n}",
        "kind": "signal",
        "strategy": "psar",
        "symbol": "ETH/BTC",
        "direction": "LONG",
        "entry": 0.095012,
        "stop_loss": 0.094101,
        "take_profits": [0.0969, 0.0978],
        "metadata": {"note": "é ünïcode & <tags>"},
    }
    return SinkEvent("signal", record, f"line {n}", {"history": {"tp1": 1}})


def make_sink(receiver: WebhookReceiver, clock: Clock, **kw: Any) -> WebhookSink:
    policy = kw.pop("policy", DeliveryPolicy(max_attempts=kw.pop("max_attempts", 5)))
    return WebhookSink(
        receiver.url, kw.pop("secret", SECRET), clock, policy=policy, rand=kw.pop("rand", lambda: 1.0), **kw
    )


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = webhook_body(event())
    assert orjson.loads(body) == {"kind": "signal", "record": dict(event().record), "text": "line 1"}
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature(SECRET.encode(), body) == "sha256=" + expected
    assert verify(SECRET.encode(), body, "sha256=" + expected)
    assert not verify(SECRET.encode(), body + b" ", "sha256=" + expected)
    assert not verify(b"other", body, "sha256=" + expected)
    assert not verify(SECRET.encode(), body, None)


async def test_receiver_verifies_the_signature_and_gets_the_event() -> None:
    clock = VirtualClock(T0)
    async with WebhookReceiver(clock) as receiver:
        sink = make_sink(receiver, clock)
        await sink.send(event(1))
        await sink.send(SinkEvent("outcome", {"signal_id": "sig1", "result": "TP1"}, "TP1 hit"))
        await sink.close()
    assert receiver.bad_signatures == 0
    assert receiver.received == [
        {"kind": "signal", "record": dict(event(1).record), "text": "line 1"},
        {"kind": "outcome", "record": {"signal_id": "sig1", "result": "TP1"}, "text": "TP1 hit"},
    ]
    headers = receiver.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Signature"].startswith("sha256=") and len(headers["X-Signature"]) == 7 + 64
    assert "X-Redelivery" not in headers


async def test_wrong_secret_is_refused_once_and_never_shown() -> None:
    clock = VirtualClock(T0, auto=True)
    async with WebhookReceiver(clock) as receiver:
        sink = make_sink(receiver, clock, secret="not-the-shared-secret")
        with pytest.raises(PermanentDeliveryError, match="answered HTTP 401: bad signature") as info:
            await sink.send(event())
        await sink.close()
    assert receiver.bad_signatures == 1 and len(receiver.log) == 1
    assert "not-the-shared-secret" not in str(info.value) + repr(sink)


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    clock = VirtualClock(T0, auto=True)
    async with WebhookReceiver(clock) as receiver:
        receiver.fail_next_n, receiver.fail_status = 1, status
        sink = make_sink(receiver, clock)
        with pytest.raises(PermanentDeliveryError, match=f"HTTP {status}"):
            await sink.send(event())
        await sink.close()
    assert [s for _, s in receiver.log] == [status]


async def test_server_errors_back_off_exponentially_with_jitter() -> None:
    clock = InstantClock(T0)
    metrics = Metrics()
    draws = iter([0.0, 0.5, 1.0])
    async with WebhookReceiver(clock) as receiver:
        receiver.fail_next_n, receiver.fail_status = 3, 503
        sink = make_sink(receiver, clock, metrics=metrics, rand=lambda: next(draws))
        await sink.send(event())
        await sink.close()
    # delay before retry n is uniform in [d/2, d], d = 1, 2, 4 s
    assert clock.sleeps == [0.5, 1.5, 4.0]
    assert receiver.log == [(T0, 503), (T0 + 0.5, 503), (T0 + 2.0, 503), (T0 + 6.0, 204)]
    assert len(receiver.received) == 1
    assert metric(metrics, "engine_sink_retries_total", sink="webhook", reason="server_error") == 3


async def test_backoff_is_capped_and_attempts_are_bounded() -> None:
    clock = InstantClock(T0)
    async with WebhookReceiver(clock) as receiver:
        receiver.outage = True
        policy = DeliveryPolicy(max_attempts=6, base_delay=1.0, max_delay=8.0)
        sink = make_sink(receiver, clock, policy=policy)
        with pytest.raises(DeliveryGaveUp, match=r"gave up after 6 attempts; last: .*HTTP 503"):
            await sink.send(event())
        await sink.close()
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert len(receiver.log) == 6


async def test_429_retry_after_is_honoured_on_the_clock() -> None:
    clock = VirtualClock(T0)
    metrics = Metrics()
    async with WebhookReceiver(clock) as receiver:
        receiver.fail_next_n, receiver.fail_status, receiver.retry_after = 1, 429, "30"
        sink = make_sink(receiver, clock, metrics=metrics)
        task = asyncio.create_task(sink.send(event()))
        await wait_until(lambda: clock.pending == 1)
        clock.advance(29)
        await settle()
        assert receiver.log == [(T0, 429)] and not task.done()
        clock.advance(1)
        await asyncio.wait_for(task, 5)
        await sink.close()
    assert receiver.log == [(T0, 429), (T0 + 30, 204)]
    assert metric(metrics, "engine_sink_retries_total", sink="webhook", reason="rate_limited") == 1


async def test_timeouts_and_refused_connections_are_retried() -> None:
    clock = InstantClock(T0)
    metrics = Metrics()
    async with WebhookReceiver(clock) as receiver:
        receiver.delay_s = 0.2
        sink = make_sink(receiver, clock, metrics=metrics, max_attempts=2, timeout_s=0.05)
        with pytest.raises(DeliveryGaveUp, match=r"no answer from .* within 0\.05s"):
            await sink.send(event())
        await sink.close()
    assert metric(metrics, "engine_sink_retries_total", sink="webhook", reason="timeout") == 1
    sink = make_sink(receiver, clock, metrics=metrics, max_attempts=3)  # the receiver is gone now
    with pytest.raises(DeliveryGaveUp, match="network error"):
        await sink.send(event())
    await sink.close()
    assert metric(metrics, "engine_sink_retries_total", sink="webhook", reason="network") == 2


def test_parse_retry_after() -> None:
    assert parse_retry_after(None, T0) is None
    assert parse_retry_after("12", T0) == 12.0
    assert parse_retry_after(" 1.5 ", T0) == 1.5
    assert parse_retry_after("-3", T0) == 0.0
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after("nan", T0) is None
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", 1_699_999_990.0) == 70.0


def test_redact() -> None:
    assert redact("url /botSECRET/x failed: SECRET", ["SECRET", ""]) == "url /bot***/x failed: ***"


# --- config and secrets --------------------------------------------------------------------------


def write_config(directory: Path, engine_toml: str) -> Path:
    (directory / "strategies").mkdir(parents=True, exist_ok=True)
    (directory / "strategies" / "psar.toml").write_text('symbols = ["ETH/BTC"]\n')
    (directory / "engine.toml").write_text('[market]\nsource = "replay"\n' + engine_toml)
    return directory


def test_webhook_defaults_off(tmp_path: Path) -> None:
    config, problems = load_config(write_config(tmp_path, ""))
    assert problems == [] and config is not None
    wh = config.settings.sinks.webhook
    assert (wh.enabled, wh.url, wh.timeout_seconds, wh.max_attempts) == (False, None, 10.0, 5)


def test_enabled_webhook_needs_a_valid_url(tmp_path: Path) -> None:
    _, problems = load_config(write_config(tmp_path, "[sinks.webhook]\nenabled = true\n"))
    assert [str(p) for p in problems] == [
        f"{tmp_path}/engine.toml: sinks.webhook.url: Value error, required when sinks.webhook.enabled = true"
    ]
    _, problems = load_config(write_config(tmp_path, '[sinks.webhook]\nurl = "ftp://x/y"\n'))
    assert [p.path for p in problems] == ["sinks.webhook.url"]
    assert "http(s) URL" in problems[0].message


def test_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[sinks.webhook]\nenabled = true\nurl = "https://file.example/hook"\n')
    monkeypatch.setenv("ENGINE__SINKS__WEBHOOK__URL", "https://env.example/hook")
    monkeypatch.setenv("ENGINE__SINKS__WEBHOOK__MAX_ATTEMPTS", "2")
    config, problems = load_config(tmp_path)
    assert problems == [] and config is not None
    assert config.settings.sinks.webhook.url == "https://env.example/hook"
    assert config.settings.sinks.webhook.max_attempts == 2
    monkeypatch.setenv("ENGINE__SINKS__WEBHOOK__URL", "not a url")
    _, problems = load_config(tmp_path)
    assert [(p.file, p.path) for p in problems] == [("env ENGINE__SINKS__WEBHOOK__URL", "sinks.webhook.url")]


def test_secret_only_from_env_or_a_private_file(tmp_path: Path) -> None:
    config, _ = load_config(write_config(tmp_path, '[sinks.webhook]\nenabled = true\nurl = "http://h/x"\n'))
    assert config is not None
    with pytest.raises(ConfigError) as info:
        build_sinks(config.settings, VirtualClock(), Metrics(), env={})
    assert [str(p) for p in info.value.problems] == [
        "env ENGINE_WEBHOOK_SECRET: sinks.webhook: required when sinks.webhook.enabled "
        "(or set sinks.webhook.secret_file to a chmod 600 file)"
    ]
    sinks = build_sinks(
        config.settings, VirtualClock(), Metrics(), io.StringIO(), env={"ENGINE_WEBHOOK_SECRET": "k"}
    )
    assert [s.name for s in sinks] == ["console", "webhook"]

    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    os.chmod(secret_file, 0o640)
    toml = f'[sinks.webhook]\nenabled = true\nurl = "http://h/x"\nsecret_file = "{secret_file}"\n'
    config, _ = load_config(write_config(tmp_path, toml))
    assert config is not None
    (problem,) = check_sinks(config.settings, env={})
    assert (problem.file, problem.path) == (str(secret_file), "sinks.webhook.secret_file")
    assert "mode 0640" in problem.message
    os.chmod(secret_file, 0o600)
    assert check_sinks(config.settings, env={}) == []
    config, _ = load_config(write_config(tmp_path, toml.replace(str(secret_file), str(tmp_path / "nope"))))
    assert config is not None
    assert [p.message for p in check_sinks(config.settings, env={})] == [
        "cannot read secret file: No such file or directory"
    ]


async def test_configured_from_env_delivers_signed_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = VirtualClock(T0)
    async with WebhookReceiver(clock) as receiver:
        write_config(tmp_path, "[sinks.console]\nenabled = false\n[sinks.webhook]\nenabled = true\n")
        monkeypatch.setenv("ENGINE__SINKS__WEBHOOK__URL", receiver.url)
        monkeypatch.setenv("ENGINE_WEBHOOK_SECRET", SECRET)
        config, problems = load_config(tmp_path)
        assert problems == [] and config is not None
        (sink,) = build_sinks(config.settings, clock, Metrics())
        await sink.send(event())
        await sink.close()
    assert len(receiver.received) == 1 and receiver.bad_signatures == 0
    assert SECRET not in caplog.text
