"""The config directory: `engine.toml` plus one `strategies/<name>.toml` per plugin instance.

The sections of engine.toml are declared in `engine.config_sections`.

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

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.config_sections import (
    ConsensusSection,
    EngineSection,
    LoggingSection,
    MarketSection,
    OutcomesSection,
    RiskSection,
    Section,
    ServerSection,
    SinksSection,
)
from engine.errors import ConfigProblem
from engine.timeframes import timeframe_seconds

ENV_PREFIX = "ENGINE__"
ENGINE_FILE = "engine.toml"
STRATEGY_DIR = "strategies"


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
