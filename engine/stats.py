"""`engine stats`: per-strategy outcome statistics and current consensus weights, from state.

Reads `engine.json` without taking the lock: the file is replaced atomically, so a running
engine never exposes a half-written one, and a user can ask for stats while it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.config import LoadedConfig
from engine.signals.consensus import ConsensusSettings, hit_rate_factor
from engine.signals.tally import StrategyStats

COLUMNS = ("STRATEGY", "SIGNALS", "OPEN", "TP1", "TP2", "TP3", "SL", "EXPIRED", "WIN%", "AVG R", "WEIGHT")


def weight_of(config: LoadedConfig, name: str, plugin: str | None, st: StrategyStats | None) -> float:
    """The consensus weight the engine would use now (base, times the adaptive factor if on)."""
    cs = config.settings.consensus
    base = cs.weights.get(name, cs.weights.get(plugin or name, cs.default_weight))
    if not cs.adaptive_weights or st is None:
        return base
    return base * hit_rate_factor(st.wins, st.closed, cs.adaptive_min_factor, cs.adaptive_max_factor)


def stats_rows(config: LoadedConfig, raw_stats: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Rows for `engine stats`: every configured or recorded strategy with its tallies and weight now."""
    plugin_of = {e.name: e.plugin for e in config.strategies}
    names = sorted(set(raw_stats) | set(plugin_of))
    rows: list[tuple[str, ...]] = [COLUMNS]
    fields = set(StrategyStats.__slots__)
    for name in names:
        d = raw_stats.get(name)
        st = StrategyStats(**{k: v for k, v in dict(d).items() if k in fields}) if d else StrategyStats()
        s = st.summary()
        wr = "-" if s["win_rate"] is None else f"{100 * s['win_rate']:.1f}"
        ar = "-" if s["avg_r"] is None else f"{s['avg_r']:+.2f}"
        weight = "-" if name == "consensus" else f"{weight_of(config, name, plugin_of.get(name), st):.2f}"
        rows.append(
            (
                name,
                str(s["signals"]),
                str(s["open"]),
                str(s["tp1"]),
                str(s["tp2"]),
                str(s["tp3"]),
                str(s["sl"]),
                str(s["expired"]),
                wr,
                ar,
                weight,
            )
        )
    return rows


def render(rows: list[tuple[str, ...]]) -> str:
    """The rows as left-aligned columns, trailing spaces trimmed."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def consensus_settings(config: LoadedConfig) -> ConsensusSettings:
    """The aggregator's settings from the config; live and replay both build them here, so they agree."""
    cs = config.settings.consensus
    return ConsensusSettings(
        window_minutes=cs.window_minutes,
        min_strategies=cs.min_strategies,
        threshold=cs.threshold,
        min_rr=cs.min_rr,
        memory_hours=cs.memory_hours,
        default_weight=cs.default_weight,
        adaptive=cs.adaptive_weights,
        adaptive_min_factor=cs.adaptive_min_factor,
        adaptive_max_factor=cs.adaptive_max_factor,
    )
