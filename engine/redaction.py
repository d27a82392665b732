"""Secrets out of every line the engine writes: what a secret looks like, and masking it.

Known secrets are registered by value (the environment's token/secret/key variables, anything
read from a `*_file` path); unknown ones are caught by shape (Telegram bot tokens, `apikey=`-style
parameters, `Authorization:` headers and `Bearer` credentials, quoted `"api_key": "..."` pairs,
`user:password@` in URLs). Values shorter than `MIN_SECRET_LENGTH` are never treated as secrets:
masking every "abc" would make logs unreadable without protecting anything. `engine.logs` puts
this on every log handler; the HTTP server uses it on what it returns.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

MASK = "***"
MIN_SECRET_LENGTH = 6
SECRET_ENV_NAMES = ("ENGINE_TELEGRAM_TOKEN", "ENGINE_WEBHOOK_SECRET", "ENGINE_ADMIN_TOKEN")
SECRET_ENV_SUFFIXES = ("_TOKEN", "_SECRET", "_KEY", "_PASSWORD", "_PASSPHRASE")

# --- what a secret looks like --------------------------------------------------------------------

_SECRET_WORDS = r"(?:api[_-]?key|access[_-]?key|secret|token|signature|passphrase|password|passwd)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Telegram bot API URL path: /bot<id>:<anything up to the next / ? # or space>
    (re.compile(r"/bot\d+:[^/\s?#\"'<>]+"), f"/bot{MASK}"),
    # a bare Telegram bot token: 123456789:AA... (35 url-safe characters in practice)
    (re.compile(r"(?<![0-9A-Za-z])\d{5,15}:[A-Za-z0-9_-]{30,}(?![A-Za-z0-9_-])"), MASK),
    # user:password@host in any URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\g<1>{MASK}@"),
    # key=value, as in query strings and "NAME=value" text: apikey=, client_secret=, token=, ...
    (
        re.compile(rf"(?i)\b([\w.-]*?{_SECRET_WORDS}=)[^&\s#\"',;)\]}}<>]+"),
        rf"\g<1>{MASK}",
    ),
    # quoted pairs from JSON or a dict repr: "api_key": "...", 'X-MBX-APIKEY': '...'
    (
        re.compile(rf"(?i)([\"'][\w.-]*?(?:{_SECRET_WORDS}|authorization)[\"']\s*:\s*[\"'])[^\"']+([\"'])"),
        rf"\g<1>{MASK}\g<2>",
    ),
    # Bearer credentials anywhere (the Authorization rule below leaves an already masked one alone)
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\g<1> {MASK}"),
)
_AUTHORIZATION = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)((?:basic|bearer|digest|token)\s+)?([^\s\"',;}]+)"
)


def _mask_authorization(m: re.Match[str]) -> str:
    if m.group(3) == MASK:
        return m.group(0)
    return f"{m.group(1)}{m.group(2) or ''}{MASK}"


class SecretRegistry:
    """The literal secret values to mask; thread-safe, usable from any component."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._regex: re.Pattern[str] | None = None

    def register(self, value: str | None) -> bool:
        """Mask `value` from now on (with its URL-encoded form); False when it is too short to."""
        if value is None:
            return False
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            return False
        forms = {value, quote(value, safe="")}
        with self._lock:
            if forms <= self._values:
                return True
            self._values |= forms
            ordered = sorted(self._values, key=len, reverse=True)  # longest first: no half masks
            self._regex = re.compile("|".join(re.escape(v) for v in ordered))
        return True

    def clear(self) -> None:
        """Forget every registered value (tests)."""
        with self._lock:
            self._values.clear()
            self._regex = None

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def mask(self, text: str) -> str:
        """Replace every registered secret in `text`; lock-free, so every log record can afford it."""
        regex = self._regex  # one read: a concurrent register() swaps it atomically
        return regex.sub(MASK, text) if regex is not None else text


REGISTRY = SecretRegistry()


def register_secret(value: str | None) -> bool:
    """Mask `value` in every log line from now on; call it wherever a secret enters the process.

    Returns False (and masks nothing) for None or values shorter than MIN_SECRET_LENGTH.
    """
    return REGISTRY.register(value)


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment variables that hold secrets by name (long enough to mask)."""
    env = os.environ if env is None else env
    found: list[str] = []
    for name, value in env.items():
        upper = name.upper()
        if upper in SECRET_ENV_NAMES or upper.endswith(SECRET_ENV_SUFFIXES):
            value = value.strip()
            if len(value) >= MIN_SECRET_LENGTH:
                found.append(value)
    return found


def register_env_secrets(env: Mapping[str, str] | None = None) -> int:
    """Register every secret-named env var's value; returns how many were long enough."""
    return sum(register_secret(v) for v in env_secrets(env))


def redact(text: str, registry: SecretRegistry | None = None) -> str:
    """`text` with registered secrets and secret-looking patterns replaced by ***."""
    if not text:
        return text
    text = (registry or REGISTRY).mask(text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return _AUTHORIZATION.sub(_mask_authorization, text)


def redact_obj(value: Any, registry: SecretRegistry | None = None, *, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string (values, not keys) redacted."""
    if isinstance(value, str):
        return redact(value, registry)
    if _depth > 20:
        return value
    if isinstance(value, Mapping):
        return {k: redact_obj(v, registry, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v, registry, _depth=_depth + 1) for v in value]
    return value
