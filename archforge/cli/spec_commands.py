"""``archforge validate``, ``summary`` and ``build``: the commands on one spec.

Problems in a spec propagate as :class:`~archforge.SpecError` and are printed by
:func:`archforge.cli.main` as ``file:line:col: message`` (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archforge.cli.common import (
    EXIT_ERROR, FORCE_HINT, SPEC_HELP, command_help, error, human, non_negative_int, print_warnings, stderr_console, stdout_console,
)
from archforge.errors import SettingError, describe_exception


def cmd_validate(args: argparse.Namespace) -> int:
    from archforge import validate

    graph = validate(args.spec)
    print_warnings(graph.warnings)
    print(f"{args.spec}: ok: {graph.name}, {len(graph.nodes)} nodes, input {graph.input} → output {graph.output_shape}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from rich.table import Table

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
    from archforge.builder.network import check_device
    from archforge.files import atomic_output, check_target

    output = Path(args.output)
    # Everything that can be refused without building is refused before the work, not after it.
    check_target(output, overwrite=args.force, hint=FORCE_HINT)
    check_device(args.device)
    if args.device is not None and torch.device(args.device).type == "meta":
        raise SettingError("device 'meta' holds no weights, so the file would hold none: build on 'cpu' or a GPU "
                           "(`archforge summary` measures a network on the meta device)")
    spec = load_spec(args.spec)
    model = build(spec, device=args.device, max_params=args.max_params, weights=args.weights, init=args.init).eval()
    graph = model.meta["archforge_graph"]
    if output.suffix == ".pt2":
        example = graph.input.example(2, device=args.device)
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
    where = f" on {args.device}" if args.device is not None else ""
    weights = f", weights from {args.weights}" if args.weights is not None else ""
    print(f"wrote {output}: {kind}, {graph.name}, {params:,} parameters{where}{weights}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``validate``, ``summary`` and ``build`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser("validate", help="check a spec completely (structure, blocks, args, graph, shapes)", **command_help(
        "Check a spec completely without building it: its structure, every block and its args, the graph and every "
        "node's shapes. Each problem is printed as file:line:col: message (exit status 1).",
        "archforge validate convit_tiny",
        "archforge validate my_net.yaml",
    ))
    s.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    s.set_defaults(func=cmd_validate)

    s = subparsers.add_parser("summary", help="per-node output shapes, parameters and FLOPs", **command_help(
        "Print each node's output shape, parameters and FLOPs, and the totals. Nothing is allocated: the network is "
        "measured on torch's meta device, so a model of any size is summarized on any machine.",
        "archforge summary convit_tiny",
        "archforge summary resnet50 --json",
    ))
    s.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_summary)

    s = subparsers.add_parser("build", help="build the network and save it (exported program or checkpoint)", **command_help(
        "Build the network of a spec and save it: a .pt2 file is a torch.export program with a dynamic batch size, "
        "any other file a checkpoint holding the spec and the state_dict (archforge.load_checkpoint reads it).",
        "archforge build resnet50 -o resnet50.pt2",
        "archforge build convit_tiny --weights convit_tiny.pth -o convit_tiny.pt",
        "archforge build my_net.yaml --device cuda -o my_net.pt2",
    ))
    s.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    s.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="model.pt2 (torch.export program) or model.pt (spec + state_dict)")
    s.add_argument("--weights", metavar="FILE",
                   help="load this state_dict (.pt, .pth, .bin or .safetensors) into the network; its names and shapes "
                        "must match exactly")
    s.add_argument("--device", metavar="DEVICE",
                   help="build on this device: cpu, cuda, cuda:1, mps (default cpu); the file is written from the "
                        "network built there")
    s.add_argument("--init", choices=["reference", "pytorch"],
                   help="initial weights: as each block's reference implementation sets them, or torch's layer "
                        "defaults (default: the spec's init key, reference unless it says otherwise; moot with --weights)")
    s.add_argument("--force", action="store_true", help="replace the output file if it exists")
    s.add_argument("--max-params", type=non_negative_int, metavar="N",
                   help="refuse networks with more parameters and buffer elements (default: $ARCHFORGE_MAX_PARAMS, else 1e9)")
    s.set_defaults(func=cmd_build)


__all__ = ["add_commands", "cmd_build", "cmd_summary", "cmd_validate"]
