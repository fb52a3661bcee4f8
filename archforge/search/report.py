"""What a search found: the ranking, the compute it saved, files and plots.

:func:`load_run` reads a run from its storage; :class:`RunData` ranks it;
:func:`write_report` writes into a folder:

==================  ================================================================
``trials.csv``      one row per stored trial (reused, rejected, stale ones included)
``trials.json``     the settings, the compute summary, the ranking and every trial
                    with its concrete spec
``pareto.png``      accuracy vs parameters and vs latency, Pareto front marked
``placement.png``   mean accuracy per value of each decision (rows: decisions, e.g.
                    the per-copy placement of each stage; columns: values)
``best.yaml``       the best candidate's concrete spec (``archforge build`` builds it)
``candidates/``     the concrete specs of the ten best, ``<rank>_<hash>.yaml``
``best.pt``         with ``weights=True``: the best candidate retrained, as a checkpoint
==================  ================================================================

Every file is written atomically (:mod:`archforge.files`). What is read back from the
storage is checked first: a trial whose attributes were tampered with is ``unreadable``
(left out of the ranking, one warning line each), and study settings that archforge
cannot have written are a one-line :class:`SearchError`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from archforge.files import atomic_output, write_text
from archforge.search.space import OBJECTIVES, short_value
from archforge.search.storage import (
    MAX_TEXT, META_KEY, PROXY_KEY, SearchError, TrialRecord, load_run_study, record_of, storage_errors,
)

#: Complete candidates whose stored spec is validated before they are ranked as best or written out.
CHECKED_SPECS = 10

CSV_FIELDS = [
    "trial", "rank", "hash", "status", "accuracy", "accuracy_std", "n_seeds", "params", "flops", "latency_ms",
    "peak_memory_mb", "train_time_s", "epochs_run", "epochs_full", "duplicate_of", "retry_of", "parent", "mutated",
    "proxy_score", "error", "started", "finished",
]


@dataclass
class RunData:
    """A search run as stored: its settings and every trial."""

    name: str
    meta: dict[str, Any]
    records: list[TrialRecord]
    proxy: dict[str, Any] | None = None
    study: Any = None
    run_dir: Path | None = None
    _table: list[dict[str, Any]] | None = field(default=None, repr=False)

    @classmethod
    def from_study(cls, study: Any, run_dir: Path | None = None) -> "RunData":
        meta = study.user_attrs.get(META_KEY)
        if meta is None:
            raise SearchError(f"study '{study.study_name}' was not made by archforge search")
        meta = checked_meta(meta, study.study_name)
        records = [record_of(t) for t in study.get_trials(deepcopy=False)]
        proxy = study.user_attrs.get(PROXY_KEY)
        return cls(study.study_name, meta, records, proxy if isinstance(proxy, dict) else None, study, run_dir)

    @property
    def unreadable(self) -> list[TrialRecord]:
        """Trials whose stored attributes cannot be trusted, with the reason as their ``error``."""
        _ = self.table  # checks the specs of the best candidates too
        return [r for r in self.records if r.status == "unreadable"]

    # -- settings -------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self.meta.get("settings", {})

    @property
    def objectives(self) -> list[str]:
        return list(self.settings.get("objectives") or ["accuracy"])

    @property
    def decision_names(self) -> list[str]:
        return [d["name"] for d in self.meta.get("decisions", [])]

    # -- ranking --------------------------------------------------------------
    @property
    def table(self) -> list[dict[str, Any]]:
        """Ranked rows, one per evaluated candidate: complete (ranked), then pruned, then failed."""
        while self._table is None:
            table = rank(self.records, self.objectives)
            bad = _first_bad_spec([row for row in table if row["status"] == "complete"][:CHECKED_SPECS])
            if bad is None:
                self._table = table
            else:  # a spec that does not validate cannot be the best: mark it and rank again
                number, reason = bad
                self.records = [r if r.number != number else TrialRecord(number=r.number, state=r.state, status="unreadable", error=reason,
                                                                         started=r.started, finished=r.finished) for r in self.records]
        return self._table

    @property
    def best(self) -> dict[str, Any] | None:
        return next((row for row in self.table if row["status"] == "complete"), None)

    @property
    def best_spec(self) -> Any:
        from archforge.spec import Spec

        best = self.best
        if best is None:
            raise SearchError(f"run '{self.name}' has no completed trial yet")
        return Spec.from_dict(best["spec"], file=f"<candidate {best['hash']}>")

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return [row for row in self.table if row.get("pareto")]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.table if row["status"] == "failed"]

    @property
    def rejected(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "rejected" and r.duplicate_of is None]

    @property
    def worker_stats(self) -> list[dict[str, Any]]:
        """Each worker session's time accounting (wall, training, waiting), as the workers stored it."""
        from archforge.search.runner import STATS_PREFIX

        attrs = self.study.user_attrs if self.study is not None else {}
        numbers = ("wall_s", "eval_s", "wait_s")
        return [v for k, v in sorted(attrs.items()) if k.startswith(STATS_PREFIX) and isinstance(v, dict)
                and all(isinstance(v.get(n, 0.0), (int, float)) and not isinstance(v.get(n, 0.0), bool) and math.isfinite(v.get(n, 0.0)) for n in numbers)
                and "wall_s" in v and "eval_s" in v]

    @property
    def compute(self) -> dict[str, Any]:
        summary = compute_summary(self.records, self.settings, self.proxy)
        stats = self.worker_stats
        busy = sum(s["wall_s"] - s.get("wait_s", 0.0) for s in stats)
        if busy > 0:
            driver = sum(s["wall_s"] - s.get("wait_s", 0.0) - s["eval_s"] for s in stats)
            summary["driver_overhead"] = max(0.0, driver) / busy
        return summary

    # -- files ----------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        return write_csv(self, path)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        return write_json(self, path)


def checked_meta(meta: Any, name: str) -> dict[str, Any]:
    """The study's archforge record, checked: settings archforge cannot have written are a one-line error."""
    where = f"study '{name}' has a damaged archforge record"
    if not isinstance(meta, dict) or not isinstance(meta.get("settings", {}), dict):
        raise SearchError(f"{where}: it is not a mapping of settings; report a copy of the store made before it was edited")
    settings = meta.get("settings", {})
    objectives = settings.get("objectives") or ["accuracy"]
    if not isinstance(objectives, list) or not objectives or not all(isinstance(o, str) and o in OBJECTIVES for o in objectives):
        raise SearchError(f"{where}: objectives {str(objectives)[:80]} are not among {', '.join(OBJECTIVES)}")
    for key in ("epochs", "seeds"):
        value = settings.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
            raise SearchError(f"{where}: {key} {str(value)[:40]} is not a whole number")
    decisions = meta.get("decisions", [])
    meta = dict(meta)
    meta["decisions"] = [d for d in decisions if _decision_ok(d)] if isinstance(decisions, list) else []
    return meta


def _decision_ok(d: Any) -> bool:
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) or len(d["name"]) > MAX_TEXT:
        return False
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        return False
    if d.get("kind") == "choice":
        return isinstance(d.get("options"), list)
    numbers = [d.get("low"), d.get("high"), d.get("step") or 1]
    return d.get("kind") in ("int", "float") and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers) \
        and numbers[2] > 0


def _first_bad_spec(rows: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """The first of ``rows`` whose stored spec does not validate, with the reason."""
    import warnings

    from archforge.errors import SpecError, SpecWarning
    from archforge.spec import Spec

    for row in rows:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                Spec.from_dict(row["spec"], file=f"<candidate {row['hash']}>")
        except (SpecError, ValueError, TypeError, KeyError, RecursionError) as exc:
            text = exc.format() if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
            return row["trial"], f"its candidate spec does not validate: {text[:300]}"
    return None


def rank(records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[dict[str, Any]]:
    rows = [_row(r) for r in records if r.counted]
    complete = [r for r in rows if r["status"] == "complete"]
    fronts = _pareto_ranks(complete, objectives)
    for row, front in zip(complete, fronts):
        row["pareto"] = front == 0
        row["_front"] = front
    primary = objectives[0]
    sign = -1 if OBJECTIVES.get(primary, "maximize") == "maximize" else 1

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        value = row.get(primary)
        return (row.get("_front", 0), sign * value if value is not None else math.inf, -(row.get("accuracy") or 0), row["trial"])

    complete.sort(key=key)
    pruned = sorted((r for r in rows if r["status"] == "pruned"), key=lambda r: (-(r["accuracy"] or 0), r["trial"]))
    failed = sorted((r for r in rows if r["status"] == "failed"), key=lambda r: r["trial"])
    for i, row in enumerate(complete):
        row["rank"] = i + 1
        row.pop("_front", None)
    return complete + pruned + failed


def _row(r: TrialRecord) -> dict[str, Any]:
    return {
        "rank": None, "trial": r.number, "hash": r.hash, "status": r.status, "accuracy": r.accuracy,
        "accuracy_std": r.accuracy_std, "n_seeds": len(r.accuracies) or len(r.seeds), "params": r.params, "flops": r.flops,
        "latency_ms": r.latency_ms, "peak_memory_mb": r.peak_memory_mb, "train_time_s": r.train_time_s,
        "epochs_run": r.epochs_run, "epochs_full": r.epochs_full, "pareto": False, "parent": r.parent, "mutated": r.mutated,
        "proxy_score": r.proxy_score, "error": r.error, "decisions": dict(r.decisions), "spec": r.spec,
    }


def _pareto_ranks(rows: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[int]:
    """Non-dominated sorting (front 0 is the Pareto front); one objective: everything on front 0."""
    if len(objectives) < 2:
        return [0] * len(rows)
    points = [[(-1 if OBJECTIVES[o] == "maximize" else 1) * float(r.get(o) if r.get(o) is not None else math.inf) for o in objectives] for r in rows]
    fronts = [-1] * len(rows)
    remaining = set(range(len(rows)))
    level = 0
    while remaining:
        front = {i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            fronts[i] = level
        remaining -= front
        level += 1
    return fronts


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when maximising the first coordinate and minimising the second."""
    out = []
    for i, (acc, cost) in enumerate(points):
        if not any((a >= acc and c <= cost) and (a > acc or c < cost) for j, (a, c) in enumerate(points) if j != i):
            out.append(i)
    return out


def compute_summary(records: Sequence[TrialRecord], settings: dict[str, Any], proxy: dict[str, Any] | None) -> dict[str, Any]:
    """Epochs actually run against the epochs full training of every candidate considered would have run."""
    epochs, seeds = int(settings.get("epochs", 0)), int(settings.get("seeds", 1))
    counted = [r for r in records if r.counted]
    stale = [r for r in records if r.status == "stale"]
    run = sum(r.epochs_run for r in counted) + sum(int(s.get("epochs_run", 0) or 0) for r in stale for s in r.seeds.values())
    discarded = (proxy or {}).get("discarded", 0)
    discarded = discarded if isinstance(discarded, int) and not isinstance(discarded, bool) and 0 <= discarded < 2**31 else 0
    # a failed candidate would have failed under full training too: it neither saves nor costs extra
    full = sum(r.epochs_run if r.status == "failed" else (r.epochs_full or epochs * seeds) for r in counted) + discarded * epochs * seeds
    saved = full - run
    return {
        "epochs_run": run,
        "epochs_full": full,
        "epochs_saved": saved,
        "saved_fraction": (saved / full) if full else 0.0,
        "evaluated": len(counted),
        "complete": sum(r.status == "complete" for r in counted),
        "pruned": sum(r.status == "pruned" for r in counted),
        "failed": sum(r.status == "failed" for r in counted),
        "rejected": len({r.hash for r in records if r.status == "rejected"}),
        "reused": sum(r.duplicate_of is not None and r.status != "rejected" for r in records),
        "stale": len(stale),
        "proxy_discarded": discarded,
        "train_time_s": sum((r.eval_time_s or 0.0) for r in records),
        "driver_time_s": sum((r.driver_time_s or 0.0) for r in records),
    }


def compute_text(c: dict[str, Any], settings: dict[str, Any]) -> str:
    text = (f"compute: {c['epochs_run']} epochs run of the {c['epochs_full']} that full training "
            f"({settings.get('epochs')} epochs × {settings.get('seeds', 1)} seed(s) per candidate) would have run")
    if c["epochs_full"]:
        text += f": saved {c['epochs_saved']} ({100 * c['saved_fraction']:.1f}%)"
    parts = []
    if c["pruned"]:
        parts.append(f"{c['pruned']} pruned early")
    if c["proxy_discarded"]:
        parts.append(f"{c['proxy_discarded']} discarded by the proxy")
    if c["reused"]:
        parts.append(f"{c['reused']} results reused")
    if c["rejected"]:
        parts.append(f"{c['rejected']} rejected before training")
    text += f" ({', '.join(parts)})" if parts else ""
    if c.get("driver_overhead") is not None:
        text += f"; driver overhead {100 * c['driver_overhead']:.1f}% of worker time"
    return text


# --------------------------------------------------------------------------- loading


def load_run(source: Any, study: str | None = None) -> RunData:
    """A run from a folder (``runs/<name>``), a ``study.db``, a storage URL, or an Optuna study."""
    if hasattr(source, "get_trials"):
        return RunData.from_study(source)
    with storage_errors(str(source)):
        loaded = load_run_study(source, study)
    text = str(source)
    run_dir = None
    if "://" not in text:
        path = Path(source)
        run_dir = path if path.is_dir() else path.parent
    return RunData.from_study(loaded, run_dir)


# --------------------------------------------------------------------------- writing


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def write_csv(run: RunData, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    ranks = {row["trial"]: row["rank"] for row in run.table}
    names = run.decision_names or sorted({k for r in run.records for k in r.decisions})
    with atomic_output(path, overwrite=True) as temp, temp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS + [f"decision:{n}" for n in names])
        for r in sorted(run.records, key=lambda r: r.number):
            row = {
                "trial": r.number, "rank": ranks.get(r.number), "hash": r.hash, "status": r.status, "accuracy": r.accuracy,
                "accuracy_std": r.accuracy_std, "n_seeds": len(r.accuracies), "params": r.params, "flops": r.flops,
                "latency_ms": r.latency_ms, "peak_memory_mb": r.peak_memory_mb, "train_time_s": r.train_time_s,
                "epochs_run": r.epochs_run, "epochs_full": r.epochs_full, "duplicate_of": r.duplicate_of, "retry_of": r.retry_of,
                "parent": r.parent, "mutated": r.mutated, "proxy_score": r.proxy_score, "error": r.error,
                "started": r.started, "finished": r.finished,
            }
            writer.writerow([_cell(row[k]) for k in CSV_FIELDS] + [_cell(r.decisions.get(n)) for n in names])
    return path


def write_json(run: RunData, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    data = {
        "run": run.name,
        "space_file": run.meta.get("space_file"),
        "dataset": run.meta.get("dataset"),
        "objectives": run.objectives,
        "settings": run.settings,
        "train": run.meta.get("train"),
        "decisions": run.meta.get("decisions", []),
        "compute": run.compute,
        "proxy": run.proxy,
        "best": _without_spec(run.best),
        "ranking": [_without_spec(row) for row in run.table],
        "trials": [r.to_dict() for r in sorted(run.records, key=lambda r: r.number)],
    }
    write_text(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n", overwrite=True)
    return path


def _without_spec(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: v for k, v in row.items() if k != "spec"}


def write_best_yaml(run: RunData, path: str | os.PathLike[str]) -> Path | None:
    best = run.best
    if best is None:
        return None
    spec = run.best_spec
    path = Path(path)
    acc = f"{best['accuracy']:.4f}" if best["accuracy"] is not None else "?"
    if best.get("accuracy_std") is not None and best.get("n_seeds", 1) > 1:
        acc += f" ± {best['accuracy_std']:.4f}"
    header = [
        f"# Best candidate of search run '{run.name}' ({run.meta.get('space_file')}): {best['hash']}, trial #{best['trial']}",
        f"# validation accuracy {acc} on {run.meta.get('dataset')} after {run.settings.get('epochs')} epoch(s); params {best['params']:,}" if best.get("params") is not None else f"# validation accuracy {acc}",
        "# decisions: " + ", ".join(f"{k}={short_value(v)}" for k, v in best["decisions"].items()),
    ]
    write_text(path, "\n".join(_comment(line) for line in header) + "\n" + spec.to_yaml(), overwrite=True)
    return path


def _comment(line: str, limit: int = 500) -> str:
    """A YAML comment line, whatever the store holds: a stored name with a line break must not add YAML."""
    from archforge.errors import one_line

    line = one_line(line)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(run: RunData, path: str | os.PathLike[str]) -> Path:
    """Accuracy against parameters and against latency; the Pareto front (max accuracy, min cost) as a line."""
    plt = _plt()
    rows = [r for r in run.table if r["accuracy"] is not None]
    axes_spec = [("params", "parameters"), ("latency_ms", "latency (ms)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, axes_spec):
        complete = [r for r in rows if r["status"] == "complete" and r.get(key) is not None]
        pruned = [r for r in rows if r["status"] == "pruned" and r.get(key) is not None]
        if pruned:
            ax.scatter([r[key] for r in pruned], [r["accuracy"] for r in pruned], facecolors="none", edgecolors="0.6", label="pruned")
        if complete:
            ax.scatter([r[key] for r in complete], [r["accuracy"] for r in complete], color="tab:blue", label="complete", zorder=3)
            front = sorted((complete[i] for i in pareto_front([(r["accuracy"], r[key]) for r in complete])), key=lambda r: r[key])
            ax.step([r[key] for r in front], [r["accuracy"] for r in front], where="post", color="tab:red", label="Pareto front", zorder=2)
            ax.scatter([r[key] for r in front], [r["accuracy"] for r in front], s=110, facecolors="none", edgecolors="tab:red", zorder=4)
            best = run.best
            if best is not None and best.get(key) is not None:
                ax.annotate(f"best {best['hash'][:6]}", (best[key], best["accuracy"]), textcoords="offset points", xytext=(6, -12), fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} measured", ha="center", va="center", transform=ax.transAxes, color="0.5")
        costs = [r[key] for r in complete + pruned]
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
    fig.suptitle(f"{run.name}: accuracy vs cost ({len(rows)} candidates)")
    fig.tight_layout()
    path = Path(path)
    _save(fig, path)
    return path


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    try:
        with atomic_output(path, overwrite=True) as temp:
            fig.savefig(temp, dpi=110)
    finally:
        plt.close(fig)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def placement_matrix(run: RunData, max_values: int = 12) -> tuple[list[str], list[str], list[list[float]], list[list[int]]]:
    """Rows (decisions), columns (values), mean accuracy and count of complete trials per cell."""
    complete = [r for r in run.records if r.status == "complete" and r.accuracy is not None and r.duplicate_of is None]
    decisions = [d for d in run.meta.get("decisions", []) if d.get("size") is not None and 1 < d["size"] <= max_values]
    columns: list[str] = []
    for d in decisions:
        values = d["options"] if d["kind"] == "choice" else _range_values(d)
        for v in values:
            text = short_value(v, 18)
            if text not in columns:
                columns.append(text)
    rows = [d["name"] for d in decisions]
    means = [[math.nan] * len(columns) for _ in rows]
    counts = [[0] * len(columns) for _ in rows]
    for i, d in enumerate(decisions):
        for j, col in enumerate(columns):
            accs = [r.accuracy for r in complete if d["name"] in r.decisions and short_value(r.decisions[d["name"]], 18) == col]
            if accs:
                means[i][j] = statistics.fmean(accs)
                counts[i][j] = len(accs)
    return rows, columns, means, counts


def _range_values(d: dict[str, Any]) -> list[Any]:
    low, high, step = d["low"], d["high"], d.get("step") or 1
    n = int(round((high - low) / step)) + 1
    values = [low + k * step for k in range(n)]
    return [int(v) if d["kind"] == "int" else round(v, 10) for v in values]


def plot_placement(run: RunData, path: str | os.PathLike[str]) -> Path:
    """Heat map: mean validation accuracy of the completed candidates with each decision value."""
    plt = _plt()
    import numpy as np

    rows, columns, means, counts = placement_matrix(run)
    path = Path(path)
    if not rows or not columns or all(math.isnan(v) for row in means for v in row):
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no completed trials with finite decisions to show", ha="center", va="center", color="0.4")
        _save(fig, path)
        return path
    matrix = np.array(means, dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(columns), 1.2 + 0.45 * len(rows)))
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(masked, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    finite = matrix[np.isfinite(matrix)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(columns)):
            if counts[i][j]:
                color = "white" if matrix[i, j] < middle else "black"
                ax.text(j, i, f"{matrix[i, j]:.3f}\nn={counts[i][j]}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="mean validation accuracy")
    ax.set_title(f"{run.name}: accuracy per decision value", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return path


def retrain_best(run: RunData, path: str | os.PathLike[str], *, data: Any = None) -> Path:
    """Train the best candidate again (seed 0, the run's settings) and save it with its spec."""
    from archforge.builder import save_checkpoint
    from archforge.search.runner import load_data, make_train_config

    spec = run.best_spec
    settings = run.settings
    data = data if data is not None else load_data(run.meta.get("dataset") or settings.get("dataset"), limit=settings.get("limit"),
                                                  val_fraction=settings.get("val_fraction", 0.2))
    train = {k: v for k, v in (run.meta.get("train") or {}).items() if k not in ("threads", "augment")}
    config = make_train_config(train, seed=0)
    try:
        from archforge.search import evaluate as ev
    except ImportError as exc:
        raise SearchError(f"retraining needs archforge.search.evaluate: {exc}") from None
    if hasattr(ev, "train_model"):
        model, _ = ev.train_model(spec, data, config)
    else:  # the evaluator keeps its model on its trial object
        trial = ev._Trial(spec, data, config, None)
        trial.run(None)
        model = trial.model
    if model is None:
        raise SearchError("the evaluator returned no model to save")
    return save_checkpoint(model.eval(), path, overwrite=True)  # a report refreshes its folder


def write_report(run: RunData, out_dir: str | os.PathLike[str], *, weights: bool = False) -> dict[str, Path]:
    """Write the report files into ``out_dir``; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": write_csv(run, out / "trials.csv"),
        "json": write_json(run, out / "trials.json"),
        "pareto": plot_pareto(run, out / "pareto.png"),
        "placement": plot_placement(run, out / "placement.png"),
    }
    best = write_best_yaml(run, out / "best.yaml")
    if best is not None:
        files["best"] = best
        files["candidates"] = write_top_specs(run, out / "candidates")
        if weights:
            files["weights"] = retrain_best(run, out / "best.pt")
    return files


def write_top_specs(run: RunData, folder: Path, top: int = 10) -> Path:
    """The concrete specs of the ``top`` ranked candidates as ``<rank>_<hash>.yaml`` (each builds with archforge build)."""
    from archforge.spec import Spec

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for row in [r for r in run.table if r["status"] == "complete"][:top]:
        text = Spec.from_dict(row["spec"]).to_yaml()
        acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "?"
        write_text(folder / f"{row['rank']:02d}_{row['hash']}.yaml",
                   _comment(f"# rank {row['rank']} of run '{run.name}', trial #{row['trial']}, accuracy {acc}") + "\n" + text, overwrite=True)
    return folder


# --------------------------------------------------------------------------- printing


def ranking_table(run: RunData, top: int | None = 10) -> Any:
    from rich.table import Table

    objectives = run.objectives
    table = Table(title=f"{run.name}: {len(run.table)} candidates evaluated", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("hash")
    table.add_column("status")
    table.add_column("accuracy", justify="right")
    table.add_column("params", justify="right")
    if any(r["latency_ms"] is not None for r in run.table):
        table.add_column("latency ms", justify="right")
        latency = True
    else:
        latency = False
    table.add_column("epochs", justify="right")
    if len(objectives) > 1:
        table.add_column("pareto")
    names = run.decision_names or sorted({k for row in run.table for k in row["decisions"]})
    per_column = 0 < len(names) <= 5
    if per_column:  # e.g. one column per stage of a placement search
        for name in names:
            table.add_column(name)
    else:
        table.add_column("decisions")
    rows = run.table if top is None else [r for r in run.table if r["status"] != "failed"][:top]
    for row in rows:
        acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "—"
        if row.get("accuracy_std") is not None and row["n_seeds"] > 1:
            acc += f" ± {row['accuracy_std']:.4f}"
        cells = [str(row["rank"] or ""), str(row["trial"]), row["hash"] or "", row["status"], acc,
                 f"{row['params']:,}" if row["params"] is not None else "—"]
        if latency:
            cells.append(f"{row['latency_ms']:.2f}" if row["latency_ms"] is not None else "—")
        cells.append(f"{row['epochs_run']}/{row['epochs_full']}")
        if len(objectives) > 1:
            cells.append("★" if row.get("pareto") else "")
        if per_column:
            cells.extend(short_value(row["decisions"][n], 24) if n in row["decisions"] else "" for n in names)
        else:
            cells.append(", ".join(f"{k}={short_value(v, 18)}" for k, v in row["decisions"].items()))
        table.add_row(*cells)
    return table


def print_summary(run: RunData, console: Any = None, *, top: int | None = 10) -> None:
    """The ranked table, failures, the compute saved and the winner."""
    from rich.console import Console

    console = console or Console(highlight=False, soft_wrap=True)
    unreadable = run.unreadable
    for r in unreadable[:10]:
        console.print(f"warning: trial #{r.number} is unreadable and left out: {r.error}", markup=False)
    if len(unreadable) > 10:
        console.print(f"warning: {len(unreadable) - 10} more unreadable trials left out (see trials.csv)", markup=False)
    if not run.table:
        console.print(f"{run.name}: no candidate evaluated yet", markup=False)
        return
    console.print(ranking_table(run, top))
    failed = run.failed
    if failed:
        console.print(f"{len(failed)} failed:", markup=False)
        for row in failed[:10]:
            console.print(f"  #{row['trial']} {row['hash']}: {row['error']}", markup=False)
    rejected = run.rejected
    if rejected:
        console.print(f"{len({r.hash for r in rejected})} rejected before training, e.g. #{rejected[0].number} {rejected[0].hash}: {rejected[0].error}", markup=False)
    console.print(compute_text(run.compute, run.settings), markup=False)
    best = run.best
    if best is not None:
        acc = f"{best['accuracy']:.4f}" if best["accuracy"] is not None else "—"
        if best.get("accuracy_std") is not None and best["n_seeds"] > 1:
            acc += f" ± {best['accuracy_std']:.4f} over {best['n_seeds']} seeds"
        decisions = ", ".join(f"{k}={short_value(v)}" for k, v in best["decisions"].items()) or "(no decisions)"
        console.print(f"best: #{best['trial']} {best['hash']} accuracy {acc} · params {best['params']:,} · {decisions}"
                      if best.get("params") is not None else f"best: #{best['trial']} {best['hash']} accuracy {acc} · {decisions}", markup=False)
