"""Telegram: message content, the Bot API conversation (429, 5xx, refusals), config and secrets.

Every HTTP test talks to the local Bot API server in tests/support over loopback with the real
aiohttp client; retry waits run on a VirtualClock, so no test sleeps for a backoff.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from engine.clock import Clock, VirtualClock
from engine.config import load_config
from engine.errors import ConfigError
from engine.metrics import Metrics
from engine.signals.model import Direction, Signal
from engine.sinks.base import SinkEvent
from engine.sinks.build import build_sinks, check_sinks
from engine.sinks.console import ConsoleSink
from engine.sinks.dispatch import DeadLetters, Dispatcher
from engine.sinks.retry import DeliveryGaveUp, DeliveryPolicy, PermanentDeliveryError
from engine.sinks.telegram import TelegramSink, history_line, telegram_text
from tests.support import metric, settle, wait_until
from tests.support.telegram_server import CHAT_ID, TOKEN, InstantClock, TelegramServer, html_problem

T0 = 1_700_000_000.0
HISTORY = {"tp1": 3, "tp2": 1, "tp3": 0, "sl": 2, "expired": 0, "closed": 6, "win_rate": 0.6667}


def signal_event(**overrides: Any) -> SinkEvent:
    fields: dict[str, Any] = {
        "id": "0123456789abcdef",
        "strategy": "psar",
        "symbol": "ETH/BTC",
        "direction": Direction.LONG,
        "timeframe": "5m",
        "exchange": "binance",
        "entry": 0.095012,
        "stop_loss": 0.094101,
        "take_profits": (0.0969, 0.0978, 0.0991),
        "created_at": "2018-01-12T10:35:00Z",
        "bar_close_ms": 1_515_753_300_000,
        "confidence": 0.72,
        "rationale": ("SAR flipped below price",),
    }
    fields.update(overrides)
    sig = Signal(**fields)
    return SinkEvent("signal", sig.to_record(), "console line", {"history": HISTORY})


def consensus_event(alert: str = "new") -> SinkEvent:
    contributors = [
        {"strategy": "harmonic", "weight": 2.0, "age_minutes": 3.0, "entry": 10.0, "stop_loss": 9.6},
        {"strategy": "candlestick", "weight": 1.0, "age_minutes": 10.0, "entry": 10.1, "stop_loss": 9.7},
        {"strategy": "psar", "weight": 0.75, "age_minutes": 20.0, "entry": 10.2, "stop_loss": 9.8},
    ]
    new = ["harmonic", "candlestick", "psar"]
    if alert == "update":
        contributors.append({"strategy": "mtf", "weight": 1.5, "age_minutes": 0.0})
        new = ["mtf"]
    record = {
        "id": "cafe",
        "kind": "consensus",
        "strategy": "consensus",
        "symbol": "ABC/USDT",
        "direction": "LONG",
        "timeframe": "15m",
        "exchange": "binance",
        "entry": 10.0778,
        "stop_loss": 9.7,
        "take_profits": [10.7, 11.1],
        "created_at": "2024-01-01T00:20:00Z",
        "confidence": 53.6,
        "rationale": ["3 strategies agree"],
        "metadata": {
            "alert": alert,
            "score": 3.75 if alert == "new" else 5.25,
            "label": "HIGH" if alert == "new" else "EXTREME",
            "rr1": 1.65,
            "new_contributors": new,
            "contributors": contributors,
        },
    }
    return SinkEvent("consensus", record, "consensus line", {"history": HISTORY})


def outcome_event(event: str = "TP1", result: str = "TP1", final: bool = False) -> SinkEvent:
    record = {
        "kind": "outcome",
        "signal_id": "0123456789abcdef",
        "strategy": "psar",
        "symbol": "ETH/BTC",
        "timeframe": "5m",
        "direction": "LONG",
        "event": event,
        "result": result,
        "final": final,
        "price": 0.0969,
        "at": "2018-01-12T12:00:00Z",
        "r_multiple": 2.06,
        "pnl_percent": 1.987,
    }
    return SinkEvent("outcome", record, "outcome line", {"history": HISTORY})


def make_sink(server: TelegramServer, clock: Clock, **kw: Any) -> TelegramSink:
    policy = kw.pop("policy", DeliveryPolicy(max_attempts=kw.pop("max_attempts", 5)))
    return TelegramSink(
        kw.pop("token", TOKEN), CHAT_ID, clock, api_url=server.url, policy=policy, rand=lambda: 1.0, **kw
    )


# --- message text ------------------------------------------------------------------------------


def test_signal_message_has_every_field_and_valid_html() -> None:
    text = telegram_text(signal_event())
    assert html_problem(text) is None
    lines = text.splitlines()
    assert lines[0] == "🟢 <b>LONG ETH/BTC</b> · 5m · binance"
    assert "Strategy: <b>psar</b>" in lines
    assert "Entry: <code>0.095012</code>" in lines
    assert "SL: <code>0.094101</code> (-0.96%)" in lines
    assert "TP1: <code>0.096900</code> (+1.99%)" in lines
    assert "TP2: <code>0.097800</code> (+2.93%)" in lines
    assert "TP3: <code>0.099100</code> (+4.30%)" in lines
    assert "R:R: 1:2.07" in lines
    assert "Confidence: 72%" in lines
    assert "💡 SAR flipped below price" in lines
    assert "📊 TP1 3 | TP2 1 | SL 2 (win rate 67%)" in lines
    assert "🕒 2018-01-12T10:35:00Z" in lines


def test_short_signal_without_history_or_confidence() -> None:
    ev = signal_event(direction=Direction.SHORT, stop_loss=0.096, take_profits=(0.094,), confidence=None)
    ev = SinkEvent(ev.kind, ev.record, ev.text)
    text = telegram_text(ev)
    assert text.startswith("🔴 <b>SHORT ETH/BTC</b>")
    assert "Confidence" not in text and "📊" not in text and "TP2" not in text


def test_every_interpolated_value_is_escaped() -> None:
    ev = signal_event(
        symbol="<b>X</b>/Y&Z",
        strategy="a<i>b",
        rationale=("close < SAR & volume > avg", "</code> injected <a href='x'>"),
    )
    text = telegram_text(ev)
    assert html_problem(text) is None
    assert "&lt;b&gt;X&lt;/b&gt;/Y&amp;Z" in text
    assert "a&lt;i&gt;b" in text
    assert "💡 close &lt; SAR &amp; volume &gt; avg" in text
    assert "<a href" not in text and "</code> injected" not in text


def test_history_line() -> None:
    assert history_line(HISTORY) == "TP1 3 | TP2 1 | SL 2 (win rate 67%)"
    more = {"tp1": 1, "tp2": 2, "tp3": 4, "sl": 1, "expired": 2, "closed": 10, "win_rate": 0.7}
    assert history_line(more) == "TP1 1 | TP2 2 | TP3 4 | SL 1 | expired 2 (win rate 70%)"
    assert history_line({"closed": 0, "win_rate": None}) == "no closed signals yet"
    assert history_line({"tp1": 1}) == "TP1 1 | TP2 0 | SL 0 (win rate —)"


def test_consensus_new_lists_contributors_with_weight_and_age() -> None:
    text = telegram_text(consensus_event("new"))
    assert html_problem(text) is None
    lines = text.splitlines()
    assert lines[0] == "<b>🆕 CONSENSUS NEW</b>"
    assert lines[1] == "🟢 <b>LONG ABC/USDT</b> · 15m · binance"
    assert "Score: <b>3.75</b> (HIGH) · 3 strategies" in lines
    assert "• harmonic — weight 2, 3m ago" in lines
    assert "• candlestick — weight 1, 10m ago" in lines
    assert "• psar — weight 0.75, 20m ago" in lines
    assert "R:R: 1:1.65" in lines
    assert "Entry: <code>10.0778</code>" in lines
    assert not any(line.startswith("Joined") for line in lines)


def test_consensus_update_says_update_and_who_joined() -> None:
    text = telegram_text(consensus_event("update"))
    assert html_problem(text) is None
    lines = text.splitlines()
    assert lines[0] == "<b>🔄 CONSENSUS UPDATE</b>"
    assert "Score: <b>5.25</b> (EXTREME) · 4 strategies" in lines
    assert "• 🆕 mtf — weight 1.5, 0m ago" in lines
    assert "• harmonic — weight 2, 3m ago" in lines
    assert "Joined: <b>mtf</b>" in lines


def test_outcome_messages() -> None:
    text = telegram_text(outcome_event())
    assert html_problem(text) is None
    lines = text.splitlines()
    assert lines[0] == "<b>✅ TP1 hit</b>"
    assert lines[1] == "🟢 <b>LONG ETH/BTC</b> · 5m"
    assert "Price: <code>0.0969</code> · +1.99% · +2.06R" in lines
    assert "🕒 2018-01-12T12:00:00Z · signal <code>0123456789abcdef</code>" in lines
    assert not any(line.startswith("Closed") for line in lines)
    stopped = telegram_text(outcome_event("SL", "TP1", final=True)).splitlines()
    assert stopped[0] == "<b>🛑 Stop loss hit</b>"
    assert "Closed as <b>TP1</b>" in stopped
    assert telegram_text(outcome_event("EXPIRED", "EXPIRED", True)).startswith("<b>⌛ Expired</b>")


def test_redelivered_message_says_it_is_late() -> None:
    ev = signal_event()
    late = SinkEvent(ev.kind, ev.record, ev.text, {"dead_letter": {"at": "2018-01-12T10:35:05Z"}})
    assert telegram_text(late).endswith(
        "⏳ <i>Delayed delivery (first attempt failed 2018-01-12T10:35:05Z)</i>"
    )


def test_oversized_message_falls_back_to_the_plain_line() -> None:
    ev = signal_event(rationale=tuple("x" * 290 for _ in range(6)))
    contributors = [{"strategy": "s" * 250, "weight": 1} for _ in range(20)]
    big = consensus_event()
    record = {**big.record, "metadata": {**big.record["metadata"], "contributors": contributors}}
    text = telegram_text(SinkEvent("consensus", record, "plain <line>"))
    assert text == "plain &lt;line&gt;"
    assert len(telegram_text(ev)) < 4096


# --- the Bot API conversation --------------------------------------------------------------------


async def test_sends_html_message_to_the_bot_api() -> None:
    clock = VirtualClock(T0)
    async with TelegramServer(clock) as server:
        sink = make_sink(server, clock)
        await sink.send(signal_event())
        await sink.send(consensus_event())
        await sink.send(outcome_event())
        await sink.close()
    assert [s for _, s in server.log] == [200, 200, 200]
    first = server.messages[0]
    assert first["chat_id"] == CHAT_ID and first["parse_mode"] == "HTML"
    assert first["text"] == telegram_text(signal_event())


async def test_429_waits_retry_after_on_the_clock_before_retrying() -> None:
    clock = VirtualClock(T0)
    metrics = Metrics()
    async with TelegramServer(clock) as server:
        server.rate_limit_next_n, server.retry_after = 1, 7
        sink = make_sink(server, clock, metrics=metrics)
        task = asyncio.create_task(sink.send(signal_event()))
        await wait_until(lambda: clock.pending == 1)
        assert server.log == [(T0, 429)]
        clock.advance(6.9)
        await settle()
        assert len(server.log) == 1 and not task.done()
        clock.advance(0.1)
        await asyncio.wait_for(task, 5)
        await sink.close()
    assert server.log == [(T0, 429), (T0 + 7, 200)]
    assert len(server.messages) == 1
    assert metric(metrics, "engine_sink_retries_total", sink="telegram", reason="rate_limited") == 1


async def test_retry_after_longer_than_allowed_gives_up_at_once() -> None:
    clock = VirtualClock(T0, auto=True)
    async with TelegramServer(clock) as server:
        server.rate_limit_next_n, server.retry_after = 1, 3600
        sink = make_sink(server, clock, policy=DeliveryPolicy(max_retry_after=300))
        with pytest.raises(DeliveryGaveUp, match="asked to wait 3600s"):
            await sink.send(signal_event())
        await sink.close()
    assert len(server.log) == 1


async def test_server_errors_are_retried_with_exponential_backoff() -> None:
    clock = VirtualClock(T0, auto=True)
    metrics = Metrics()
    async with TelegramServer(clock) as server:
        server.fail_next_n, server.fail_status = 3, 500
        sink = make_sink(server, clock, metrics=metrics)
        await sink.send(signal_event())
        await sink.close()
    assert server.log == [(T0, 500), (T0 + 1, 500), (T0 + 3, 500), (T0 + 7, 200)]
    assert metric(metrics, "engine_sink_retries_total", sink="telegram", reason="server_error") == 3


@pytest.mark.parametrize(
    ("status", "token", "expected"),
    [
        (400, TOKEN, "HTTP 400: Bad Request"),
        (403, TOKEN, "HTTP 403: Forbidden: bot was blocked"),
        (401, "42:WRONG-token-value", "HTTP 401: Unauthorized"),
    ],
)
async def test_refusals_are_not_retried(status: int, token: str, expected: str) -> None:
    clock = VirtualClock(T0, auto=True)
    async with TelegramServer(clock) as server:
        if status != 401:
            server.fail_next_n, server.fail_status = 1, status
        sink = make_sink(server, clock, token=token)
        with pytest.raises(PermanentDeliveryError, match=expected) as info:
            await sink.send(signal_event())
        await sink.close()
    assert [s for _, s in server.log] == [status]
    assert token not in str(info.value)


async def test_unknown_chat_is_a_refusal() -> None:
    clock = VirtualClock(T0, auto=True)
    async with TelegramServer(clock, chats=("-1",)) as server:
        sink = make_sink(server, clock)
        with pytest.raises(PermanentDeliveryError, match="chat not found"):
            await sink.send(signal_event())
        await sink.close()


async def test_outage_gives_up_after_max_attempts() -> None:
    clock = VirtualClock(T0, auto=True)
    async with TelegramServer(clock) as server:
        server.outage = True
        sink = make_sink(server, clock, max_attempts=3)
        with pytest.raises(DeliveryGaveUp, match=r"gave up after 3 attempts; last: .*HTTP 502"):
            await sink.send(signal_event())
        await sink.close()
    assert [s for _, s in server.log] == [502, 502, 502]


async def test_connection_refused_and_timeout_are_retried_then_given_up() -> None:
    clock = VirtualClock(T0, auto=True)
    metrics = Metrics()
    server = TelegramServer(clock)
    await server.start()
    await server.close()  # nothing listens on that port any more
    sink = make_sink(server, clock, max_attempts=2, metrics=metrics)
    with pytest.raises(DeliveryGaveUp, match="network error") as info:
        await sink.send(signal_event())
    assert TOKEN not in str(info.value)
    await sink.close()
    assert metric(metrics, "engine_sink_retries_total", sink="telegram", reason="network") == 1

    async with TelegramServer(clock) as slow:
        slow.delay_s = 0.2
        sink = make_sink(slow, clock, max_attempts=1, timeout_s=0.05)
        with pytest.raises(DeliveryGaveUp, match=r"no answer from .*/bot\*\*\*/sendMessage within 0.05s"):
            await sink.send(signal_event())
        await sink.close()


async def test_token_never_reaches_logs_or_the_dead_letter_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = InstantClock(T0)
    metrics = Metrics()
    dead = DeadLetters(tmp_path / "dead-letter.jsonl")
    caplog.set_level(logging.DEBUG)
    async with TelegramServer(clock) as server:
        server.outage = True
        ok = make_sink(server, clock, max_attempts=2)
        wrong = make_sink(server, clock, token="42:ANOTHER-secret-token", name="telegram-wrong")
        dispatcher = Dispatcher([ok, wrong], metrics, dead)
        dispatcher.start()
        dispatcher.publish(signal_event())
        await wait_until(lambda: dead.count == 2)
        server.outage = False
        dispatcher.publish(signal_event())
        await wait_until(lambda: dead.count == 3)
        await dispatcher.close(grace=1)
    written = dead.path.read_text()
    reasons = sorted(line.split('"reason":"')[1].split('"')[0] for line in written.splitlines())
    assert any("HTTP 502" in r for r in reasons) and any("HTTP 401" in r for r in reasons)
    for secret in (TOKEN, "42:ANOTHER-secret-token", TOKEN.split(":")[1]):
        assert secret not in written
        assert secret not in caplog.text
        assert secret not in repr(ok) + repr(wrong)
    assert "/bot***/sendMessage" in ok.safe_url
    assert metric(metrics, "engine_sink_messages_total", sink="telegram", outcome="dead_letter") == 1
    assert metric(metrics, "engine_sink_messages_total", sink="telegram", outcome="ok") == 1


# --- config and secrets --------------------------------------------------------------------------


def write_config(directory: Path, engine_toml: str) -> Path:
    (directory / "strategies").mkdir(parents=True, exist_ok=True)
    (directory / "strategies" / "psar.toml").write_text('symbols = ["ETH/BTC"]\n')
    (directory / "engine.toml").write_text('[market]\nsource = "replay"\n' + engine_toml)
    return directory


def test_defaults_leave_telegram_off(tmp_path: Path) -> None:
    config, problems = load_config(write_config(tmp_path, ""))
    assert problems == [] and config is not None
    tg = config.settings.sinks.telegram
    assert tg.enabled is False and tg.chat_id is None
    assert tg.api_url == "https://api.telegram.org"
    assert (tg.timeout_seconds, tg.max_attempts) == (10.0, 5)
    sinks = build_sinks(config.settings, VirtualClock(), Metrics(), io.StringIO(), env={})
    assert [type(s) for s in sinks] == [ConsoleSink]


def test_enabled_without_chat_id_names_the_field(tmp_path: Path) -> None:
    config, problems = load_config(write_config(tmp_path, "[sinks.telegram]\nenabled = true\n"))
    assert config is None
    assert [str(p) for p in problems] == [
        f"{tmp_path}/engine.toml: sinks.telegram.chat_id: "
        "Value error, required when sinks.telegram.enabled = true"
    ]


def test_chat_id_accepts_numbers_and_channel_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, problems = load_config(write_config(tmp_path, "[sinks.telegram]\nchat_id = -1001234567890\n"))
    assert problems == [] and config is not None
    assert config.settings.sinks.telegram.chat_id == "-1001234567890"
    monkeypatch.setenv("ENGINE__SINKS__TELEGRAM__CHAT_ID", "@signals_channel")
    monkeypatch.setenv("ENGINE__SINKS__TELEGRAM__API_URL", "http://127.0.0.1:8081/")
    config, problems = load_config(tmp_path)
    assert problems == [] and config is not None
    assert config.settings.sinks.telegram.chat_id == "@signals_channel"
    assert config.settings.sinks.telegram.api_url == "http://127.0.0.1:8081"
    monkeypatch.setenv("ENGINE__SINKS__TELEGRAM__CHAT_ID", "my chat")
    _, problems = load_config(tmp_path)
    assert [p.file for p in problems] == ["env ENGINE__SINKS__TELEGRAM__CHAT_ID"]
    assert problems[0].path == "sinks.telegram.chat_id"


def test_missing_token_is_a_config_error(tmp_path: Path) -> None:
    toml = f'[sinks.telegram]\nenabled = true\nchat_id = "{CHAT_ID}"\n'
    config, problems = load_config(write_config(tmp_path, toml))
    assert problems == [] and config is not None
    with pytest.raises(ConfigError) as info:
        build_sinks(config.settings, VirtualClock(), Metrics(), env={})
    assert [str(p) for p in info.value.problems] == [
        "env ENGINE_TELEGRAM_TOKEN: sinks.telegram: required when sinks.telegram.enabled "
        "(or set sinks.telegram.token_file to a chmod 600 file)"
    ]
    assert check_sinks(config.settings, env={}) == info.value.problems
    bad = check_sinks(config.settings, env={"ENGINE_TELEGRAM_TOKEN": "12:ab/../x"})
    assert [p.message for p in bad] == ["malformed bot token (expected the form 123456789:AA...)"]
    sinks = build_sinks(config.settings, VirtualClock(), Metrics(), env={"ENGINE_TELEGRAM_TOKEN": TOKEN})
    (tg,) = (s for s in sinks if isinstance(s, TelegramSink))
    assert tg.chat_id == CHAT_ID and tg.name == "telegram"


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    toml = f'[sinks.telegram]\nenabled = true\nchat_id = "{CHAT_ID}"\ntoken_file = "{token_file}"\n'
    config, problems = load_config(write_config(tmp_path / "cfg", toml))
    assert problems == [] and config is not None
    with pytest.raises(ConfigError) as info:
        build_sinks(config.settings, VirtualClock(), Metrics(), env={})
    (problem,) = info.value.problems
    assert str(problem) == (
        f"{token_file}: sinks.telegram.token_file: secret file has mode 0644; "
        "it must not be readable by group or others (chmod 600)"
    )
    os.chmod(token_file, 0o600)
    sinks = build_sinks(config.settings, VirtualClock(), Metrics(), env={})
    assert any(isinstance(s, TelegramSink) for s in sinks)
    (tmp_path / "empty").write_text("")
    os.chmod(tmp_path / "empty", 0o600)
    config2, _ = load_config(
        write_config(tmp_path / "cfg", toml.replace(str(token_file), str(tmp_path / "empty")))
    )
    assert config2 is not None
    assert [p.message for p in check_sinks(config2.settings, env={})] == ["secret file is empty"]


async def test_built_sink_delivers_through_the_configured_api_url(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    async with TelegramServer(clock) as server:
        toml = f"[sinks.console]\nenabled = false\n[sinks.telegram]\nenabled = true\nchat_id = {CHAT_ID}\n"
        toml += f'api_url = "{server.url}"\n'
        config, problems = load_config(write_config(tmp_path, toml))
        assert problems == [] and config is not None
        (sink,) = build_sinks(config.settings, clock, Metrics(), env={"ENGINE_TELEGRAM_TOKEN": TOKEN})
        await sink.send(signal_event())
        await sink.close()
    assert len(server.messages) == 1
