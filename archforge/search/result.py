"""What :func:`archforge.search` returns: the ranked run, its best candidate, and its files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archforge.errors import SearchError


class SearchResult:
    """The result of a search.

    ``table``: ranked rows (dicts), complete candidates first (``rank`` 1, 2, ...), then pruned,
    then failed ones; plugin metrics are each row's ``metrics`` (name → value); ``notes``: what the ranking cannot tell apart (ties broken by cost,
    candidates not separable over seeds). ``best``: the first row; ``best_spec``: its concrete
    :class:`~archforge.Spec`. ``trials``: every stored trial
    (:class:`~archforge.search.records.TrialRecord`). ``compute``: epochs run vs epochs full
    training would have run. The terminal table is ``archforge report RUN``.
    """

    def __init__(self, run: Any, ref: Any = None, study: Any = None):
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
    def ranking(self) -> Any:
        """The typed ranking (:class:`~archforge.search.ranking.Ranking`): rows, notes, ``best``, ``pareto``."""
        return self.run.ranking

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.run, "notes", []))

    @property
    def effects(self) -> list[Any]:
        """Each decision value's effect on accuracy, with its 95% interval (:func:`~archforge.search.effects.decision_effects`)."""
        return self.run.effects

    @property
    def rung_agreement(self) -> list[Any]:
        """How far each early epoch's ranking agrees with the final one (:func:`~archforge.search.fidelity.rung_agreement`)."""
        return self.run.rung_agreement

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
        from archforge.search.report import write_report

        if out_dir is None:
            if self.run_dir is None:
                raise SearchError("give report() an output folder: this run has no folder of its own")
            out_dir = Path(self.run_dir) / "report"
        return write_report(self.run, out_dir, weights=weights)

    def __repr__(self) -> str:
        best = self.best
        text = f"{best['hash']} accuracy {best['accuracy']:.4f}" if best and best.get("accuracy") is not None else "none yet"
        return f"SearchResult({self.name!r}, {len(self.table)} candidates evaluated, best {text})"
