"""Ranking tables that fit the terminal: metrics in full, decisions folded, abbreviated or moved to a second line.

The rows are the ranked rows of a search run (one mapping per candidate: ``rank``,
``trial``, ``hash``, ``status``, the metrics, ``decisions``). No cell is ever cut: the
table takes the first of these layouts that fits the console's width, each tried first
with headers on one line, then with headers wrapped at their spaces (``latency`` over ``ms``):

1. one column per decision, per-copy decisions folded: ``stage.block[0]``, ``[1]``, ``[2]``
   are one column ``stage.block`` holding ``conv_unit/attention_unit/conv_unit``;
2. the same with every text value abbreviated to its shortest prefix no other value
   shares (``c/a/c``), one abbreviation per value in the whole table, spelled out in a
   legend line under it (``c=conv_unit a=attention_unit``);
3. one candidate per two lines: the metrics, then its decisions (abbreviated as in 2).

When a candidate has two seeds or more, the accuracy is ``mean ± std``, a ``95% interval``
column gives ``mean ± t·s/√n`` (its ends clipped to [0, 1] as printed), and a ``vs best``
column compares every complete candidate with the most accurate one, the reference, by a
pairwise Welch test at 95% (:mod:`archforge.search.ranking`; not corrected for multiple
comparisons): ``best`` the reference, ``≈`` not separable from it, ``<`` separably less accurate,
``·`` not tested. When accuracy is not the only objective, the most accurate candidate may not
be rank 1: the column is then ``vs most accurate`` and the reference ``top``. A legend line
under the table says so.

A one-shot run's ranking (:func:`archforge.search.oneshot_report.table`) is laid out the
same way by :func:`oneshot_ranking_table`: its one-shot place, hash, the accuracy with inherited
weights and params, then, for the candidates retrained stand-alone, their stand-alone accuracy
(``mean ± std`` over seeds), 95% interval, separability mark and stand-alone rank.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

_INDEXED = re.compile(r"^(?P<base>.+)\[(?P<index>[0-9]+)\]$")
#: Wide enough to measure any table's natural width.
_UNBOUNDED = 1_000_000


@dataclass
class Column:
    """One column of a ranking: its header, how it is aligned, one cell per row.

    ``role``: ``key`` (rank, trial) and ``metric`` columns make the first line of the
    two-line layout; ``label`` columns (hash, Pareto mark) go to the second, with the decisions.
    """

    header: str
    cells: list[str]
    justify: str = "left"
    role: str = "metric"


@dataclass
class Ranking:
    """A ranking laid out for one width: what to print, and the abbreviations it uses."""

    renderable: RenderableType
    layout: str  # "columns", "abbreviated" or "two-line"
    legend: dict[str, str] = field(default_factory=dict)  # abbreviation → value

    def legend_line(self) -> str | None:
        return " ".join(f"{short}={value}" for short, value in self.legend.items()) or None


# --------------------------------------------------------------------------- cells

#: Metrics besides accuracy: row key, header, format; ``always`` ones are shown whenever a row has them.
_METRICS = (
    ("params", "params", ",", True),
    ("flops", "FLOPs", ",", False),
    ("latency_ms", "latency ms", ".2f", True),
    ("peak_memory_mb", "memory MB", ".1f", False),
    ("train_time_s", "train s", ".1f", False),
)


def _number(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _accuracy(row: Mapping[str, Any]) -> str:
    text = _number(row.get("accuracy"), ".4f")
    if row.get("accuracy_std") is not None and (row.get("n_seeds") or 0) > 1:
        text += f" ± {row['accuracy_std']:.4f}"
    return text


#: The marks of the separability column: the reference (most accurate), not separable from it, separably less
#: accurate, not tested.
BEST, TOP, NOT_SEPARABLE, LESS, UNTESTED = "best", "top", "≈", "<", "·"


def _interval(row: Mapping[str, Any]) -> str:
    from archforge.search.ranking import bounds_text  # here: the ranking module imports torch, a table needs not

    low, high = row.get("accuracy_low"), row.get("accuracy_high")
    return "—" if low is None or high is None else bounds_text(low, high)


def _mark(row: Mapping[str, Any], reference: str) -> str:
    if row.get("status") != "complete":
        return ""
    if row.get("most_accurate"):
        return reference
    return {True: LESS, False: NOT_SEPARABLE}.get(row.get("separable_from_best"), UNTESTED)  # type: ignore[arg-type]


def has_marks(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any row was tested against the most accurate candidate (two seeds or more on both sides)."""
    return any(row.get("separable_from_best") is not None for row in rows)


def _reference(objectives: Sequence[str]) -> tuple[str, str]:
    """The separability column's header and its reference row's mark."""
    from archforge.search.ranking import reference_is_best

    return ("vs best", BEST) if reference_is_best(objectives) else ("vs most accurate", TOP)


def marks_legend(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str] = ("accuracy",)) -> str | None:
    """The line that says what the separability marks mean, or ``None`` without marks."""
    if not has_marks(rows):
        return None
    header, reference = _reference(objectives)
    return (f"{header}: {reference} = the most accurate candidate, the reference; {NOT_SEPARABLE} = not separable from it "
            f"at 95%; {LESS} = separably less accurate; {UNTESTED} = not tested; ± = std over seeds; pairwise Welch tests "
            "against the most accurate, not corrected for multiple comparisons")


def metric_columns(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[Column]:
    """Rank (or the status of an unranked candidate), trial, hash and every metric the run has, in full;
    with seeds, the 95% interval and the separability marks."""
    columns = [
        Column("#", [str(row.get("rank") or row.get("status") or "") for row in rows], "right", "key"),
        Column("trial", [str(row.get("trial", "")) for row in rows], "right", "key"),
        Column("hash", [str(row.get("hash") or "") for row in rows], role="label"),
        Column("accuracy", [_accuracy(row) for row in rows], "right"),
    ]
    if any(row.get("accuracy_low") is not None for row in rows):
        columns.append(Column("95% interval", [_interval(row) for row in rows], "right"))
    if has_marks(rows):
        header, reference = _reference(objectives)
        columns.append(Column(header, [_mark(row, reference) for row in rows]))
    for key, header, fmt, always in _METRICS:
        if key in objectives or (always and any(row.get(key) is not None for row in rows)):
            columns.append(Column(header, [_number(row.get(key), fmt) for row in rows], "right"))
    if len({row.get("lr") for row in rows if row.get("lr") is not None}) > 1:  # found per candidate (lr: auto)
        columns.append(Column("lr", [_number(row.get("lr"), ".2g") for row in rows], "right"))
    plugin_metrics = dict.fromkeys(name for row in rows for name in (row.get("metrics") or {}))  # first-seen order
    for name in plugin_metrics:
        columns.append(Column(name, [_number((row.get("metrics") or {}).get(name), ".4g") for row in rows], "right"))
    if any(row.get("epochs_full") is not None for row in rows):
        columns.append(Column("epochs", [f"{row.get('epochs_run', 0)}/{row.get('epochs_full')}" for row in rows], "right"))
    if len(objectives) > 1:
        columns.append(Column("pareto", ["★" if row.get("pareto") else "" for row in rows], role="label"))
    return columns


def fold(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Decision names grouped into columns: ``x[0]``, ``x[1]``... become one column ``x`` (in index order)."""
    names = list(names)
    indexed: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        match = _INDEXED.match(name)
        if match:
            indexed.setdefault(match["base"], []).append((int(match["index"]), name))
    columns: list[tuple[str, list[str]]] = []
    placed: set[str] = set()
    for name in names:
        match = _INDEXED.match(name)
        if match and len(indexed[match["base"]]) > 1:
            if match["base"] not in placed:
                placed.add(match["base"])
                columns.append((match["base"], [n for _, n in sorted(indexed[match["base"]])]))
        else:
            columns.append((name, [name]))
    return columns


def value_text(value: Any) -> str:
    """A decision value in full, as short as it can be written."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, (int, str)):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # a set, an object: what JSON cannot encode
        return repr(value)


def abbreviations(values: Iterable[str]) -> dict[str, str]:
    """Each text value → its shortest prefix that no other value starts with (the value itself when none)."""
    distinct = list(dict.fromkeys(values))
    out = {}
    for value in distinct:
        others = [v for v in distinct if v != value]
        out[value] = next((value[:k] for k in range(1, len(value)) if not any(o.startswith(value[:k]) for o in others)), value)
    return out


def decision_columns(rows: Sequence[Mapping[str, Any]], names: Sequence[str], short: Mapping[str, str] | None = None) -> list[Column]:
    """The decisions of ``rows``, folded; text values replaced by their abbreviation when ``short`` is given."""
    def text(row: Mapping[str, Any], name: str) -> str:
        decisions = row.get("decisions") or {}
        if name not in decisions:
            return "—"
        value = decisions[name]
        return short.get(value, value) if short is not None and isinstance(value, str) else value_text(value)

    return [Column(header, ["/".join(text(row, n) for n in members) for row in rows], role="label") for header, members in fold(names)]


def decision_names(rows: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> list[str]:
    """``names`` when given, else every decision the rows hold in first-seen order."""
    if names:
        return list(names)
    return list(dict.fromkeys(name for row in rows for name in (row.get("decisions") or {})))


# --------------------------------------------------------------------------- layouts


def _table(columns: Sequence[Column], title: str | None, *, narrow_headers: bool = False) -> Table:
    """A table of ``columns``; ``narrow_headers``: each column as wide as its widest cell or header word (headers wrap)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in columns:
        width = max(cell_len(cell) for cell in [*column.cells, *column.header.split()]) if narrow_headers else None
        table.add_column(column.header, justify=column.justify, overflow="fold", width=width)  # type: ignore[arg-type]
    for cells in zip(*(c.cells for c in columns)):
        table.add_row(*cells)
    return table


def _natural_width(console: Console, renderable: RenderableType) -> int:
    return Measurement.get(console, console.options.update_width(_UNBOUNDED), renderable).maximum


def _two_lines(columns: Sequence[Column], title: str | None) -> Table:
    """Per candidate, a line of its rank, trial and metrics (aligned), then an indented line of its labels and decisions."""
    first = [c for c in columns if c.role != "label"]
    second = [c for c in columns if c.role == "label"]
    widths = [max(cell_len(c.header), *(cell_len(cell) for cell in c.cells)) for c in first]

    def pad(cell: str, width: int, right: bool) -> str:
        space = " " * (width - cell_len(cell))
        return space + cell if right else cell + space

    def line(cells: Sequence[str]) -> str:
        return "  ".join(pad(cell, w, c.justify == "right") for c, cell, w in zip(first, cells, widths)).rstrip()

    def labels(i: int) -> str:
        return "    " + "  ".join(c.cells[i] if c.header in ("hash", "pareto") else f"{c.header}={c.cells[i]}" for c in second if c.cells[i])

    grid = Table.grid()
    grid.add_column(overflow="fold")
    if title:
        grid.add_row(Text(title, style="italic"))
    grid.add_row(Text(line([c.header for c in first]), style="bold"))
    grid.add_row(Text("    " + "  ".join(c.header for c in second), style="dim"))
    for i in range(len(columns[0].cells)):
        grid.add_row(line([c.cells[i] for c in first]))
        grid.add_row(labels(i))
    return grid


def ranking_table(rows: Sequence[Mapping[str, Any]], *, objectives: Sequence[str], width: int,
                  names: Sequence[str] | None = None, title: str | None = None, console: Console | None = None) -> Ranking:
    """The ranking of ``rows`` laid out for ``width`` columns (see the module docstring for the layouts)."""
    return _lay_out(rows, metric_columns(rows, objectives), width=width, names=names, title=title, console=console)


def _lay_out(rows: Sequence[Mapping[str, Any]], metrics: Sequence[Column], *, width: int, names: Sequence[str] | None,
             title: str | None, console: Console | None) -> Ranking:
    """``metrics`` then the decisions of ``rows`` in the first layout that fits ``width`` (see the module docstring)."""
    console = console or Console(width=width)
    names = decision_names(rows, names)
    metrics = list(metrics)
    texts = [v for row in rows for v in (row.get("decisions") or {}).values() if isinstance(v, str)]
    short = abbreviations(texts)
    legend = {abbr: value for value, abbr in short.items() if abbr != value}
    full, compact = metrics + decision_columns(rows, names), metrics + decision_columns(rows, names, short)
    for columns, layout in ((full, "columns"), (compact, "abbreviated")):
        for narrow in (False, True):
            table = _table(columns, title, narrow_headers=narrow)
            if _natural_width(console, table) <= width:
                return Ranking(table, layout, legend if layout == "abbreviated" else {})
    return Ranking(_two_lines(compact, title), "two-line", legend)


def print_ranking(console: Console, rows: Sequence[Mapping[str, Any]], *, objectives: Sequence[str],
                  names: Sequence[str] | None = None, title: str | None = None, notes: Sequence[str] = ()) -> Ranking:
    """Print the ranking of ``rows`` at the console's width, its legend and the ranking's notes under it."""
    ranking = ranking_table(rows, objectives=objectives, width=console.width, names=names, title=title, console=console)
    lines: list[RenderableType] = [ranking.renderable]
    for legend in (ranking.legend_line(), marks_legend(rows, objectives)):
        if legend:
            lines.append(Text(legend, style="dim"))
    lines.extend(Text(f"note: {note}") for note in notes)
    console.print(Group(*lines))
    return ranking


def _standalone(row: Mapping[str, Any]) -> str:
    status = row.get("standalone_status")
    if status is None:
        return "—"
    if row.get("standalone_accuracy") is None:
        return status
    text = format(row["standalone_accuracy"], ".4f")
    if row.get("standalone_accuracy_std") is not None and (row.get("standalone_n_seeds") or 0) > 1:
        text += f" ± {row['standalone_accuracy_std']:.4f}"
    return text if status == "complete" else f"{status} {text}"


def _as_ranked(row: Mapping[str, Any]) -> dict[str, Any]:
    """A one-shot row's stand-alone result under the keys of a ranking row (for the interval and mark cells)."""
    return {"status": row.get("standalone_status"), "accuracy_low": row.get("standalone_accuracy_low"),
            "accuracy_high": row.get("standalone_accuracy_high"), "most_accurate": row.get("standalone_most_accurate"),
            "separable_from_best": row.get("standalone_separable_from_best")}


def oneshot_columns(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str] = ("accuracy",)) -> list[Column]:
    """One-shot place, hash, accuracy with inherited weights and params; with retrained candidates, their stand-alone
    accuracy, 95% interval (seeds), separability mark and stand-alone rank."""
    columns = [
        Column("#", [str(row.get("oneshot_rank") or "") for row in rows], "right", "key"),
        Column("hash", [str(row.get("hash") or "") for row in rows], role="label"),
        Column("one-shot acc", [_number(row.get("oneshot_accuracy"), ".4f") for row in rows], "right"),
        Column("params", [_number(row.get("params"), ",") for row in rows], "right"),
    ]
    if any(row.get("standalone_status") is not None for row in rows):
        ranked = [_as_ranked(row) for row in rows]
        columns.append(Column("stand-alone", [_standalone(row) for row in rows], "right"))
        if any(row["accuracy_low"] is not None for row in ranked):
            columns.append(Column("95% interval", [_interval(row) if row["status"] == "complete" else "" for row in ranked], "right"))
        if has_marks(ranked):
            header, reference = _reference(objectives)
            columns.append(Column(header, [_mark(row, reference) for row in ranked]))
        # a label: in the two-line layout it goes with the hash, leaving the first line the accuracies
        columns.append(Column("stand-alone #", [str(row.get("standalone_rank") or "") for row in rows], "right", "label"))
    return columns


def oneshot_ranking_table(rows: Sequence[Mapping[str, Any]], *, width: int, objectives: Sequence[str] = ("accuracy",),
                          names: Sequence[str] | None = None, title: str | None = None, console: Console | None = None) -> Ranking:
    """The one-shot ranking of ``rows`` (:func:`~archforge.search.oneshot_report.table`) laid out for ``width``."""
    return _lay_out(rows, oneshot_columns(rows, objectives), width=width, names=names, title=title, console=console)


def print_oneshot_ranking(console: Console, rows: Sequence[Mapping[str, Any]], *, objectives: Sequence[str] = ("accuracy",),
                          names: Sequence[str] | None = None, title: str | None = None, before: Sequence[str] = (),
                          after: Sequence[str] = (), notes: Sequence[str] = ()) -> Ranking:
    """Print ``before`` (the phase's cost), the one-shot ranking of ``rows``, its legends, ``after`` (the agreement) and ``notes``."""
    ranking = oneshot_ranking_table(rows, width=console.width, objectives=objectives, names=names, title=title, console=console)
    lines: list[RenderableType] = [Text(line) for line in before]
    lines.append(ranking.renderable)
    for legend in (ranking.legend_line(), marks_legend([_as_ranked(row) for row in rows], objectives)):
        if legend:
            lines.append(Text(legend, style="dim"))
    lines.extend(Text(line) for line in after)
    lines.extend(Text(f"note: {note}") for note in notes)
    console.print(Group(*lines))
    return ranking


def print_effects(console: Console, effects: Sequence[Any], notes: Sequence[str] = (), *, limit: int | None = 12) -> None:
    """The decision effects (:class:`~archforge.search.effects.DecisionEffect` s, in the space's order), one line each
    up to ``limit``, under a heading, then ``notes`` (:func:`~archforge.search.effects.effect_notes`). A decision
    none of whose values has a pair is left to its note."""
    paired = {e.decision for e in effects if e.effect is not None}
    shown = [e for e in effects if e.decision in paired]
    if not shown and not notes:
        return
    lines: list[RenderableType] = [Text("effects on mean accuracy, points vs each decision's first value "
                                        "(95%, paired over the other decisions; not corrected for multiple comparisons):")]
    lines.extend(Text("  " + effect.text()) for effect in shown[:limit])
    if limit is not None and len(shown) > limit:
        lines.append(Text(f"  and {len(shown) - limit} more (`archforge report DIR` writes them all to trials.json)", style="dim"))
    lines.extend(Text(f"  note: {note}") for note in notes)
    console.print(Group(*lines))


__all__ = ["Column", "Ranking", "abbreviations", "decision_columns", "fold", "marks_legend", "metric_columns", "oneshot_columns",
           "oneshot_ranking_table", "print_effects", "print_oneshot_ranking", "print_ranking", "ranking_table", "value_text"]
