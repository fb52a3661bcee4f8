"""Block names: which block a spec's ``block:`` means, whatever plugins are installed.

Every block has a qualified name ``<entry point>:<name>`` (``builtin:conv``,
``halo:halo_attention``) and a short name (``conv``). A short name resolves to the
built-in block if archforge itself provides one (a plugin block with the same short name
gets a warning and is reachable by its qualified name only), else to the one plugin
block that has it; a short name that several plugins provide is an error only when a
spec uses it, naming the qualified names to write instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from archforge.errors import PluginError, did_you_mean
from archforge.registry.block import Block

#: The distribution whose blocks are built in: they win short names over any plugin's.
BUILTIN_DISTRIBUTION = "archforge-nn"

#: The entry-point name of the built-in blocks (``builtin:conv``); no other distribution may use it.
BUILTIN_PLUGIN = "builtin"


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: its entry-point name and its distribution."""

    name: str
    distribution: str
    version: str

    @property
    def label(self) -> str:
        """How every message names the plugin: ``plugin 'halo' from 'archforge-halo'``."""
        return f"plugin '{self.name}' from '{self.distribution}'"


@dataclass(frozen=True)
class BlockEntry:
    """A registered block together with the plugin that provided it."""

    block: Block
    plugin: PluginInfo

    @property
    def name(self) -> str:
        """The short name, as most specs write it: ``halo_attention``."""
        return self.block.name

    @property
    def qualified_name(self) -> str:
        """``<entry point>:<name>``, e.g. ``halo:halo_attention``: unambiguous whatever else is installed."""
        return f"{self.plugin.name}:{self.block.name}"

    @property
    def builtin(self) -> bool:
        return self.plugin.distribution == BUILTIN_DISTRIBUTION


@dataclass
class BlockNames:
    """The block part of a :class:`~archforge.registry.Registry`: names to blocks.

    ``blocks`` maps each usable short name to its block; ``qualified`` maps every
    qualified name (``halo:halo_attention``), shadowed plugin blocks included;
    ``conflicts`` holds the names several plugins provide, none of them built in.
    """

    blocks: dict[str, BlockEntry] = field(default_factory=dict)
    conflicts: dict[str, list[BlockEntry]] = field(default_factory=dict)
    qualified: dict[str, BlockEntry] = field(default_factory=dict)

    def block(self, name: str) -> BlockEntry:
        """The block called ``name`` (short or qualified); :class:`PluginError` if it is unknown or ambiguous."""
        if name in self.conflicts:
            raise PluginError(_clash_message(name, self.conflicts[name], self.qualified))
        if ":" in name:
            return self._qualified_block(name)
        try:
            return self.blocks[name]
        except KeyError:
            if not self.blocks:
                raise PluginError(f"unknown block '{name}': no blocks are registered at all (is archforge installed? try 'pip install -e .')") from None
            raise PluginError(f"unknown block '{name}'{did_you_mean(name, self.blocks)}") from None

    def _qualified_block(self, name: str) -> BlockEntry:
        try:
            return self.qualified[name]
        except KeyError:
            pass
        plugin, _, short = name.rpartition(":")
        provided = [q.rpartition(":")[2] for q in self.qualified if q.rpartition(":")[0] == plugin]
        if provided:
            raise PluginError(f"unknown block '{name}': plugin '{plugin}' provides no block '{short}'{did_you_mean(short, provided)}")
        plugins = sorted({q.rpartition(":")[0] for q in self.qualified})
        raise PluginError(f"unknown block '{name}': no plugin is called '{plugin}'{did_you_mean(plugin, plugins)} "
                          f"(plugins with blocks: {', '.join(plugins) or 'none'})")

    def names(self) -> list[str]:
        """The short names a spec can use."""
        return sorted(self.blocks)

    def qualified_names(self) -> list[str]:
        """Every ``<plugin>:<name>``, shadowed plugin blocks included."""
        return sorted(self.qualified)


def _owners(entries: Iterable[BlockEntry]) -> str:
    return " and ".join(f"'{e.plugin.distribution}' ({e.plugin.name})" for e in entries)


def _clash_message(name: str, entries: list[BlockEntry], qualified: dict[str, BlockEntry]) -> str:
    choices = [f"'{e.qualified_name}'" for e in entries if qualified.get(e.qualified_name) is e]
    if ":" in name or not choices:  # the same entry-point name in two distributions: nothing to choose with
        return f"block '{name}' is provided by several plugins: {_owners(entries)}; uninstall one of them"
    return f"block '{name}' is provided by several plugins: {_owners(entries)}; write {' or '.join(choices)} to choose one"


def resolve_names(names: BlockNames, entries: Sequence[BlockEntry], warn: Callable[[str], None]) -> None:
    """Fill ``qualified``, ``blocks`` and ``conflicts`` of ``names``: built-ins first, then unique plugin names."""
    unique: list[BlockEntry] = []
    for entry in entries:
        # The very same class reached twice (e.g. a test re-registering a built-in) is one block, not a clash.
        if not any(type(other.block) is type(entry.block) and other.name == entry.name for other in unique):
            unique.append(entry)

    by_qualified: dict[str, list[BlockEntry]] = {}
    by_name: dict[str, list[BlockEntry]] = {}
    for entry in unique:
        by_qualified.setdefault(entry.qualified_name, []).append(entry)
        by_name.setdefault(entry.name, []).append(entry)
    for qualified, group in by_qualified.items():
        if len(group) == 1:
            names.qualified[qualified] = group[0]
        elif len({e.plugin for e in group}) == 1:  # one plugin returning two classes with one name
            names.qualified[qualified] = group[0]
            warn(f"{group[0].plugin.label}: archforge_blocks() returns several blocks named '{group[0].name}' "
                 f"({', '.join(type(e.block).__qualname__ for e in group)}); only the first is used: rename the others")
        else:
            names.conflicts[qualified] = group

    for name, group in by_name.items():
        builtins = [e for e in group if e.builtin]
        chosen = builtins if builtins else group
        chosen = [e for e in chosen if names.qualified.get(e.qualified_name) is e or e.qualified_name in names.conflicts]
        if len(chosen) == 1:
            names.blocks[name] = chosen[0]
        elif len(chosen) > 1:
            names.conflicts[name] = chosen
        for entry in group:
            if builtins and not entry.builtin:
                warn(f"{entry.plugin.label}: block '{name}' has the name of a built-in block, which specs writing "
                     f"'{name}' keep getting; write '{entry.qualified_name}' for this one, or rename it")
