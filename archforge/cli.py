"""The ``archforge`` command line: validate, summary, build, plugins, schema, graph, space, search, report.

Problems in a spec are printed like a compiler diagnostic, ``file:line:col: message``,
on stderr with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

from archforge.errors import PluginError, PluginWarning, SpecError, SpecWarning

EXIT_SPEC_ERROR = 2


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def cmd_validate(args: argparse.Namespace) -> int:
    from archforge import validate

    graph = validate(args.spec)
    _print_warnings(graph.warnings)
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
        _stderr().print(text, markup=False)
    table = Table(title=f"{summary.name}", title_justify="left")
    for column, justify in (("node", "left"), ("block", "left"), ("output shape", "left"), ("params", "right"), ("FLOPs", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in summary.nodes:
        table.add_row(row.path, row.block, row.shape_text, f"{row.params:,}", _human(row.flops))
    table.add_section()
    table.add_row("total", "", "", f"{summary.params:,}", _human(summary.flops))
    console = _stdout()
    console.print(table)
    console.print(f"params {summary.params:,} · FLOPs {summary.flops:,} ({_human(summary.macs)} MACs) per sample", markup=False)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import torch

    from archforge import build, load_spec
    from archforge.builder import save_checkpoint

    spec = load_spec(args.spec)
    model = build(spec).eval()
    graph = model.meta["archforge_graph"]
    output = Path(args.output)
    if output.suffix == ".pt2":
        example = graph.input.example(2)
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, output)
        kind = "exported program"
    else:
        save_checkpoint(model, output)
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
    blocks = [_block_row(entry) for entry in sorted(registry.blocks.values(), key=lambda e: e.name)]
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
        return 1 if conflicts else 0
    console = _stdout()
    table = Table(title="blocks", title_justify="left", expand=True)
    for column in ("block", "plugin", "layout", "family", "args"):
        table.add_column(column)
    for row in blocks:
        table.add_row(row["name"], f"{row['distribution']} {row['version']}", row["layout"], row["family"],
                      ", ".join(_arg_text(a) for a in row["args"]) or "—")
    console.print(table)
    err = _stderr()
    for name, owners in conflicts.items():
        err.print(f"error: block '{name}' is provided by several plugins: {', '.join(owners)}", markup=False)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False)
    return 1 if conflicts else 0


def _block_row(entry: Any) -> dict[str, Any]:
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


def _print_warnings(items: Sequence[SpecWarning]) -> None:
    console = _stderr()
    for warning in items:
        console.print(str(warning), markup=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archforge", description="Compose and search neural network architectures from YAML specs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check a spec completely (structure, blocks, args, graph, shapes)")
    s.add_argument("spec")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("summary", help="per-node output shapes, parameters and FLOPs")
    s.add_argument("spec")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("build", help="build the network and save it")
    s.add_argument("spec")
    s.add_argument("-o", "--output", required=True, help="model.pt2 (torch.export program) or model.pt (spec + state_dict)")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("plugins", help="list every block with its plugin, layout and args")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_plugins)

    from archforge import tools_cli
    from archforge.search import commands as search_commands

    tools_cli.add_commands(sub)
    search_commands.add_commands(sub)
    return p


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """Plugin problems as one ``warning: ...`` line, not Python's two-line warning format."""
    if issubclass(category, PluginWarning):
        _stderr().print(f"warning: {message}", markup=False)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # Spec warnings are printed by the commands themselves, located like errors.
        warnings.simplefilter("ignore", SpecWarning)
        try:
            return func(args)
        except SpecError as exc:
            _stderr().print(exc.format(), markup=False)
            return EXIT_SPEC_ERROR
        except PluginError as exc:
            _stderr().print(f"error: {exc}", markup=False)
            return EXIT_SPEC_ERROR
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # e.g. `archforge summary --json x.yaml | head`
            sys.stderr.close()
            return 0
