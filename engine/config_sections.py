"""The sections of `engine.toml`, one pydantic model each, with their defaults.

Kept apart from the loader (`engine.config`) so the list of keys reads as the reference it
is; docs/configuration.md documents every field here.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


@functools.cache
def ccxt_exchange_ids() -> frozenset[str]:
    """ccxt's exchange ids (`ccxt.exchanges`), read from its package layout — one module plus one
    `abstract/` module per exchange — because importing ccxt to get the list costs about 0.3 s
    of every command's start-up, and `engine replay` and `engine check` never need ccxt itself."""
    spec = importlib.util.find_spec("ccxt")
    if spec is None or spec.origin is None:
        return frozenset()
    pkg = Path(spec.origin).parent
    modules = (p for p in pkg.glob("*.py") if not p.stem.startswith("_"))
    return frozenset(p.stem for p in modules if (pkg / "abstract" / p.name).is_file())


class Section(BaseModel):
    """Config sections reject unknown keys so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class EngineSection(Section):
    """`[engine]`: process-wide settings: state location, log level, quarantine and shutdown timing."""

    state_dir: str = Field("state", description="Directory for engine.json, the journal and the lock.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Console log level.")
    quarantine_after: int = Field(
        5, ge=1, description="Consecutive failures after which a plugin instance is quarantined."
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="How long in-flight runs may finish.")
    close_delay_seconds: float = Field(
        2.0, ge=0, description="Wait after a candle closes before fetching it (live only)."
    )


class MarketSection(Section):
    """`[market]`: where candles come from (a ccxt exchange or CSV replay) and how hard to press it."""

    source: Literal["exchange", "replay"] = Field("exchange", description="Live exchange or CSV replay.")
    exchange: str = Field("binance", description="Any ccxt exchange id.")
    type: Literal["spot", "swap"] = Field("spot", description="Market type the symbols refer to.")
    api_url: str | None = Field(
        None, description="Replaces scheme+host of every API URL (proxy, testnet, local emulator)."
    )
    rate_budget: float = Field(0.8, gt=0, le=1, description="Fraction of the exchange's rate limit we use.")
    timeout_seconds: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(3, ge=0, le=10, description="Retries for retryable errors.")
    data_dir: str = Field("data/sample", description="CSV directory for replay.")
    speed: float = Field(
        300.0, ge=0, description="Replay speed multiple of real time; 0 = as fast as possible."
    )
    replay_start: str | None = Field(
        None, description="ISO date-time where replay starts; default: first candle + warm-up."
    )
    exit_at_end: bool = Field(False, description="Stop the engine when replay data is exhausted.")

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL with a host, e.g. http://127.0.0.1:9000")
        return v.rstrip("/")

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v: str) -> str:
        if v not in ccxt_exchange_ids():
            raise ValueError(f"unknown ccxt exchange id {v!r}")
        return v

    @field_validator("replay_start")
    @classmethod
    def _start(cls, v: str | None) -> str | None:
        if v is not None:
            from datetime import datetime

            datetime.fromisoformat(v)
        return v


class ServerSection(Section):
    """`[server]`: the HTTP endpoints orchestrators and Prometheus poll; loopback by default."""

    enabled: bool = Field(True, description="Serve /health, /ready, /metrics.")
    host: str = Field("127.0.0.1", description="Bind address; loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    admin_token_file: str | None = Field(
        None,
        description="File holding the admin bearer token (mode 0600), used when ENGINE_ADMIN_TOKEN is "
        "unset; without a token the /admin endpoints do not exist.",
    )


class LoggingSection(Section):
    """The optional log file: JSON lines (or plain text), rotated by size, mode 0600."""

    file: str | None = Field(None, description="Log file path; unset = console (stderr) only.")
    max_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Rotate the file when it would grow past this size."
    )
    backups: int = Field(5, ge=1, le=1000, description="Rotated files kept: file.1 (newest) … file.N.")
    # `json` is the key users write; the attribute is renamed because BaseModel.json exists
    json_lines: bool = Field(True, alias="json", description="JSON lines (true) or plain text (false).")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="File log level; unset = engine.log_level."
    )

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        v = v.strip() if v is not None else None
        return v or None


DEFAULT_WEIGHTS: dict[str, float] = {
    "harmonic": 2.0,
    "liquidation": 1.75,
    "volume": 1.5,
    "strat": 1.5,
    "mtf": 1.5,
    "fib_reversal": 1.25,
    "fib_swing": 1.25,
    "diy": 1.0,
    "candlestick": 1.0,
    "funding": 1.0,
    "most": 0.75,
    "psar": 0.75,
}


class ConsensusSection(Section):
    """`[consensus]`: the spec §5 aggregator's window, weights and R:R gate."""

    enabled: bool = Field(True, description="Combine strategies' signals into consensus signals.")
    window_minutes: float = Field(30.0, gt=0, description="How far back signals count.")
    min_strategies: int = Field(2, ge=1, description="Distinct strategies needed.")
    threshold: float = Field(3.0, gt=0, description="Minimum weighted score.")
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    default_weight: float = Field(1.0, gt=0, description="Weight of strategies not in `weights`.")
    min_rr: float = Field(1.7, gt=0, description="R:R gate before score-based relaxation.")
    memory_hours: float = Field(2.0, gt=0, description="How long an alert id remembers its contributors.")
    adaptive_weights: bool = Field(False, description="Scale each weight by the strategy's tracked hit rate.")
    adaptive_min_factor: float = Field(
        0.5, gt=0, description="Lowest multiplier adaptive weighting may apply."
    )
    adaptive_max_factor: float = Field(
        1.5, gt=0, description="Highest multiplier adaptive weighting may apply."
    )


class OutcomesSection(Section):
    """`[outcomes]`: how tracked signals close besides their targets and stop (an optional expiry)."""

    expiry_hours: float | None = Field(
        None, gt=0, description="Close a signal as EXPIRED after this many hours; unset = never (spec)."
    )
    ticker_seconds: float = Field(
        60.0, ge=0, description="Live only: check open signals against the ticker this often; 0 = off."
    )


class ConsoleSinkSection(Section):
    """`[sinks.console]`: one line per event on stdout."""

    enabled: bool = Field(True, description="Print each signal as one line on stdout.")


class JournalSinkSection(Section):
    """`[sinks.journal]`: the JSONL record of truth; it can be renamed but is always written."""

    enabled: bool = Field(True, description="Kept for symmetry; the journal is always written.")
    file: str = Field("signals.jsonl", description="Journal file name inside state_dir.")
    max_bytes: int = Field(
        50 * 1024 * 1024, ge=4096, description="Rotate the journal when it would grow past this size."
    )
    backups: int = Field(10, ge=1, description="Rotated journal files kept (signals.jsonl.1 … .N).")


TELEGRAM_API_URL = "https://api.telegram.org"


def _sink_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL with a host, e.g. https://example.com/hook")
    return v


class TelegramSinkSection(Section):
    """Telegram Bot API `sendMessage`; the bot token comes only from env ENGINE_TELEGRAM_TOKEN."""

    enabled: bool = Field(
        False, description="Send signals, consensus alerts and outcomes to a Telegram chat."
    )
    chat_id: str | None = Field(
        None,
        validate_default=True,
        description="Numeric chat id (e.g. -1001234567890) or @channelusername; required when enabled.",
    )
    api_url: str = Field(TELEGRAM_API_URL, description="Bot API base URL (a local Bot API server, a proxy).")
    token_file: str | None = Field(
        None, description="File holding the bot token (mode 0600), used when ENGINE_TELEGRAM_TOKEN is unset."
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per message before it is dead-lettered.")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id_text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be a chat id number or @channelusername")
        return str(v) if isinstance(v, int) else v

    @field_validator("chat_id")
    @classmethod
    def _chat_id(cls, v: str | None, info: ValidationInfo) -> str | None:
        v = v.strip() if v is not None else None
        if not v:
            if info.data.get("enabled"):
                raise ValueError("required when sinks.telegram.enabled = true")
            return None
        if not (v.lstrip("-").isdigit() or (v.startswith("@") and len(v) > 1)):
            raise ValueError("must be a chat id number (e.g. -1001234567890) or @channelusername")
        return v

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        return _sink_url(v).rstrip("/")


class WebhookSinkSection(Section):
    """POST of each event as JSON, signed with HMAC-SHA256 of env ENGINE_WEBHOOK_SECRET."""

    enabled: bool = Field(False, description="POST every event as signed JSON to `url`.")
    url: str | None = Field(
        None, validate_default=True, description="Receiver URL (http or https); required when enabled."
    )
    secret_file: str | None = Field(
        None,
        description="File holding the signing secret (mode 0600), used when ENGINE_WEBHOOK_SECRET is unset.",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per message before it is dead-lettered.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        v = v.strip() if v is not None else None
        if not v:
            if info.data.get("enabled"):
                raise ValueError("required when sinks.webhook.enabled = true")
            return None
        return _sink_url(v)


class SinksSection(Section):
    """`[sinks]`: every output, plus the queue bound that keeps a slow sink from growing memory."""

    console: ConsoleSinkSection = Field(default_factory=ConsoleSinkSection)
    journal: JournalSinkSection = Field(default_factory=JournalSinkSection)
    telegram: TelegramSinkSection = Field(default_factory=TelegramSinkSection)
    webhook: WebhookSinkSection = Field(default_factory=WebhookSinkSection)
    queue_size: int = Field(1000, ge=1, description="Bounded queue per sink.")


class RiskSection(Section):
    """Global TP/SL settings (spec §2); plugin defaults and strategy files override them."""

    sl_mult: float = Field(1.5, gt=0)
    tp1_mult: float = Field(2.0, gt=0)
    tp2_mult: float = Field(3.0, gt=0)
    tp3_mult: float | None = Field(4.5, gt=0)
    min_rr: float = Field(1.3, ge=0)
    sl_buffer_percent: float = Field(0.75, ge=0)
    max_sl_percent: float = Field(5.0, gt=0)
    min_sl_percent: float = Field(0.2, ge=0)
