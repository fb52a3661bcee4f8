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
                    (:attr:`RunData.oneshot_fallback`: ``retrain_top: 0``, or none trained yet),
                    the one-shot winner's, rebuilt from the stored space; none when the
                    candidates trained stand-alone all failed
``candidates/``     the concrete specs of the ten best, ``<rank>_<hash>.yaml``
``oneshot.csv``     ``strategy: oneshot`` only: the one-shot ranking joined with the stand-alone
                    results of the candidates retrained (:data:`ONESHOT_COLUMNS`)
``best.pt``         with ``weights=True``: the best candidate retrained, as a checkpoint; for a
                    one-shot run whose best is the one-shot winner, a copy of its checkpoint
                    (its inherited weights, ``oneshot/best.pt`` in the run folder)
==================  ================================================================

A one-shot run (:mod:`archforge.search.oneshot`) is read with its phase
(:attr:`RunData.oneshot`): :attr:`RunData.oneshot_table` lists the supernet's ranking, best
first, each candidate with the accuracy it reached with inherited weights and, when it was
retrained stand-alone (matched by hash with the ordinary ranking), its stand-alone result;
:attr:`RunData.oneshot_agreement` is Kendall's τ_b between the one-shot order and the
stand-alone accuracy of the retrained candidates (three or more), and
:attr:`RunData.oneshot_notes` says what the one-shot numbers cannot tell: they are one
supernet's, trained once with one seed, and carry no interval.

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
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from archforge.errors import SearchError, SpecError, one_line
from archforge.files import atomic_output, write_text
from archforge.search import plots
from archforge.search.compute import ComputeSummary, compute_summary
from archforge.search.effects import DecisionEffect, decision_effects, effect_notes
from archforge.search.fidelity import RungAgreement, kendall_tau_b, rung_agreement
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
#: Columns of :attr:`RunData.oneshot_table` rows (and of ``oneshot.csv``, which adds ``decision.<name>`` columns):
#: the one-shot place and what the supernet measured, under trials.csv's names for them (``oneshot_rank``,
#: ``oneshot_accuracy``), then the stand-alone result of a retrained candidate, under the ranking's names prefixed
#: with ``standalone_``.
ONESHOT_COLUMNS = ("oneshot_rank", "hash", "oneshot_accuracy", "params", "flops", "standalone_rank", "standalone_trial",
                   "standalone_status", "standalone_accuracy", "standalone_accuracy_std", "standalone_n_seeds",
                   "standalone_accuracy_low", "standalone_accuracy_high", "standalone_most_accurate",
                   "standalone_separable_from_best")
#: Characters of a stored path or folder an error message quotes.
PATH_TEXT = 200
#: Retrained candidates with a stand-alone accuracy that :attr:`RunData.oneshot_agreement` needs.
AGREEMENT_MIN = 3


@dataclass(frozen=True)
class OneShotAgreement:
    """How far the one-shot order agrees with stand-alone training, over the candidates retrained with a result."""

    candidates: int
    pairs: int
    tau: float | None  # Kendall's tau-b (one-shot order vs stand-alone mean accuracy); None when every stand-alone accuracy ties


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
        if best is None and self.oneshot_fallback:
            return {"source": "oneshot", "trial": None, "accuracy": None, **self.oneshot_table[0]}
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
        return self._with_init(Spec.from_dict(record.spec, file=f"<candidate {record.hash}>"))

    def _with_init(self, spec: Any) -> Any:
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

    # -- one-shot -------------------------------------------------------------
    @property
    def oneshot_table(self) -> list[dict[str, Any]]:
        """The one-shot ranking joined with stand-alone training, best first; empty without a one-shot phase.

        One dict per candidate the supernet ranked, keys :data:`ONESHOT_COLUMNS` and ``decisions``:
        its ``oneshot_rank``, ``oneshot_accuracy`` (with the supernet's inherited weights: one
        supernet's number, no interval), ``params`` and ``flops``; then, for a candidate with a
        stand-alone trial (matched by hash against :attr:`table`'s rows, or by its one-shot place for
        a trial still queued), that trial's ``standalone_status`` and, as :attr:`table` has them
        (their names prefixed with ``standalone_``), its ``standalone_rank``, ``standalone_trial``,
        ``standalone_accuracy`` (mean over seeds), ``standalone_accuracy_std``,
        ``standalone_n_seeds``, ``standalone_accuracy_low`` / ``standalone_accuracy_high`` (its 95%
        interval) and its ``standalone_most_accurate`` / ``standalone_separable_from_best`` marks;
        ``None`` for a candidate never trained stand-alone.
        """
        if self.oneshot is None:
            return []
        ranked: dict[str, RankedRow] = {}
        for row in self.ranking.rows:
            if row.hash is not None:
                ranked.setdefault(row.hash, row)
        others: dict[Any, TrialRecord] = {}  # the latest trial of a candidate that is not in the ranking (queued, running, ...)
        for r in sorted(self.records, key=lambda r: r.number):
            if r.status != "unreadable":
                for key in (r.hash, ("rank", r.oneshot_rank)):
                    if key is not None and key != ("rank", None):
                        others[key] = r
        table = []
        for place, path in enumerate(self.oneshot.ranking, start=1):
            row: dict[str, Any] = {"oneshot_rank": place, "hash": path.hash, "oneshot_accuracy": path.accuracy,
                                   "params": path.params, "flops": path.flops, **dict.fromkeys(ONESHOT_COLUMNS[5:]),
                                   "decisions": dict(path.decisions)}
            done = ranked.get(path.hash)
            if done is not None:
                row.update({f"standalone_{key}": getattr(done, key) for key in _STANDALONE_KEYS}, standalone_trial=done.trial,
                           standalone_status=done.status)
            else:
                other = others.get(path.hash) or others.get(("rank", place))
                if other is not None:
                    row.update(standalone_trial=other.number, standalone_status=other.status)
            table.append(row)
        return table

    @property
    def oneshot_agreement(self) -> OneShotAgreement | None:
        """Kendall's τ_b (:func:`~archforge.search.fidelity.kendall_tau_b`) between the one-shot order (its ranks,
        which break ties of inherited accuracy by fewer params) and the stand-alone mean accuracy, over the
        candidates retrained to completion; ``None`` with fewer than :data:`AGREEMENT_MIN` of them."""
        done = _retrained(self.oneshot_table)
        if len(done) < AGREEMENT_MIN:
            return None
        tau, pairs = kendall_tau_b([-row["oneshot_rank"] for row in done], [row["standalone_accuracy"] for row in done])
        return OneShotAgreement(candidates=len(done), pairs=pairs, tau=tau)

    @property
    def oneshot_notes(self) -> list[str]:
        """What to read the one-shot ranking with, as sentences: where its numbers come from, whether the stand-alone
        best is the one-shot winner, what is still missing for an agreement."""
        phase = self.oneshot
        if phase is None:
            return []
        notes = [f"the one-shot accuracies are one supernet's (trained once, seed {phase.seed}, {phase.epochs} epoch(s), "
                 f"{phase.sampling} sampling), each path evaluated with its inherited weights after re-estimating BatchNorm "
                 f"on {phase.calibration_batches} batches: an order to choose what to train, with no interval"]
        if phase.sampled:
            notes.append(f"the supernet's {phase.paths} candidates are a seeded sample of a larger space (oneshot.paths)")
        table = self.oneshot_table
        done = _retrained(table)
        ties = _winner_ties(phase)
        if ties:
            notes.append(ties)
        top = self.settings.oneshot.retrain_top
        if self.oneshot_fallback:
            if top == 0:
                why = "no candidate was trained stand-alone (oneshot.retrain_top 0)"
            else:
                unreadable = sum(r.status == "unreadable" for r in self.records)
                why = f"no candidate has a stand-alone result yet (oneshot.retrain_top {top}" + (
                    f"; {unreadable} trial(s) unreadable, see the warnings)" if unreadable else ")")
            notes.append(f"{why}: the one-shot winner stands for the result, with its inherited weights; --retrain-top K "
                         "trains the best K with the search's seeds and epochs")
        elif self.ranking.best is None:
            notes.append(f"none of the candidates queued for stand-alone training completed{self.oneshot_status_text}: the run "
                         "has no best, and the one-shot winner's accuracy with inherited weights does not stand in for one")
        elif len(done) >= 2 and table:
            best = next((row for row in done if row["standalone_most_accurate"]), None) or max(
                done, key=lambda row: row["standalone_accuracy"])
            winner = table[0]
            if best["oneshot_rank"] == 1:
                notes.append(f"the one-shot winner {winner['hash']} is also the most accurate of the {len(done)} trained stand-alone")
            else:
                text = (f"trained stand-alone, the most accurate of the {len(done)} retrained is one-shot #{best['oneshot_rank']} "
                        f"{best['hash']} ({best['standalone_accuracy']:.4f}), not the one-shot winner {winner['hash']}")
                if winner["standalone_status"] == "complete" and winner["standalone_accuracy"] is not None:
                    text += f" ({winner['standalone_accuracy']:.4f}"
                    text += {True: ", separably less accurate at 95%)", False: ", not separable from it at 95%)"}.get(
                        winner["standalone_separable_from_best"], ")")
                elif winner["standalone_status"] is not None:
                    text += f" ({winner['standalone_status']})"
                notes.append(text)
        if 0 < len(done) < AGREEMENT_MIN:
            notes.append(f"{len(done)} candidate(s) trained stand-alone to completion: how far the one-shot order agrees with "
                         f"stand-alone training needs {AGREEMENT_MIN} or more (--retrain-top)")
        return notes

    @property
    def oneshot_status_text(self) -> str:
        """`` (1 failed, 1 waiting)``: how many candidates of :attr:`oneshot_table` have each stand-alone status
        (in one-shot order of first appearance); empty when none has one."""
        statuses = Counter(row["standalone_status"] for row in self.oneshot_table if row["standalone_status"] is not None)
        return f" ({', '.join(f'{n} {status}' for status, n in statuses.items())})" if statuses else ""

    @property
    def oneshot_fallback(self) -> bool:
        """Whether the one-shot winner stands for the run's best: a one-shot run with no ranked best and no trial the
        phase queued counted yet (``retrain_top: 0``, or none trained so far). Once one was trained, the run's best is
        a stand-alone result or nothing: candidates that all failed leave no best."""
        if self.oneshot is None or self.ranking.best is not None:
            return False
        return not any(r.oneshot_rank is not None and r.counted for r in self.records)

    @property
    def oneshot_summary(self) -> dict[str, Any] | None:
        """The stored phase (:class:`~archforge.search.records.OneShotPhase`) as JSON, with ``table`` (:attr:`oneshot_table`),
        ``agreement`` (:attr:`oneshot_agreement`) and ``notes``; ``None`` without a one-shot phase. Its ``retrain_top``
        is the run's setting now (a resumed run may train more than the phase first queued)."""
        if self.oneshot is None:
            return None
        agreement = self.oneshot_agreement
        return {**self.oneshot.model_dump(mode="json"), "retrain_top": self.settings.oneshot.retrain_top, "table": self.oneshot_table,
                "agreement": dataclasses.asdict(agreement) if agreement is not None else None, "notes": self.oneshot_notes}

    def oneshot_spec(self, rank: int = 1) -> Any:
        """The concrete :class:`~archforge.Spec` of the one-shot ranking's ``rank``-th candidate (1: the winner).

        The phase stores decisions and hash only: the spec is rebuilt from the space the run stored,
        with the run's params, and must have the stored hash (a :class:`SearchError` otherwise); the
        run's ``train.init`` is written in as :meth:`trained_spec` does.
        """
        import warnings

        from archforge.errors import SpecWarning
        from archforge.search.space import parse_space

        phase = self.oneshot
        if phase is None or not 1 <= rank <= len(phase.ranking):
            raise SearchError(f"run '{self.name}' has no one-shot candidate ranked {rank}")
        path = phase.ranking[rank - 1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SpecWarning)
                space = parse_space(self.meta.space, self.meta.space_file).with_params(self.settings.params)
                candidate = space.concretize(path.decisions)
        except (SpecError, ValueError, TypeError, KeyError, RecursionError) as exc:
            text = exc.format() if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
            raise SearchError(one_line(f"run '{self.name}': the one-shot candidate {path.hash} cannot be rebuilt from the "
                                       f"stored space: {text[:300]}")) from None
        if candidate.hash != path.hash:
            raise SearchError(f"run '{self.name}': the decisions of one-shot candidate {path.hash} rebuild a spec of hash "
                              f"{candidate.hash} from the stored space; report a copy of the store made before it was edited")
        return self._with_init(candidate.spec)

    @property
    def oneshot_weights(self) -> Path | None:
        """The one-shot winner's checkpoint in the run folder (inherited weights), ``None`` when it was not saved or is gone."""
        phase = self.oneshot
        if phase is None or phase.weights is None or self.run_dir is None:
            return None
        try:
            root = Path(self.run_dir).resolve()
            path = (root / phase.weights).resolve()
            if root not in path.parents or not path.is_file():  # a stored path may only name a file inside the run folder
                return None
        except (OSError, ValueError, RuntimeError):  # unreadable, a NUL byte, a symlink loop (Python < 3.13): missing
            return None
        return path

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


#: The ranking's keys a one-shot table row copies, as ``standalone_<key>``, from a retrained candidate's ranked row.
_STANDALONE_KEYS = ("rank", "accuracy", "accuracy_std", "n_seeds", "accuracy_low", "accuracy_high", "most_accurate",
                    "separable_from_best")


def _winner_ties(phase: OneShotPhase) -> str | None:
    """A note when other candidates share the winner's one-shot accuracy: the phase broke the tie by parameters
    (then by the order of the paths), not by accuracy."""
    winner = phase.ranking[0]
    tied = [p for p in phase.ranking[1:] if p.accuracy == winner.accuracy]
    if not tied:
        return None
    by = "fewer parameters decided" if all(p.params != winner.params for p in tied) else \
        "fewer parameters, then the order of the paths, decided"
    return (f"{len(tied)} candidate{'s tie' if len(tied) > 1 else ' ties'} with the winner's one-shot accuracy "
            f"({winner.accuracy:.4f}); {by}")


def _retrained(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a one-shot table trained stand-alone to completion, with an accuracy."""
    return [row for row in table if row["standalone_status"] == "complete" and row["standalone_accuracy"] is not None]


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


def _cell(value: Any) -> Any:
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
            writer.writerow([_cell(row.get(k)) for k in columns])
    return path


def write_json(run: RunData, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    data = {
        "run": run.name, "space_file": run.meta.space_file, "dataset": run.meta.dataset, "objectives": run.objectives,
        "settings": run.meta.settings, "decisions": run.meta.decisions,
        "metrics": {name: info.model_dump(mode="json") for name, info in run.meta.metrics.items()}, "compute": run.compute,
        "proxy": run.proxy.model_dump(mode="json") if run.proxy is not None else None,
        "oneshot": run.oneshot_summary,
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


def oneshot_columns(run: RunData) -> list[str]:
    """The columns of ``oneshot.csv``: :data:`ONESHOT_COLUMNS`, then ``decision.<name>`` for every decision of the run."""
    names = list(dict.fromkeys(run.decision_names + [k for row in run.oneshot_table for k in row["decisions"]]))
    return list(ONESHOT_COLUMNS) + [f"decision.{n}" for n in names]


def write_oneshot_csv(run: RunData, path: str | os.PathLike[str]) -> Path:
    """The one-shot table (:attr:`RunData.oneshot_table`), one row per candidate the supernet ranked, best first."""
    path = Path(path)
    columns = oneshot_columns(run)
    with atomic_output(path, overwrite=True) as temp, temp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in run.oneshot_table:
            cells = {**row, **{f"decision.{k}": v for k, v in row["decisions"].items()}}
            writer.writerow([_cell(cells.get(k)) for k in columns])
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

    Without a complete trial, when the one-shot winner stands for the best (:attr:`RunData.oneshot_fallback`): its
    spec, rebuilt from the stored space (:meth:`RunData.oneshot_spec`), under a header saying its accuracy is the
    supernet's; else ``None``.
    """
    best = run.ranking.best
    if best is None:
        return _write_oneshot_best_yaml(run, path, run.oneshot_spec(1)) if run.oneshot_fallback else None
    params = f"; params {best.params:,}" if best.params is not None else ""
    header = [
        f"# Best candidate of search run '{run.name}' ({run.meta.space_file}): {best.hash}, trial #{best.trial}",
        f"# validation accuracy {_accuracy_text(best)} on {run.meta.dataset} after {run.settings.epochs} epoch(s){params}",
        "# decisions: " + ", ".join(f"{k}={plots.value_text(v, 40)}" for k, v in best.decisions.items()),
        f"# trained with lr {_lr_text(run, best)}, init {run.settings.train.init or 'as the spec says'}",
    ]
    if best.metrics:
        header.insert(2, "# plugin metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in best.metrics.items() if v is not None))
    return write_text(path, "\n".join(_comment(line) for line in header) + "\n" + run.best_spec.to_yaml(), overwrite=True)


def _write_oneshot_best_yaml(run: RunData, path: str | os.PathLike[str], spec: Any) -> Path:
    phase = run.oneshot
    assert phase is not None
    winner = phase.ranking[0]
    header = [
        f"# One-shot winner of search run '{run.name}' ({run.meta.space_file}): {winner.hash}, ranked 1 of {phase.paths} "
        "candidates by one weight-sharing supernet",
        f"# validation accuracy {winner.accuracy:.4f} on {run.meta.dataset} with weights inherited from the supernet "
        f"({phase.epochs} epoch(s), {phase.sampling} sampling, seed {phase.seed}; BatchNorm re-estimated on "
        f"{phase.calibration_batches} batches); params {winner.params:,}",
        "# NOT trained stand-alone: one supernet's number, no interval (--retrain-top K trains the best K stand-alone)",
        "# decisions: " + ", ".join(f"{k}={plots.value_text(v, 40)}" for k, v in winner.decisions.items()),
        f"# init {run.settings.train.init or 'as the spec says'}"
        + (f"; its inherited weights: {phase.weights} in the run folder" if phase.weights else ""),
    ]
    return write_text(path, "\n".join(_comment(line) for line in header) + "\n" + spec.to_yaml(), overwrite=True)


def copy_oneshot_weights(run: RunData, path: str | os.PathLike[str]) -> Path:
    """Copy the one-shot winner's checkpoint (its inherited weights, :attr:`RunData.oneshot_weights`) to ``path``."""
    import shutil

    source = _oneshot_weights_source(run)
    with atomic_output(path, overwrite=True) as temp:
        shutil.copyfile(source, temp)
    return Path(path)


def _oneshot_weights_source(run: RunData) -> Path:
    """:attr:`RunData.oneshot_weights`; missing, a one-line :class:`SearchError` quoting at most :data:`PATH_TEXT` characters
    of the stored path and of the run folder."""
    source = run.oneshot_weights
    if source is not None:
        return source
    phase = run.oneshot
    if phase is not None and phase.weights and run.run_dir is not None:
        where = f"'{_cut(phase.weights)}' in {_cut(str(run.run_dir))}"
    else:
        where = "none was saved" if run.run_dir is not None else "the run has no folder"
    raise SearchError(one_line(f"run '{_cut(run.name)}' has no candidate trained stand-alone and its one-shot winner's checkpoint "
                               f"is missing ({where}): train the best stand-alone with --retrain-top K, then report with --weights"))


def _cut(text: str, limit: int = PATH_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
        comment = _comment(f"# rank {row.rank} of run '{run.name}', trial #{row.trial}, accuracy {_accuracy_text(row)}")
        write_text(folder / f"{row.rank:02d}_{row.hash}.yaml", comment + "\n" + text, overwrite=True)
    return folder


def _comment(line: str, limit: int = 500) -> str:
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
    (``oneshot.csv``); when its one-shot winner stands for the best (:attr:`RunData.oneshot_fallback`),
    ``best`` is the winner's spec and ``weights`` a copy of its checkpoint (nothing is retrained):
    both are checked first, so that a winner whose spec does not rebuild to its hash, or whose
    checkpoint is missing, is a :class:`SearchError` before any file is written.
    """
    if run.oneshot_fallback:  # no ranked best: the one-shot winner's spec and checkpoint, checked before writing
        run.oneshot_spec(1)
        if weights:
            _oneshot_weights_source(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": write_csv(run, out / "trials.csv"),
        "json": write_json(run, out / "trials.json"),
        "pareto": plots.plot_pareto(run.ranking.rows, out / "pareto.png", title=run.name),
        "placement": plots.plot_placement(plots.placement_matrix(run.records, run.meta.decisions), out / "placement.png", title=run.name),
    }
    if run.oneshot is not None:
        files["oneshot"] = write_oneshot_csv(run, out / "oneshot.csv")
    best = write_best_yaml(run, out / "best.yaml")
    if best is not None:
        files["best"] = best
        if run.ranking.best is not None:
            files["candidates"] = write_top_specs(run, out / "candidates")
            if weights:
                files["weights"] = retrain_best(run, out / "best.pt")
        elif weights:  # the one-shot winner (checked above): its inherited weights, as the supernet left them
            files["weights"] = copy_oneshot_weights(run, out / "best.pt")
    return files
