"""Architecture search over spaces written in the spec language.

::

    from archforge.search import search, load_space

    space = load_space("specs/search/placement_mnist.yaml")   # choice points + a search: section
    result = search(space)                                      # the space's defaults: dataset, strategy, budget...
    print(result.best["accuracy"], result.best["decisions"])
    result.best_spec.to_yaml()                                  # a plain spec: archforge.build(result.best_spec)
    result.report("runs/placement_mnist/report")                # CSV, JSON, plots, best.yaml

Every keyword of :func:`search` left at ``None`` takes its value from the space's
``search:`` section (see :class:`SearchSettings`), then from the defaults. Running the
same search again resumes it from its storage (``runs/<name>/study.db``): completed
trials are kept, trials of a killed worker are retried. The command line is the same
thing: ``archforge space``, ``archforge search``, ``archforge report``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from archforge.search.report import RunData, load_run, print_summary, write_report
from archforge.search.space import (
    Candidate, Constraints, Decision, SearchSettings, Space, candidate_hash, load_space, parse_space,
)
from archforge.search.storage import SearchError, StorageRef


def describe_space(space: Space | str | os.PathLike[str], *, samples: int = 2, check: int = 32, seed: int = 0) -> dict[str, Any]:
    """What ``archforge space`` shows, as data: candidates, decisions (with locations), constraint checks, samples."""
    from archforge.search.commands import space_overview

    return space_overview(load_space(space), samples=samples, check=check, seed=seed)


class SearchResult:
    """What :func:`search` returns: the run's ranking, its best candidate and files.

    ``table``: ranked rows (dicts), complete candidates first (``rank`` 1, 2, ...), then
    pruned, then failed ones. ``best``: the first row. ``best_spec``: its concrete
    :class:`~archforge.Spec`. ``trials``: every stored trial (:class:`TrialRecord`).
    ``compute``: epochs run vs epochs full training would have run.
    """

    def __init__(self, run: RunData, ref: StorageRef | None = None, study: Any = None):
        self.run = run
        self.ref = ref
        self.study = study if study is not None else run.study

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def table(self) -> list[dict[str, Any]]:
        return self.run.table

    @property
    def best(self) -> dict[str, Any] | None:
        return self.run.best

    @property
    def best_spec(self) -> Any:
        return self.run.best_spec

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return self.run.pareto

    @property
    def failed(self) -> list[dict[str, Any]]:
        return self.run.failed

    @property
    def trials(self) -> list[Any]:
        return self.run.records

    @property
    def compute(self) -> dict[str, Any]:
        return self.run.compute

    @property
    def storage(self) -> str | None:
        return self.ref.url if self.ref is not None else None

    @property
    def run_dir(self) -> Path | None:
        return self.ref.run_dir if self.ref is not None else self.run.run_dir

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        return self.run.to_csv(path)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        return self.run.to_json(path)

    def report(self, out_dir: str | os.PathLike[str] | None = None, *, weights: bool = False) -> dict[str, Path]:
        """Write CSV, JSON, plots and best.yaml (and best.pt with ``weights``) into ``out_dir`` (default: <run>/report)."""
        if out_dir is None:
            if self.run_dir is None:
                raise SearchError("give report() an output folder: this run has no folder of its own")
            out_dir = Path(self.run_dir) / "report"
        return write_report(self.run, out_dir, weights=weights)

    def print(self, console: Any = None, *, top: int | None = 10) -> None:
        print_summary(self.run, console, top=top)

    def __repr__(self) -> str:
        best = self.best
        text = f"{best['hash']} accuracy {best['accuracy']:.4f}" if best and best["accuracy"] is not None else "none yet"
        return f"SearchResult({self.name!r}, {len(self.table)} candidates evaluated, best {text})"


def search(
    space: Space | str | os.PathLike[str],
    dataset: Any = None,
    strategy: str | None = None,
    budget: int | None = None,
    storage: Any = None,
    *,
    name: str | None = None,
    epochs: int | None = None,
    seeds: int | None = None,
    objectives: Sequence[str] | str | None = None,
    constraints: Mapping[str, float] | Constraints | None = None,
    pruner: str | Mapping[str, Any] | None = None,
    proxy: str | Mapping[str, Any] | None = None,
    workers: int | None = None,
    train: Any = None,
    evaluator: Any = None,
    limit: int | None = None,
    seed: int | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    executor: str = "local",
    progress: bool | str | None = None,
    console: Any = None,
) -> SearchResult:
    """Search ``space`` (a :class:`Space` or the path of one) and return the ranked result.

    Args:
        dataset: a dataset name for :func:`archforge.data.load_dataset` (``mnist``, ``digits``, ...) or a
            ``DataSplit``; default: the space's ``search.dataset``.
        strategy: ``grid``, ``random``, ``evolution``, ``tpe`` or ``nsga2``.
        budget: candidates to evaluate (default: the whole grid; 20 for the other strategies). Reused
            results and candidates rejected before training do not count.
        storage: ``None`` (``<runs_dir>/<name>/study.db``), a ``.db`` path, any Optuna storage URL
            (``postgresql://...`` for workers on many machines), ``"memory"`` or an Optuna storage.
        epochs, seeds: training epochs per candidate, and seeds per candidate (mean ± std).
        objectives: e.g. ``["accuracy", "params"]``; accuracy is maximised, costs minimised.
        constraints: ``{"max_params": 2e5, "max_flops": 5e7}``, checked before training.
        pruner: ``"successive_halving"``, ``"hyperband"``, ``"median"`` or a mapping with ``kind``,
            ``min_resource``, ``reduction_factor``: multi-fidelity over epochs.
        proxy: ``"synflow"`` or ``"naswot"``, or ``{"score": ..., "sample": 64, "keep": 0.25}``: score
            candidates without training and train only the best fraction.
        workers: local worker processes sharing the study (each with cores/N torch threads).
        train: a ``TrainConfig`` or a mapping of its fields (batch_size, lr, ...); its ``epochs`` is
            used when ``epochs`` is not given.
        evaluator: ``evaluator(spec, data, config, on_epoch=...) -> EvalResult``; a callable or
            ``"module:function"``; default :func:`archforge.search.evaluate.evaluate`.
        executor: ``local`` processes, or ``ray`` (needs ``ray`` installed) for ``workers``.
        progress: rich progress bars on stderr (default: when stderr is a terminal); ``"lines"``: one line
            per finished trial; ``False``: silent.
    """
    from archforge.search.runner import run_search

    space = load_space(space)
    overrides: dict[str, Any] = {
        "strategy": strategy, "budget": budget, "seeds": seeds, "workers": workers, "limit": limit, "seed": seed, "name": name,
        "pruner": pruner, "proxy": proxy,
    }
    if epochs is None and train is not None and not isinstance(train, Mapping) and dataclasses.is_dataclass(train):
        epochs = train.epochs
    overrides["epochs"] = epochs
    if isinstance(dataset, str):
        overrides["dataset"] = dataset
    if objectives is not None:
        overrides["objectives"] = [o.strip() for o in objectives.split(",")] if isinstance(objectives, str) else list(objectives)
    if constraints is not None:
        overrides["constraints"] = constraints.model_dump() if isinstance(constraints, Constraints) else dict(constraints)
    settings = merge_settings(space.settings, overrides)
    study, ref = run_search(
        space, settings, storage=storage, runs_dir=runs_dir, evaluator=evaluator,
        dataset=dataset if dataset is not None and not isinstance(dataset, str) else settings.dataset,
        train=train, progress=progress, executor=executor, console=console,
    )
    return SearchResult(RunData.from_study(study, ref.run_dir), ref, study)


def merge_settings(base: SearchSettings, overrides: Mapping[str, Any]) -> SearchSettings:
    """``base`` with every override that is not ``None`` applied (validated like the YAML section)."""
    from pydantic import ValidationError

    data = base.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("pruner", "proxy") and value in ("none", "off"):
            data[key] = None
            continue
        data[key] = value
    try:
        return SearchSettings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise SearchError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None


__all__ = [
    "Candidate", "Constraints", "Decision", "RunData", "SearchError", "SearchResult", "SearchSettings", "Space",
    "candidate_hash", "describe_space", "load_run", "load_space", "merge_settings", "parse_space", "print_summary", "search", "write_report",
]
