"""Telegram: each event as one HTML message through the Bot API's `sendMessage`.

The message reads like the original bots': direction, symbol, entry, stop, targets, R:R,
strategy, confidence, rationale and the strategy's track record ("TP1 x | TP2 y | SL z (win
rate w%)"). Consensus alerts say NEW or UPDATE and list who agreed, with weight and age;
outcome events (a target or the stop hit) get a short message of their own.

The bot token is a secret: it lives only in the request URL, which is never logged; every
error text that could carry it is redacted before it can reach a log or the dead-letter file.
Telegram's 429 `retry_after` is waited out on the injected clock, 5xx and network errors are
retried with backoff, and a refusal (400/401/403/404) is not retried.
"""

from __future__ import annotations

import html
import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from engine.clock import Clock
from engine.metrics import Metrics
from engine.sinks.base import SinkEvent
from engine.sinks.console import _price_format
from engine.sinks.dispatch import dumps
from engine.sinks.http import HttpPoster
from engine.sinks.retry import (
    MASK,
    Deliverer,
    DeliveryPolicy,
    PermanentDeliveryError,
    TransientDeliveryError,
    redact,
)

log = logging.getLogger("engine.sinks.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
MAX_MESSAGE = 4096
MAX_RATIONALE_LINES = 6
MAX_LINE = 300
MAX_CONTRIBUTORS = 20

ICONS = {"LONG": "🟢", "SHORT": "🔴"}
OUTCOME_HEADS = {
    "TP1": "✅ TP1 hit",
    "TP2": "✅ TP2 hit",
    "TP3": "🎯 TP3 hit",
    "SL": "🛑 Stop loss hit",
    "EXPIRED": "⌛ Expired",
}


# --- message text ------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Text safe inside Telegram HTML: <, > and & escaped."""
    return html.escape(str(value), quote=False)


def _clip(text: str, limit: int = MAX_LINE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _meta(record: Mapping[str, Any], key: str) -> Any:
    value = record.get(key)
    if value is None:
        meta = record.get("metadata")
        if isinstance(meta, Mapping):
            value = meta.get(key)
    return value


def _percent(value: float) -> str:
    """Confidence or win rate as a percentage; values up to 1 are read as fractions."""
    return f"{value * 100 if abs(value) <= 1 else value:.0f}%"


def history_line(history: Mapping[str, Any]) -> str:
    """'TP1 x | TP2 y | SL z (win rate w%)', TP3 and expired added when there were any."""
    closed = _num(history.get("closed"))
    if closed is not None and closed == 0:
        return "no closed signals yet"

    def count(key: str) -> int:
        n = _num(history.get(key))
        return int(n) if n is not None else 0

    parts = [f"TP1 {count('tp1')}", f"TP2 {count('tp2')}"]
    if count("tp3"):
        parts.append(f"TP3 {count('tp3')}")
    parts.append(f"SL {count('sl')}")
    if count("expired"):
        parts.append(f"expired {count('expired')}")
    win_rate = _num(history.get("win_rate"))
    rate = "—" if win_rate is None else _percent(win_rate)
    return f"{' | '.join(parts)} (win rate {rate})"


def _levels(record: Mapping[str, Any]) -> list[str]:
    entry = _num(record.get("entry"))
    stop = _num(record.get("stop_loss"))
    tps = [t for t in (_num(x) for x in record.get("take_profits") or ()) if t is not None]
    fmt = _price_format([p for p in (entry, stop, *tps) if p is not None])

    def line(label: str, price: float | None) -> str:
        if price is None:
            return f"{label}: —"
        text = f"{label}: <code>{fmt.format(price)}</code>"
        if entry and label != "Entry":
            text += f" ({(price - entry) / entry * 100:+.2f}%)"
        return text

    lines = [line("Entry", entry), line("SL", stop)]
    lines += [line(f"TP{i}", tp) for i, tp in enumerate(tps, start=1)]
    rr = _num(_meta(record, "rr1"))
    if rr is None and entry is not None and stop is not None and tps and entry != stop:
        rr = abs(tps[0] - entry) / abs(entry - stop)
    if rr is not None:
        lines.append(f"R:R: 1:{rr:.2f}")
    return lines


def _head(record: Mapping[str, Any], prefix: str = "") -> str:
    direction = str(record.get("direction") or "?").upper()
    bits = [f"{ICONS.get(direction, '⚪')} {prefix}<b>{_e(direction)} {_e(record.get('symbol') or '?')}</b>"]
    if record.get("timeframe"):
        bits.append(_e(record["timeframe"]))
    if record.get("exchange"):
        bits.append(_e(record["exchange"]))
    return " · ".join(bits)


def _history(context: Mapping[str, Any]) -> list[str]:
    history = context.get("history")
    return [f"📊 {_e(history_line(history))}"] if isinstance(history, Mapping) else []


def _rationale(record: Mapping[str, Any]) -> list[str]:
    reasons = record.get("rationale") or ()
    if isinstance(reasons, str):
        reasons = (reasons,)
    items = [str(r) for r in reasons][:MAX_RATIONALE_LINES]
    return [f"💡 {_e(_clip(r))}" for r in items]


def _signal_text(record: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    lines = [_head(record), f"Strategy: <b>{_e(record.get('strategy') or '?')}</b>"]
    lines += _levels(record)
    confidence = _num(record.get("confidence"))
    if confidence is not None:
        lines.append(f"Confidence: {_percent(confidence)}")
    lines += _rationale(record)
    lines += _history(context)
    if record.get("created_at"):
        lines.append(f"🕒 {_e(record['created_at'])}")
    return lines


def _contributor(c: Mapping[str, Any], new: bool) -> str:
    bits = []
    weight = _num(c.get("weight"))
    if weight is not None:
        bits.append(f"weight {weight:g}")
    age = _num(c.get("age_minutes"))
    if age is not None:
        bits.append(f"{age:.0f}m ago")
    tail = f" — {', '.join(bits)}" if bits else ""
    return f"• {'🆕 ' if new else ''}{_e(c.get('strategy') or '?')}{tail}"


def _consensus_text(record: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    alert = str(_meta(record, "alert") or "new").lower()
    update = alert == "update"
    label = "🔄 CONSENSUS UPDATE" if update else "🆕 CONSENSUS NEW"
    lines = [f"<b>{label}</b>", _head(record)]
    contributors = [c for c in _meta(record, "contributors") or () if isinstance(c, Mapping)]
    score = _num(_meta(record, "score"))
    strength = _meta(record, "label")
    score_bits = []
    if score is not None:
        score_bits.append(f"Score: <b>{score:.2f}</b>")
    if strength:
        score_bits.append(f"({_e(strength)})")
    if contributors:
        score_bits.append(f"· {len(contributors)} strategies")
    if score_bits:
        lines.append(" ".join(score_bits))
    lines += _levels(record)
    new_names = {str(n) for n in _meta(record, "new_contributors") or ()}
    if contributors:
        lines.append("👥 Contributors:")
        for c in contributors[:MAX_CONTRIBUTORS]:
            lines.append(_contributor(c, update and str(c.get("strategy")) in new_names))
        if len(contributors) > MAX_CONTRIBUTORS:
            lines.append(f"… and {len(contributors) - MAX_CONTRIBUTORS} more")
    if update and new_names:
        lines.append(f"Joined: <b>{_e(', '.join(sorted(new_names)))}</b>")
    lines += _history(context)
    if record.get("created_at"):
        lines.append(f"🕒 {_e(record['created_at'])}")
    return lines


def _outcome_text(record: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    event = str(record.get("event") or record.get("result") or "?").upper()
    result = str(record.get("result") or event).upper()
    head = OUTCOME_HEADS.get(event, f"ℹ️ {event}")  # noqa: RUF001 - the information emoji
    lines = [f"<b>{_e(head)}</b>", _head(record)]
    if record.get("strategy"):
        lines.append(f"Strategy: <b>{_e(record['strategy'])}</b>")
    price = _num(record.get("price"))
    bits = []
    if price is not None:
        bits.append(f"Price: <code>{_price_format([price]).format(price)}</code>")
    pnl = _num(record.get("pnl_percent"))
    if pnl is not None:
        bits.append(f"{pnl:+.2f}%")
    r = _num(record.get("r_multiple"))
    if r is not None:
        bits.append(f"{r:+.2f}R")
    if bits:
        lines.append(" · ".join(bits))
    if record.get("final"):
        lines.append(f"Closed as <b>{_e(result)}</b>")
    lines += _history(context)
    tail = [_e(record["at"])] if record.get("at") else []
    signal_id = record.get("signal_id") or record.get("id")
    if signal_id:
        tail.append(f"signal <code>{_e(signal_id)}</code>")
    if tail:
        lines.append("🕒 " + " · ".join(tail))
    return lines


def telegram_text(event: SinkEvent) -> str:
    """The HTML message for one event; every interpolated value is escaped."""
    record, context = event.record, event.context
    builders: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]] = {
        "signal": _signal_text,
        "consensus": _consensus_text,
        "outcome": _outcome_text,
    }
    build = builders.get(event.kind)
    lines = build(record, context) if build is not None else [_e(event.text)]
    dead = context.get("dead_letter")
    if isinstance(dead, Mapping):
        when = f" (first attempt failed {_e(dead['at'])})" if dead.get("at") else ""
        lines.append(f"⏳ <i>Delayed delivery{when}</i>")
    text = "\n".join(lines)
    if len(text) > MAX_MESSAGE:
        text = _e(_clip(event.text, MAX_MESSAGE // 2))
    return text


# --- the sink ---------------------------------------------------------------------------------


class TelegramSink:
    """Sends each event to one chat; one aiohttp session, opened on first use."""

    def __init__(
        self,
        token: str,
        chat_id: str,
        clock: Clock,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout_s: float = 10.0,
        policy: DeliveryPolicy | None = None,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
        name: str = "telegram",
    ) -> None:
        if not token or any(ch.isspace() or ch in "/?#" for ch in token):
            raise ValueError("telegram bot token is empty or malformed")
        self.name = name
        self.chat_id = chat_id
        self._token = token
        base = api_url.rstrip("/")
        self._url = f"{base}/bot{token}/sendMessage"
        self.safe_url = f"{base}/bot{MASK}/sendMessage"
        self._http = HttpPoster(timeout_s, self.safe_url, self._redact)
        self._deliverer = Deliverer(
            name, policy or DeliveryPolicy(), clock, metrics=metrics, rand=rand, logger=log
        )

    def __repr__(self) -> str:
        return f"TelegramSink(name={self.name!r}, chat_id={self.chat_id!r}, url={self.safe_url!r})"

    async def send(self, event: SinkEvent) -> None:
        """Sink.send: sendMessage as HTML, retried per the delivery policy; raises once it gives up."""
        payload = {
            "chat_id": self.chat_id,
            "text": telegram_text(event),
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        body = dumps(payload)
        await self._deliverer.run(lambda: self._post(body))

    async def _post(self, body: bytes) -> None:
        answer = await self._http.post(self._url, body, {"Content-Type": "application/json"})
        self._check(answer.status, answer.body)

    def _check(self, status: int, raw: bytes) -> None:
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        data: Mapping[str, Any] = answer if isinstance(answer, Mapping) else {}
        if 200 <= status < 300 and data.get("ok") is True:
            return
        description = data.get("description") or raw[:200].decode("utf-8", "replace").strip() or "no body"
        params = data.get("parameters")
        params = params if isinstance(params, Mapping) else {}
        message = self._redact(f"Telegram answered HTTP {status}: {description}")
        if status == 429:
            retry_after = _num(params.get("retry_after"))
            raise TransientDeliveryError(message, reason="rate_limited", retry_after=retry_after)
        if status >= 500:
            raise TransientDeliveryError(message, reason="server_error")
        migrated = params.get("migrate_to_chat_id")
        if migrated is not None:
            message += f" (the chat is now {migrated}: set sinks.telegram.chat_id)"
        raise PermanentDeliveryError(message)

    def _redact(self, text: str) -> str:
        return redact(text, (self._token,))

    async def close(self) -> None:
        """Sink.close: close the HTTP session if one was opened."""
        await self._http.close()
