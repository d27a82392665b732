"""Entry-point registry: built-ins load like third-party packages; bad plugins are reported."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from engine.errors import PluginLoadError
from engine.plugins.registry import Registry


def test_builtins_are_registered_through_entry_points() -> None:
    reg = Registry.discover()
    assert {"psar", "most"} <= set(reg.names())
    info = reg.info("psar")
    assert info is not None and info.source == "built-in"
    cls = reg.load("psar")
    assert cls.name == "psar"


def test_import_failure_and_non_strategy_are_errors_not_crashes() -> None:
    reg = Registry(
        [
            EntryPoint("ghost", "no_such_module_xyz:Thing", "engine.strategies"),
            EntryPoint("notastrategy", "engine.errors:EngineError", "engine.strategies"),
        ]
    )
    with pytest.raises(PluginLoadError, match=r"ghost.*failed to import: ModuleNotFoundError"):
        reg.load("ghost")
    with pytest.raises(PluginLoadError, match="not a Strategy subclass"):
        reg.load("notastrategy")
    with pytest.raises(PluginLoadError, match="no plugin named 'nope'"):
        reg.load("nope")


def test_two_packages_registering_one_name_load_neither_and_say_so() -> None:
    reg = Registry(
        [
            EntryPoint("psar", "strategies.psar:PsarStrategy", "engine.strategies"),
            EntryPoint("psar", "someone_elses.psar:Psar", "engine.strategies"),
            EntryPoint("most", "strategies.most:MostStrategy", "engine.strategies"),
            EntryPoint("most", "strategies.most:MostStrategy", "engine.strategies"),  # listed twice
        ]
    )
    with pytest.raises(PluginLoadError, match=r"'psar' is registered twice: strategies.psar.*someone_elses"):
        reg.load("psar")
    assert reg.load("most").name == "most"  # the same entry point twice is no clash
