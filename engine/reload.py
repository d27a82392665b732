"""Live reload: what changed between the running config and the one on disk.

Only the difference is applied, so an untouched instance keeps its schedule and nothing that
lives outside instances — cooldowns, tracked signals, consensus memory, queued messages — is
touched at all. Settings that shape the process itself (market source, exchange, server
address, state dir) cannot change under a running engine; they are reported as needing a
restart while everything else is applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.config import LoadedConfig, load_config
from engine.plugins.instance import PluginInstance, build_instances
from engine.replay_plan import unreplayable_reason
from engine.sinks.build import check_sinks
from engine.stats import consensus_settings

if TYPE_CHECKING:
    from engine.app import Engine

log = logging.getLogger("engine")

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


def apply_reload(engine: Engine) -> dict[str, Any]:
    """Re-read the engine's config directory and apply the difference in place (the caller
    holds the tick lock); an invalid directory changes nothing and says why."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new, problems = load_config(engine.config.directory)
    instances: list[PluginInstance] = []
    if new is not None:
        engine.registry = engine.registry.refreshed()  # plugin packages installed since start
        instances, inst_problems = build_instances(new, engine.registry)
        problems = problems + inst_problems + check_sinks(new.settings)
    if new is None or problems:
        for p in problems:
            log.error("reload rejected, old config kept: %s", p)
        return {"ok": False, "at": at, "errors": [str(p) for p in problems]}
    plan = plan_reload(engine.config, new, instances)
    if plan.needs_restart:
        log.warning("reload: %s only change after a restart", ", ".join(plan.needs_restart))
    fresh = [plan.instances[n] for n in (*plan.added, *plan.changed)]
    for name in (*plan.removed, *plan.changed):
        engine.skipped.pop(name, None)
    if engine.replay_market is not None:
        keep = []
        for inst in fresh:
            reason = unreplayable_reason(engine.replay_market, inst)
            if reason:
                engine.skipped[inst.name] = reason
                log.warning("%s: skipped in replay: %s", inst.name, reason)
            else:
                keep.append(inst)
        fresh = keep
    engine.prepare(fresh)
    kept = [i for i in engine.instances if i.name in plan.unchanged]
    engine.instances = sorted(kept + fresh, key=lambda i: i.name)
    engine.scheduler.set_instances(engine.instances)
    st = new.settings
    engine.runner.quarantine_after = st.engine.quarantine_after
    for name in (*plan.removed, *plan.changed):
        # a rebuilt or removed instance starts with a clean record
        engine.metrics.plugin_quarantined.labels(name).set(0)
    exp = st.outcomes.expiry_hours
    engine.tracker.expiry_seconds = None if exp is None else exp * 3600
    if engine.consensus is not None:
        engine.consensus.settings = consensus_settings(new)
        engine.consensus.weights = dict(st.consensus.weights)
        engine.consensus.plugin_of = {i.name: i.plugin for i in engine.instances}
    engine.config = new
    summary = plan.summary()
    log.info(
        "reload applied: added %s, removed %s, changed %s",
        summary["added"] or "none",
        summary["removed"] or "none",
        summary["changed"] or "none",
    )
    return {"ok": True, "at": at, **summary}
