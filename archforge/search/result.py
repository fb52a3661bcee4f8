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

    A ``strategy: oneshot`` run also has ``oneshot`` (the stored
    :class:`~archforge.search.records.OneShotPhase`, else ``None``), ``oneshot_table`` (the
    supernet's ranking joined with the stand-alone results, see
    :func:`archforge.search.oneshot_report.table`), ``oneshot_agreement`` and
    ``oneshot_notes``. Its ``table`` holds the candidates trained stand-alone (the best
    ``retrain_top``), and ``best`` is the best of them. With none trained (``retrain_top: 0``, or
    none yet: :func:`~archforge.search.oneshot_report.fallback`), ``best`` falls back to
    the one-shot winner: its ``oneshot_table`` row with ``"source": "oneshot"``, ``trial`` and
    ``accuracy`` ``None`` (its accuracy with weights inherited from the supernet is
    ``oneshot_accuracy``, with no interval), and ``best_spec`` to its spec rebuilt from the stored
    space. When the candidates trained stand-alone all failed, ``best`` is ``None``: the one-shot
    winner does not stand in for a result that training refused.
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
        """The best row of ``table``; without one, for a one-shot run none of whose candidates was trained stand-alone,
        the one-shot winner (``"source": "oneshot"``; :attr:`~archforge.search.report.RunData.reported_best`)."""
        return self.run.reported_best

    @property
    def best_spec(self) -> Any:
        """The concrete spec of ``best`` (for the one-shot fallback, rebuilt from the stored space; its hash is checked)."""
        from archforge.search import oneshot_report

        if oneshot_report.fallback(self.run):  # no ranked best, nothing trained stand-alone
            return oneshot_report.spec(self.run, 1)
        return self.run.best_spec

    @property
    def oneshot(self) -> Any:
        """The one-shot phase (:class:`~archforge.search.records.OneShotPhase`) of a ``strategy: oneshot`` run, else ``None``."""
        return getattr(self.run, "oneshot", None)

    @property
    def oneshot_table(self) -> list[dict[str, Any]]:
        """The one-shot ranking, best first, with each retrained candidate's stand-alone result (empty without a phase)."""
        from archforge.search import oneshot_report

        return oneshot_report.table(self.run) if self.oneshot is not None else []

    @property
    def oneshot_agreement(self) -> Any:
        """Kendall's τ_b of the one-shot order against stand-alone accuracy (three retrained candidates or more), else ``None``."""
        from archforge.search import oneshot_report

        return oneshot_report.agreement(self.run) if self.oneshot is not None else None

    @property
    def oneshot_notes(self) -> list[str]:
        """What to read the one-shot ranking with (:func:`~archforge.search.oneshot_report.notes`), empty without a phase."""
        from archforge.search import oneshot_report

        return oneshot_report.notes(self.run) if self.oneshot is not None else []

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
        if best is not None and best.get("source") == "oneshot":
            text = f"{best['hash']} one-shot accuracy {best['oneshot_accuracy']:.4f} (inherited weights, not trained stand-alone)"
        elif best is not None and best.get("accuracy") is not None:
            text = f"{best['hash']} accuracy {best['accuracy']:.4f}"
        else:
            text = "none" if getattr(self.run, "oneshot", None) is not None and any(r.counted for r in self.run.records) else "none yet"
        return f"SearchResult({self.name!r}, {len(self.table)} candidates evaluated, best {text})"
