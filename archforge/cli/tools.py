"""``archforge schema`` and ``archforge graph``: the editor schema and architecture diagrams.

Registered by :func:`archforge.cli.parser` with :func:`add_commands`::

    archforge schema [-o spec.schema.json] [--search]
    archforge graph SPEC -o arch.svg|arch.png|arch.dot|arch.mmd [--engine auto|graphviz|matplotlib]

Spec problems propagate as :class:`~archforge.SpecError` (printed by the CLI's main
as ``file:line:col: message``, exit status 1). A bad output suffix is a usage error
(exit status 2) reported before any work is done; an output file that exists is refused
unless ``--force``, and every file is written atomically (a failed write leaves none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archforge.cli.common import FORCE_HINT, SPEC_HELP, command_help, fail, non_negative_int, usage_error


def cmd_schema(args: argparse.Namespace) -> int:
    from archforge.files import check_target, write_text
    from archforge.registry import default_registry
    from archforge.schema import spec_json_schema

    to_file = bool(args.output) and args.output != "-"
    if to_file:
        check_target(args.output, overwrite=args.force, hint=FORCE_HINT)
    registry = default_registry()
    schema = spec_json_schema(registry, search=args.search)
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if not to_file:
        sys.stdout.write(text)
        return 0
    output = write_text(args.output, text, overwrite=args.force, hint=FORCE_HINT)
    kind = "search spaces" if args.search else "specs"
    # What the schema offers: the short names and the qualified names of shadowed plugin blocks.
    offered = sum(1 for item in schema["$defs"]["NodeSpec"]["properties"]["block"]["anyOf"] if "const" in item)
    print(f"wrote {output}: JSON Schema (draft 2020-12) of {kind} with the args of {offered} block names")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    import warnings

    from archforge import validate
    from archforge.diagram import SUFFIXES, render
    from archforge.errors import SpecWarning
    from archforge.files import atomic_output, check_target

    output = Path(args.output)
    if output.suffix.lower() not in SUFFIXES:
        shown = f"'{output.suffix}'" if output.suffix else "no suffix"
        return usage_error("archforge graph", f"cannot write a diagram to '{output}': unsupported format {shown}; use one of {', '.join(SUFFIXES)}")
    check_target(output, overwrite=args.force, hint=FORCE_HINT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        graph = validate(args.spec)
    for warning in graph.warnings:
        print(str(warning), file=sys.stderr)
    try:
        # The temporary file keeps the suffix, which is what render chooses the format by.
        with atomic_output(output, overwrite=args.force, hint=FORCE_HINT) as temp:
            render(graph, temp, engine=args.engine, max_nodes=args.max_nodes)
    except RuntimeError as exc:
        return fail(f"cannot draw '{output}': {exc}")
    print(f"wrote {output}: {graph.name}, {len(graph.live_nodes())} nodes")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``schema`` and ``graph`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "schema", help="JSON Schema of the spec language with every installed block's args (for editors)",
        **command_help(
            "Write the JSON Schema of the spec language, with the args of every installed block, for an editor's YAML "
            "language server: completion and checking of block names and args while a spec is written.",
            "archforge schema -o spec.schema.json",
            "archforge schema --search -o space.schema.json",
        ),
    )
    s.add_argument("-o", "--output", metavar="FILE", help="write to this file instead of stdout")
    s.add_argument("--force", action="store_true", help="replace the output file if it exists")
    s.add_argument("--search", action="store_true", help="the schema of search spaces: choices and the 'search' section")
    s.set_defaults(func=cmd_schema)

    s = subparsers.add_parser("graph", help="draw the architecture of a spec: .svg, .png, .dot or .mmd", **command_help(
        "Draw the graph of a spec's nodes with their blocks and output shapes; the format is the output file's suffix.",
        "archforge graph convit_tiny -o runs/convit_tiny.svg",
        "archforge graph my_net.yaml -o my_net.mmd",
    ))
    s.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    s.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="arch.svg, arch.png (Graphviz if installed, else matplotlib), arch.dot or arch.mmd")
    s.add_argument("--engine", choices=("auto", "graphviz", "matplotlib"), default="auto",
                   help="how to draw .svg/.png (default: Graphviz's dot when on PATH, else matplotlib)")
    s.add_argument("--force", action="store_true", help="replace the output file if it exists")
    s.add_argument("--max-nodes", type=non_negative_int, metavar="N",
                   help="refuse to draw more nodes than this (default: archforge.diagram.MAX_DIAGRAM_NODES, 2000)")
    s.set_defaults(func=cmd_graph)


__all__ = ["add_commands", "cmd_graph", "cmd_schema"]
