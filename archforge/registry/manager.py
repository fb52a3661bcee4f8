"""Discovering plugins through entry points and collecting what their hooks return.

Every fault of a plugin (an import that raises, even ``SystemExit``; a hook that raises
or returns the wrong type; a block that breaks the contract or whose constructor raises;
a misspelt or undecorated hook) becomes one :class:`~archforge.errors.PluginWarning`
naming the entry point, the distribution and what to fix. That plugin, or that block,
is skipped; the built-in blocks and every other plugin keep working.

Which block a name means is decided in :mod:`archforge.registry.names`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable

import pluggy

from archforge.errors import PluginWarning, did_you_mean
from archforge.registry import hookspecs, isolation
from archforge.registry.block import Block, class_label, contract_problems
from archforge.registry.extensions import BUILTIN_MEASUREMENTS, METRIC_NAME, DatasetSource, Metric
from archforge.registry.isolation import PluginFault
from archforge.registry.names import BUILTIN_DISTRIBUTION, BUILTIN_PLUGIN, BlockEntry, BlockNames, PluginInfo, resolve_names

ENTRY_POINT_GROUP = "archforge"

#: Major version of the plugin API (hooks, Block contract, Shape). A plugin module may
#: declare ``ARCHFORGE_PLUGIN_API = <major>``; one declaring another major is refused.
PLUGIN_API_VERSION = 1

HOOKS = ("archforge_blocks", "archforge_datasets", "archforge_metrics")


@dataclass
class Registry(BlockNames):
    """Everything the installed plugins provide. Build one with :func:`load_registry`.

    The block names (``blocks``, ``qualified``, ``conflicts``, :meth:`block`) are
    :class:`~archforge.registry.names.BlockNames`; ``problems`` holds every warning given while loading.
    """

    datasets: dict[str, tuple[DatasetSource, PluginInfo]] = field(default_factory=dict)
    metrics: dict[str, tuple[Metric, PluginInfo]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _entry_point_plugins(registry: Registry) -> list[tuple[PluginInfo, Callable[[], Any]]]:
    """``(info, loader)`` for each installed entry point in the ``archforge`` group, in a fixed order."""
    try:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken installation must not hide the built-ins' error behind a traceback
        _warn(registry, f"the installed '{ENTRY_POINT_GROUP}' entry points cannot be read ({isolation.describe(exc)}); "
                        f"no plugin is loaded: reinstall the broken distribution")
        return []
    sources = []
    for ep in found:
        dist = getattr(ep, "dist", None)
        name = getattr(dist, "name", None)
        version = getattr(dist, "version", None)
        info = PluginInfo(str(ep.name), name if isinstance(name, str) and name else "?", version if isinstance(version, str) and version else "?")
        sources.append((info, ep))
    # Sorted, so that which plugin comes first (in listings, in clash messages) never depends on sys.path order.
    sources.sort(key=lambda pair: (pair[0].distribution, pair[0].name))
    result, seen = [], set()
    for info, ep in sources:
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        if not info.name.strip():
            _warn(registry, f"an entry point with an empty name in '{info.distribution}' is skipped: name it in the "
                            f"[project.entry-points.{ENTRY_POINT_GROUP}] table (name = \"module\")")
        elif not ep.pattern.fullmatch(ep.value):
            _warn(registry, f"{info.label} is skipped: its value {ep.value!r} is not 'package.module' or 'package.module:attribute'; "
                            f"fix it in the [project.entry-points.{ENTRY_POINT_GROUP}] table")
        else:
            result.append((info, ep.load))
    return result


def load_registry(extra_plugins: Iterable[tuple[str, ModuleType | object]] = (), *, entry_points: bool = True) -> Registry:
    """Collect blocks, datasets and metrics from installed plugins (and ``extra_plugins``).

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered as if they came
    from an entry point ``name`` of a distribution called ``name``; tests use them to
    add blocks without installing a package.

    A real Ctrl-C still interrupts; anything a plugin raises (``SystemExit`` and its own
    ``KeyboardInterrupt`` included) skips that plugin with a warning.
    """
    registry = Registry()
    manager = _plugin_manager()
    sources: list[tuple[PluginInfo, Callable[[], Any]]] = []
    if entry_points:
        sources.extend(_entry_point_plugins(registry))
    sources.extend((PluginInfo(name, name, "local"), (lambda obj=obj: obj)) for name, obj in extra_plugins)

    entries: list[BlockEntry] = []
    with isolation.watching_interrupts():
        loaded = [(info, plugin) for info, load in sources if (plugin := _register(registry, manager, info, load)) is not None]
        for info, plugin in loaded:
            for item in _hook_items(registry, manager, info, plugin, "archforge_blocks"):
                entry = _block_entry(registry, item, info)
                if entry is not None:
                    entries.append(entry)
            for item in _hook_items(registry, manager, info, plugin, "archforge_datasets"):
                _add_extension(registry, item, info, "dataset", DatasetSource, "load")
            for item in _hook_items(registry, manager, info, plugin, "archforge_metrics"):
                _add_extension(registry, item, info, "metric", Metric, "compute")
    resolve_names(registry, entries, lambda message: _warn(registry, message))
    return registry


_UNSET = object()


def _register(registry: Registry, manager: pluggy.PluginManager, info: PluginInfo, load: Callable[[], Any]) -> Any:
    """Import and register one plugin; ``None`` (after a warning) when it cannot be used."""
    if info.name == BUILTIN_PLUGIN and info.distribution != BUILTIN_DISTRIBUTION:
        # Its blocks would clash with the built-ins' qualified names and hide them; refused before it is imported.
        _warn(registry, f"{info.label} is refused: the entry-point name '{BUILTIN_PLUGIN}' is reserved for archforge's built-in "
                        f"blocks; rename the entry point in the [project.entry-points.{ENTRY_POINT_GROUP}] table of '{info.distribution}'")
        return None
    try:
        plugin = isolation.call(load)
    except PluginFault as fault:
        _warn(registry, f"{info.label} failed to load and is skipped: {fault}")
        return None
    if plugin is None:
        _warn(registry, f"{info.label} is skipped: its entry point resolves to None; point it at the module implementing the hooks")
        return None
    try:
        wanted = isolation.call(getattr, plugin, "ARCHFORGE_PLUGIN_API", _UNSET)
        problem = None
        if wanted is not _UNSET and type(wanted) is not int:
            problem = (f"its ARCHFORGE_PLUGIN_API is {isolation.show(wanted)}, not an int; declare the major it targets, "
                       f"e.g. ARCHFORGE_PLUGIN_API = {PLUGIN_API_VERSION}")
        elif wanted is not _UNSET and wanted != PLUGIN_API_VERSION:
            problem = (f"it targets plugin API {wanted!r}, this archforge provides {PLUGIN_API_VERSION}; "
                       f"install a version of the plugin made for it")
        if problem:
            _warn(registry, f"plugin '{info.name}' from '{info.distribution}' {info.version} is refused: {problem}")
            return None
        if isolation.call(manager.is_registered, plugin):  # compares with ==, which a plugin object may override
            _warn(registry, f"{info.label} is skipped: its module is already loaded through another entry point; keep one entry point per module")
            return None
        isolation.call(manager.register, plugin, name=f"{info.distribution}:{info.name}")
    except PluginFault as fault:
        _warn(registry, f"{info.label} failed to load and is skipped: {fault}")
        return None
    registry.plugins.append(info)
    try:
        isolation.call(_check_hook_names, registry, manager, info, plugin)
    except PluginFault as fault:
        _warn(registry, f"{info.label}: its hooks cannot be listed ({fault}); it is used as far as its hooks can be called")
    return plugin


def _check_hook_names(registry: Registry, manager: pluggy.PluginManager, info: PluginInfo, plugin: Any) -> None:
    """Warn about misspelt hooks (pluggy's ``check_pending`` rule, per plugin) and forgotten ``@hookimpl``."""
    callers = manager.get_hookcallers(plugin) or []
    known = [caller.name for caller in callers if caller.has_spec()]
    unknown = [caller.name for caller in callers if not caller.has_spec()
               and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())]
    for name in unknown:
        _warn(registry, f"{info.label} implements unknown hook '{name}'{did_you_mean(name, HOOKS)}, which is never called; "
                        f"archforge's hooks are {', '.join(HOOKS)}")
    undecorated = [name for name in HOOKS if name not in known and _has_function(plugin, name)]
    for name in undecorated:
        _warn(registry, f"{info.label} defines {name}() without @archforge.hookimpl, so it is never called; decorate it")
    if not known and not unknown and not undecorated:
        _warn(registry, f"{info.label} registered no hooks: did you forget @archforge.hookimpl?")


def _has_function(plugin: Any, name: str) -> bool:
    try:
        return callable(isolation.call(getattr, plugin, name, None))
    except PluginFault:
        return False


def _hook_items(registry: Registry, manager: pluggy.PluginManager, info: PluginInfo, plugin: Any, hook_name: str) -> list[Any]:
    """What one plugin's implementation of one hook returns, as a list; ``[]`` (after a warning) when it is unusable."""
    impls = [impl for impl in getattr(manager.hook, hook_name).get_hookimpls() if impl.plugin is plugin]
    items: list[Any] = []
    for impl in impls:
        if impl.hookwrapper or impl.wrapper:
            _warn(registry, f"{info.label}: {hook_name}() is declared as a hook wrapper, which archforge does not support; "
                            f"use a plain @archforge.hookimpl")
            continue
        try:
            result = isolation.call(impl.function)
            items.extend(isolation.call(_as_list, result, hook_name))
        except PluginFault as fault:
            cause = fault.cause
            if isinstance(cause, _WrongResult):
                _warn(registry, f"{info.label}: {hook_name}() {cause}; it is ignored")
            else:
                _warn(registry, f"{info.label} raised in {hook_name}() and is skipped: {fault}")
    return items


class _WrongResult(Exception):
    """A hook returned something other than a list."""


def _as_list(result: Any, hook_name: str) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    what = {"archforge_blocks": "Block classes", "archforge_datasets": "DatasetSource objects", "archforge_metrics": "Metric objects"}[hook_name]
    hint = ""
    if isinstance(result, type):
        hint = f" (return [{class_label(result)}])"
    elif isinstance(result, (DatasetSource, Metric)):
        hint = f" (return [{type(result).__name__}(...)])"
    raise _WrongResult(f"must return a list of {what}, got {_kind(result)}{hint}")


def _kind(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {isolation.show(value)}"
    return f"{type(value).__name__} {isolation.show(value)}"


def _block_entry(registry: Registry, item: Any, info: PluginInfo) -> BlockEntry | None:
    """The entry for one returned class; ``None`` (after a warning naming the block) when it cannot be used."""
    try:
        return isolation.call(_make_entry, item, info)
    except PluginFault as fault:
        cause = fault.cause
        message = str(cause) if isinstance(cause, _Refused) else f"returned {isolation.show(item)}, which cannot be used: {fault}"
        _warn(registry, f"{info.label}: archforge_blocks() {message}")
        return None


class _Refused(Exception):
    """A returned block that breaks the contract: the message says which and why."""


def _make_entry(item: Any, info: PluginInfo) -> BlockEntry:
    if isinstance(item, Block):
        raise _Refused(f"returned an instance of {type(item).__name__}; return the class {type(item).__name__} itself")
    if not (isinstance(item, type) and issubclass(item, Block)):
        raise _Refused(f"returned {_kind(item)}, which is not a Block subclass; return Block subclasses")
    problems = contract_problems(item)
    if problems:
        raise _Refused(f"block {_block_label(item)} is skipped: {'; '.join(problems)}")
    try:
        block = isolation.call(item)
    except PluginFault as fault:
        raise _Refused(f"block {_block_label(item)} is skipped: its constructor raised {fault}; "
                       f"archforge creates blocks with no arguments, so __init__ must need none") from None
    if type(block) is not item:
        raise _Refused(f"block {_block_label(item)} is skipped: {class_label(item)}() returned {_kind(block)}, not an instance of it")
    changed = [attr for attr in ("name", "layout", "inputs", "family", "Args") if getattr(block, attr) != getattr(item, attr)]
    if changed:
        raise _Refused(f"block {_block_label(item)} is skipped: its constructor changes {', '.join(changed)}; "
                       f"set them as class attributes only")
    return BlockEntry(block, info)


def _block_label(cls: type) -> str:
    """``'halo_attention' (HaloAttention)``, or just the class when its name is unusable."""
    try:
        name = isolation.call(getattr, cls, "name", None)
    except PluginFault:
        name = None
    return f"'{name}' ({class_label(cls)})" if type(name) is str else class_label(cls)


def _add_extension(registry: Registry, item: Any, info: PluginInfo, kind: str, base: type, method: str) -> None:
    """Register a dataset (``kind='dataset'``) or metric; the first plugin to provide a name keeps it.

    A metric named like one of archforge's own measurements (``accuracy``, ``params``, ...) is
    refused: an objective, a constraint or a column of that name would mean two things.
    """
    table = registry.datasets if kind == "dataset" else registry.metrics
    problem = _checked(item, base, method)
    if problem:
        _warn(registry, f"{info.label}: archforge_{kind}s() {problem}; it is ignored")
    elif kind == "metric" and item.name in BUILTIN_MEASUREMENTS:
        _warn(registry, f"metric '{item.name}' from '{info.distribution}' refused: '{item.name}' is archforge's built-in "
                        f"{BUILTIN_MEASUREMENTS[item.name]}, which every search measures itself; rename the metric")
    elif item.name in table:
        _warn(registry, f"{kind} '{item.name}' from '{info.distribution}' ignored: already provided by '{table[item.name][1].distribution}'"
                        + ("; one of the two distributions must rename it" if kind == "metric" else ""))
    else:
        table[item.name] = (item, info)


def _checked(item: Any, kind: type, function: str) -> str | None:
    try:
        return isolation.call(_value_problem, item, kind, function)
    except PluginFault as fault:
        return f"returned {isolation.show(item)}, which cannot be used: {fault}"


def _value_problem(item: Any, kind: type, function: str) -> str | None:
    """What is wrong with a returned DatasetSource or Metric (they are plain dataclasses, checked here)."""
    if not isinstance(item, kind):
        return f"returned {_kind(item)}, not a {kind.__name__}"
    name = item.name
    if type(name) is not str or not name.strip():
        return f"returned a {kind.__name__} whose name is {isolation.show(name)}; give it a non-empty string name"
    if not callable(getattr(item, function)):
        return f"returned {kind.__name__} '{name}' whose {function} is {isolation.show(getattr(item, function))}, not a function"
    if kind is Metric and not METRIC_NAME.fullmatch(name):
        return (f"returned metric {isolation.show(name)}, whose name is not a letter followed by letters, digits or '_'; "
                f"a space writes it in objectives and constraints, so rename it")
    if kind is Metric and item.goal not in ("minimize", "maximize"):
        return f"returned metric '{name}' with goal {isolation.show(item.goal)}; use 'minimize' or 'maximize'"
    return None


def _warn(registry: Registry, message: str) -> None:
    registry.problems.append(message)
    warnings.warn(message, PluginWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    return load_registry()
