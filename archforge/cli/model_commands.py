"""``archforge models``: the bundled models with their parameters, MACs and input shape, or the bundled search spaces.

Each model is measured by :func:`archforge.summarize` on the ``meta`` device (nothing is
allocated; the 224×224 ImageNet models take a fraction of a second each), one at a time under
a status line on stderr. A model that cannot be measured (a block whose plugin is missing)
keeps its row with ``—`` cells; its error is printed on stderr and the command ends with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from archforge.cli.common import EXIT_ERROR, command_help, fail, human, stderr_console, stdout_console

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

#: Wide enough to measure a table's natural width.
_UNBOUNDED = 1_000_000


def cmd_models(args: argparse.Namespace) -> int:
    from archforge.spec.zoo import list_models

    names = list_models(args.pattern, spaces=args.spaces)
    if not names:
        kind = "search space" if args.spaces else "model"
        return fail(f"no bundled {kind} matches '{args.pattern}' (`archforge models{' --spaces' if args.spaces else ''}` lists them all)")
    rows, problems = (_space_rows if args.spaces else _model_rows)(names)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        console = stdout_console()
        console.print((_space_table if args.spaces else _model_table)(rows, console))
    err = stderr_console()
    for problem in problems:
        err.print(problem, markup=False)
    return EXIT_ERROR if problems else 0


def _model_rows(names: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One mapping per model (``--json`` prints them as they are), and the errors of those that could not be measured."""
    from archforge import SpecError, load_spec, summarize
    from archforge.spec.zoo import bundled_path

    rows, problems = [], []
    with stderr_console().status("") as status:
        for i, name in enumerate(names, 1):
            status.update(f"measuring {name} ({i}/{len(names)})")
            path = bundled_path(name)
            row: dict[str, Any] = {"name": name, "file": str(path), "description": "", "params": None, "macs": None,
                                   "flops": None, "input": None, "output": None}
            try:
                spec = load_spec(path)
                row["description"] = spec.description
                summary = summarize(spec)
            except SpecError as exc:
                problems.append(exc.format())
            else:
                row.update(params=summary.params, macs=summary.macs, flops=summary.flops, input=summary.input, output=summary.output)
            rows.append(row)
    return rows, problems


def _space_rows(names: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One mapping per search space: its decisions and how many assignments they make (``None``: a continuous decision)."""
    from archforge import SpecError
    from archforge.search.space import load_space
    from archforge.spec.zoo import bundled_path

    rows, problems = [], []
    for name in names:
        path = bundled_path(name, "search space")
        row: dict[str, Any] = {"name": name, "file": str(path), "description": "", "decisions": None, "assignments": None}
        try:
            space = load_space(path)
        except SpecError as exc:
            problems.append(exc.format())
        else:
            description = space.document.data.get("description")
            row.update(description=description if isinstance(description, str) else "",
                       decisions=len(space.decisions), assignments=space.size)
        rows.append(row)
    return rows, problems


def _model_table(rows: list[dict[str, Any]], console: Console) -> Table:
    cells = []
    for row in rows:
        measured = row["params"] is not None
        cells.append([row["name"], f"{row['params']:,}" if measured else "—", human(row["macs"]) if measured else "—",
                      "×".join(str(d) for d in row["input"]) if measured else "—", row["description"]])
    return _table("bundled models", ["name", "params", "MACs", "input", "description"], cells, console)


def _space_table(rows: list[dict[str, Any]], console: Console) -> Table:
    cells = []
    for row in rows:
        read = row["decisions"] is not None
        assignments = "continuous" if read and row["assignments"] is None else (f"{row['assignments']:,}" if read else "—")
        cells.append([row["name"], str(row["decisions"]) if read else "—", assignments, row["description"]])
    return _table("bundled search spaces", ["name", "decisions", "assignments", "description"], cells, console)


def _table(title: str, headers: list[str], cells: list[list[str]], console: Console) -> Table:
    """Numbers right-aligned and never folded; the last column (the description) wraps, with a blank line
    between rows when it does, so that a wrapped description is not read as the next row's."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    def make(leading: int) -> Table:
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, leading=leading)
        for i, header in enumerate(headers):
            last = i == len(headers) - 1
            table.add_column(header, justify="left" if i == 0 or last or header == "input" else "right",
                             no_wrap=not last, overflow="fold")
        for row in cells:
            table.add_row(*row)
        return table

    table = make(0)
    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    return table if natural <= console.width else make(1)


def add_commands(subparsers: Any) -> None:
    """Add ``models`` to the CLI's ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "models", help="list the bundled models (params, MACs, input) or search spaces, usable by name",
        **command_help(
            "List the models and search spaces that ship with archforge. Every command takes their name where it "
            "takes a file: `archforge summary convit_tiny`, `archforge search placement_mnist`.",
            "archforge models",
            "archforge models 'convit*'",
            "archforge models --spaces",
        ),
    )
    s.add_argument("pattern", nargs="?", default="*", metavar="PATTERN",
                   help="shell-style wildcard on the name, e.g. 'convit*' (default: all)")
    s.add_argument("--spaces", action="store_true", help="list the search spaces (decisions and assignments) instead of the models")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_models)


__all__ = ["add_commands", "cmd_models"]
