"""``archforge validate``, ``summary``, ``build`` and ``plugins``: commands on one spec and on the installed blocks.

Problems in a spec propagate as :class:`~archforge.SpecError` and are printed by
:func:`archforge.cli.main` as ``file:line:col: message`` (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from rich.table import Table

from archforge.cli.common import EXIT_ERROR, FORCE_HINT, error, human, non_negative_int, print_warnings, stderr_console, stdout_console
from archforge.errors import PluginWarning, describe_exception


def cmd_validate(args: argparse.Namespace) -> int:
    from archforge import validate

    graph = validate(args.spec)
    print_warnings(graph.warnings)
    print(f"{args.spec}: ok: {graph.name}, {len(graph.nodes)} nodes, input {graph.input} → output {graph.output_shape}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from archforge import summarize

    summary = summarize(args.spec)
    if args.json:
        json.dump(summary.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for text in summary.warnings:
        stderr_console().print(text, markup=False)
    table = Table(title=f"{summary.name}", title_justify="left")
    for column, justify in (("node", "left"), ("block", "left"), ("output shape", "left"), ("params", "right"), ("FLOPs", "right")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in summary.nodes:
        table.add_row(row.path, row.block, row.shape_text, f"{row.params:,}", human(row.flops))
    table.add_section()
    table.add_row("total", "", "", f"{summary.params:,}", human(summary.flops))
    console = stdout_console()
    console.print(table)
    console.print(f"params {summary.params:,} · FLOPs {summary.flops:,} ({human(summary.macs)} MACs) per sample", markup=False)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import torch

    from archforge import build, load_spec
    from archforge.builder import save_checkpoint
    from archforge.files import atomic_output, check_target

    output = Path(args.output)
    check_target(output, overwrite=args.force, hint=FORCE_HINT)  # before the work, not after it
    spec = load_spec(args.spec)
    model = build(spec, max_params=args.max_params).eval()
    graph = model.meta["archforge_graph"]
    if output.suffix == ".pt2":
        example = graph.input.example(2)
        batch = torch.export.Dim("batch", min=1, max=65536)
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as exc:  # torch's reasons span pages; one line here, all of it with --debug
            if args.debug:
                raise
            error(f"cannot export '{graph.name}' ({args.spec}) with torch.export: {describe_exception(exc)}; "
                  f"a checkpoint (-o {output.with_suffix('.pt').name}) has no such limits")
            return EXIT_ERROR
        with atomic_output(output, overwrite=args.force, hint=FORCE_HINT) as temp, open(temp, "wb") as f:
            torch.export.save(program, f)
        kind = "exported program"
    else:
        save_checkpoint(model, output, overwrite=args.force, hint=FORCE_HINT)
        kind = "spec + state_dict (archforge.load_checkpoint)"
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {output}: {kind}, {graph.name}, {params:,} parameters")
    return 0


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
    table = Table(title="blocks", title_justify="left", expand=True)
    for column in ("block", "plugin", "layout", "family", "args"):
        table.add_column(column, overflow="fold")
    for row in blocks:
        table.add_row(row["name"] if row["short"] else row["qualified"], f"{row['distribution']} {row['version']}", row["layout"], row["family"],
                      ", ".join(_arg_text(a) for a in row["args"]) or "—")
    stdout_console().print(table)
    err = stderr_console()
    for name, owners in conflicts.items():
        err.print(f"error: block '{name}' is provided by several plugins: {', '.join(owners)}", markup=False)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False)
    return EXIT_ERROR if conflicts else 0


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


def _arg_text(arg: dict[str, Any]) -> str:
    return f"{arg['name']}: {arg['type']}" + ("" if arg["required"] else f" = {arg['default']!r}")


def add_commands(subparsers: Any) -> None:
    """Add ``validate``, ``summary``, ``build`` and ``plugins`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser("validate", help="check a spec completely (structure, blocks, args, graph, shapes)")
    s.add_argument("spec")
    s.set_defaults(func=cmd_validate)

    s = subparsers.add_parser("summary", help="per-node output shapes, parameters and FLOPs")
    s.add_argument("spec")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_summary)

    s = subparsers.add_parser("build", help="build the network and save it")
    s.add_argument("spec")
    s.add_argument("-o", "--output", required=True, help="model.pt2 (torch.export program) or model.pt (spec + state_dict)")
    s.add_argument("--force", action="store_true", help="replace the output file if it exists")
    s.add_argument("--max-params", type=non_negative_int, metavar="N",
                   help="refuse networks with more parameters and buffer elements (default: $ARCHFORGE_MAX_PARAMS, else 1e9)")
    s.set_defaults(func=cmd_build)

    s = subparsers.add_parser("plugins", help="list every block with its plugin, layout and args")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_plugins)


__all__ = ["add_commands", "block_row", "cmd_build", "cmd_plugins", "cmd_summary", "cmd_validate"]
