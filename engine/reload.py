"""Live reload: what changed between the running config and the one on disk.

Only the difference is applied, so an untouched instance keeps its schedule and nothing that
lives outside instances — cooldowns, tracked signals, consensus memory, queued messages — is
touched at all. Settings that shape the process itself (market source, exchange, server
address, state dir) cannot change under a running engine; they are reported as needing a
restart while everything else is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.config import LoadedConfig
from engine.plugins.instance import PluginInstance

RESTART_ONLY = (
    ("engine", "state_dir"),
    ("market", "source"),
    ("market", "exchange"),
    ("market", "type"),
    ("market", "api_url"),
    ("market", "data_dir"),
    ("market", "speed"),
    ("server", "host"),
    ("server", "port"),
    ("server", "enabled"),
    ("server", "admin_token_file"),
    ("logging", "file"),
    ("logging", "max_bytes"),
    ("logging", "backups"),
    ("logging", "json_lines"),
    ("logging", "level"),
    ("engine", "log_level"),
    ("engine", "close_delay_seconds"),
    ("engine", "shutdown_grace_seconds"),
    ("market", "rate_budget"),
    ("market", "timeout_seconds"),
    ("market", "max_retries"),
    ("market", "replay_start"),
    ("market", "exit_at_end"),
    ("sinks", "console"),
    ("sinks", "journal"),
    ("sinks", "telegram"),
    ("sinks", "webhook"),
    ("sinks", "queue_size"),
)
# config keys whose attribute name differs from the TOML key
TOML_KEY = {"json_lines": "json"}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Instance names by fate, plus settings that only a restart can change."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()
    instances: dict[str, PluginInstance] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The plan in JSON-ready form for /admin/reload and the log; unchanged names are only counted."""
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "unchanged": len(self.unchanged),
            "needs_restart": list(self.needs_restart),
        }


def specs(config: LoadedConfig) -> dict[str, dict[str, Any]]:
    """Each enabled instance's file as plain data: equal dumps mean an identical instance."""
    return {e.name: e.spec.model_dump() for e in config.strategies if e.spec.enabled}


def plan_reload(old: LoadedConfig, new: LoadedConfig, new_instances: list[PluginInstance]) -> ReloadPlan:
    """Diff two configs; only instances that built are added or changed, and a risk change reprices all."""
    before, after = specs(old), specs(new)
    by_name = {i.name: i for i in new_instances}
    added = tuple(sorted(n for n in after if n not in before and n in by_name))
    removed = tuple(sorted(n for n in before if n not in after))
    changed = tuple(sorted(n for n in after if n in before and after[n] != before[n] and n in by_name))
    # a global risk change re-prices every instance's levels
    if old.settings.risk != new.settings.risk:
        changed = tuple(sorted({*changed, *(n for n in after if n in before and n in by_name)}))
    unchanged = tuple(sorted(n for n in after if n in before and n not in changed))
    restart = tuple(
        f"{section}.{TOML_KEY.get(key, key)}"
        for section, key in RESTART_ONLY
        if getattr(getattr(old.settings, section), key) != getattr(getattr(new.settings, section), key)
    )
    return ReloadPlan(added, removed, changed, unchanged, restart, by_name)
