"""Discovering plugins through entry points and collecting what their hooks return."""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import pluggy

from archforge.errors import PluginError, PluginWarning, did_you_mean
from archforge.registry import hookspecs
from archforge.registry.block import Block
from archforge.registry.extensions import DatasetSource, Metric

ENTRY_POINT_GROUP = "archforge"

#: Major version of the plugin API (hooks, Block contract, Shape). A plugin module may
#: declare ``ARCHFORGE_PLUGIN_API = <major>``; one declaring another major is refused.
PLUGIN_API_VERSION = 1


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: its entry-point name and its distribution."""

    name: str
    distribution: str
    version: str


@dataclass(frozen=True)
class BlockEntry:
    """A registered block together with the plugin that provided it."""

    block: Block
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.block.name


@dataclass
class Registry:
    """Everything the installed plugins provide. Build one with :func:`load_registry`."""

    blocks: dict[str, BlockEntry] = field(default_factory=dict)
    conflicts: dict[str, list[BlockEntry]] = field(default_factory=dict)
    datasets: dict[str, tuple[DatasetSource, PluginInfo]] = field(default_factory=dict)
    metrics: dict[str, tuple[Metric, PluginInfo]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def block(self, name: str) -> BlockEntry:
        """The block called ``name``; :class:`PluginError` if it is unknown or provided twice."""
        if name in self.conflicts:
            raise PluginError(f"block '{name}' is provided by several plugins: {_owners(self.conflicts[name])}; uninstall one of them")
        try:
            return self.blocks[name]
        except KeyError:
            if not self.blocks:
                raise PluginError(f"unknown block '{name}': no blocks are registered at all (is archforge installed? try 'pip install -e .')") from None
            raise PluginError(f"unknown block '{name}'{did_you_mean(name, self.blocks)}") from None

    def names(self) -> list[str]:
        return sorted(self.blocks)


def _owners(entries: Iterable[BlockEntry]) -> str:
    return " and ".join(f"'{e.plugin.distribution}' ({e.plugin.name})" for e in entries)


def _plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _entry_point_plugins() -> Iterable[tuple[PluginInfo, Any]]:
    """Yield ``(info, loader)`` for each installed entry point in the ``archforge`` group."""
    seen = set()
    # Sorted, so that which plugin comes first (in listings, in clash messages) never depends on sys.path order.
    found = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (_distribution_name(ep), ep.name))
    for ep in found:
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "?")
        yield info, ep.load


def _distribution_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist else "?"


def load_registry(extra_plugins: Iterable[tuple[str, ModuleType | object]] = (), *, entry_points: bool = True) -> Registry:
    """Collect blocks, datasets and metrics from installed plugins (and ``extra_plugins``).

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered as if they came
    from an entry point of a distribution called ``name``; tests use them to add
    blocks without installing a package.
    """
    registry = Registry()
    manager = _plugin_manager()
    sources: list[tuple[PluginInfo, Any]] = []
    if entry_points:
        sources.extend(_entry_point_plugins())
    sources.extend((PluginInfo(name, name, "local"), (lambda obj=obj: obj)) for name, obj in extra_plugins)

    infos: dict[str, PluginInfo] = {}
    for info, load in sources:
        try:
            plugin = load()
            wanted = getattr(plugin, "ARCHFORGE_PLUGIN_API", PLUGIN_API_VERSION)
            if wanted != PLUGIN_API_VERSION:
                _warn(registry, f"plugin '{info.name}' from '{info.distribution}' {info.version} is refused: it targets plugin API "
                                f"{wanted!r}, this archforge provides {PLUGIN_API_VERSION}; install a version of the plugin made for it")
                continue
            manager.register(plugin, name=f"{info.distribution}:{info.name}")
        except Exception as exc:  # a broken plugin must not take the others down
            _warn(registry, f"plugin '{info.name}' from '{info.distribution}' failed to load and is skipped: {type(exc).__name__}: {exc}")
            continue
        infos[f"{info.distribution}:{info.name}"] = info
        registry.plugins.append(info)

    for info, blocks in _call_each(registry, manager.hook.archforge_blocks, infos):
        for cls in blocks:
            _add_block(registry, cls, info)
    for info, datasets in _call_each(registry, manager.hook.archforge_datasets, infos):
        for source in datasets:
            if source.name in registry.datasets:
                _warn(registry, f"dataset '{source.name}' from '{info.distribution}' ignored: already provided by '{registry.datasets[source.name][1].distribution}'")
            else:
                registry.datasets[source.name] = (source, info)
    for info, metrics in _call_each(registry, manager.hook.archforge_metrics, infos):
        for metric in metrics:
            registry.metrics.setdefault(metric.name, (metric, info))
    return registry


def _call_each(registry: Registry, hook: Any, infos: dict[str, PluginInfo]) -> Iterable[tuple[PluginInfo, list[Any]]]:
    """Call one hook plugin by plugin, so that a failing implementation is isolated and attributed."""
    for impl in hook.get_hookimpls():
        info = infos[impl.plugin_name]
        try:
            result = impl.function()
            yield info, list(result or [])
        except Exception as exc:
            _warn(registry, f"plugin '{info.name}' from '{info.distribution}' raised in {hook.name}() and is skipped: {type(exc).__name__}: {exc}")


def _add_block(registry: Registry, cls: Any, info: PluginInfo) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Block)):
        _warn(registry, f"plugin '{info.name}' from '{info.distribution}' returned {cls!r}, which is not a Block subclass")
        return
    problems = cls.contract_problems()
    if problems:
        _warn(registry, f"plugin '{info.name}' from '{info.distribution}': block skipped: {'; '.join(problems)}")
        return
    existing = registry.blocks.get(cls.name)
    if existing is not None and type(existing.block) is cls:
        return  # the very same class reached twice (e.g. a test re-registering a built-in): no clash
    entry = BlockEntry(cls(), info)
    if cls.name in registry.conflicts:
        registry.conflicts[cls.name].append(entry)
    elif cls.name in registry.blocks:
        registry.conflicts[cls.name] = [registry.blocks.pop(cls.name), entry]
    else:
        registry.blocks[cls.name] = entry


def _warn(registry: Registry, message: str) -> None:
    registry.problems.append(message)
    warnings.warn(message, PluginWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    return load_registry()
