"""The one-shot part of a search report: what one weight-sharing supernet ranked, against what stand-alone training found.

A ``strategy: oneshot`` run (:mod:`archforge.search.oneshot`) stores one phase
(:class:`~archforge.search.records.OneShotPhase`): every candidate ranked by the accuracy it
reaches with weights inherited from the supernet, best first; the best ``retrain_top`` of them
are then trained stand-alone as ordinary trials. This module reads that phase beside the
run's ordinary ranking (a :class:`~archforge.search.report.RunData`, passed in; every function
takes one):

- :func:`table` joins the two: one row per candidate the supernet ranked (:data:`ONESHOT_COLUMNS`),
  with, for a candidate retrained (matched by hash), its stand-alone result;
- :func:`agreement` is Kendall's τ_b between the one-shot order and the stand-alone accuracy
  of the retrained candidates (:data:`AGREEMENT_MIN` or more);
- :func:`notes` says what the one-shot numbers cannot tell: they are one supernet's, trained
  once with one seed, and carry no interval;
- :func:`fallback` says when the one-shot winner stands in for the run's best (nothing trained
  stand-alone yet); then :func:`spec` rebuilds its spec from the stored space (checked against
  its stored hash) and :func:`weights` finds its checkpoint in the run folder;
- the report files: ``oneshot.csv`` (:func:`write_csv`) and, when the winner stands in,
  ``best.yaml`` (:func:`write_best_yaml`) and ``best.pt`` (:func:`copy_weights`), written by
  :func:`archforge.search.report.write_report`; :func:`summary` is the ``oneshot`` entry of
  ``trials.json`` and of ``archforge report --json``.

``RunData``'s ``oneshot_<name>`` attributes are these functions.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from archforge.errors import SearchError, SpecError, one_line
from archforge.files import atomic_output, write_text
from archforge.search import plots
from archforge.search.fidelity import kendall_tau_b
from archforge.search.ranking import RankedRow
from archforge.search.records import OneShotPhase, TrialRecord

if TYPE_CHECKING:  # report imports this module: a RunData is passed in, its module is not imported here
    from archforge.search.report import RunData

#: Columns of :func:`table` rows (and of ``oneshot.csv``, which adds ``decision.<name>`` columns):
#: the one-shot place and what the supernet measured, under trials.csv's names for them (``oneshot_rank``,
#: ``oneshot_accuracy``), then the stand-alone result of a retrained candidate, under the ranking's names prefixed
#: with ``standalone_``.
ONESHOT_COLUMNS = ("oneshot_rank", "hash", "oneshot_accuracy", "params", "flops", "standalone_rank", "standalone_trial",
                   "standalone_status", "standalone_accuracy", "standalone_accuracy_std", "standalone_n_seeds",
                   "standalone_accuracy_low", "standalone_accuracy_high", "standalone_most_accurate",
                   "standalone_separable_from_best")
#: Characters of a stored path or folder an error message quotes.
PATH_TEXT = 200
#: Retrained candidates with a stand-alone accuracy that :func:`agreement` needs.
AGREEMENT_MIN = 3
#: The ranking's keys a one-shot table row copies, as ``standalone_<key>``, from a retrained candidate's ranked row.
_STANDALONE_KEYS = ("rank", "accuracy", "accuracy_std", "n_seeds", "accuracy_low", "accuracy_high", "most_accurate",
                    "separable_from_best")


@dataclass(frozen=True)
class OneShotAgreement:
    """How far the one-shot order agrees with stand-alone training, over the candidates retrained with a result."""

    candidates: int
    pairs: int
    tau: float | None  # Kendall's tau-b (one-shot order vs stand-alone mean accuracy); None when every stand-alone accuracy ties


# --------------------------------------------------------------------------- reading


def table(run: RunData) -> list[dict[str, Any]]:
    """The one-shot ranking joined with stand-alone training, best first; empty without a one-shot phase.

    One dict per candidate the supernet ranked, keys :data:`ONESHOT_COLUMNS` and ``decisions``:
    its ``oneshot_rank``, ``oneshot_accuracy`` (with the supernet's inherited weights: one
    supernet's number, no interval), ``params`` and ``flops``; then, for a candidate with a
    stand-alone trial (matched by hash against ``run.table``'s rows, or by its one-shot place for
    a trial still queued), that trial's ``standalone_status`` and, as ``run.table`` has them
    (their names prefixed with ``standalone_``), its ``standalone_rank``, ``standalone_trial``,
    ``standalone_accuracy`` (mean over seeds), ``standalone_accuracy_std``,
    ``standalone_n_seeds``, ``standalone_accuracy_low`` / ``standalone_accuracy_high`` (its 95%
    interval) and its ``standalone_most_accurate`` / ``standalone_separable_from_best`` marks;
    ``None`` for a candidate never trained stand-alone.
    """
    if run.oneshot is None:
        return []
    ranked: dict[str, RankedRow] = {}
    for row in run.ranking.rows:
        if row.hash is not None:
            ranked.setdefault(row.hash, row)
    others: dict[Any, TrialRecord] = {}  # the latest trial of a candidate that is not in the ranking (queued, running, ...)
    for r in sorted(run.records, key=lambda r: r.number):
        if r.status != "unreadable":
            for key in (r.hash, ("rank", r.oneshot_rank)):
                if key is not None and key != ("rank", None):
                    others[key] = r
    rows = []
    for place, path in enumerate(run.oneshot.ranking, start=1):
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
        rows.append(row)
    return rows


def agreement(run: RunData) -> OneShotAgreement | None:
    """Kendall's τ_b (:func:`~archforge.search.fidelity.kendall_tau_b`) between the one-shot order (its ranks,
    which break ties of inherited accuracy by fewer params) and the stand-alone mean accuracy, over the
    candidates retrained to completion; ``None`` with fewer than :data:`AGREEMENT_MIN` of them."""
    done = _retrained(table(run))
    if len(done) < AGREEMENT_MIN:
        return None
    tau, pairs = kendall_tau_b([-row["oneshot_rank"] for row in done], [row["standalone_accuracy"] for row in done])
    return OneShotAgreement(candidates=len(done), pairs=pairs, tau=tau)


def notes(run: RunData) -> list[str]:
    """What to read the one-shot ranking with, as sentences: where its numbers come from, whether the stand-alone
    best is the one-shot winner, what is still missing for an agreement."""
    phase = run.oneshot
    if phase is None:
        return []
    said = [f"the one-shot accuracies are one supernet's (trained once, seed {phase.seed}, {phase.epochs} epoch(s), "
            f"{phase.sampling} sampling), each path evaluated with its inherited weights after re-estimating BatchNorm "
            f"on {phase.calibration_batches} batches: an order to choose what to train, with no interval"]
    if phase.sampled:
        said.append(f"the supernet's {phase.paths} candidates are a seeded sample of a larger space (oneshot.paths)")
    rows = table(run)
    done = _retrained(rows)
    ties = _winner_ties(phase)
    if ties:
        said.append(ties)
    top = run.settings.oneshot.retrain_top
    if fallback(run):
        if top == 0:
            why = "no candidate was trained stand-alone (oneshot.retrain_top 0)"
        else:
            unreadable = sum(r.status == "unreadable" for r in run.records)
            why = f"no candidate has a stand-alone result yet (oneshot.retrain_top {top}" + (
                f"; {unreadable} trial(s) unreadable, see the warnings)" if unreadable else ")")
        said.append(f"{why}: the one-shot winner stands for the result, with its inherited weights; --retrain-top K "
                    "trains the best K with the search's seeds and epochs")
    elif run.ranking.best is None:
        said.append(f"none of the candidates queued for stand-alone training completed{status_text(run)}: the run "
                    "has no best, and the one-shot winner's accuracy with inherited weights does not stand in for one")
    elif len(done) >= 2 and rows:
        best = next((row for row in done if row["standalone_most_accurate"]), None) or max(
            done, key=lambda row: row["standalone_accuracy"])
        winner = rows[0]
        if best["oneshot_rank"] == 1:
            said.append(f"the one-shot winner {winner['hash']} is also the most accurate of the {len(done)} trained stand-alone")
        else:
            text = (f"trained stand-alone, the most accurate of the {len(done)} retrained is one-shot #{best['oneshot_rank']} "
                    f"{best['hash']} ({best['standalone_accuracy']:.4f}), not the one-shot winner {winner['hash']}")
            if winner["standalone_status"] == "complete" and winner["standalone_accuracy"] is not None:
                text += f" ({winner['standalone_accuracy']:.4f}"
                text += {True: ", separably less accurate at 95%)", False: ", not separable from it at 95%)"}.get(
                    winner["standalone_separable_from_best"], ")")
            elif winner["standalone_status"] is not None:
                text += f" ({winner['standalone_status']})"
            said.append(text)
    if 0 < len(done) < AGREEMENT_MIN:
        said.append(f"{len(done)} candidate(s) trained stand-alone to completion: how far the one-shot order agrees with "
                    f"stand-alone training needs {AGREEMENT_MIN} or more (--retrain-top)")
    return said


def status_text(run: RunData) -> str:
    """`` (1 failed, 1 waiting)``: how many candidates of :func:`table` have each stand-alone status
    (in one-shot order of first appearance); empty when none has one."""
    statuses = Counter(row["standalone_status"] for row in table(run) if row["standalone_status"] is not None)
    return f" ({', '.join(f'{n} {status}' for status, n in statuses.items())})" if statuses else ""


def fallback(run: RunData) -> bool:
    """Whether the one-shot winner stands for the run's best: a one-shot run with no ranked best and no trial the
    phase queued counted yet (``retrain_top: 0``, or none trained so far). Once one was trained, the run's best is
    a stand-alone result or nothing: candidates that all failed leave no best."""
    if run.oneshot is None or run.ranking.best is not None:
        return False
    return not any(r.oneshot_rank is not None and r.counted for r in run.records)


def summary(run: RunData) -> dict[str, Any] | None:
    """The stored phase (:class:`~archforge.search.records.OneShotPhase`) as JSON, with ``table`` (:func:`table`),
    ``agreement`` (:func:`agreement`) and ``notes``; ``None`` without a one-shot phase. Its ``retrain_top``
    is the run's setting now (a resumed run may train more than the phase first queued)."""
    if run.oneshot is None:
        return None
    tau = agreement(run)
    return {**run.oneshot.model_dump(mode="json"), "retrain_top": run.settings.oneshot.retrain_top, "table": table(run),
            "agreement": dataclasses.asdict(tau) if tau is not None else None, "notes": notes(run)}


def spec(run: RunData, rank: int = 1) -> Any:
    """The concrete :class:`~archforge.Spec` of the one-shot ranking's ``rank``-th candidate (1: the winner).

    The phase stores decisions and hash only: the spec is rebuilt from the space the run stored,
    with the run's params, and must have the stored hash (a :class:`SearchError` otherwise); the
    run's ``train.init`` is written in as ``RunData.trained_spec`` does.
    """
    import warnings

    from archforge.errors import SpecWarning
    from archforge.search.space import parse_space

    phase = run.oneshot
    if phase is None or not 1 <= rank <= len(phase.ranking):
        raise SearchError(f"run '{run.name}' has no one-shot candidate ranked {rank}")
    path = phase.ranking[rank - 1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)
            space = parse_space(run.meta.space, run.meta.space_file).with_params(run.settings.params)
            candidate = space.concretize(path.decisions)
    except (SpecError, ValueError, TypeError, KeyError, RecursionError) as exc:
        text = exc.format() if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
        raise SearchError(one_line(f"run '{run.name}': the one-shot candidate {path.hash} cannot be rebuilt from the "
                                   f"stored space: {text[:300]}")) from None
    if candidate.hash != path.hash:
        raise SearchError(f"run '{run.name}': the decisions of one-shot candidate {path.hash} rebuild a spec of hash "
                          f"{candidate.hash} from the stored space; report a copy of the store made before it was edited")
    return run.with_init(candidate.spec)


def weights(run: RunData) -> Path | None:
    """The one-shot winner's checkpoint in the run folder (inherited weights), ``None`` when it was not saved or is gone."""
    phase = run.oneshot
    if phase is None or phase.weights is None or run.run_dir is None:
        return None
    try:
        root = Path(run.run_dir).resolve()
        path = (root / phase.weights).resolve()
        if root not in path.parents or not path.is_file():  # a stored path may only name a file inside the run folder
            return None
    except (OSError, ValueError, RuntimeError):  # unreadable, a NUL byte, a symlink loop (Python < 3.13): missing
        return None
    return path


def weights_source(run: RunData) -> Path:
    """:func:`weights`; missing, a one-line :class:`SearchError` quoting at most :data:`PATH_TEXT` characters
    of the stored path and of the run folder."""
    source = weights(run)
    if source is not None:
        return source
    phase = run.oneshot
    if phase is not None and phase.weights and run.run_dir is not None:
        where = f"'{_cut(phase.weights)}' in {_cut(str(run.run_dir))}"
    else:
        where = "none was saved" if run.run_dir is not None else "the run has no folder"
    raise SearchError(one_line(f"run '{_cut(run.name)}' has no candidate trained stand-alone and its one-shot winner's checkpoint "
                               f"is missing ({where}): train the best stand-alone with --retrain-top K, then report with --weights"))


# --------------------------------------------------------------------------- writing


def csv_columns(run: RunData) -> list[str]:
    """The columns of ``oneshot.csv``: :data:`ONESHOT_COLUMNS`, then ``decision.<name>`` for every decision of the run."""
    names = list(dict.fromkeys(run.decision_names + [k for row in table(run) for k in row["decisions"]]))
    return list(ONESHOT_COLUMNS) + [f"decision.{n}" for n in names]


def write_csv(run: RunData, path: str | os.PathLike[str]) -> Path:
    """The one-shot table (:func:`table`), one row per candidate the supernet ranked, best first; cells as trials.csv's."""
    from archforge.search.report import csv_cell  # report imports this module: read at call time

    path = Path(path)
    columns = csv_columns(run)
    with atomic_output(path, overwrite=True) as temp, temp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in table(run):
            cells = {**row, **{f"decision.{k}": v for k, v in row["decisions"].items()}}
            writer.writerow([csv_cell(cells.get(k)) for k in columns])
    return path


def write_best_yaml(run: RunData, path: str | os.PathLike[str]) -> Path:
    """The one-shot winner's spec (:func:`spec`) under a header saying its accuracy is the supernet's, not a stand-alone
    result: ``best.yaml`` when the winner stands for the best (:func:`fallback`)."""
    from archforge.search.report import yaml_comment  # report imports this module: read at call time

    winner_spec = spec(run, 1)
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
    return write_text(path, "\n".join(yaml_comment(line) for line in header) + "\n" + winner_spec.to_yaml(), overwrite=True)


def copy_weights(run: RunData, path: str | os.PathLike[str]) -> Path:
    """Copy the one-shot winner's checkpoint (its inherited weights, :func:`weights`) to ``path``."""
    import shutil

    source = weights_source(run)
    with atomic_output(path, overwrite=True) as temp:
        shutil.copyfile(source, temp)
    return Path(path)


# --------------------------------------------------------------------------- helpers


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


def _retrained(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a one-shot table trained stand-alone to completion, with an accuracy."""
    return [row for row in rows if row["standalone_status"] == "complete" and row["standalone_accuracy"] is not None]


def _cut(text: str, limit: int = PATH_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
