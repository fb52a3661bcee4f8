"""What a search found, read back from its store: the ranked run, the compute it saved, and the report files.

:func:`load_run` opens a run (a folder, a ``.db`` file, a storage URL or an Optuna study) as a
:class:`RunData`, which ranks it (:mod:`archforge.search.ranking`); :func:`write_report` writes
into a folder:

==================  ================================================================
``trials.csv``      one row per stored trial (reused, rejected, interrupted ones included);
                    the columns are :meth:`TrialRecord.row` 's keys (plugin metrics as
                    ``metric.<name>``, decisions as ``decision.<name>``), then :data:`RANK_COLUMNS`
                    and, when a candidate has two seeds or more, :data:`CONFIDENCE_COLUMNS`
                    (filled on the row of the trial that stands for its candidate in the
                    ranking, see :mod:`archforge.search.ranking`; empty on the others)
``trials.json``     the settings, the plugin metrics measured, the compute summary, the ranking
                    with its notes (rows with their 95% intervals and ``separable_from_best``),
                    the decision effects and their notes (:mod:`archforge.search.effects`), and every trial
                    (its row, concrete spec and per-seed results)
``pareto.png``      accuracy vs parameters and vs latency (:mod:`archforge.search.plots`)
``placement.png``   mean accuracy per value of each decision, with n (candidates × seeds) per cell
``best.yaml``       the best candidate's concrete spec (``archforge build`` builds it); for
                    ``strategy: oneshot`` with no candidate trained stand-alone
                    (``retrain_top: 0``, or none trained yet:
                    :func:`~archforge.search.oneshot_report.fallback`), the one-shot winner's,
                    rebuilt from the stored space; none when the candidates trained stand-alone
                    all failed
``candidates/``     the concrete specs of the ten best, ``<rank>_<hash>.yaml``
``oneshot.csv``     ``strategy: oneshot`` only: the one-shot ranking joined with the stand-alone
                    results of the candidates retrained (:func:`~archforge.search.oneshot_report.write_csv`)
``best.pt``         with ``weights=True``: the best candidate retrained, as a checkpoint; for a
                    one-shot run whose best is the one-shot winner, a copy of its checkpoint
                    (its inherited weights, ``oneshot/best.pt`` in the run folder)
==================  ================================================================

A one-shot run (:mod:`archforge.search.oneshot`) is read with its phase
(:attr:`RunData.oneshot`); what a report makes of it (the supernet's ranking joined with the
stand-alone results, their agreement and notes, and the files above marked one-shot) is
:mod:`archforge.search.oneshot_report`, which this module calls (``RunData.oneshot_table``,
``oneshot_agreement``, ... are its functions under the names results read).

Every file is written atomically (:mod:`archforge.files`); what a one-shot winner's ``best.yaml``
and ``best.pt`` need (its spec rebuilt to its stored hash, its checkpoint) is checked before any
file is written. What the store holds is checked first: a trial whose attributes were tampered
with is ``unreadable`` (its reason is its ``error``; it is left out of the ranking), and so is a
complete candidate whose stored spec does not validate; study attributes archforge cannot have
written are a one-line :class:`~archforge.errors.SearchError`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from archforge.errors import SearchError, one_line
from archforge.files import atomic_output, write_text
from archforge.search import oneshot_report, plots
from archforge.search.compute import ComputeSummary, compute_summary
from archforge.search.effects import DecisionEffect, decision_effects, effect_notes
from archforge.search.fidelity import RungAgreement, rung_agreement
from archforge.search.ranking import RankedRow, Ranking, bounds_text, rank
from archforge.search.records import (
    ONESHOT_KEY, PROXY_KEY, RUN_KEY, OneShotPhase, ProxyPhase, RunMeta, TrialRecord, WorkerStats, first_error, read_study_attr,
    read_trials, read_worker_stats,
)
from archforge.search.settings import OBJECTIVES, SearchSettings

#: Complete candidates whose stored spec is validated before they are ranked as best or written out.
CHECKED_SPECS = 10
#: Specs written to ``candidates/``.
TOP_SPECS = 10
#: Ranking columns trials.csv always adds (empty on rows that do not stand for a candidate in the ranking).
RANK_COLUMNS = ("rank", "most_accurate")
#: Ranking columns trials.csv adds when a candidate has two seeds or more.
CONFIDENCE_COLUMNS = ("accuracy_low", "accuracy_high", "separable_from_best", "gap_low", "gap_high")


@dataclass
class RunData:
    """A search run as stored: its metadata, every trial, and (computed once) the ranking."""

    name: str
    meta: RunMeta
    records: list[TrialRecord]
    proxy: ProxyPhase | None = None
    study: Any = None
    run_dir: Path | None = None
    front: list[int] = field(default_factory=list)  # trial numbers of study.best_trials (several objectives)
    oneshot: OneShotPhase | None = None  # the one-shot phase of a strategy: oneshot run
    _ranking: Ranking | None = field(default=None, repr=False)

    @classmethod
    def from_study(cls, study: Any, run_dir: Path | None = None) -> "RunData":
        """Read ``study``; a study archforge did not make, or whose run attributes were damaged, is a :class:`SearchError`."""
        try:
            meta = read_study_attr(study, RunMeta, RUN_KEY)
            proxy = read_study_attr(study, ProxyPhase, PROXY_KEY)
            oneshot = read_study_attr(study, OneShotPhase, ONESHOT_KEY)
        except ValueError as exc:
            raise SearchError(f"study '{study.study_name}': {exc}; report a copy of the store made before it was edited") from None
        if meta is None:
            raise SearchError(f"study '{study.study_name}' was not made by archforge search")
        run = cls(study.study_name, meta, read_trials(study), proxy, study, run_dir, oneshot=oneshot)
        if len(run.objectives) > 1:
            run.front = [t.number for t in study.best_trials]
        return run

    # -- settings -------------------------------------------------------------
    @cached_property
    def settings(self) -> SearchSettings:
        """The run's settings (what only Python can pass, a sampler or pruner object, reads as the default)."""
        return settings_of(self.meta, self.name)

    @property
    def objectives(self) -> list[str]:
        return list(self.settings.objectives)

    @property
    def goals(self) -> dict[str, str]:
        """The direction of each plugin metric the run measured."""
        return {name: info.goal for name, info in self.meta.metrics.items()}

    @property
    def metric_names(self) -> list[str]:
        """The plugin metrics of the run: those it measured, then any other a stored trial holds."""
        return list(dict.fromkeys([*self.meta.metrics, *(name for r in self.records for name in r.metrics)]))

    @property
    def decision_names(self) -> list[str]:
        return [d["name"] for d in self.meta.decisions if isinstance(d.get("name"), str)]

    # -- ranking --------------------------------------------------------------
    @property
    def ranking(self) -> Ranking:
        """The ranking and its notes; the stored specs of the best :data:`CHECKED_SPECS` are validated first."""
        while self._ranking is None:
            ranking = rank(self.records, self.objectives, front=self.front, goals=self.goals)
            bad = _first_bad_spec([self.record(row.trial) for row in ranking.ranked[:CHECKED_SPECS]])
            if bad is None:
                self._ranking = ranking
            else:  # a spec that does not validate cannot be the best: mark it and rank again
                number, reason = bad
                self.records = [r if r.number != number else _unreadable(r, reason) for r in self.records]
        return self._ranking

    @property
    def table(self) -> list[dict[str, Any]]:
        """Rows (``RankedRow.model_dump()``: rank, trial, hash, status, pareto, accuracy, accuracy_std, accuracy_low,
        accuracy_high, n_seeds, accuracies, most_accurate, separable_from_best, gap_low, gap_high, params, flops,
        latency_ms, latency_iqr_ms, latency_noisy, ..., decisions), one per
        evaluated candidate: complete (ranked), then pruned, then failed."""
        return [row.model_dump() for row in self.ranking.rows]

    @cached_property
    def effects(self) -> list[DecisionEffect]:
        """Each decision value's effect on mean accuracy against the decision's baseline (:func:`decision_effects`)."""
        return decision_effects(self.ranking.rows, self.meta.decisions)

    @property
    def effect_notes(self) -> list[str]:
        """What to read the effects with: pruning's bias, decisions without an estimate (:func:`effect_notes`)."""
        pruned = sum(row.status == "pruned" for row in self.ranking.rows)
        return effect_notes(self.effects, self.meta.decisions, pruned=pruned)

    @cached_property
    def rung_agreement(self) -> list[RungAgreement]:
        """How far each early epoch's ranking agrees with the final one (:func:`~archforge.search.fidelity.rung_agreement`)."""
        return rung_agreement(self.records)

    @property
    def notes(self) -> list[str]:
        """What the ranking cannot tell apart, as sentences (typed: ``ranking.notes``)."""
        return [note.text for note in self.ranking.notes]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best ranked row (a candidate trained to completion), ``None`` without one; see :attr:`reported_best`."""
        return self.ranking.best.model_dump() if self.ranking.best is not None else None

    @property
    def reported_best(self) -> dict[str, Any] | None:
        """The best as results and reports give it (``SearchResult.best``, trials.json, ``report --json``): :attr:`best`;
        without one, when :attr:`oneshot_fallback`, the one-shot winner: its :attr:`oneshot_table` row with ``"source":
        "oneshot"``, ``trial`` and ``accuracy`` ``None`` (nothing trained it stand-alone; its supernet accuracy is
        ``oneshot_accuracy``)."""
        best = self.best
        if best is None and oneshot_report.fallback(self):
            return {"source": "oneshot", "trial": None, "accuracy": None, **oneshot_report.table(self)[0]}
        return best

    @property
    def best_spec(self) -> Any:
        """The best candidate's concrete :class:`~archforge.Spec` (:meth:`trained_spec`)."""
        best = self.ranking.best
        if best is None:
            raise SearchError(f"run '{self.name}' has no completed trial yet")
        return self.trained_spec(best.trial)

    def trained_spec(self, number: int) -> Any:
        """The concrete spec trial ``number`` trained, with the run's ``train.init`` written in when it set one,
        so that ``archforge build`` starts it as the search did."""
        from archforge.spec import Spec

        record = self.record(number)
        return self.with_init(Spec.from_dict(record.spec, file=f"<candidate {record.hash}>"))

    def with_init(self, spec: Any) -> Any:
        """``spec`` with the run's ``train.init`` written in when it set one (as the search built it)."""
        from archforge.spec import Spec

        init = self.settings.train.init
        return spec if init is None else Spec.from_dict({**spec.to_dict(), "init": init}, file=spec.file)

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return [row.model_dump() for row in self.ranking.pareto]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row.model_dump() for row in self.ranking.rows if row.status == "failed"]

    @property
    def rejected(self) -> list[TrialRecord]:
        """Trials refused before training (a reuse of a refusal not counted again)."""
        return [r for r in self.records if r.status == "rejected" and r.duplicate_of is None]

    @property
    def unreadable(self) -> list[TrialRecord]:
        """Trials whose stored attributes cannot be trusted, with the reason as their ``error``."""
        _ = self.ranking  # checks the specs of the best candidates too
        return [r for r in self.records if r.status == "unreadable"]

    def record(self, number: int) -> TrialRecord:
        return next(r for r in self.records if r.number == number)

    # -- one-shot (archforge.search.oneshot_report; RunData keeps the names tests and load_run's readers use) ----
    @property
    def oneshot_table(self) -> list[dict[str, Any]]:
        """The supernet's ranking joined with stand-alone training (:func:`~archforge.search.oneshot_report.table`)."""
        return oneshot_report.table(self)

    @property
    def oneshot_agreement(self) -> oneshot_report.OneShotAgreement | None:
        """The one-shot order against stand-alone accuracy (:func:`~archforge.search.oneshot_report.agreement`)."""
        return oneshot_report.agreement(self)

    @property
    def oneshot_notes(self) -> list[str]:
        """What to read the one-shot ranking with (:func:`~archforge.search.oneshot_report.notes`)."""
        return oneshot_report.notes(self)

    @property
    def oneshot_fallback(self) -> bool:
        """Whether the one-shot winner stands for the best (:func:`~archforge.search.oneshot_report.fallback`)."""
        return oneshot_report.fallback(self)

    @property
    def oneshot_summary(self) -> dict[str, Any] | None:
        """The one-shot phase as JSON, with its table, agreement and notes (:func:`~archforge.search.oneshot_report.summary`)."""
        return oneshot_report.summary(self)

    def oneshot_spec(self, rank: int = 1) -> Any:
        """The ``rank``-th one-shot candidate's spec, rebuilt and checked (:func:`~archforge.search.oneshot_report.spec`)."""
        return oneshot_report.spec(self, rank)

    @property
    def oneshot_weights(self) -> Path | None:
        """The one-shot winner's checkpoint in the run folder (:func:`~archforge.search.oneshot_report.weights`)."""
        return oneshot_report.weights(self)

    # -- compute --------------------------------------------------------------
    @property
    def worker_stats(self) -> list[WorkerStats]:
        """Each worker session's time accounting; entries that cannot be read are left out."""
        return read_worker_stats(self.study) if self.study is not None else []

    @property
    def compute_summary(self) -> ComputeSummary:
        """What the run cost and saved, with the workers' driver overhead."""
        summary = compute_summary(self.records, self.settings, self.proxy, self.oneshot)
        busy = sum(s.wall_s - s.wait_s for s in self.worker_stats)
        if busy > 0:
            summary.driver_overhead = max(0.0, sum(s.wall_s - s.wait_s - s.eval_s for s in self.worker_stats)) / busy
        return summary

    @property
    def compute(self) -> dict[str, Any]:
        """:attr:`compute_summary` as a dict."""
        return self.compute_summary.model_dump()

    # -- files ----------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        return write_csv(self, path)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        return write_json(self, path)


def settings_of(meta: RunMeta, name: str) -> SearchSettings:
    """The stored settings of study ``name`` as :class:`SearchSettings` (see :meth:`SearchSettings.from_stored`).

    Every objective is a built-in one or a plugin metric the run stored as measured, so a report
    needs no plugin installed.
    """
    try:
        settings = SearchSettings.from_stored(meta.settings)
    except ValidationError as exc:
        problem = first_error(exc)
    else:
        unknown = [o for o in settings.objectives if o not in OBJECTIVES and o not in meta.metrics]
        if not unknown:
            return settings
        problem = f"objectives: unknown objective '{unknown[0]}', neither built in nor a metric the run measured"
    raise SearchError(f"study '{name}' has settings archforge cannot read ({problem}); "
                      "report a copy of the store made before it was edited")


def _unreadable(record: TrialRecord, reason: str) -> TrialRecord:
    return TrialRecord(number=record.number, state=record.state, status="unreadable", error=reason,
                       started=record.started, finished=record.finished, retry_of=record.retry_of)


def _first_bad_spec(records: Sequence[TrialRecord]) -> tuple[int, str] | None:
    """The first of ``records`` whose stored spec does not validate, with the reason."""
    import warnings

    from archforge.errors import SpecError, SpecWarning
    from archforge.spec import Spec

    for record in records:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                Spec.from_dict(record.spec, file=f"<candidate {record.hash}>")
        except (SpecError, ValueError, TypeError, KeyError, RecursionError) as exc:
            text = exc.format() if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
            return record.number, f"its candidate spec does not validate: {text[:300]}"
    return None


def load_run(source: Any, study: str | None = None) -> RunData:
    """A run from a folder (``runs/<name>``), a ``study.db``, a storage URL, or an Optuna study."""
    from archforge.search.storage import load_run_study, storage_errors

    if hasattr(source, "get_trials"):
        return RunData.from_study(source)
    with storage_errors(str(source)):
        loaded = load_run_study(source, study)
        run_dir = None
        if "://" not in str(source):
            path = Path(source)
            run_dir = path if path.is_dir() else path.parent
        return RunData.from_study(loaded, run_dir)


# --------------------------------------------------------------------------- writing


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell (trials.csv, oneshot.csv): ``None`` empty, a float in full, a dict or list as sorted JSON."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def csv_columns(run: RunData) -> list[str]:
    """:meth:`TrialRecord.row` 's keys: its fields, ``metric.<name>`` for every plugin metric and
    ``decision.<name>`` for every decision of the run; then the ranking's (:data:`RANK_COLUMNS`, and with seeds
    :data:`CONFIDENCE_COLUMNS`)."""
    base = list(TrialRecord(number=0, state="FAIL", status="unreadable").row())
    names = list(dict.fromkeys(run.decision_names + sorted({k for r in run.records for k in r.decisions})))
    return base + [f"metric.{n}" for n in run.metric_names] + [f"decision.{n}" for n in names] + list(_ranking_columns(run))


def _ranking_columns(run: RunData) -> tuple[str, ...]:
    return RANK_COLUMNS + (CONFIDENCE_COLUMNS if any(row.n_seeds >= 2 for row in run.ranking.rows) else ())


def write_csv(run: RunData, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    columns = csv_columns(run)
    extra = _ranking_columns(run)
    ranked = {row.trial: row for row in run.ranking.rows}
    with atomic_output(path, overwrite=True) as temp, temp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for record in sorted(run.records, key=lambda r: r.number):
            row = record.row()
            if record.number in ranked:
                row.update({k: getattr(ranked[record.number], k) for k in extra})
            writer.writerow([csv_cell(row.get(k)) for k in columns])
    return path


def write_json(run: RunData, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    data = {
        "run": run.name, "space_file": run.meta.space_file, "dataset": run.meta.dataset, "objectives": run.objectives,
        "settings": run.meta.settings, "decisions": run.meta.decisions,
        "metrics": {name: info.model_dump(mode="json") for name, info in run.meta.metrics.items()}, "compute": run.compute,
        "proxy": run.proxy.model_dump(mode="json") if run.proxy is not None else None,
        "oneshot": oneshot_report.summary(run),
        "best": run.reported_best,
        "ranking": run.table,
        "notes": [note.model_dump() for note in run.ranking.notes],
        "effects": [effect.model_dump(mode="json") for effect in run.effects],
        "effect_notes": run.effect_notes,
        "rung_agreement": [dataclasses.asdict(row) for row in run.rung_agreement],
        "trials": [{**r.row(), "spec": r.spec, "seeds": [s.model_dump(mode="json") for s in r.seeds.values()]}
                   for r in sorted(run.records, key=lambda r: r.number)],
    }
    write_text(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n", overwrite=True)
    return path


def _accuracy_text(row: RankedRow) -> str:
    text = f"{row.accuracy:.4f}" if row.accuracy is not None else "?"
    if row.accuracy_std is not None and row.n_seeds > 1:
        text += f" ± {row.accuracy_std:.4f} over {row.n_seeds} seeds"
    if row.interval is not None:
        text += f", 95% {bounds_text(*row.interval)}"
    return text


def write_best_yaml(run: RunData, path: str | os.PathLike[str]) -> Path | None:
    """The best candidate's spec with a comment header saying where it comes from.

    Without a complete trial, when the one-shot winner stands for the best
    (:func:`~archforge.search.oneshot_report.fallback`): its spec, rebuilt from the stored space, under a header
    saying its accuracy is the supernet's (:func:`~archforge.search.oneshot_report.write_best_yaml`); else ``None``.
    """
    best = run.ranking.best
    if best is None:
        return oneshot_report.write_best_yaml(run, path) if oneshot_report.fallback(run) else None
    params = f"; params {best.params:,}" if best.params is not None else ""
    header = [
        f"# Best candidate of search run '{run.name}' ({run.meta.space_file}): {best.hash}, trial #{best.trial}",
        f"# validation accuracy {_accuracy_text(best)} on {run.meta.dataset} after {run.settings.epochs} epoch(s){params}",
        "# decisions: " + ", ".join(f"{k}={plots.value_text(v, 40)}" for k, v in best.decisions.items()),
        f"# trained with lr {_lr_text(run, best)}, init {run.settings.train.init or 'as the spec says'}",
    ]
    if best.metrics:
        header.insert(2, "# plugin metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in best.metrics.items() if v is not None))
    return write_text(path, "\n".join(yaml_comment(line) for line in header) + "\n" + run.best_spec.to_yaml(), overwrite=True)


def _lr_text(run: RunData, row: RankedRow) -> str:
    if run.settings.train.lr != "auto":
        return f"{run.settings.train.lr:g}"
    return f"{row.lr:.3g} (found by the range test, lr: auto)" if row.lr is not None else "auto"


def write_top_specs(run: RunData, folder: str | os.PathLike[str], top: int = TOP_SPECS) -> Path:
    """The concrete specs of the ``top`` ranked candidates as ``<rank>_<hash>.yaml`` (each builds with archforge build)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for row in run.ranking.ranked[:top]:
        text = run.trained_spec(row.trial).to_yaml()
        comment = yaml_comment(f"# rank {row.rank} of run '{run.name}', trial #{row.trial}, accuracy {_accuracy_text(row)}")
        write_text(folder / f"{row.rank:02d}_{row.hash}.yaml", comment + "\n" + text, overwrite=True)
    return folder


def yaml_comment(line: str, limit: int = 500) -> str:
    """A YAML comment line, whatever the store holds: a stored name with a line break must not add YAML."""
    line = one_line(line)
    return line if len(line) <= limit else line[:limit - 1] + "…"


def retrain_best(run: RunData, path: str | os.PathLike[str], *, data: Any = None) -> Path:
    """Train the best candidate again (its first seed, the run's settings) and save it with its spec as a checkpoint."""
    from archforge.builder import save_checkpoint
    from archforge.search import evaluate

    spec = run.best_spec
    record = run.record(run.ranking.best.trial)  # type: ignore[union-attr]
    config = run.settings.trial_config(seed=min(record.seeds, default=0))
    if data is None:
        from archforge.data import load_dataset

        try:
            data = load_dataset(run.meta.dataset, val_fraction=run.settings.val_fraction, limit=run.settings.limit)
        except (KeyError, ValueError, OSError) as exc:
            raise SearchError(f"cannot load dataset '{run.meta.dataset}' to retrain the best candidate: {exc}") from None
    model, _ = evaluate.train_model(spec, data, config)
    return save_checkpoint(model.eval(), path, overwrite=True)  # a report refreshes its folder


def write_report(run: RunData, out_dir: str | os.PathLike[str], *, weights: bool = False) -> dict[str, Path]:
    """Write the report files (see the module docstring) into ``out_dir``; returns their paths by kind.

    Kinds: ``csv``, ``json``, ``pareto``, ``placement``, and with a complete trial ``best`` and
    ``candidates`` (a folder); ``weights`` with ``weights=True``. A one-shot run adds ``oneshot``
    (``oneshot.csv``); when its one-shot winner stands for the best
    (:func:`~archforge.search.oneshot_report.fallback`), ``best`` is the winner's spec and ``weights``
    a copy of its checkpoint (nothing is retrained): both are checked first, so that a winner whose
    spec does not rebuild to its hash, or whose checkpoint is missing, is a :class:`SearchError`
    before any file is written.
    """
    if oneshot_report.fallback(run):  # no ranked best: the one-shot winner's spec and checkpoint, checked before writing
        oneshot_report.spec(run, 1)
        if weights:
            oneshot_report.weights_source(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": write_csv(run, out / "trials.csv"),
        "json": write_json(run, out / "trials.json"),
        "pareto": plots.plot_pareto(run.ranking.rows, out / "pareto.png", title=run.name),
        "placement": plots.plot_placement(plots.placement_matrix(run.records, run.meta.decisions), out / "placement.png", title=run.name),
    }
    if run.oneshot is not None:
        files["oneshot"] = oneshot_report.write_csv(run, out / "oneshot.csv")
    best = write_best_yaml(run, out / "best.yaml")
    if best is not None:
        files["best"] = best
        if run.ranking.best is not None:
            files["candidates"] = write_top_specs(run, out / "candidates")
            if weights:
                files["weights"] = retrain_best(run, out / "best.pt")
        elif weights:  # the one-shot winner (checked above): its inherited weights, as the supernet left them
            files["weights"] = oneshot_report.copy_weights(run, out / "best.pt")
    return files
