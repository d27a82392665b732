"""Plugin instances: a configured strategy plus the scheduling facts the engine needs.

Built from the config directory and the registry; all problems are collected as
ConfigProblems (file + field path) so `engine check` can list them together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from engine.config import EngineSettings, LoadedConfig, StrategyEntry, problems_from
from engine.errors import ConfigProblem, PluginLoadError
from engine.plugins.base import AnyStrategy
from engine.plugins.registry import Registry
from engine.signals.levels import RiskSettings
from engine.timeframes import timeframe_seconds

log = logging.getLogger("engine.plugins")


@dataclass(slots=True, eq=False)
class PluginInstance:
    """One strategy file brought to life. Mutable only in its run bookkeeping."""

    name: str
    plugin: str
    source: str
    strategy: AnyStrategy
    symbols: tuple[str, ...]
    timeframe: str
    period: int | None
    cooldown: int
    enabled: bool = True
    failures: int = 0
    quarantined: bool = False
    last_error: str | None = None
    next_due: float = field(default=0.0)

    @property
    def lookback(self) -> int:
        """The strategy's lookback, which sizes this instance's candle subscriptions."""
        return self.strategy.lookback

    @property
    def period_label(self) -> str:
        """The schedule as `engine plugins` shows it: "candle" or the period in seconds."""
        return "candle" if self.period is None else f"{self.period}s"


def global_risk(settings: EngineSettings) -> RiskSettings:
    """The `[risk]` defaults as calculator settings; each instance's own `[risk]` applies on top."""
    r = settings.risk
    return RiskSettings(**r.model_dump())


def build_instance(
    entry: StrategyEntry, registry: Registry, base_risk: RiskSettings
) -> tuple[PluginInstance | None, list[ConfigProblem]]:
    """Validate params/risk against the plugin's own models and construct it."""
    file = str(entry.file)
    spec = entry.spec
    try:
        cls = registry.load(entry.plugin)
    except PluginLoadError as exc:
        return None, [ConfigProblem(file, "plugin", str(exc))]
    try:
        params = cls.Params(**spec.params)
    except ValidationError as exc:
        probs = problems_from(exc, file, env={})
        return None, [ConfigProblem(p.file, f"params.{p.path}", p.message) for p in probs]
    overrides = {k: v for k, v in spec.risk.model_dump().items() if v is not None}
    risk = base_risk.merged(cls.RISK).merged(overrides)
    timeframe = spec.timeframe or cls.DEFAULT_TIMEFRAME
    try:
        timeframe_seconds(timeframe)
        strategy = cls(params, risk, timeframe)
    except Exception as exc:
        return None, [ConfigProblem(file, "params", f"plugin rejected its configuration: {exc}")]
    cooldown = spec.cooldown if spec.cooldown is not None else cls.DEFAULT_COOLDOWN
    period = None if spec.period == "candle" else int(spec.period)
    info = registry.info(entry.plugin)
    inst = PluginInstance(
        name=entry.name,
        plugin=entry.plugin,
        source=info.source if info else "?",
        strategy=strategy,
        symbols=tuple(spec.symbols),
        timeframe=timeframe,
        period=period,
        cooldown=cooldown,
        enabled=spec.enabled,
    )
    return inst, []


def build_instances(
    config: LoadedConfig, registry: Registry, *, include_disabled: bool = False
) -> tuple[list[PluginInstance], list[ConfigProblem]]:
    """Every instance of the config, with all problems found (disabled files are validated too)."""
    base = global_risk(config.settings)
    instances: list[PluginInstance] = []
    problems: list[ConfigProblem] = []
    for entry in config.strategies:
        inst, probs = build_instance(entry, registry, base)
        problems.extend(probs)
        if inst is not None and (inst.enabled or include_disabled):
            instances.append(inst)
    return instances, problems
