"""A local Telegram Bot API on 127.0.0.1 that speaks `sendMessage`, enough for TelegramSink.

POST /bot<TOKEN>/sendMessage with JSON {chat_id, text, parse_mode}. Answers like the real API:
{"ok": true, "result": {...message...}}, or {"ok": false, "error_code": N, "description": ...}
with 401 for a wrong token, 400 for an unknown chat, unparsable HTML (Telegram's rule: every
<, > and & outside a supported tag or entity must be escaped; tags must nest) or a text over
4096 characters, 429 with "parameters": {"retry_after": N}.

Faults are plain attributes a test sets before a call:
    rate_limit_next_n / retry_after   next N requests answer 429 with that retry_after
    fail_next_n / fail_status         next N requests answer fail_status (e.g. 500, 403)
    outage                            every request answers 502 with an HTML body (proxy in front)
    delay_s                           real delay before answering (timeouts)
`messages` holds accepted sendMessage payloads; `log` keeps (clock time, status) per request.

`InstantClock` is a clock for delivery tests where several sinks back off at once: every sleep
returns at once and moves time forward by its length. (VirtualClock(auto=True) livelocks when
two tasks sleep on it together: each pending auto-step sees the other in the ready queue.)
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from engine.clock import Clock
from tests.support.loopback import LoopbackServer

TOKEN = "123456789:AAFakeTokenForTests_x-yZ0123456789abcd"
CHAT_ID = "-1001234567890"
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "tg-spoiler"}
_TOKEN_RE = re.compile(r"<(/?)([a-zA-Z-]+)(\s[^<>]*)?>|&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


def html_problem(text: str) -> str | None:
    """Why Telegram would refuse `text` as parse_mode HTML, or None when it parses."""
    stack: list[str] = []
    rest: list[str] = []
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        rest.append(text[pos : m.start()])
        pos = m.end()
        if m.group(4) is not None:
            continue
        closing, tag = m.group(1), m.group(2).lower()
        if tag not in ALLOWED_TAGS:
            return f'Unsupported start tag "{tag}" at byte offset {m.start()}'
        if closing:
            if not stack or stack.pop() != tag:
                return f"Unexpected end tag at byte offset {m.start()}"
        else:
            stack.append(tag)
    rest.append(text[pos:])
    leftover = "".join(rest)
    for ch in "<>&":
        if ch in leftover:
            return f"Unexpected {ch!r} (escape it as an HTML entity)"
    if stack:
        return f'Can\'t find end tag corresponding to start tag "{stack[-1]}"'
    return None


class InstantClock:
    """Virtual time that jumps forward by every sleep, immediately; `sleeps` records them."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    async def sleep_until(self, when: float) -> None:
        await self.sleep(when - self._now)


class TelegramServer(LoopbackServer):
    def __init__(self, clock: Clock, *, token: str = TOKEN, chats: tuple[str, ...] = (CHAT_ID,)) -> None:
        super().__init__()
        self.clock = clock
        self.token = token
        self.chats = set(chats)
        self.rate_limit_next_n = 0
        self.retry_after = 5
        self.fail_next_n = 0
        self.fail_status = 500
        self.outage = False
        self.delay_s = 0.0
        self.messages: list[dict[str, Any]] = []
        self.log: list[tuple[float, int]] = []
        self._next_id = 1

    def routes(self, app: web.Application) -> None:
        """The Bot API method the sink uses."""
        app.router.add_post("/bot{token}/sendMessage", self._send_message)

    @property
    def texts(self) -> list[str]:
        return [str(m["text"]) for m in self.messages]

    def _answer(self, status: int, description: str, **parameters: Any) -> web.Response:
        self.log.append((self.clock.now(), status))
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    async def _send_message(self, request: web.Request) -> web.Response:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.outage:
            self.log.append((self.clock.now(), 502))
            return web.Response(
                status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if request.match_info["token"] != self.token:
            return self._answer(401, "Unauthorized")
        if self.rate_limit_next_n > 0:
            self.rate_limit_next_n -= 1
            return self._answer(
                429, f"Too Many Requests: retry after {self.retry_after}", retry_after=self.retry_after
            )
        if self.fail_next_n > 0:
            self.fail_next_n -= 1
            descriptions = {403: "Forbidden: bot was blocked by the user", 400: "Bad Request: test failure"}
            return self._answer(self.fail_status, descriptions.get(self.fail_status, "Internal Server Error"))
        try:
            payload = await request.json()
        except ValueError:
            return self._answer(400, "Bad Request: message text is empty")
        chat = str(payload.get("chat_id", ""))
        if chat not in self.chats:
            return self._answer(400, "Bad Request: chat not found")
        text = payload.get("text")
        if not isinstance(text, str) or not text:
            return self._answer(400, "Bad Request: message text is empty")
        if payload.get("parse_mode") == "HTML":
            problem = html_problem(text)
            if problem is not None:
                return self._answer(400, f"Bad Request: can't parse entities: {problem}")
        if len(text) > 4096:
            return self._answer(400, "Bad Request: message is too long")
        self.messages.append(payload)
        self.log.append((self.clock.now(), 200))
        message_id, self._next_id = self._next_id, self._next_id + 1
        result = {
            "message_id": message_id,
            "date": int(self.clock.now()),
            "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": "supergroup"},
            "text": re.sub(r"<[^>]+>", "", text),
        }
        return web.json_response({"ok": True, "result": result})
