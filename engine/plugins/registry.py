"""Plugin discovery through the `engine.strategies` entry-point group.

Built-in strategies register exactly as a third-party package would, so there is one path for
both. Import failures are collected, not raised: `engine check` reports them and `engine run`
skips that plugin with an error log while the others run. Two packages registering one name are
such a failure too, for that name: neither is loaded, since which would win is an accident of
installation order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from engine.errors import PluginLoadError
from engine.plugins.base import AnyStrategy, Strategy

GROUP = "engine.strategies"
OWN_DISTRIBUTION = "signal-engine"


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a plugin comes from, for `engine plugins` and error messages."""

    name: str
    target: str
    source: str


class Registry:
    """Name → strategy class, loaded lazily from entry points (or given directly in tests)."""

    def __init__(
        self,
        entry_points_: list[EntryPoint] | None = None,
        classes: dict[str, type[AnyStrategy]] | None = None,
    ) -> None:
        self._group: str | None = None  # set by discover(): where refreshed() looks again
        self._eps: dict[str, EntryPoint] = {}
        self._infos: dict[str, PluginInfo] = {}
        self._loaded: dict[str, type[AnyStrategy]] = {}
        self._errors: dict[str, str] = {}
        for ep in entry_points_ or []:
            dist = ep.dist.name if ep.dist is not None else "?"
            source = "built-in" if dist == OWN_DISTRIBUTION else f"package {dist}"
            info, known = PluginInfo(ep.name, ep.value, source), self._infos.get(ep.name)
            if known is not None and known != info:
                # which one Python lists last is an accident of installation: use neither
                self._errors[ep.name] = (
                    f"plugin {ep.name!r} is registered twice: {known.target} ({known.source}) and "
                    f"{ep.value} ({source}); uninstall one of them or rename its entry point"
                )
                continue
            self._eps[ep.name] = ep
            self._infos[ep.name] = info
        for name, cls in (classes or {}).items():
            self._loaded[name] = cls
            self._infos[name] = PluginInfo(name, f"{cls.__module__}:{cls.__qualname__}", "in-process")

    @classmethod
    def discover(cls, group: str = GROUP) -> Registry:
        """Every plugin installed under `group`; built-ins register exactly like third-party ones."""
        registry = cls(list(entry_points(group=group)))
        registry._group = group
        return registry

    def refreshed(self) -> Registry:
        """This registry with the entry points installed since (a reload calls it, so a newly
        installed plugin package needs no restart). Plugins already imported keep their
        classes: upgrading an installed package still needs a restart. A plugin that failed to
        import is tried again. A registry not made by `discover` is returned as it is."""
        if self._group is None:
            return self
        importlib.invalidate_caches()  # the import system caches directory listings
        fresh = Registry.discover(self._group)
        for name, cls in self._loaded.items():
            fresh._loaded.setdefault(name, cls)
        return fresh

    def names(self) -> list[str]:
        """Every known plugin name, sorted, whether or not it imports."""
        return sorted(self._infos)

    def info(self, name: str) -> PluginInfo | None:
        """Where plugin `name` comes from, or None when unknown; never imports it."""
        return self._infos.get(name)

    def load(self, name: str) -> type[AnyStrategy]:
        """The strategy class; PluginLoadError (with the cause) if it cannot be imported."""
        if name in self._loaded:
            return self._loaded[name]
        if name in self._errors:
            raise PluginLoadError(self._errors[name])
        ep = self._eps.get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise PluginLoadError(f"no plugin named {name!r} (known: {known})")
        try:
            obj = ep.load()
        except Exception as exc:
            self._errors[name] = f"plugin {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
            raise PluginLoadError(self._errors[name]) from exc
        if not (isinstance(obj, type) and issubclass(obj, Strategy)):
            self._errors[name] = f"plugin {name!r} ({ep.value}) is not a Strategy subclass"
            raise PluginLoadError(self._errors[name])
        if obj.INTERFACE_VERSION != Strategy.INTERFACE_VERSION:
            self._errors[name] = (
                f"plugin {name!r} targets interface version {obj.INTERFACE_VERSION}, "
                f"this engine speaks {Strategy.INTERFACE_VERSION}"
            )
            raise PluginLoadError(self._errors[name])
        self._loaded[name] = obj
        return obj
