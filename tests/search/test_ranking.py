"""Ranking: order and ties by cost, one row per candidate, 95% intervals and separability, Optuna's Pareto front."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from archforge.search import ranking, records
from archforge.search.ranking import interval, rank, t_quantile
from archforge.search.records import CandidateAttr, Outcome, TrialRecord
from archforge.search.space import candidate_hash


def record(number: int, accuracy: float | None = 0.9, *, status: str = "complete", params: int | None = 100,
           latency: float | None = 1.0, accuracies: list[float] | None = None, **extra) -> TrialRecord:
    """A hand-built record of a candidate whose hash is derived from ``number`` (or ``extra['hash']``)."""
    extra.setdefault("hash", f"{number:012x}")
    return TrialRecord(number=number, state="COMPLETE", status=status, accuracy=accuracy, params=params, latency_ms=latency,
                       accuracies=accuracies or [], **extra)


def spec(width: int) -> dict:
    return {"archforge": 1, "name": "t", "input": {"shape": [1, 8, 8]}, "nodes": [
        {"id": "stem", "block": "conv", "args": {"channels": width}}, {"id": "head", "block": "classifier", "args": {"classes": 10}}]}


def add_trial(study, width: int, outcome: Outcome, values: list[float] | None = None, state: TrialState = TrialState.COMPLETE,
              decisions: dict | None = None) -> None:
    """A trial stored the way archforge stores one (records.attrs), with Optuna values told."""
    candidate = CandidateAttr(hash=candidate_hash(spec(width)), decisions=decisions or {"width": width}, spec=spec(width))
    study.add_trial(create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                                 user_attrs=records.attrs(candidate, outcome)))


# --------------------------------------------------------------------------- order and ties


def test_ties_on_accuracy_are_broken_by_params_then_latency_then_trial_number():
    rows = [
        record(0, 0.90, params=200, latency=1.0),
        record(1, 0.95, params=900, latency=9.0),
        record(2, 0.90, params=100, latency=5.0),
        record(3, 0.90, params=100, latency=2.0),
        record(4, 0.80, params=50, latency=0.5),
        record(5, 0.80, params=50, latency=0.5),  # equal in every cost: the earlier trial first
    ]
    result = rank(rows, ["accuracy"])
    assert [r.trial for r in result.rows] == [1, 3, 2, 0, 4, 5]
    assert [r.rank for r in result.rows] == [1, 2, 3, 4, 5, 6]
    ties = [n for n in result.notes if n.kind == "ties"]
    assert len(ties) == 1
    assert ties[0].text == "2 ties on accuracy (5 candidates) broken by cost: fewer params, then lower latency, then trial number"
    assert ties[0].trials == [3, 2, 0, 4, 5]


def test_no_tie_no_note_and_a_missing_cost_goes_last():
    result = rank([record(0, 0.9, params=None), record(1, 0.9, params=10), record(2, 0.8)], ["accuracy"])
    assert [r.trial for r in result.rows] == [1, 0, 2]
    assert len([n for n in result.notes if n.kind == "ties"]) == 1
    assert not [n for n in rank([record(0, 0.9), record(1, 0.8)], ["accuracy"]).notes if n.kind == "ties"]


def test_a_cost_objective_breaks_its_ties_by_higher_accuracy_first():
    result = rank([record(0, 0.7, params=10, latency=1.0), record(1, 0.9, params=10, latency=3.0), record(2, 0.8, params=5)],
                  ["params"])
    assert [r.trial for r in result.rows] == [2, 1, 0]
    assert result.notes[0].text == "1 tie on params (2 candidates) broken by cost: higher accuracy, then lower latency, then trial number"


def test_one_row_per_candidate_reuses_counted_and_unranked_statuses_last():
    rows = [
        record(0, None, status="failed", hash="aaaaaaaaaaaa", error="RuntimeError: boom"),
        record(1, 0.7, hash="aaaaaaaaaaaa"),  # the same candidate, trained again after a failure: the complete one stands
        record(2, 0.7, hash="aaaaaaaaaaaa", duplicate_of=1),
        record(3, 0.7, hash="aaaaaaaaaaaa", duplicate_of=1),
        record(4, 0.6, status="pruned"),
        record(5, 0.65, status="pruned"),
        record(6, None, status="failed"),
        record(7, None, status="rejected"),
        record(8, 0.9, status="unreadable"),
        record(9, 0.8),
    ]
    result = rank(rows, ["accuracy"])
    assert [(r.trial, r.status, r.rank) for r in result.rows] == [
        (9, "complete", 1), (1, "complete", 2), (5, "pruned", None), (4, "pruned", None), (6, "failed", None)]
    assert result.rows[1].reuses == 2 and result.rows[0].reuses == 0
    assert result.best.trial == 9


def test_latency_noise_is_flagged_above_the_fraction():
    fraction = ranking.NOISY_IQR_FRACTION
    rows = [record(0, 0.9, latency=2.0, latency_iqr_ms=2.0 * fraction * 1.01),
            record(1, 0.8, latency=2.0, latency_iqr_ms=2.0 * fraction * 0.99)]
    result = rank(rows, ["accuracy"])
    assert [r.latency_noisy for r in result.rows] == [True, False]
    note = next(n for n in result.notes if n.kind == "noisy_latency")
    assert note.trials == [0] and "#0" in note.text


# --------------------------------------------------------------------------- intervals and separability


def test_t_quantiles_and_intervals_match_hand_computation():
    assert t_quantile(1) == 12.706 and t_quantile(2) == 4.303 and t_quantile(30) == 2.042
    # beyond 30, the largest tabulated dof not above (t(40) = 2.021, t(60) = 2.000, t(120) = 1.980): never below the truth
    assert [t_quantile(k) for k in (31, 39, 40, 59, 60, 119, 120, 10 ** 6)] == [2.042, 2.042, 2.021, 2.021, 2.000, 2.000, 1.980, 1.980]
    assert ranking.t_quantile_floor(45.7) == 2.021 and ranking.t_quantile_floor(math.inf) == 1.980
    low, high = interval([0.90, 0.92, 0.94])
    half = 4.303 * 0.02 / math.sqrt(3)  # s = 0.02 for three values 0.02 apart
    assert (low, high) == (pytest.approx(0.92 - half), pytest.approx(0.92 + half))
    assert interval([0.9]) is None


def test_the_welch_interval_of_the_difference_marks_who_is_not_separable_from_the_best():
    # Hand-computed 95% intervals (t = 4.303 for 2 degrees of freedom):
    #   A 0.92 ± 4.303·0.02/√3 = [0.8703, 0.9697]; C 0.88 ± 0.0497 = [0.8303, 0.9297];
    #   B 0.81 ± 4.303·0.01/√3 = [0.7852, 0.8348].
    # Welch, A − C: se² = 0.0004/3 + 0.0004/3, ν = 4 (equal variances and sizes: n₁ + n₂ − 2), t = 2.776:
    #   0.04 ± 2.776·√(0.0008/3) = 0.04 ± 0.04533 = [-0.0053, 0.0853], contains 0: not separable.
    # Welch, A − B: se² = 0.0004/3 + 0.0001/3 = 1.6667e-4, ν = se⁴ / ((0.0004/3)²/2 + (0.0001/3)²/2) = 2.94 → t(2) = 4.303:
    #   0.11 ± 4.303·0.012910 = 0.11 ± 0.05555 = [0.0544, 0.1656], excludes 0: separable.
    a = record(0, 0.92, accuracies=[0.90, 0.92, 0.94])
    b = record(1, 0.81, accuracies=[0.80, 0.81, 0.82])
    c = record(2, 0.88, accuracies=[0.86, 0.88, 0.90])
    result = rank([a, b, c], ["accuracy"])
    rows = {r.trial: r for r in result.rows}
    assert rows[0].interval == (pytest.approx(0.8703, abs=1e-4), pytest.approx(0.9697, abs=1e-4))
    assert rows[1].interval == (pytest.approx(0.7852, abs=1e-4), pytest.approx(0.8348, abs=1e-4))
    assert rows[2].interval == (pytest.approx(0.8303, abs=1e-4), pytest.approx(0.9297, abs=1e-4))
    assert [(rows[t].most_accurate, rows[t].separable_from_best) for t in (0, 1, 2)] == [(True, False), (False, True), (False, False)]
    assert (rows[2].gap_low, rows[2].gap_high) == (pytest.approx(0.04 - 0.045332, abs=1e-6), pytest.approx(0.04 + 0.045332, abs=1e-6))
    assert (rows[1].gap_low, rows[1].gap_high) == (pytest.approx(0.11 - 0.055551, abs=1e-6), pytest.approx(0.11 + 0.055551, abs=1e-6))
    assert rows[0].gap_low is None and rows[0].accuracies == [0.90, 0.92, 0.94]
    note = next(n for n in result.notes if n.kind in ("separable", "not_separable"))
    assert note.kind == "not_separable" and note.trials == [0, 2]  # the note says what the marks say
    assert note.text == ("1 candidate is not separable at 95% from the best, #0 0.9200 [0.8703, 0.9697] (the Welch interval of "
                         "the difference contains 0): #2 0.8800 (0.0400 lower [−0.0053, 0.0853])")

    separated = rank([a, b], ["accuracy"])
    note = next(n for n in separated.notes if n.kind in ("separable", "not_separable"))
    assert note.kind == "separable" and note.trials == [0, 1]
    assert note.text == ("the best candidate #0 0.9200 [0.8703, 0.9697] is separable at 95% from every other tested "
                         "(pairwise tests), the closest being #1 0.8100 (0.1100 lower [0.0544, 0.1656])")
    # with another objective first the reference is no longer called the best
    by_params = rank([a, b], ["params"])
    assert next(n for n in by_params.notes if n.kind == "separable").text.startswith("the most accurate candidate #0")


def test_overlapping_intervals_can_still_be_separable():
    # A [0.8703, 0.9697] and D 0.86 ± 0.0497 = [0.8103, 0.9097] overlap, yet the difference 0.06 ± 0.04533 excludes 0:
    # the difference's standard error is √(sem₁² + sem₂²), not sem₁ + sem₂.
    a = record(0, 0.92, accuracies=[0.90, 0.92, 0.94])
    d = record(1, 0.86, accuracies=[0.84, 0.86, 0.88])
    rows = rank([a, d], ["accuracy"]).rows
    assert rows[1].accuracy_high > rows[0].accuracy_low  # the intervals overlap
    assert rows[1].separable_from_best is True
    assert rows[1].gap_low == pytest.approx(0.06 - 0.045332, abs=1e-6)


def test_welch_satterthwaite_degrees_of_freedom_are_floored():
    # a: n = 2, s² = 0.0008 → s²/n = 0.0004; b: n = 5, s² = 0.00025 → s²/n = 0.00005.
    # ν = 0.00045² / (0.0004²/1 + 0.00005²/4) = 2.025e-7 / 1.60625e-7 = 1.2607 → t(1) = 12.706:
    # 0.05 ± 12.706·√0.00045 = 0.05 ± 0.269535.
    gap = ranking.welch_difference([0.90, 0.94], [0.85, 0.86, 0.87, 0.88, 0.89])
    assert gap.dof == pytest.approx(1.2607, abs=1e-4)
    assert (gap.mean, gap.low, gap.high) == (pytest.approx(0.05), pytest.approx(0.05 - 0.269535, abs=1e-6),
                                            pytest.approx(0.05 + 0.269535, abs=1e-6))
    assert not gap.excludes_zero
    # no variance on either side: a zero-width interval is no evidence, so no test
    assert ranking.welch_difference([0.9, 0.9], [0.8, 0.8, 0.8]) is None
    assert ranking.welch_difference([0.9], [0.8, 0.85]) is None
    rows = rank([record(0, 0.9, accuracies=[0.9, 0.9]), record(1, 0.8, accuracies=[0.8, 0.8, 0.8])], ["accuracy"]).rows
    assert [r.separable_from_best for r in rows] == [False, None]


def test_welch_degrees_of_freedom_above_30_use_the_next_tabulated_quantile_down():
    # 20 seeds each, alternating mean ± 0.01: s² = 20 · 0.0001 / 19 on both sides; equal variances and sizes give
    # ν = n₁ + n₂ − 2 = 38 → t(30) = 2.042; half-width 2.042 · √(2 · s² / 20).
    a = [0.90 + 0.01 * (-1) ** k for k in range(20)]
    gap = ranking.welch_difference(a, [x - 0.05 for x in a])
    half = 2.042 * math.sqrt(2 * (20 * 0.0001 / 19) / 20)
    assert gap.dof == pytest.approx(38.0)
    assert (gap.low, gap.high) == (pytest.approx(0.05 - half), pytest.approx(0.05 + half))
    # 70 seeds each: ν = 138 → t(120) = 1.980
    b = [0.90 + 0.01 * (-1) ** k for k in range(70)]
    wide = ranking.welch_difference(b, [x - 0.05 for x in b])
    assert wide.dof == pytest.approx(138.0)
    assert wide.high - 0.05 == pytest.approx(1.980 * math.sqrt(2 * (70 * 0.0001 / 69) / 70))


def test_candidates_with_one_seed_are_not_tested_and_the_note_says_so():
    a = record(0, 0.92, accuracies=[0.90, 0.92, 0.94])
    c = record(1, 0.88, accuracies=[0.86, 0.88, 0.90])
    lone = record(2, 0.91, accuracies=[0.91])
    result = rank([a, c, lone], ["accuracy"])
    rows = {r.trial: r for r in result.rows}
    assert (rows[0].separable_from_best, rows[1].separable_from_best, rows[2].separable_from_best) == (False, False, None)
    note = next(n for n in result.notes if n.kind == "not_separable")
    assert note.trials == [0, 1] and note.text.endswith("; 1 candidate not tested (one seed, or no seed-to-seed variation on either side)")
    # the most accurate candidate has one seed: nothing can be tested against it
    top = record(3, 0.95, accuracies=[0.95])
    result = rank([a, c, top], ["accuracy"])
    assert [r.separable_from_best for r in result.rows] == [None, None, None] and result.rows[0].most_accurate
    note = next(n for n in result.notes if n.kind == "not_separable")
    assert "has one seed: no candidate can be separated from it at 95%" in note.text


def test_one_seed_cannot_separate_candidates():
    result = rank([record(0, 0.91), record(1, 0.90), record(2, 0.5)], ["accuracy"])
    note = next(n for n in result.notes if n.kind == "one_seed")
    assert note.trials == [0, 1]
    assert "cannot separate candidates closer than the seed-to-seed noise" in note.text and "0.9100 and 0.9000" in note.text
    assert all(r.interval is None and r.separable_from_best is None for r in result.rows)
    assert [r.most_accurate for r in result.rows] == [True, False, False]
    assert not [n for n in rank([record(0, 0.9)], ["accuracy"]).notes if n.kind == "one_seed"]


# --------------------------------------------------------------------------- Pareto front


def test_pareto_front_is_optunas_best_trials_and_matches_the_non_dominated_set():
    study = optuna.create_study(directions=["maximize", "minimize"])
    points = [(0.90, 100), (0.80, 50), (0.85, 120), (0.70, 50), (0.95, 300), (0.80, 60)]
    for width, (acc, params) in zip((4, 8, 12, 16, 20, 24), points):
        add_trial(study, width, Outcome(status="complete", accuracy=acc, params=params), [acc, params])
    # a trial that reused trial 0's result is told the same values: it is not a second row
    add_trial(study, 4, Outcome(status="complete", accuracy=0.90, params=100, duplicate_of=0), [0.90, 100])
    add_trial(study, 28, Outcome(status="failed", error="RuntimeError: boom"), state=TrialState.FAIL)
    # By hand: (0.85, 120) is dominated by (0.90, 100); (0.70, 50) and (0.80, 60) by (0.80, 50).
    non_dominated = {0, 1, 4}
    front = [t.number for t in study.best_trials]
    result = rank(records.read_trials(study), ["accuracy", "params"], front=front)
    assert {r.trial for r in result.pareto} == non_dominated
    # the front first, by the first objective; then the others, by it too; failed last
    assert [r.trial for r in result.rows] == [4, 0, 1, 2, 5, 3, 7]
    assert [r.pareto for r in result.rows] == [True, True, True, False, False, False, False]
    assert result.rows[1].reuses == 1


def test_several_objectives_need_the_front():
    with pytest.raises(ValueError, match="best_trials"):
        rank([record(0)], ["accuracy", "params"])
    with pytest.raises(ValueError, match="unknown objective"):
        rank([record(0)], ["speed"])
