"""The two plots of a search report, drawn without touching matplotlib's global state.

- :func:`plot_pareto`: validation accuracy against parameters and against latency. Each panel
  draws the accuracy-cost frontier of its own two axes (the most accurate candidate at each
  cost, as a step line); with several objectives the run's Pareto front (``RankedRow.pareto``,
  Optuna's ``best_trials``) is ringed in red. Latencies carry their interquartile range.
- :func:`plot_placement`: the mean accuracy of the completed candidates with each value of
  each decision, as a heat map (rows: decisions; columns: values), from :func:`placement_matrix`.
  Each cell says what it averages (``n=4×3``: 4 candidates × 3 seeds, :func:`cell_count`);
  the colour scale spans the cells' own minimum to maximum, and its label says so. On a full
  grid a cell is the mean over every value of the other decisions; on a sample (random, TPE,
  evolution) only over those sampled, so cells with small n can mislead
  (:mod:`archforge.search.effects` pairs candidates instead, with intervals). Pruned candidates
  are not in it: with pruning the cells of weak values are averages of their survivors.

Figures are :class:`matplotlib.figure.Figure` objects with their own Agg canvas: no backend is
selected and pyplot is never imported, so a program that draws its own figures is not
affected. Files are written atomically (:func:`archforge.files.atomic_output`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from archforge.files import atomic_output
from archforge.search.ranking import RankedRow, seed_accuracies
from archforge.search.records import TrialRecord, finite

DPI = 110
#: Decisions with more values than this are left out of the placement heat map.
MAX_PLACEMENT_VALUES = 12


class Placement(NamedTuple):
    """Rows (decision names), columns (value texts), and per cell the mean accuracy (NaN when empty), the count of
    candidates, and (when known) the seeds of each of those candidates."""

    rows: list[str]
    columns: list[str]
    means: list[list[float]]
    counts: list[list[int]]
    seeds: list[list[list[int]]] | None = None


def value_text(value: Any, width: int = 18) -> str:
    """A decision value as a label: strings as they are, anything else as canonical JSON (``repr`` for what JSON
    cannot encode, a set), cut at ``width``."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, accuracy)`` points more accurate than every point as cheap or cheaper, by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    kept: list[int] = []
    for i in order:
        if not kept or points[i][1] > points[kept[-1]][1]:
            kept.append(i)
    return kept


def plot_pareto(rows: Sequence[RankedRow], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Accuracy against parameters and against latency for the complete and pruned ``rows``; see the module docstring."""
    fig = _figure((11, 4.2))
    shown = [r for r in rows if r.accuracy is not None and r.status in ("complete", "pruned")]
    best = next((r for r in rows if r.rank == 1), None)
    for ax, (key, label) in zip(fig.subplots(1, 2), (("params", "parameters"), ("latency_ms", "latency (ms)"))):
        complete = [r for r in shown if r.status == "complete" and getattr(r, key) is not None]
        pruned = [r for r in shown if r.status == "pruned" and getattr(r, key) is not None]
        if pruned:
            ax.scatter([getattr(r, key) for r in pruned], [r.accuracy for r in pruned], facecolors="none", edgecolors="0.6", label="pruned")
        if complete:
            xs, ys = [getattr(r, key) for r in complete], [r.accuracy for r in complete]
            if key == "latency_ms" and any(r.latency_iqr_ms for r in complete):
                ax.errorbar(xs, ys, xerr=[(r.latency_iqr_ms or 0.0) / 2 for r in complete], fmt="none", ecolor="0.7", zorder=1)
            ax.scatter(xs, ys, color="tab:blue", label="complete", zorder=3)
            edge = [complete[i] for i in frontier(list(zip(xs, ys)))]
            ax.step([getattr(r, key) for r in edge], [r.accuracy for r in edge], where="post", color="tab:blue", alpha=0.5,
                    label="best accuracy at each cost", zorder=2)
            front = [r for r in complete if r.pareto]
            if front:
                ax.scatter([getattr(r, key) for r in front], [r.accuracy for r in front], s=110, facecolors="none",
                           edgecolors="tab:red", label="Pareto front", zorder=4)
            if best is not None and getattr(best, key) is not None:
                ax.annotate(f"best {(best.hash or '')[:6]}", (getattr(best, key), best.accuracy), textcoords="offset points",
                            xytext=(6, -12), fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} measured", ha="center", va="center", transform=ax.transAxes, color="0.5")
        costs = [getattr(r, key) for r in complete + pruned]
        if costs and min(costs) > 0 and max(costs) / min(costs) > 20:  # spans orders of magnitude
            ax.set_xscale("log")
        if key == "params":
            from matplotlib.ticker import FuncFormatter

            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        if complete or pruned:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: accuracy vs cost ({len(shown)} candidates)" if title else f"accuracy vs cost ({len(shown)} candidates)")
    fig.tight_layout()
    return save(fig, path)


def placement_matrix(records: Sequence[TrialRecord], decisions: Sequence[Mapping[str, Any]] = (), *,
                     max_values: int = MAX_PLACEMENT_VALUES) -> Placement:
    """Mean accuracy and count of the completed, trained (not reused) candidates per decision value.

    ``decisions``: the run's decision descriptions (``RunMeta.decisions``: ``name``, ``kind``,
    ``options`` or ``low``/``high``/``step``); their values give the columns, so that a value no
    completed candidate took shows as an empty cell. A decision missing from them is shown with
    the values the candidates took. Decisions with one value, or more than ``max_values``, are left out.
    """
    complete = [r for r in records if r.status == "complete" and finite(r.accuracy) is not None and r.duplicate_of is None]
    declared = {d["name"]: values for d in decisions
                if isinstance(d.get("name"), str) and (values := _declared_values(d, max_values)) is not None}
    names = [d["name"] for d in decisions if d.get("name") in declared]
    names += sorted({n for r in complete for n in r.decisions} - set(names))
    rows: list[str] = []
    row_values: list[list[str]] = []
    columns: list[str] = []
    for name in names:
        if name in declared:
            values = [value_text(v) for v in declared[name]]
        else:
            values = list(dict.fromkeys(value_text(r.decisions[name]) for r in complete if name in r.decisions))
        values = list(dict.fromkeys(values))
        if not 1 < len(values) <= max_values:
            continue
        rows.append(name)
        row_values.append(values)
        columns.extend(v for v in values if v not in columns)
    cells: list[list[list[TrialRecord]]] = [[[] for _ in columns] for _ in rows]  # the candidates of each cell
    for r in complete:
        for i, name in enumerate(rows):
            if name in r.decisions and (text := value_text(r.decisions[name])) in row_values[i]:
                cells[i][columns.index(text)].append(r)
    means = [[statistics.fmean(r.accuracy for r in cell) if cell else math.nan for cell in row] for row in cells]  # type: ignore[misc]
    counts = [[len(cell) for cell in row] for row in cells]
    seeds = [[[max(1, len(seed_accuracies(r))) for r in cell] for cell in row] for row in cells]
    return Placement(rows, columns, means, counts, seeds)


def cell_count(candidates: int, seeds: Sequence[int] | None = None) -> str:
    """What a cell averages: ``n=4`` (4 candidates, one seed each or seeds unknown), ``n=4×3`` (4 candidates of 3 seeds)
    or ``n=4, 11 seeds`` (candidates with different numbers of seeds)."""
    if not seeds or set(seeds) == {1}:
        return f"n={candidates}"
    if len(set(seeds)) == 1:
        return f"n={candidates}×{seeds[0]}"
    return f"n={candidates}, {sum(seeds)} seeds"


def plot_placement(placement: Placement, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write the heat map of :func:`placement_figure` to ``path``."""
    return save(placement_figure(placement, title=title), path)


def placement_figure(placement: Placement, *, title: str = "") -> Any:
    """Heat map of a :class:`Placement`: mean validation accuracy per decision value, each cell with its n
    (candidates × seeds when the placement knows the seeds, else candidates)."""
    import numpy as np

    rows, columns, means, counts, seeds = placement
    if not rows or not columns or all(math.isnan(v) for row in means for v in row):
        fig = _figure((6, 2.5))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "no completed trials with finite decisions to show", ha="center", va="center", color="0.4")
        return fig
    matrix = np.array(means, dtype=float)
    fig = _figure((2.8 + 1.1 * len(columns), max(3.0, 1.2 + 0.45 * len(rows))))
    ax = fig.subplots()
    filled = matrix[np.isfinite(matrix)]
    low, high = float(filled.min()), float(filled.max())
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", aspect="auto", vmin=low, vmax=high)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    middle = (low + high) / 2
    for i in range(len(rows)):
        for j in range(len(columns)):
            if counts[i][j]:
                color = "white" if matrix[i, j] < middle else "black"
                n = cell_count(counts[i][j], seeds[i][j] if seeds is not None else None)
                ax.text(j, i, f"{matrix[i, j]:.3f}\n{n}", ha="center", va="center", fontsize=7, color=color)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("mean validation accuracy of the candidates\nwith that value (n = candidates × seeds)\n"
                  f"colour: min–max of the cells, {low:.3f}–{high:.3f}", fontsize=7)
    ax.set_title(f"{title}: accuracy per decision value" if title else "accuracy per decision value", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (an existing file is replaced: a report refreshes its folder)."""
    path = Path(path)
    with atomic_output(path, overwrite=True) as temp:
        fig.savefig(temp, dpi=DPI, format="png")
    return path


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # its own canvas: no backend is selected, pyplot keeps no reference to it
    return fig


def _declared_values(d: Mapping[str, Any], max_values: int) -> list[Any] | None:
    """The values of a decision description, at most ``max_values + 1`` of them (enough to tell that there are too many).

    ``[]`` for a continuous range (not shown); ``None`` for a description that cannot be read (the taken values are shown).
    """
    if d.get("kind") == "choice":
        options = d.get("options")
        return options[: max_values + 1] if isinstance(options, list) else None
    if d.get("kind") == "float" and d.get("step") is None:
        return []
    numbers = (d.get("low"), d.get("high"), d.get("step") or 1)
    if d.get("kind") not in ("int", "float") or not all(_finite(v) for v in numbers):
        return None
    low, high, step = numbers
    if step <= 0 or high < low:
        return None
    if d["kind"] == "int":
        low, step = int(low), max(1, int(step))
        return [low + k * step for k in range(min((int(high) - low) // step + 1, max_values + 1))]
    return [round(low + k * step, 10) for k in range(min(int(round((high - low) / step)) + 1, max_values + 1))]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"
