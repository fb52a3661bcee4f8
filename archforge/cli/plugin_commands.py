"""``archforge plugins``: every installed block with its plugin, layout, family and args, fitted to the terminal.

No block name and no arg name is ever cut. Each arg is a line of its own (``kernel: int = 3``);
a long type (``relu|relu6|gelu|...``) wraps after a ``|``, never inside a word. The table
takes the first of these layouts that fits the console's width:

1. ``columns``: block, plugin, layout, family and args side by side, the args column at
   least :data:`MIN_ARGS_WIDTH` wide;
2. ``stacked``: per block a line of its block, plugin, layout and family (aligned when they
   fit, else wrapped at spaces), then its args, one per line, indented under it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
import warnings
from typing import Any, Sequence

from archforge.cli.common import EXIT_ERROR, command_help, stderr_console, stdout_console
from archforge.errors import PluginWarning

#: Narrowest args column of the ``columns`` layout: below it, most args would wrap on every ``|``.
MIN_ARGS_WIDTH = 40
#: Between two columns.
GAP = "  "
#: Of the args under their block in the ``stacked`` layout; a wrapped arg continues two further in.
ARG_INDENT = 4
CONTINUATION = 2
_HEADERS = ("block", "plugin", "layout", "family", "args")
#: Where a line may break: after a run of spaces, or after the ``|`` of a union or literal type.
_PIECES = re.compile(r"[^ |]*(?: +|\|)|[^ |]+")


def cmd_plugins(args: argparse.Namespace) -> int:
    from archforge.registry import default_registry

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        registry = default_registry()
    problems = list(registry.problems) or [str(w.message) for w in caught]
    conflicts = {name: [f"{e.plugin.distribution} {e.plugin.version}" for e in entries] for name, entries in registry.conflicts.items()}
    # Every block, also a plugin block shadowed by a built-in of the same short name (reachable
    # by its qualified name '<plugin>:<name>' only, when the registry has qualified names).
    entries = list(registry.qualified.values())
    # The entry a short name resolves to comes last among those of its name: readers that key rows by name get it.
    blocks = [block_row(entry, registry) for entry in
              sorted(entries, key=lambda e: (e.name, registry.blocks.get(e.name) is e, e.plugin.distribution, e.plugin.name))]
    if args.json:
        data = {
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in registry.plugins],
            "blocks": blocks,
            "datasets": sorted(registry.datasets),
            "metrics": sorted(registry.metrics),
            "conflicts": conflicts,
            "problems": problems,
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_ERROR if conflicts else 0
    console = stdout_console()
    console.print(f"{len(blocks)} blocks", style="italic", markup=False)
    for line, style in block_table(blocks, console.width):
        console.print(line, style=style, markup=False)
    # Datasets a search trains on and metrics it measures: one line each, name (distribution).
    for what, items in (("datasets", registry.datasets), ("metrics", registry.metrics)):
        listed = ", ".join(f"{name} ({info.distribution})" for name, (_, info) in sorted(items.items())) or "none installed"
        console.print(f"{what}: {listed}", markup=False, soft_wrap=False)
    err = stderr_console()
    for name, owners in conflicts.items():
        err.print(f"error: block '{name}' is provided by several plugins: {', '.join(owners)}", markup=False)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False)
    return EXIT_ERROR if conflicts else 0


# --------------------------------------------------------------------------- rows


def block_row(entry: Any, registry: Any) -> dict[str, Any]:
    """One block as ``plugins --json`` lists it; ``short`` says whether a spec may write just ``name``."""
    block = entry.block
    args = []
    for name, field in block.Args.model_fields.items():
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        args.append({
            "name": name,
            "type": _type_text(field.annotation),
            "required": field.is_required(),
            "default": default if isinstance(default, (int, float, str, bool, type(None), list)) else repr(default),
            "description": field.description or "",
        })
    layouts = block.accepted_layouts()
    return {
        "name": block.name,
        "qualified": entry.qualified_name,
        "short": registry.blocks.get(block.name) is entry,
        "plugin": entry.plugin.name,
        "distribution": entry.plugin.distribution,
        "version": entry.plugin.version,
        "layout": "any" if block.layout == "any" else "|".join(layouts),
        "inputs": block.inputs if block.inputs is not None else "2+",
        "family": block.family,
        "doc": (type(block).__doc__ or "").strip().split("\n")[0],
        "args": args,
    }


def _type_text(annotation: Any) -> str:
    """``int``, ``relu|gelu``, ``int|same``: short enough for a table cell."""
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_text(a) for a in typing.get_args(annotation))
    return str(annotation).replace("typing.", "")


def arg_text(arg: dict[str, Any]) -> str:
    """``kernel: int = 3``; a required arg has no default: ``channels: int``."""
    return f"{arg['name']}: {arg['type']}" + ("" if arg["required"] else f" = {arg['default']!r}")


# --------------------------------------------------------------------------- layout


def wrap(text: str, width: int, indent: int = 0) -> list[str]:
    """``text`` in lines of at most ``width`` cells, broken after spaces or ``|``; lines after the first indented by ``indent``.

    A piece with no break in it longer than a line stays whole on a line of its own: a name is never cut.
    """
    from rich.cells import cell_len

    lines: list[str] = []
    line = ""
    for piece in _PIECES.findall(text):
        if line.strip() and cell_len(line + piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = " " * indent
        line += piece
    lines.append(line.rstrip())
    return lines


def _cells(row: dict[str, Any]) -> list[str]:
    """Block, plugin, layout and family of a row; a shadowed plugin block by its qualified name."""
    return [row["name"] if row["short"] else row["qualified"], f"{row['distribution']} {row['version']}", row["layout"], row["family"]]


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    from rich.cells import cell_len

    return GAP.join(cell + " " * (width - cell_len(cell)) for cell, width in zip(cells, widths)).rstrip()


def block_table(rows: Sequence[dict[str, Any]], width: int) -> list[tuple[str, str | None]]:
    """The lines of the ``plugins`` table at ``width`` columns, each with its rich style (see the module docstring)."""
    from rich.cells import cell_len

    firsts = [_cells(row) for row in rows]
    widths = [max([cell_len(header)] + [cell_len(cells[i]) for cells in firsts]) for i, header in enumerate(_HEADERS[:4])]
    left = sum(widths) + len(GAP) * len(widths)
    if width - left >= MIN_ARGS_WIDTH:
        return _columns(rows, firsts, widths, width - left)
    return _stacked(rows, firsts, widths, width)


def _columns(rows: Sequence[dict[str, Any]], firsts: list[list[str]], widths: list[int], args_width: int) -> list[tuple[str, str | None]]:
    lines: list[tuple[str, str | None]] = [(_aligned(_HEADERS, [*widths, 0]), "bold")]
    blank = [""] * len(widths)
    for row, cells in zip(rows, firsts):
        arg_lines = [line for arg in row["args"] for line in wrap(arg_text(arg), args_width, CONTINUATION)] or ["—"]
        lines.append((_aligned([*cells, arg_lines[0]], [*widths, 0]), None))
        lines.extend((_aligned([*blank, line], [*widths, 0]), None) for line in arg_lines[1:])
    return lines


def _stacked(rows: Sequence[dict[str, Any]], firsts: list[list[str]], widths: list[int], width: int) -> list[tuple[str, str | None]]:
    aligned = sum(widths) + len(GAP) * (len(widths) - 1) <= width
    pad = " " * ARG_INDENT

    def first(cells: Sequence[str]) -> list[str]:
        return [_aligned(cells, widths)] if aligned else wrap(GAP.join(cells), width, ARG_INDENT)

    lines: list[tuple[str, str | None]] = [(line, "bold") for line in first(_HEADERS[:4])]
    lines.append((pad + _HEADERS[4], "bold"))
    for row, cells in zip(rows, firsts):
        lines.extend((line, None) for line in first(cells))
        for arg in row["args"]:
            lines.extend((pad + line, None) for line in wrap(arg_text(arg), width - ARG_INDENT, CONTINUATION))
    return lines


def add_commands(subparsers: Any) -> None:
    """Add ``plugins`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser("plugins", help="list every block with its plugin, layout and args", **command_help(
        "List every block archforge can build: the built-in ones and those of the installed plugins, each with the "
        "distribution that provides it, the layouts it accepts (map, tokens, vector), its family and its args with "
        "their types and defaults. Exit status 1 when two plugins provide the same block name.",
        "archforge plugins",
        "archforge plugins --json",
    ))
    s.add_argument("--json", action="store_true", help="machine-readable output, with each arg's description")
    s.set_defaults(func=cmd_plugins)


__all__ = ["MIN_ARGS_WIDTH", "add_commands", "arg_text", "block_row", "block_table", "cmd_plugins", "wrap"]
