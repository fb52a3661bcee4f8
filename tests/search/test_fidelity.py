"""Rung agreement: Kendall's tau-b against an independent count, and rankings of synthetic records with known answers."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from archforge.errors import SearchError
from archforge.search.fidelity import ACROSS, kendall_tau_b, rung_agreement
from archforge.search.records import SeedResult, TrialRecord


def _tau_b_by_signs(x, y):
    """tau-b as the normalised inner product of the pairwise sign matrices (an independent formula)."""
    sx = np.sign(np.subtract.outer(x, x))
    sy = np.sign(np.subtract.outer(y, y))
    return float((sx * sy).sum() / math.sqrt((sx ** 2).sum() * (sy ** 2).sum()))


def test_tau_b_equals_the_sign_matrix_formula_with_ties():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 9)
        x = [rng.randint(0, 3) for _ in range(n)]  # few values: many ties
        y = [rng.randint(0, 3) for _ in range(n)]
        tau, pairs = kendall_tau_b(x, y)
        assert pairs == n * (n - 1) // 2
        if len(set(x)) == 1 or len(set(y)) == 1:
            assert tau is None
        else:
            assert tau == pytest.approx(_tau_b_by_signs(x, y), abs=1e-12)


def test_tau_b_known_values():
    # scipy.stats.kendalltau's documented example (tau-b with ties): -0.47140452079103173
    tau, _ = kendall_tau_b([12, 2, 1, 12, 2], [1, 4, 7, 1, 0])
    assert tau == pytest.approx(-0.47140452079103173, abs=1e-12)
    assert kendall_tau_b([1, 2, 3], [10, 20, 30])[0] == 1.0 and kendall_tau_b([1, 2, 3], [3, 2, 1])[0] == -1.0


def test_tau_b_over_given_pairs_counts_only_those():
    x, y = [1, 2, 3, 4], [2, 1, 4, 3]
    # pairs (0,1) and (2,3) are the discordant ones; (0,2) concordant
    assert kendall_tau_b(x, y, [(0, 1), (2, 3)]) == (-1.0, 2)
    assert kendall_tau_b(x, y, [(0, 1), (0, 2)]) == (0.0, 2)


def _record(number, curves, decisions=None, status="complete", duplicate_of=None):
    seeds = {s: SeedResult(seed=s, status="ok", accuracy=h[-1], epochs_run=len(h), history=list(h)) for s, h in enumerate(curves)}
    return TrialRecord(number=number, state="COMPLETE", status=status, hash=f"{number:012x}", decisions=decisions or {},
                       seeds=seeds, duplicate_of=duplicate_of)


def test_rung_agreement_of_a_known_ranking_epoch_by_epoch():
    # mean over two seeds; epoch 1 ranks 0 > 1 > 2 > 3, epoch 2 ranks 3 > 2 > 1 > 0, final ranks 0 > 1 > 2 > 3
    records = [
        _record(0, [[0.80, 0.60, 0.95], [0.82, 0.62, 0.93]]),
        _record(1, [[0.70, 0.70, 0.90], [0.70, 0.70, 0.90]]),
        _record(2, [[0.60, 0.80, 0.85], [0.60, 0.80, 0.85]]),
        _record(3, [[0.50, 0.90, 0.80], [0.50, 0.90, 0.80]]),
    ]
    rows = rung_agreement(records)
    assert [(r.epoch, r.group, r.candidates, r.pairs, r.tau) for r in rows] == [(1, None, 4, 6, 1.0), (2, None, 4, 6, -1.0)]
    assert (rows[0].best_rank, rows[0].best_in_top_half, rows[0].best_in_top_third) == (1, True, True)
    assert (rows[1].best_rank, rows[1].best_in_top_half, rows[1].best_in_top_third) == (4, False, False)


def test_a_slow_family_is_ranked_fairly_within_but_unfairly_across():
    """Attention starts slowly then overtakes: within each family epoch 1 ranks right, across families wrong."""
    conv = [[0.90, 0.93], [0.85, 0.92], [0.80, 0.91]]  # epoch 1, final
    attention = [[0.50, 0.97], [0.45, 0.96], [0.40, 0.95]]
    records = [_record(i, [c], {"stage.block[2]": "conv_unit"}) for i, c in enumerate(conv)]
    records += [_record(10 + i, [a], {"stage.block[2]": "attention_unit"}) for i, a in enumerate(attention)]
    rows = {r.group: r for r in rung_agreement(records, group_by="stage.block[2]")}
    assert set(rows) == {None, "attention_unit", "conv_unit", ACROSS}
    assert rows["conv_unit"].tau == 1.0 and rows["attention_unit"].tau == 1.0
    assert (rows[ACROSS].tau, rows[ACROSS].pairs, rows[ACROSS].candidates) == (-1.0, 9, 6)
    # all 15 pairs: 6 within (concordant), 9 across (discordant): (6 - 9) / 15
    assert rows[None].tau == pytest.approx(-3 / 15) and rows[None].pairs == 15
    # the final best (attention 0.97) is 4th of 6 after epoch 1: halving (keep 3) and thirds (keep 2) both drop it
    assert (rows[None].best_rank, rows[None].best_in_top_half, rows[None].best_in_top_third) == (4, False, False)
    assert rows["attention_unit"].best_rank == 1 and rows[ACROSS].best_rank is None


def test_ties_at_the_rung_keep_the_best():
    records = [_record(i, [[0.5, final]]) for i, final in enumerate([0.9, 0.8, 0.7, 0.6])]
    row = rung_agreement(records)[0]
    assert row.tau is None and row.best_rank == 1 and row.best_in_top_third


def test_only_complete_candidates_that_ran_every_epoch_count_once():
    full = [_record(i, [[0.1 * i, 0.1 * i, 0.1 * i]]) for i in range(1, 4)]
    short = _record(7, [[0.9, 0.9]])  # stopped after two epochs
    pruned = _record(8, [[0.95, 0.95, 0.95]], status="pruned")
    reused = _record(9, [[0.99, 0.99, 0.99]], duplicate_of=1)
    again = full[0].model_copy(update={"number": 5})  # the same candidate (hash) stored twice
    rows = rung_agreement([*full, short, pruned, reused, again])
    assert [(r.epoch, r.candidates, r.tau) for r in rows] == [(1, 3, 1.0), (2, 3, 1.0)]
    assert rung_agreement([]) == []


def test_group_by_an_unknown_decision_names_the_ones_there_are():
    records = [_record(0, [[0.5, 0.6]], {"stage.block[0]": "conv_unit"})]
    with pytest.raises(SearchError, match=r"no decision 'stage\.block\[9\]'.*stage\.block\[0\]"):
        rung_agreement(records, group_by="stage.block[9]")


def test_every_pair_subset_agrees_with_the_sign_formula_on_random_records():
    rng = random.Random(1)
    curves = [[rng.random() for _ in range(3)] for _ in range(7)]
    records = [_record(i, [c], {"g": "ab"[i % 2]}) for i, c in enumerate(curves)]
    rows = rung_agreement(records, group_by="g")
    for row in rows:
        members = [i for i in range(7) if row.group in (None, ACROSS) or "ab"[i % 2] == row.group]
        x = [curves[i][row.epoch - 1] for i in members]
        y = [curves[i][-1] for i in members]
        if row.group == ACROSS:
            pairs = [(a, b) for a, b in itertools.combinations(range(7), 2) if a % 2 != b % 2]
            sx = np.array([np.sign(curves[a][row.epoch - 1] - curves[b][row.epoch - 1]) for a, b in pairs])
            sy = np.array([np.sign(curves[a][-1] - curves[b][-1]) for a, b in pairs])
            assert row.tau == pytest.approx(float((sx * sy).sum() / math.sqrt((sx ** 2).sum() * (sy ** 2).sum())))
        else:
            assert row.tau == pytest.approx(_tau_b_by_signs(x, y))
