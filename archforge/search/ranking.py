"""The ranking of a run's candidates, and what can honestly be said about it.

:func:`rank` orders the evaluated candidates of a run (one :class:`RankedRow` per candidate
hash: a trial that reused another's result adds to that candidate's ``reuses``, never a row)
and returns them with :class:`RankingNote` s, plain sentences a report prints under the table:

- **order**: complete candidates by the first objective (a built-in one, or a plugin metric in
  the direction of its goal); equal values are broken by cost
  (fewer params, then lower latency; higher accuracy first when accuracy is not the first
  objective), then by trial number, and a ``ties`` note says how many ties that decided.
  With several objectives the Pareto front comes first: it is Optuna's own
  (``study.best_trials``, passed as ``front``), and the rows off the front follow, ordered
  by the first objective the same way (no further fronts are computed). Pruned candidates
  follow, by accuracy, then failed ones, by trial number; neither has a rank.
- **separability**: with two or more seeds per candidate, each accuracy has a 95% interval,
  ``mean ± t · sem`` (Student's t quantile for ``n - 1`` degrees of freedom, ``sem = s / √n``);
  a ``not_separable`` note names the candidates whose interval overlaps the most accurate
  one's, else a ``separable`` note gives both intervals. With one seed a ``one_seed`` note
  says that the ranking cannot separate candidates closer than the seed-to-seed noise.
- **latency noise**: a latency whose interquartile range is above :data:`NOISY_IQR_FRACTION`
  of its median (:mod:`archforge.search.measure`'s threshold) is flagged (``latency_noisy``) and
  named in a ``noisy_latency`` note.

Everything here is a pure function of :class:`~archforge.search.records.TrialRecord` s.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel, Field

from archforge.search.measure import NOISY_IQR_FRACTION  # the measurement's own threshold, re-exported
from archforge.search.records import TrialRecord, measured
from archforge.search.settings import OBJECTIVES

#: Confidence of the accuracy intervals.
CONFIDENCE = 0.95
# Student's t quantile at 0.975 for 1 to 30 degrees of freedom (two-sided 95%); beyond, the normal one.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
#: Cost keys that break ties, in order, after the first objective (the first objective itself is skipped).
TIE_BREAK = ("accuracy", "params", "latency_ms")
_PHRASES = {"accuracy": "higher accuracy", "params": "fewer params", "latency_ms": "lower latency"}
_STATUS_ORDER = {"complete": 0, "pruned": 1, "failed": 2}

NoteKind = Literal["ties", "separable", "not_separable", "one_seed", "noisy_latency"]


class RankedRow(BaseModel):
    """One evaluated candidate as a ranking shows it (``model_dump()`` is the JSON row)."""

    rank: int | None = Field(description="1, 2, ... for complete candidates; None for pruned and failed ones.")
    trial: int = Field(description="The trial that evaluated the candidate (its earliest complete one).")
    hash: str | None
    status: Literal["complete", "pruned", "failed"]
    pareto: bool = Field(False, description="On the Pareto front of the run's objectives (several objectives only).")
    accuracy: float | None = Field(None, description="Mean validation accuracy over the seeds.")
    accuracy_std: float | None = Field(None, description="Sample standard deviation over the seeds.")
    accuracy_low: float | None = Field(None, description="Lower end of the 95% interval (two seeds or more).")
    accuracy_high: float | None = Field(None, description="Upper end of the 95% interval (two seeds or more).")
    n_seeds: int = Field(0, description="Seeds that finished.")
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    latency_noisy: bool = Field(False, description="latency_iqr_ms / latency_ms > NOISY_IQR_FRACTION.")
    peak_memory_mb: float | None = None
    train_time_s: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict, description="Plugin metrics by name.")
    epochs_run: int = 0
    epochs_full: int = 0
    reuses: int = Field(0, description="Later trials that reused this result instead of training again.")
    parent: int | None = None
    mutated: str | None = None
    proxy_score: float | None = None
    error: str | None = None
    decisions: dict[str, Any] = Field(default_factory=dict)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% accuracy interval, ``None`` with fewer than two seeds."""
        if self.accuracy_low is None or self.accuracy_high is None:
            return None
        return self.accuracy_low, self.accuracy_high


class RankingNote(BaseModel):
    """A sentence about the ranking, with the trials it is about."""

    kind: NoteKind
    text: str
    trials: list[int] = Field(default_factory=list)


class Ranking(BaseModel):
    """Rows (complete by rank, then pruned, then failed) and the notes about them."""

    objectives: list[str]
    rows: list[RankedRow]
    notes: list[RankingNote] = Field(default_factory=list)

    @property
    def ranked(self) -> list[RankedRow]:
        return [row for row in self.rows if row.rank is not None]

    @property
    def best(self) -> RankedRow | None:
        return next(iter(self.ranked), None)

    @property
    def pareto(self) -> list[RankedRow]:
        return [row for row in self.rows if row.pareto]


def t_quantile(dof: int) -> float:
    """Student's t quantile at 0.975 for ``dof`` degrees of freedom (the normal quantile beyond 30)."""
    if dof < 1:
        raise ValueError(f"a t quantile needs at least one degree of freedom, got {dof}")
    return _T_975[dof - 1] if dof <= len(_T_975) else statistics.NormalDist().inv_cdf(0.975)


def interval(values: Sequence[float]) -> tuple[float, float] | None:
    """``mean ± t · s / √n`` at 95% for ``values`` (one per seed); ``None`` for fewer than two."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def latency_noisy(latency_ms: float | None, latency_iqr_ms: float | None) -> bool:
    """Whether a latency's interquartile range is above :data:`NOISY_IQR_FRACTION` of its median."""
    if latency_ms is None or latency_iqr_ms is None or latency_ms <= 0:  # as measure.Latency.noisy, from stored numbers
        return False
    return latency_iqr_ms / latency_ms > NOISY_IQR_FRACTION


def candidates(records: Iterable[TrialRecord]) -> list[tuple[TrialRecord, int]]:
    """One counted record per candidate hash (complete before pruned before failed, then the earliest), with its reuses."""
    chosen: dict[str, TrialRecord] = {}
    reuses: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.number):
        key = record.hash or f"#{record.number}"
        if record.duplicate_of is not None:
            reuses[key] = reuses.get(key, 0) + 1
        elif record.counted and record.status in _STATUS_ORDER:  # not a trained candidate a metric constraint rejected
            old = chosen.get(key)
            if old is None or _STATUS_ORDER[record.status] < _STATUS_ORDER[old.status]:
                chosen[key] = record
    return [(record, reuses.get(key, 0)) for key, record in chosen.items()]


def rank(records: Sequence[TrialRecord], objectives: Sequence[str], *, front: Iterable[int] | None = None,
         goals: Mapping[str, str] | None = None) -> Ranking:
    """Rank the evaluated candidates of ``records`` by ``objectives`` (see the module docstring).

    ``front``: the trial numbers of ``study.best_trials``, needed with several objectives.
    A front trial stands for its candidate, so a reuse on the front marks the candidate it reused.
    ``goals``: the direction of each plugin metric an objective names.
    """
    objectives = list(objectives)
    goals = dict(goals or {})
    for name in objectives:
        if name not in OBJECTIVES and name not in goals:
            raise ValueError(f"unknown objective {name!r}: use {', '.join(OBJECTIVES)} or a metric given in goals")
    if len(objectives) > 1 and front is None:
        raise ValueError("ranking several objectives needs the Pareto front: pass front=[t.number for t in study.best_trials]")
    numbers = set(front or ()) if len(objectives) > 1 else set()
    front_hashes = {r.hash for r in records if r.number in numbers and r.hash is not None}
    rows = [_row(record, reuses, record.hash in front_hashes) for record, reuses in candidates(records)]
    complete = sorted((r for r in rows if r.status == "complete"), key=lambda r: _order_key(r, objectives, goals))
    for position, row in enumerate(complete, 1):
        row.rank = position
    pruned = sorted((r for r in rows if r.status == "pruned"), key=lambda r: (_signed(r, "accuracy", goals), r.trial))
    failed = sorted((r for r in rows if r.status == "failed"), key=lambda r: r.trial)
    notes = [note for note in (tie_note(complete, objectives), separability_note(complete, objectives),
                               noisy_latency_note(complete)) if note is not None]
    return Ranking(objectives=objectives, rows=complete + pruned + failed, notes=notes)


def tie_note(ranked: Sequence[RankedRow], objectives: Sequence[str]) -> RankingNote | None:
    """How many groups of ranked rows share the first objective's value (and the front), so cost decided their order."""
    primary = objectives[0]
    groups: list[list[RankedRow]] = []
    for row in ranked:
        if groups and (groups[-1][0].pareto, measured(groups[-1][0], primary)) == (row.pareto, measured(row, primary)) \
                and measured(row, primary) is not None:
            groups[-1].append(row)
        else:
            groups.append([row])
    ties = [g for g in groups if len(g) > 1]
    if not ties:
        return None
    rule = ", then ".join(_PHRASES[k] for k in _tie_keys(primary))
    tied = sum(len(g) for g in ties)
    return RankingNote(kind="ties", trials=[row.trial for g in ties for row in g],
                       text=f"{len(ties)} tie{'s' if len(ties) > 1 else ''} on {primary} ({tied} candidates) "
                            f"broken by cost: {rule}, then trial number")


def separability_note(ranked: Sequence[RankedRow], objectives: Sequence[str]) -> RankingNote | None:
    """Whether the most accurate candidate's 95% interval overlaps the others' (see the module docstring)."""
    rows = sorted((r for r in ranked if r.accuracy is not None), key=lambda r: (-r.accuracy, r.rank))  # type: ignore[operator]
    if len(rows) < 2:
        return None
    best, runner_up = rows[0], rows[1]
    who = "best" if objectives[0] == "accuracy" else "most accurate"
    if max(r.n_seeds for r in rows) < 2:
        return RankingNote(kind="one_seed", trials=[best.trial, runner_up.trial],
                           text=f"one seed per candidate cannot separate candidates closer than the seed-to-seed noise "
                                f"(the {who} two: {best.accuracy:.4f} and {runner_up.accuracy:.4f}); "
                                "train with seeds: 2 or more to measure it")
    level = f"{100 * CONFIDENCE:g}%"
    top = best.interval
    overlapping = [r for r in rows[1:] if top is None or r.interval is None or _overlap(top, r.interval)]
    if overlapping:
        return RankingNote(kind="not_separable", trials=[best.trial] + [r.trial for r in overlapping],
                           text=f"the {who} {len(overlapping) + 1} candidates are not separable at {level}: "
                                f"{_interval_text(best)} overlaps " + ", ".join(_interval_text(r) for r in overlapping[:5])
                                + (", …" if len(overlapping) > 5 else ""))
    return RankingNote(kind="separable", trials=[best.trial, runner_up.trial],
                       text=f"the {who} candidate is separable from the runner-up at {level}: "
                            f"{_interval_text(best)} vs {_interval_text(runner_up)}")


def noisy_latency_note(ranked: Sequence[RankedRow]) -> RankingNote | None:
    """The ranked rows whose latency is noisy, named (at most ten), or ``None``."""
    noisy = [r for r in ranked if r.latency_noisy]
    if not noisy:
        return None
    names = ", ".join(f"#{r.trial}" for r in noisy[:10]) + (", …" if len(noisy) > 10 else "")
    return RankingNote(kind="noisy_latency", trials=[r.trial for r in noisy],
                       text=f"latency of {len(noisy)} candidate{'s' if len(noisy) > 1 else ''} is noisy (interquartile range "
                            f"above {100 * NOISY_IQR_FRACTION:g}% of the median): {names}; compare those latencies with care")


def _row(record: TrialRecord, reuses: int, pareto: bool) -> RankedRow:
    accuracies = record.accuracies or [s.accuracy for s in record.seeds.values() if s.accuracy is not None]
    bounds = interval(accuracies) if record.status == "complete" else None
    return RankedRow(
        rank=None, trial=record.number, hash=record.hash, status=record.status,  # type: ignore[arg-type]
        pareto=pareto and record.status == "complete",
        accuracy=record.accuracy, accuracy_std=record.accuracy_std, n_seeds=len(accuracies),
        accuracy_low=bounds[0] if bounds else None, accuracy_high=bounds[1] if bounds else None,
        params=record.params, flops=record.flops, latency_ms=record.latency_ms, latency_iqr_ms=record.latency_iqr_ms,
        latency_noisy=latency_noisy(record.latency_ms, record.latency_iqr_ms), peak_memory_mb=record.peak_memory_mb,
        train_time_s=record.train_time_s, metrics=dict(record.metrics), epochs_run=record.epochs_run, epochs_full=record.epochs_full, reuses=reuses,
        parent=record.parent, mutated=record.mutated, proxy_score=record.proxy_score, error=record.error,
        decisions=dict(record.decisions),
    )


def _tie_keys(primary: str) -> list[str]:
    return [k for k in TIE_BREAK if k != primary]


def _signed(row: RankedRow, name: str, goals: Mapping[str, str]) -> float:
    """The value to sort ascending: maximised objectives negated, a missing value last."""
    value = measured(row, name)
    if value is None:
        return math.inf
    return -float(value) if (OBJECTIVES.get(name) or goals[name]) == "maximize" else float(value)  # type: ignore[arg-type]


def _order_key(row: RankedRow, objectives: Sequence[str], goals: Mapping[str, str]) -> tuple[Any, ...]:
    primary = objectives[0]
    return (not row.pareto, _signed(row, primary, goals), *(_signed(row, k, goals) for k in _tie_keys(primary)), row.trial)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _interval_text(row: RankedRow) -> str:
    bounds = row.interval
    where = f"[{bounds[0]:.4f}, {bounds[1]:.4f}]" if bounds else f"{row.accuracy:.4f} (one seed)"
    return f"#{row.trial} {where}"
