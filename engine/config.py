"""The config directory: `engine.toml` plus one `strategies/<name>.toml` per plugin instance.

Pydantic lives here, at the edge. Loading collects *every* problem before failing, each one
located as `FILE: dotted.field.path: message`, because a user fixing a config wants the whole
list at once, not one error per restart. Every key of engine.toml can be overridden from the
environment as `ENGINE__SECTION__KEY`; secrets are never read from files in this directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.errors import ConfigProblem
from engine.timeframes import timeframe_seconds

ENV_PREFIX = "ENGINE__"
ENGINE_FILE = "engine.toml"
STRATEGY_DIR = "strategies"


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
        import ccxt  # deferred: importing ccxt costs ~0.5 s and only this check needs the list

        if v not in ccxt.exchanges:
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


class EngineSettings(BaseSettings):
    """engine.toml, with `ENGINE__SECTION__KEY` environment overrides taking precedence."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    engine: EngineSection = Field(default_factory=EngineSection)
    market: MarketSection = Field(default_factory=MarketSection)
    server: ServerSection = Field(default_factory=ServerSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    consensus: ConsensusSection = Field(default_factory=ConsensusSection)
    sinks: SinksSection = Field(default_factory=SinksSection)
    risk: RiskSection = Field(default_factory=RiskSection)
    outcomes: OutcomesSection = Field(default_factory=OutcomesSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file: that is how containers and CI retarget one config.
        return (env_settings, init_settings)


class RiskOverrides(Section):
    """Per-instance TP/SL overrides; anything left out falls back to the plugin's, then global."""

    sl_mult: float | None = Field(None, gt=0)
    tp1_mult: float | None = Field(None, gt=0)
    tp2_mult: float | None = Field(None, gt=0)
    tp3_mult: float | None = Field(None, gt=0)
    min_rr: float | None = Field(None, ge=0)
    sl_buffer_percent: float | None = Field(None, ge=0)
    max_sl_percent: float | None = Field(None, gt=0)
    min_sl_percent: float | None = Field(None, ge=0)


class StrategyFile(Section):
    """One `strategies/<name>.toml`: a plugin instance named after the file."""

    plugin: str | None = Field(None, description="Registry name; defaults to the file stem.")
    enabled: bool = True
    symbols: list[str] = Field(min_length=1)
    timeframe: str | None = Field(None, description="Candle timeframe; default from the plugin.")
    period: int | Literal["candle"] = Field(
        "candle", description="Seconds between runs, or each candle close."
    )
    cooldown: int | None = Field(None, ge=0, description="Seconds of candle time; default from the plugin.")
    params: dict[str, Any] = Field(default_factory=dict)
    risk: RiskOverrides = Field(default_factory=RiskOverrides)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        for s in v:
            base, sep, quote = s.partition("/")
            if not sep or not base or not quote.split(":")[0]:
                raise ValueError(f"symbol {s!r} must look like BASE/QUOTE (e.g. ETH/BTC or BTC/USDT:USDT)")
        if len(set(v)) != len(v):
            raise ValueError("symbols are listed twice")
        return v

    @field_validator("timeframe")
    @classmethod
    def _tf(cls, v: str | None) -> str | None:
        if v is not None:
            timeframe_seconds(v)
        return v

    @field_validator("period")
    @classmethod
    def _period(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError('period must be a positive number of seconds or "candle"')
        return v


@dataclass(frozen=True, slots=True)
class StrategyEntry:
    """A parsed strategy file: instance name, where it came from, and its validated model."""

    name: str
    file: Path
    spec: StrategyFile

    @property
    def plugin(self) -> str:
        """The plugin to load: the file's `plugin` key, else the instance name (so psar.toml needs none)."""
        return self.spec.plugin or self.name


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The whole config directory after validation."""

    directory: Path
    settings: EngineSettings
    strategies: tuple[StrategyEntry, ...]


def dotted(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the dotted path a user types in TOML."""
    return ".".join(str(p) for p in loc)


def problems_from(
    exc: ValidationError, file: str, env: Mapping[str, str] | None = None
) -> list[ConfigProblem]:
    """One ConfigProblem per pydantic error; blame the env var when one set the value."""
    env = os.environ if env is None else env
    out: list[ConfigProblem] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = dotted(loc)
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in loc)
        source = f"env {env_name}" if env_name in env else file
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(ConfigProblem(source, path, msg))
    return out


def _read_toml(path: Path, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        problems.append(ConfigProblem(str(path), "", f"invalid TOML: {exc}"))
    except UnicodeDecodeError as exc:
        problems.append(
            ConfigProblem(str(path), "", f"not UTF-8 text (byte {exc.start}): TOML files must be UTF-8")
        )
    except OSError as exc:
        problems.append(ConfigProblem(str(path), "", f"cannot read: {exc.strerror}"))
    return None


def load_settings(directory: Path, problems: list[ConfigProblem]) -> EngineSettings | None:
    """engine.toml (optional: every key has a default) merged with the environment."""
    path = directory / ENGINE_FILE
    data: dict[str, Any] = {}
    if path.exists():
        loaded = _read_toml(path, problems)
        if loaded is None:
            return None
        data = loaded
    try:
        return EngineSettings(**data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, str(path)))
        return None


def load_strategy_files(directory: Path, problems: list[ConfigProblem]) -> list[StrategyEntry]:
    """Every `strategies/*.toml`, sorted by name so runs are reproducible."""
    entries: list[StrategyEntry] = []
    sdir = directory / STRATEGY_DIR
    if not sdir.is_dir():
        return entries
    for path in sorted(sdir.glob("*.toml")):
        data = _read_toml(path, problems)
        if data is None:
            continue
        try:
            spec = StrategyFile(**data)
        except ValidationError as exc:
            problems.extend(problems_from(exc, str(path), env={}))
            continue
        entries.append(StrategyEntry(path.stem, path, spec))
    return entries


def load_config(directory: Path) -> tuple[LoadedConfig | None, list[ConfigProblem]]:
    """Parse and validate the directory; plugin-specific checks happen in `engine.plugins.setup`."""
    problems: list[ConfigProblem] = []
    if not directory.is_dir():
        return None, [ConfigProblem(str(directory), "", "config directory does not exist")]
    settings = load_settings(directory, problems)
    strategies = load_strategy_files(directory, problems)
    if settings is None or problems:
        return None, problems
    return LoadedConfig(directory, settings, tuple(strategies)), problems


def resolve_path(value: str) -> Path:
    """Relative paths in the config are relative to the working directory, like every CLI tool's."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path.cwd() / p
