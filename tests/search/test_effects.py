"""Decision effects (paired differences with 95% intervals) and the heat map's n per cell, checked against hand computation."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from archforge.search.decision import Decision
from archforge.cli.tables import print_effects, print_ranking
from archforge.search import ranking
from archforge.search.effects import decision_effects, effect_notes
from archforge.search.plots import cell_count, placement_figure, placement_matrix
from archforge.search.ranking import rank
from archforge.search.records import TrialRecord

# A 2×2×2 grid: a choice of texts, a choice of lists (not hashable: compared by canonical JSON), an int range.
GRID = [
    {"name": "a", "kind": "choice", "options": ["x", "y"], "size": 2, "where": ["s.yaml:3:5"]},
    {"name": "b", "kind": "choice", "options": [[3, 3], [5, 5]], "size": 2},
    {"name": "c", "kind": "int", "low": 0, "high": 1, "step": 1, "log": False, "size": 2},
]
DELTA = 0.002  # each candidate's two seeds are mean ± DELTA: s² = 2·DELTA², s²/n = DELTA²


def grid_mean(a: str, b: list[int], c: int) -> float:
    """0.80, +5 points for a=y, +2 for b=[5,5], −1 for c=1, +1 more for a=y with c=1 (an interaction)."""
    return 0.80 + 0.05 * (a == "y") + 0.02 * (b == [5, 5]) - 0.01 * (c == 1) + 0.01 * (a == "y" and c == 1)


def made(number: int, decisions: dict, accuracies: list[float] | None, *, status: str = "complete", **extra) -> TrialRecord:
    extra.setdefault("hash", f"{number:012x}")
    accuracy = sum(accuracies) / len(accuracies) if accuracies else None
    return TrialRecord(number=number, state="COMPLETE", status=status, accuracy=accuracy, accuracies=accuracies or [],
                       decisions=decisions, **extra)


def grid_records(delta: float = DELTA) -> list[TrialRecord]:
    out = []
    for i, (a, b, c) in enumerate(itertools.product(["x", "y"], [[3, 3], [5, 5]], [0, 1])):
        m = grid_mean(a, b, c)
        out.append(made(i, {"a": a, "b": b, "c": c}, [m - delta, m + delta]))
    return out


def by_value(effects) -> dict:
    return {(e.decision, str(e.value)): e for e in effects}


def test_effects_on_a_full_grid_match_hand_computation():
    effects = decision_effects(grid_records(), GRID)
    assert [e.decision for e in effects] == ["a", "b", "c"]
    found = by_value(effects)
    # The seed-noise interval of every effect here: Var = (1/4²) · 8 · DELTA² = 2e-6, ν = 1 / (8 · (1/8)² / 1) = 8,
    # t(8) = 2.306: half-width 2.306 · √2e-6 = 0.0032612 → ±0.32612 points.

    # a = y: pair differences over (b, c) are 0.05, 0.06, 0.05, 0.06 → mean 5.5 points;
    # s = √((4 · 0.005²) / 3) = 0.0057735, t(3) = 3.182: half-width 3.182 · 0.0057735 / 2 = 0.0091856 → ±0.91856 points,
    # wider than the seed noise's ±0.326: the paired interval.
    a = found[("a", "y")]
    assert (a.baseline, a.method, a.pairs, a.seeds, a.possible, a.unpaired) == ("x", "paired", 4, 2, 4, 0)
    assert (a.effect, a.low, a.high) == (pytest.approx(5.5), pytest.approx(5.5 - 0.91856, abs=1e-4), pytest.approx(5.5 + 0.91856, abs=1e-4))
    assert a.excludes_zero is True
    assert a.text() == "a = y instead of x: +5.5 points [+4.6, +6.4] (4 pairs × 2 seeds)"

    # b = [5,5]: every pair differs by 0.02, so the paired interval has no width: the seed noise's ±0.32612 points.
    b = found[("b", "[5, 5]")]
    assert (b.baseline, b.method, b.pairs) == ([3, 3], "seeds", 4)
    assert (b.effect, b.low, b.high) == (pytest.approx(2.0), pytest.approx(2.0 - 0.32612, abs=1e-4), pytest.approx(2.0 + 0.32612, abs=1e-4))
    assert b.text() == ("b = [5,5] instead of [3,3]: +2.0 points [+1.7, +2.3] (4 pairs × 2 seeds, interval from seed noise: "
                        "wider than the pairs' spread)")

    # c = 1: differences −0.01 (a=x, twice) and 0.00 (a=y, twice) → −0.5 points ± 0.91856: contains 0.
    c = found[("c", "1")]
    assert (c.effect, c.low, c.high) == (pytest.approx(-0.5), pytest.approx(-0.5 - 0.91856, abs=1e-4),
                                         pytest.approx(-0.5 + 0.91856, abs=1e-4))
    assert c.excludes_zero is False and c.text().startswith("c = 1 instead of 0: −0.5 points [−1.4, +0.4]")


def test_the_seed_noise_interval_is_a_floor_under_the_paired_one():
    # Seeds mean ± 0.01: the seed noise is Var = (1/16) · 8 · 0.01² = 5e-5, ν = 8: ±2.306 · √5e-5 = ±1.6306 points,
    # wider than a = y's paired ±0.91856: the interval is the seed noise's.
    a = by_value(decision_effects(grid_records(0.01), GRID))[("a", "y")]
    assert (a.method, a.low, a.high) == ("seeds", pytest.approx(5.5 - 1.6306, abs=1e-3), pytest.approx(5.5 + 1.6306, abs=1e-3))


def test_effects_follow_the_spaces_order_of_decisions_then_of_values():
    records = grid_records() + [made(8, {"a": "z", "b": [3, 3], "c": 0}, [0.70, 0.71])]
    decisions = [GRID[2], GRID[1], {**GRID[0], "options": ["x", "z", "y"]}]
    effects = decision_effects(records, decisions)
    # by |effect| the order would be a=z (−9.5), a=y (5.5), b (2.0), c (−0.5)
    assert [(e.decision, str(e.value)) for e in effects] == [("c", "1"), ("b", "[5, 5]"), ("a", "z"), ("a", "y")]


def test_effects_read_the_same_from_ranked_rows_their_dicts_and_decision_objects():
    records = grid_records()
    rows = rank(records, ["accuracy"]).rows
    expected = [e.model_dump() for e in decision_effects(rows, GRID)]
    decisions = [Decision(name="a", kind="choice", options=["x", "y"]), Decision(name="b", kind="choice", options=[[3, 3], [5, 5]]),
                 Decision(name="c", kind="int", low=0, high=1, step=1)]
    assert [e.model_dump() for e in decision_effects(records, GRID)] == expected
    assert [e.model_dump() for e in decision_effects([r.model_dump() for r in rows], decisions)] == expected


def test_a_one_decision_space_uses_the_welch_interval_of_the_two_candidates():
    records = [made(0, {"d": 4}, [0.80, 0.82]), made(1, {"d": 8}, [0.85, 0.87, 0.86]), made(2, {"d": 16}, [0.90])]
    found = by_value(decision_effects(records, [{"name": "d", "kind": "choice", "options": [4, 8, 16]}]))
    # d = 8: 0.86 − 0.81 = 5 points; s²/n = 0.0001/3 and 0.0002/2; ν = (1.3333e-4)² / ((3.333e-5)²/2 + (1e-4)²/1) = 1.684
    # → t(1) = 12.706: half 12.706 · √1.3333e-4 = 0.146716 → ±14.6716 points.
    eight = found[("d", "8")]
    assert (eight.method, eight.pairs, eight.seeds, eight.possible) == ("welch", 1, 2, 1)
    assert (eight.effect, eight.low, eight.high) == (pytest.approx(5.0), pytest.approx(5.0 - 14.6716, abs=1e-3),
                                                    pytest.approx(5.0 + 14.6716, abs=1e-3))
    # d = 16 has one seed: the effect, but no interval
    sixteen = found[("d", "16")]
    assert (sixteen.effect, sixteen.low, sixteen.method, sixteen.seeds, sixteen.excludes_zero) == (pytest.approx(9.0), None, None, 1, None)
    assert sixteen.text() == "d = 16 instead of 4: +9.0 points (no interval) (1 pair × 1 seed)"


def test_seeds_that_do_not_vary_give_no_interval():
    decision = [{"name": "d", "kind": "choice", "options": [4, 8]}]
    one = decision_effects([made(0, {"d": 4}, [0.8, 0.8]), made(1, {"d": 8}, [0.9, 0.9])], decision)[0]
    assert (one.effect, one.low, one.high, one.method, one.excludes_zero) == (pytest.approx(10.0), None, None, None, None)
    # two pairs differing by the same, with constant seeds: neither the paired nor the seed-noise interval has any width
    two = [{"name": "d", "kind": "choice", "options": [4, 8]}, {"name": "e", "kind": "choice", "options": ["p", "q"]}]
    records = [made(0, {"d": 4, "e": "p"}, [0.8, 0.8]), made(1, {"d": 8, "e": "p"}, [0.9, 0.9]),
               made(2, {"d": 4, "e": "q"}, [0.7, 0.7]), made(3, {"d": 8, "e": "q"}, [0.8, 0.8])]
    effect = by_value(decision_effects(records, two))[("d", "8")]
    assert (effect.pairs, effect.effect, effect.low, effect.method) == (2, pytest.approx(10.0), None, None)


def test_missing_partners_and_failed_candidates_are_left_out_and_counted():
    decisions = [{"name": "a", "kind": "choice", "options": ["x", "y"]}, {"name": "b", "kind": "choice", "options": ["p", "q"]}]
    records = [
        made(0, {"a": "y", "b": "p"}, None, status="failed", hash="aaaaaaaaaaaa", error="boom"),  # retried below: the complete one counts
        made(1, {"a": "x", "b": "p"}, [0.80]),
        made(2, {"a": "x", "b": "q"}, [0.82]),
        made(3, {"a": "y", "b": "p"}, [0.85], hash="aaaaaaaaaaaa"),
        made(4, {"a": "y", "b": "q"}, None, status="failed", error="boom"),
        made(5, {"a": "x", "b": "p"}, [0.10], hash=f"{1:012x}", duplicate_of=1),  # a reuse is no second candidate
        made(6, {"a": "y", "b": "q"}, [0.99], status="pruned"),  # pruned: not complete
    ]
    found = by_value(decision_effects(records, decisions))
    # a = y: only b = p pairs ((y,p) − (x,p) = 0.05); (x,q)'s partner (y,q) failed
    a = found[("a", "y")]
    assert (a.effect, a.pairs, a.possible, a.unpaired, a.low) == (pytest.approx(5.0), 1, 2, 1, None)
    assert a.text() == "a = y instead of x: +5.0 points (no interval) (1 of 2 pairs × 1 seed)"
    # b = q: only a = x pairs ((x,q) − (x,p) = 0.02); (y,p) is unpaired
    b = found[("b", "q")]
    assert (b.effect, b.pairs, b.unpaired) == (pytest.approx(2.0), 1, 1)

    lonely = [made(0, {"a": "x", "b": "p"}, [0.8]), made(1, {"a": "y", "b": "q"}, [0.9])]
    effects = decision_effects(lonely, decisions)
    assert [(e.effect, e.pairs, e.unpaired) for e in effects] == [(None, 0, 2), (None, 0, 2)]
    assert effects[0].text() == "a = y instead of x: no pairs (0 of 2 pairs)"
    # every value of both decisions lacks a partner: one line per decision says why
    assert effect_notes(effects, decisions) == ["a: no pairs: no two complete candidates differ in this decision alone",
                                                "b: no pairs: no two complete candidates differ in this decision alone"]


def test_continuous_and_unreadable_decisions_get_no_effects_and_a_note_says_why():
    records = [made(0, {"lr": 0.01, "a": "x"}, [0.8]), made(1, {"lr": 0.01, "a": "y"}, [0.9])]
    decisions = [{"name": "lr", "kind": "float", "low": 0.001, "high": 0.1, "log": True}, {"name": "a", "kind": "choice", "options": "xy"},
                 {"name": "a", "kind": "choice", "options": ["x", "y"]}, {"name": "w", "kind": "int", "low": 1, "high": 100},
                 {"name": "one", "kind": "choice", "options": [3]}]
    effects = decision_effects(records, decisions)
    assert [(e.decision, e.value) for e in effects] == [("a", "y")]
    assert effects[0].possible is None  # lr is continuous: the space holds infinitely many contexts
    assert effects[0].effect == pytest.approx(10.0)
    assert effect_notes(effects, decisions, pruned=3) == [
        "3 candidates were pruned: the effects and the heat map use the complete candidates only, and the pruned are the "
        "weakest, so both are biased toward 0",
        "lr: no effects: a continuous range (float 0.001..0.1 log) has no baseline value to pair candidates on",
        "w: no effects: 100 values, more than 50"]
    assert effect_notes(effects, decisions[2:3]) == []


def test_hostile_values_neither_crash_nor_decide():
    # A set is no JSON: compared by its repr. Seeds [0.0, 1e-160]: s²/n = 2.5e-321 (subnormal; its square underflows to 0,
    # so ν must not be computed as se⁴ / Σ(...)²); against constant seeds c = 1, ν = 1 / (1/1) = 1 exactly.
    odd = {1, 2}
    decisions = [Decision(name="s", kind="choice", options=[[1], odd]), {"name": "t", "kind": "choice", "options": ["p", "q"]}]
    records = [made(0, {"s": [1], "t": "p"}, [0.0, 1e-160]), made(1, {"s": odd, "t": "p"}, [0.5, 0.5]),
               made(2, {"s": [1], "t": "q"}, [0.4, float("nan"), 0.4]), made(3, {"s": odd, "t": "q"}, [0.6, 0.6]),
               made(4, {"s": [1], "t": "q"}, [0.9], hash="nan")]
    records[2] = records[2].model_copy(update={"accuracy": 0.4})
    records[4] = records[4].model_copy(update={"accuracy": float("nan")})  # a NaN accuracy is no candidate
    found = by_value(decision_effects(records, decisions))
    s = found[("s", str(odd))]
    # pairs: t=p 0.5 − 0.5e-160 and t=q 0.6 − 0.4 (the NaN seed left out): effect (50 + 20)/2 = 35 points;
    # paired: s_Δ = 0.3/√2, t(1) = 12.706: ±12.706 · 0.15 = ±190.59 points, printed clipped to ±100
    assert (s.pairs, s.effect, s.method) == (2, pytest.approx(35.0), "paired")
    assert (s.low, s.high) == (pytest.approx(35 - 190.59, abs=0.01), pytest.approx(35 + 190.59, abs=0.01))
    assert s.text() == f"s = {odd!r} instead of [1]: +35.0 points [−100.0, +100.0] (2 pairs × 2 seeds)"
    gap = ranking.welch_difference([0.0, 1e-160], [0.5, 0.5])
    assert gap is not None and gap.dof == 1.0
    assert ranking.welch_difference([0.5, 0.5], [0.4, 0.4, 0.4]) is None
    rows = rank(records, ["accuracy"]).rows
    assert [r.accuracy for r in rows if r.hash == "nan"] == [None] and rows[0].accuracy == pytest.approx(0.6)
    assert next(r for r in rows if r.trial == 2).accuracies == [0.4, 0.4]
    placement = placement_matrix(records, [d.to_dict() if isinstance(d, Decision) else d for d in decisions])
    assert placement.columns[:2] == ["[1]", repr(odd)]
    console = Console(width=200, record=True, file=io.StringIO())
    print_ranking(console, [r.model_dump() for r in rows], objectives=["accuracy"], names=["s", "t"])
    print_effects(console, decision_effects(rows, decisions))
    assert repr(odd) in console.export_text()


# --------------------------------------------------------------------------- the heat map


def test_heat_map_cells_say_how_many_candidates_and_seeds_they_average():
    records = grid_records()
    placement = placement_matrix(records, GRID)
    assert placement.counts == [[4, 4, 0, 0, 0, 0], [0, 0, 4, 4, 0, 0], [0, 0, 0, 0, 4, 4]]
    assert placement.seeds[0][:2] == [[2, 2, 2, 2], [2, 2, 2, 2]] and placement.seeds[0][2] == []
    fig = placement_figure(placement)
    heat, bar = fig.axes
    cells = [t.get_text().split("\n") for t in heat.texts]
    assert {n for _, n in cells} == {"n=4×2"}  # 4 candidates × 2 seeds in every cell
    # cell means by hand: a=x (0.80 + 0.82 + 0.79 + 0.81)/4 = 0.805, a=y 0.86; b 0.8225, 0.8425; c 0.835, 0.830
    assert sorted(float(v) for v, _ in cells) == pytest.approx(sorted([0.805, 0.86, 0.8225, 0.8425, 0.835, 0.83]), abs=6e-4)
    label = bar.get_ylabel()
    assert "n = candidates × seeds" in label and "min–max of the cells, 0.805–0.860" in label
    low, high = heat.images[0].get_clim()
    assert (low, high) == (pytest.approx(0.805), pytest.approx(0.86))


def test_cell_counts():
    assert cell_count(4) == "n=4" and cell_count(4, [1, 1, 1, 1]) == "n=4"
    assert cell_count(4, [3, 3, 3, 3]) == "n=4×3"
    assert cell_count(2, [2, 3]) == "n=2, 5 seeds"


# --------------------------------------------------------------------------- the report files


def test_report_files_carry_the_marks_and_the_effects(tmp_path):
    import csv
    import json

    import optuna
    from optuna.trial import create_trial

    from archforge.search import records
    from archforge.search.records import CandidateAttr, Outcome, RunMeta
    from archforge.search.report import RunData, write_csv, write_json
    from archforge.search.settings import SearchSettings
    from archforge.search.space import candidate_hash

    settings = SearchSettings(objectives=["accuracy"], seeds=2, epochs=1)
    study = optuna.create_study(study_name="mem", directions=settings.directions)
    meta = RunMeta(space="", space_file="mem.yaml", space_fingerprint="f", space_name="mem", settings=settings.model_dump(mode="json"),
                   config_key="k", dataset="digits", decisions=[{"name": "width", "kind": "choice", "options": [4, 8, 16]}])
    study.set_user_attr(records.RUN_KEY, records.dump(meta))
    seeds = {4: [0.80, 0.82], 8: [0.90, 0.92], 16: [0.88, 0.92]}
    for width, accs in seeds.items():
        spec = {"archforge": 1, "name": "t", "input": {"shape": [1, 8, 8]}, "nodes": [
            {"id": "stem", "block": "conv", "args": {"channels": width}}, {"id": "head", "block": "classifier", "args": {"classes": 10}}]}
        candidate = CandidateAttr(hash=candidate_hash(spec), decisions={"width": width}, spec=spec)
        outcome = Outcome(status="complete", accuracy=sum(accs) / 2, accuracies=accs, params=width, epochs_run=2, epochs_full=2)
        study.add_trial(create_trial(state=optuna.trial.TrialState.COMPLETE, values=[sum(accs) / 2],
                                     user_attrs=records.attrs(candidate, outcome)))
    run = RunData.from_study(study)
    data = json.loads(write_json(run, tmp_path / "trials.json").read_text())
    marks = {row["decisions"]["width"]: (row["most_accurate"], row["separable_from_best"]) for row in data["ranking"]}
    # 8 (0.91) is the most accurate; 16 (0.90): 0.01 ± t·√(0.0002/2 + 0.0008/2) = 0.01 ± t·0.02236 is not separable;
    # 4 (0.81): s²/n = 0.0001 on both sides, ν = 0.0002² / (0.0001²/1 + 0.0001²/1) = 2 → t(2) = 4.303:
    # 0.10 ± 4.303·√0.0002 = 0.10 ± 0.060854 = [0.0391, 0.1609], separable.
    assert marks == {8: (True, False), 16: (False, False), 4: (False, True)}
    effects = {e["value"]: e for e in data["effects"]}
    assert effects[8]["effect"] == pytest.approx(10.0) and effects[16]["effect"] == pytest.approx(9.0)
    assert [e["value"] for e in data["effects"]] == [8, 16] and effects[8]["method"] == "welch"
    with write_csv(run, tmp_path / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["decision.width"], r["rank"], r["most_accurate"], r["separable_from_best"]) for r in rows] == [
        ("4", "3", "False", "True"), ("8", "1", "True", "False"), ("16", "2", "False", "False")]
    assert data["effect_notes"] == []
    low = float(rows[0]["gap_low"])
    assert low == pytest.approx(0.10 - 0.060854, abs=1e-5)
