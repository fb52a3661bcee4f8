"""The ``archforge`` command line: validate, summary, build, plugins, schema, graph, space, search, report.

Exit status: 0 on success; 1 when what was checked is wrong (a spec, a space, a checkpoint,
a plugin, a file that cannot be written...); 2 for usage errors (unknown flags, a count
that is negative...); 130 when interrupted. Problems in a spec are printed like a compiler
diagnostic, ``file:line:col: message``; every other problem as one ``error: ...`` line on
stderr, never a traceback, unless ``archforge --debug COMMAND ...`` asks for it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

from archforge.errors import PLUGIN_FAULTS, CheckpointError, PluginError, PluginWarning, SpecError, SpecWarning, describe_exception, one_line

EXIT_OK = 0
#: What was checked is wrong: a spec, a space, a checkpoint, a plugin, an output file...
EXIT_ERROR = 1
#: The command line itself is wrong (argparse's own status).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Kept for callers of the first release; a spec error is now :data:`EXIT_ERROR`.
EXIT_SPEC_ERROR = EXIT_ERROR

FORCE_HINT = "add --force to overwrite"


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True, emoji=False)


def _human(n: int) -> str:
    """``1.23G``; exact integer arithmetic, so no count is too large to print."""
    for unit, scale in (("E", 10**18), ("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= scale:
            hundredths = (int(n) * 100 + scale // 2) // scale
            return f"{hundredths // 100:,}.{hundredths % 100:02d}{unit}"
    return str(int(n))


# --------------------------------------------------------------------------- argument types
# argparse reports a ValueError/ArgumentTypeError from a type= function as a usage error (exit 2).


def _whole(text: str) -> int:
    """An integer, also written as ``2e9`` or ``1_000``."""
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'")
    return int(value)


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number from ``low`` to ``high`` (inclusive)."""

    def parse(text: str) -> int:
        value = _whole(text)
        if value < low or (high is not None and value > high):
            bound = f"from {low:,} to {high:,}" if high is not None else f"at least {low:,}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, got '{text}'")
        return value

    parse.__name__ = "count"  # argparse names the type in some messages
    return parse


non_negative_int = int_range(0)
positive_int = int_range(1)
#: Seeds go to NumPy and Optuna samplers, which take 0 .. 2**32 - 1.
seed_int = int_range(0, 2**32 - 1)


def positive_number(text: str) -> float:
    """An argparse ``type=``: a finite number greater than 0 (``2e5``, ``0.01``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got '{text}'")
    return value


def fraction(text: str) -> float:
    """An argparse ``type=``: a number in (0, 1]."""
    value = positive_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a fraction greater than 0 and at most 1, got '{text}'")
    return value


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
            _error(f"cannot export '{graph.name}' ({args.spec}) with torch.export: {describe_exception(exc)}; "
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
    blocks = [_block_row(entry, registry) for entry in
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
        return 1 if conflicts else 0
    console = _stdout()
    table = Table(title="blocks", title_justify="left", expand=True)
    for column in ("block", "plugin", "layout", "family", "args"):
        table.add_column(column)
    for row in blocks:
        table.add_row(row["name"] if row["short"] else row["qualified"], f"{row['distribution']} {row['version']}", row["layout"], row["family"],
                      ", ".join(_arg_text(a) for a in row["args"]) or "—")
    console.print(table)
    err = _stderr()
    for name, owners in conflicts.items():
        err.print(f"error: block '{name}' is provided by several plugins: {', '.join(owners)}", markup=False)
    for problem in problems:
        err.print(f"warning: {problem}", markup=False)
    return 1 if conflicts else 0


def _block_row(entry: Any, registry: Any) -> dict[str, Any]:
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


def _print_warnings(items: Sequence[SpecWarning]) -> None:
    console = _stderr()
    for warning in items:
        console.print(str(warning), markup=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archforge", description="Compose and search neural network architectures from YAML specs.",
                                epilog="Exit status: 0 success, 1 error in what was checked (spec, space, checkpoint, plugin, "
                                       "output file), 2 usage error.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    p.set_defaults(debug=False)
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
    s.add_argument("--force", action="store_true", help="replace the output file if it exists")
    s.add_argument("--max-params", type=non_negative_int, metavar="N",
                   help="refuse networks with more parameters and buffer elements (default: $ARCHFORGE_MAX_PARAMS, else 1e9)")
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


def _error(message: str) -> None:
    _stderr().print(f"error: {one_line(message)}", markup=False)


def _os_error(exc: OSError) -> str:
    """``'path': what``: one line naming the file, whatever raised it."""
    reason = exc.strerror or describe_exception(exc, named=False)
    if exc.filename is None:
        return reason
    where = f"'{os.fsdecode(exc.filename)}'" + (f" → '{os.fsdecode(exc.filename2)}'" if exc.filename2 else "")
    return f"{where}: {reason}"


def _is_ours(exc: BaseException) -> bool:
    """archforge's own errors say what is wrong in their message; the type name adds nothing."""
    return type(exc).__module__.split(".")[0] == "archforge"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (usage errors included, they are not raised)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    debug: bool = args.debug
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        # Spec warnings are printed by the commands themselves, located like errors.
        warnings.simplefilter("ignore", SpecWarning)
        try:
            return func(args)
        except KeyboardInterrupt:
            if debug:
                raise
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # e.g. `archforge summary --json x.yaml | head`
            # Python would flush stdout again at exit and complain about the pipe once more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except SpecError as exc:
            if debug:
                raise
            _stderr().print(exc.format(), markup=False)
            return EXIT_ERROR
        except (PluginError, CheckpointError) as exc:
            if debug:
                raise
            _error(str(exc))
            return EXIT_ERROR
        except OSError as exc:
            if debug:
                raise
            _error(_os_error(exc))
            return EXIT_ERROR
        except PLUGIN_FAULTS as exc:  # SystemExit, GeneratorExit: a plugin's stray exit must not end us silently or with a traceback
            if debug:
                raise
            if isinstance(exc, SystemExit):
                _error(f"a plugin or library ended the command with sys.exit({exc.code!r}); run with --debug for the traceback")
            elif _is_ours(exc) and str(exc):
                _error(str(exc))
            else:
                _error(f"{describe_exception(exc)} (run with --debug for the traceback)")
            return EXIT_ERROR
