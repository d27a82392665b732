"""The sinks the config asks for, with their secrets read from the environment.

Secrets never come from the config directory: the Telegram bot token from env
ENGINE_TELEGRAM_TOKEN, the webhook signing secret from env ENGINE_WEBHOOK_SECRET. For
container secrets, `token_file` / `secret_file` may name a file instead (used only when the
variable is unset); it must not be readable by group or others (chmod 600), because a secret
anyone on the host can read is no secret.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from typing import IO

from engine.clock import Clock
from engine.config import EngineSettings
from engine.errors import ConfigError, ConfigProblem
from engine.metrics import Metrics
from engine.secret_files import read_secret
from engine.sinks.base import Sink
from engine.sinks.console import ConsoleSink
from engine.sinks.retry import DeliveryPolicy
from engine.sinks.telegram import TelegramSink
from engine.sinks.webhook import WebhookSink

__all__ = ["TELEGRAM_TOKEN_ENV", "WEBHOOK_SECRET_ENV", "build_sinks", "check_sinks", "read_secret"]

TELEGRAM_TOKEN_ENV = "ENGINE_TELEGRAM_TOKEN"
WEBHOOK_SECRET_ENV = "ENGINE_WEBHOOK_SECRET"


def _malformed_token(token: str) -> bool:
    return any(ch.isspace() or ch in "/?#" for ch in token)


def _secrets(
    settings: EngineSettings, env: Mapping[str, str]
) -> tuple[str | None, str | None, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    tg, wh = settings.sinks.telegram, settings.sinks.webhook
    token = secret = None
    if tg.enabled:
        token = read_secret(TELEGRAM_TOKEN_ENV, tg.token_file, "sinks.telegram", "token_file", problems, env)
        if token is not None and _malformed_token(token):
            problems.append(
                ConfigProblem(
                    f"env {TELEGRAM_TOKEN_ENV}",
                    "sinks.telegram",
                    "malformed bot token (expected the form 123456789:AA...)",
                )
            )
            token = None
    if wh.enabled:
        secret = read_secret(
            WEBHOOK_SECRET_ENV, wh.secret_file, "sinks.webhook", "secret_file", problems, env
        )
    return token, secret, problems


def check_sinks(settings: EngineSettings, env: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """What `build_sinks` would refuse, for `engine check`: missing or unsafe secrets."""
    return _secrets(settings, os.environ if env is None else env)[2]


def build_sinks(
    settings: EngineSettings,
    clock: Clock,
    metrics: Metrics,
    stdout: IO[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    rand: Callable[[], float] = random.random,
) -> list[Sink]:
    """Console, Telegram and webhook sinks as configured; raises ConfigError listing every problem.

    The journal is not among them: the engine appends to it itself, before publishing.
    """
    s = settings.sinks
    token, secret, problems = _secrets(settings, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems)
    sinks: list[Sink] = []
    if s.console.enabled:
        sinks.append(ConsoleSink(stdout))
    if s.telegram.enabled and token is not None and s.telegram.chat_id is not None:
        sinks.append(
            TelegramSink(
                token,
                s.telegram.chat_id,
                clock,
                api_url=s.telegram.api_url,
                timeout_s=s.telegram.timeout_seconds,
                policy=DeliveryPolicy(max_attempts=s.telegram.max_attempts),
                metrics=metrics,
                rand=rand,
            )
        )
    if s.webhook.enabled and secret is not None and s.webhook.url is not None:
        sinks.append(
            WebhookSink(
                s.webhook.url,
                secret,
                clock,
                timeout_s=s.webhook.timeout_seconds,
                policy=DeliveryPolicy(max_attempts=s.webhook.max_attempts),
                metrics=metrics,
                rand=rand,
            )
        )
    return sinks
