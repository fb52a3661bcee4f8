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
  ``mean ± t · sem`` (Student's t quantile for ``n - 1`` degrees of freedom, ``sem = s / √n``),
  and each complete candidate is tested against the most accurate one (``most_accurate``, the
  reference; rank 1 when accuracy is the only objective): the 95% Welch interval of the
  difference of their mean accuracies (reference − candidate), ``d ± t · √(s₁²/n₁ + s₂²/n₂)``
  with Welch–Satterthwaite degrees of freedom ``ν = 1 / (c²/(n₁−1) + (1−c)²/(n₂−1))``,
  ``c = (s₁²/n₁) / (s₁²/n₁ + s₂²/n₂)`` (Welch 1947; this form of ν cannot underflow). Without
  scipy, t is read from the table below at the largest tabulated degrees of freedom not above
  ν (1 to 30, 40, 60, 120; 1.980 beyond 120): a larger quantile than at ν, so the interval is
  slightly wider and the test conservative. The candidate is ``separable_from_best`` iff that
  interval excludes 0. ``None`` means not tested: either has fewer than two seeds, or neither
  varies over its seeds (a zero-width interval is no evidence); the reference itself is ``False``.
  Each test is pairwise, at 95% on its own: with many candidates some separations are expected
  by chance, and nothing corrects for multiple comparisons.
  This is sharper than asking whether the two candidates' own intervals overlap, which
  holds for differences up to ``t·(sem₁ + sem₂)`` rather than ``t·√(sem₁² + sem₂²)``. A
  ``not_separable`` note names the candidates not separable from the most accurate one, else a
  ``separable`` note gives the difference to the runner-up. With one seed a ``one_seed`` note
  says that the ranking cannot separate candidates closer than the seed-to-seed noise.
  Non-finite accuracies (a hand-built record's NaN) are left out.
- **latency noise**: a latency whose interquartile range is above :data:`NOISY_IQR_FRACTION`
  of its median (:mod:`archforge.search.measure`'s threshold) is flagged (``latency_noisy``) and
  named in a ``noisy_latency`` note.

Everything here is a pure function of :class:`~archforge.search.records.TrialRecord` s.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Literal, Mapping, NamedTuple, Sequence

from pydantic import BaseModel, Field

from archforge.search.measure import NOISY_IQR_FRACTION  # the measurement's own threshold, re-exported
from archforge.search.records import TrialRecord, finite, measured
from archforge.search.settings import OBJECTIVES

#: Confidence of the accuracy intervals.
CONFIDENCE = 0.95
# Student's t quantile at 0.975 (two-sided 95%) for 1 to 30 degrees of freedom, then at 40, 60 and 120.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T_975_BEYOND = ((120, 1.980), (60, 2.000), (40, 2.021), (30, 2.042))  # largest tabulated dof first
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
    accuracies: list[float] = Field(default_factory=list, description="Validation accuracy of each seed that finished.")
    most_accurate: bool = Field(False, description="The complete candidate of highest mean accuracy, which the others are tested against.")
    separable_from_best: bool | None = Field(None, description=(
        "Whether the 95% Welch interval of (most accurate − this) mean accuracy excludes 0 (a pairwise test, not corrected "
        "for multiple comparisons); None when not tested: either has fewer than two seeds, neither varies over its seeds, "
        "or the candidate is not complete; False for the most accurate candidate itself, the reference."))
    gap_low: float | None = Field(None, description="Lower end of the 95% Welch interval of (most accurate − this) accuracy.")
    gap_high: float | None = Field(None, description="Upper end of the 95% Welch interval of (most accurate − this) accuracy.")
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    latency_noisy: bool = Field(False, description="latency_iqr_ms / latency_ms > NOISY_IQR_FRACTION.")
    peak_memory_mb: float | None = None
    train_time_s: float | None = None
    lr: float | None = Field(None, description="Peak learning rate trained with (with lr: auto, the range test's; median over seeds).")
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
    """Student's t quantile at 0.975 for ``dof`` degrees of freedom: exact to 30, then at the largest tabulated
    ``dof`` not above it (40, 60, 120), so never smaller than the true quantile (1.980 beyond 120; the limit is 1.960)."""
    if dof < 1:
        raise ValueError(f"a t quantile needs at least one degree of freedom, got {dof}")
    if dof <= len(_T_975):
        return _T_975[dof - 1]
    return next(t for tabulated, t in _T_975_BEYOND if dof >= tabulated)


def t_quantile_floor(dof: float) -> float:
    """Student's t quantile at 0.975 for ``floor(dof)`` degrees of freedom (at least one): conservative for a
    fractional ``dof``, such as Welch–Satterthwaite's. A ``dof`` a rounding error below an integer counts as it."""
    if not math.isfinite(dof):
        return t_quantile(120 if dof > 0 else 1)
    return t_quantile(max(1, math.floor(dof + 1e-9)))


def interval(values: Sequence[float]) -> tuple[float, float] | None:
    """``mean ± t · s / √n`` at 95% for ``values`` (one per seed); ``None`` for fewer than two."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


class Difference(NamedTuple):
    """A difference of two means with its 95% Welch interval and the Welch–Satterthwaite degrees of freedom."""

    mean: float
    low: float
    high: float
    dof: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def welch_error(samples: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """``(se², ν)`` of a sum or difference of the means of ``samples``: ``se² = Σ sᵢ²/nᵢ`` and the Welch–Satterthwaite
    degrees of freedom ``ν = 1 / Σ cᵢ²/(nᵢ−1)``, ``cᵢ = (sᵢ²/nᵢ) / se²`` (no underflow however small the variances).

    ``None`` unless every sample has two values or more and some vary: with ``se² = 0`` an interval would have
    no width, which no finite sample justifies.
    """
    if not samples or any(len(x) < 2 for x in samples):
        return None
    terms = [statistics.variance(x) / len(x) for x in samples]  # squared standard errors
    total = sum(terms)
    if not total > 0:
        return None
    return total, 1 / sum((term / total) ** 2 / (len(x) - 1) for term, x in zip(terms, samples))


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """``mean(a) − mean(b)`` with its 95% Welch interval; ``None`` (not tested) unless both have two values or more
    and they are not all constant (:func:`welch_error`). t is the table's at ``floor(ν)``: conservative."""
    error = welch_error([a, b])
    if error is None:
        return None
    se2, dof = error
    diff = statistics.fmean(a) - statistics.fmean(b)
    half = t_quantile_floor(dof) * math.sqrt(se2)
    return Difference(diff, diff - half, diff + half, dof)


def reference_is_best(objectives: Sequence[str]) -> bool:
    """Whether the most accurate candidate, which the others are tested against, is the best one: accuracy is the only
    objective. Otherwise tables call it ``top`` and the test ``vs most accurate``, since it may not be rank 1."""
    return list(objectives) == ["accuracy"]


def bounds_text(low: float, high: float, *, lowest: float = 0.0, highest: float = 1.0, digits: int = 4, plus: bool = False) -> str:
    """``[0.8703, 0.9697]``: an interval as printed, its ends clipped to ``[lowest, highest]`` (the stored values are
    not), with a true minus sign (and ``+`` before positives with ``plus``)."""
    ends = (min(max(x, lowest), highest) for x in (low, high))
    return "[" + ", ".join(signed(x, digits, plus=plus) for x in ends) + "]"


def signed(value: float, digits: int = 4, *, plus: bool = False) -> str:
    """``value`` with ``digits`` decimals and a true minus sign (``−0.0053``); ``+`` before positives with ``plus``;
    a value that rounds to zero prints unsigned."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return text[1:]
    return (text if plus else text.lstrip("+")).replace("-", "−")


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
    mark_separability(complete)
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


def most_accurate(ranked: Sequence[RankedRow]) -> RankedRow | None:
    """The ranked row of highest mean accuracy (the better rank among equals), or ``None``."""
    rows = [r for r in ranked if r.accuracy is not None]
    return min(rows, key=lambda r: (-r.accuracy, r.rank if r.rank is not None else math.inf), default=None)  # type: ignore[operator]


def mark_separability(ranked: Sequence[RankedRow]) -> None:
    """Set ``most_accurate``, ``separable_from_best`` and the gap interval of each ranked row (see the module docstring)."""
    best = most_accurate(ranked)
    if best is None:
        return
    best.most_accurate = True
    for row in ranked:
        if row is best:
            row.separable_from_best = False if best.n_seeds >= 2 else None
            continue
        gap = welch_difference(best.accuracies, row.accuracies) if row.accuracy is not None else None
        if gap is not None:
            row.separable_from_best, row.gap_low, row.gap_high = gap.excludes_zero, gap.low, gap.high


def separability_note(ranked: Sequence[RankedRow], objectives: Sequence[str]) -> RankingNote | None:
    """What the marks of :func:`mark_separability` say, in one sentence (see the module docstring)."""
    best = most_accurate(ranked)
    others = sorted((r for r in ranked if r.accuracy is not None and r is not best),
                    key=lambda r: (-r.accuracy, r.rank if r.rank is not None else math.inf))  # type: ignore[operator]
    if best is None or not others:
        return None
    who = "best" if reference_is_best(objectives) else "most accurate"
    if max(r.n_seeds for r in (best, *others)) < 2:
        return RankingNote(kind="one_seed", trials=[best.trial, others[0].trial],
                           text=f"one seed per candidate cannot separate candidates closer than the seed-to-seed noise "
                                f"(the {who} two: {best.accuracy:.4f} and {others[0].accuracy:.4f}); "
                                "train with seeds: 2 or more to measure it")
    level = f"{100 * CONFIDENCE:g}%"
    untested = [r for r in others if r.separable_from_best is None]
    untested_text = (f"; {len(untested)} candidate{'s' if len(untested) > 1 else ''} not tested (one seed, "
                     "or no seed-to-seed variation on either side)") if untested else ""
    if best.n_seeds < 2:
        return RankingNote(kind="not_separable", trials=[best.trial] + [r.trial for r in others],
                           text=f"the {who} candidate {_interval_text(best)} has one seed: no candidate can be separated "
                                f"from it at {level}; train with seeds: 2 or more")
    close = [r for r in others if r.separable_from_best is False]
    if close:
        return RankingNote(kind="not_separable", trials=[best.trial] + [r.trial for r in close],
                           text=f"{len(close)} candidate{'s are' if len(close) > 1 else ' is'} not separable at {level} from the "
                                f"{who}, {_interval_text(best)} (the Welch interval of the difference contains 0): "
                                + ", ".join(_gap_text(r) for r in close[:5]) + (", …" if len(close) > 5 else "") + untested_text)
    tested = [r for r in others if r.separable_from_best]
    if not tested:  # no other candidate could be tested
        return RankingNote(kind="not_separable", trials=[best.trial] + [r.trial for r in others],
                           text=f"the {who} candidate {_interval_text(best)} cannot be tested at {level}" + untested_text)
    return RankingNote(kind="separable", trials=[best.trial, tested[0].trial],
                       text=f"the {who} candidate {_interval_text(best)} is separable at {level} from every other tested "
                            f"(pairwise tests), the closest being {_gap_text(tested[0])}" + untested_text)


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
    accuracies = seed_accuracies(record)
    bounds = interval(accuracies) if record.status == "complete" else None
    accuracy = finite(record.accuracy)
    return RankedRow(
        rank=None, trial=record.number, hash=record.hash, status=record.status,  # type: ignore[arg-type]
        pareto=pareto and record.status == "complete",
        accuracy=accuracy, accuracy_std=finite(record.accuracy_std) if accuracy is not None else None, n_seeds=len(accuracies),
        accuracy_low=bounds[0] if bounds else None, accuracy_high=bounds[1] if bounds else None,
        params=record.params, flops=record.flops, latency_ms=record.latency_ms, latency_iqr_ms=record.latency_iqr_ms,
        latency_noisy=latency_noisy(record.latency_ms, record.latency_iqr_ms), peak_memory_mb=record.peak_memory_mb,
        train_time_s=record.train_time_s, lr=record.lr, metrics=dict(record.metrics), epochs_run=record.epochs_run, epochs_full=record.epochs_full, reuses=reuses,
        parent=record.parent, mutated=record.mutated, proxy_score=record.proxy_score, error=record.error,
        decisions=dict(record.decisions), accuracies=accuracies,
    )


def seed_accuracies(record: TrialRecord) -> list[float]:
    """The finite validation accuracy of each seed of ``record`` that finished (its stored list, else its seed results)."""
    values = list(record.accuracies) or [s.accuracy for s in record.seeds.values()]
    return [v for v in values if finite(v) is not None]


def _gap_text(row: RankedRow) -> str:
    """``#4 0.9480 (0.0020 lower [−0.0110, 0.0150])``: a candidate and the interval of its gap to the most accurate."""
    gap = (row.gap_low + row.gap_high) / 2  # type: ignore[operator]  # the interval is symmetric about the difference
    where = bounds_text(row.gap_low, row.gap_high, lowest=-1.0)  # type: ignore[arg-type]
    return f"#{row.trial} {row.accuracy:.4f} ({signed(gap)} lower {where})"


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


def _interval_text(row: RankedRow) -> str:
    bounds = row.interval
    where = bounds_text(*bounds) if bounds else "(one seed)"
    return f"#{row.trial} {row.accuracy:.4f} {where}"
