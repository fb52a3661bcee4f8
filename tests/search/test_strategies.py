"""Strategies end to end with a fake evaluator: grid, random, TPE, regularized evolution, NSGA-II, seeds."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from types import SimpleNamespace

import pytest

from archforge.search import SearchError, candidate_hash, parse_space, search

SPACE = """
archforge: 1
name: strat
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8, 16]}}
define:
  skip_unit:
    params: {channels: 8}
    nodes:
      - {id: skip, block: identity}
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: stage, block: {choice: [conv, skip_unit], per_copy: true}, repeat: 2, args: {channels: $width}}
  - {id: head, block: classifier, args: {classes: 10}}
search: {epochs: 2}
"""
DATA = SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
CALLS: list[tuple[str, int]] = []


def fake_accuracy(spec, seed: int = 0) -> float:
    """A deterministic function of the decisions: conv stages and width help; each seed shifts it a little."""
    data = spec.to_dict()
    convs = sum(node["block"] == "conv" for node in data["nodes"][1:])
    width = data["params"]["width"]
    return 0.5 + 0.1 * convs + 0.02 * math.log2(width) + 0.003 * seed


def fake_evaluate(spec, data, config, on_epoch=None):
    CALLS.append((candidate_hash(spec), config.seed))
    final = fake_accuracy(spec, config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        history.append(final * epoch / config.epochs)
        if on_epoch is not None and on_epoch(epoch, history[-1]):
            break
    width = spec.to_dict()["params"]["width"]
    return SimpleNamespace(accuracy=history[-1], epochs=len(history), history=history, stopped_early=len(history) < config.epochs,
                           params=100 * width, flops=1000 * width, latency_ms=0.1 * width, peak_memory_mb=1.0, train_time_s=0.01)


def run(tmp_path, **kwargs):
    CALLS.clear()
    kwargs.setdefault("storage", "memory")
    return search(parse_space(SPACE, "strat.yaml"), dataset=DATA, evaluator=fake_evaluate, runs_dir=tmp_path, progress=False, **kwargs)


def all_hashes():
    return {c.hash for c in parse_space(SPACE, "strat.yaml").distinct_candidates()}


def test_grid_enumerates_exactly_the_candidates(tmp_path):
    result = run(tmp_path, strategy="grid")
    complete = [r for r in result.trials if r.status == "complete"]
    assert {r.hash for r in complete} == all_hashes()
    assert len(complete) == len(all_hashes()) == 12
    assert sorted(h for h, _ in CALLS) == sorted(all_hashes())  # each exactly once
    assert [row["rank"] for row in result.table] == list(range(1, 13))
    best = result.best
    assert best["decisions"] == {"width": 16, "stage.block[0]": "conv", "stage.block[1]": "conv"}
    assert best["accuracy"] == pytest.approx(fake_accuracy(result.best_spec))
    # the stored spec is the one that was evaluated, and it builds
    assert candidate_hash(result.best_spec) == best["hash"]


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_sampling_strategies_run_to_budget_and_store_results(tmp_path, strategy):
    result = run(tmp_path, strategy=strategy, budget=5, seed=1)
    counted = [r for r in result.trials if r.counted]
    assert len(counted) == 5 and all(r.status == "complete" for r in counted)
    assert len({r.hash for r in counted}) == 5
    assert len(CALLS) == 5 == len(set(CALLS))
    for r in counted:
        assert r.spec is not None and r.accuracy == pytest.approx(r.values[0])
        assert r.epochs_run == 2


def test_random_never_evaluates_a_candidate_twice(tmp_path):
    # a budget as large as the space: random sampling hits candidates again and again
    result = run(tmp_path, strategy="random", budget=12, seed=3)
    assert len(CALLS) == len(set(CALLS)) == 12
    duplicates = [r for r in result.trials if r.duplicate_of is not None]
    by_number = {r.number: r for r in result.trials}
    for dup in duplicates:
        original = by_number[dup.duplicate_of]
        assert original.hash == dup.hash and original.duplicate_of is None
        assert dup.accuracy == original.accuracy and dup.epochs_run == 0
    assert {r.hash for r in result.trials if r.counted} == all_hashes()


def test_evolution_mutates_members_of_the_population(tmp_path):
    result = run(tmp_path, strategy="evolution", budget=14, seed=0)
    trials = {r.number: r for r in result.trials}
    children = [r for r in result.trials if r.parent is not None]
    assert children, "no child was bred"
    population = 8  # the default
    for child in children:
        parent = trials[child.parent]
        assert parent.status == "complete" and parent.number < child.number
        differing = {k for k in child.decisions if child.decisions[k] != parent.decisions[k]}
        assert differing == {child.mutated}
        # the parent was one of the `population` most recent complete members when the child was bred
        recent = sorted(n for n in trials if trials[n].status == "complete" and n < child.number)[-population:]
        assert child.parent in recent
    first_children = min(c.number for c in children)
    assert sum(1 for r in result.trials if r.status == "complete" and r.number < first_children) >= population


def test_nsga2_optimises_two_objectives(tmp_path):
    result = run(tmp_path, strategy="nsga2", budget=6, objectives=["accuracy", "params"], seed=2)
    counted = [r for r in result.trials if r.counted]
    assert len(counted) == 6
    assert all(len(r.values) == 2 and r.values[1] == r.params for r in counted)
    front = result.pareto
    assert front
    for a in front:  # nothing on the front is dominated
        for b in result.table:
            assert not (b["accuracy"] >= a["accuracy"] and b["params"] <= a["params"]
                        and (b["accuracy"] > a["accuracy"] or b["params"] < a["params"]))


def test_seeds_give_mean_and_std(tmp_path):
    result = run(tmp_path, strategy="grid", budget=2, seeds=3)
    assert Counter(seed for _, seed in CALLS) == {0: 2, 1: 2, 2: 2}
    for r in (r for r in result.trials if r.counted):
        spec_accs = [fake_accuracy(result.best_spec.__class__.from_dict(r.spec), s) for s in range(3)]
        assert r.accuracies == pytest.approx(spec_accs)
        assert r.accuracy == pytest.approx(statistics.fmean(spec_accs))
        assert r.accuracy_std == pytest.approx(statistics.stdev(spec_accs))
        assert r.epochs_run == 6 and r.epochs_full == 6


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "nsga2"}, "nsga2 optimises several objectives"),
    ({"strategy": "evolution", "objectives": "accuracy,params"}, "evolution optimises one objective"),
    ({"pruner": "successive_halving", "objectives": "accuracy,params"}, "pruning (multi-fidelity) works with one objective"),
    ({"strategy": "annealing"}, "strategy"),
    ({"objectives": "accuracy,speed"}, "unknown objective 'speed'"),
])
def test_impossible_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(SearchError) as info:
        run(tmp_path, **kwargs)
    assert message in info.value.message
    assert not CALLS


def test_grid_refuses_a_continuous_decision(tmp_path):
    space = parse_space(SPACE.replace("{classes: 10}", "{classes: 10, dropout: {float: [0.0, 0.5]}}"), "strat.yaml")
    with pytest.raises(SearchError, match="'head.dropout' .* is a continuous range"):
        search(space, dataset=DATA, evaluator=fake_evaluate, storage="memory", runs_dir=tmp_path, progress=False)
    result = search(space, dataset=DATA, evaluator=fake_evaluate, storage="memory", runs_dir=tmp_path, progress=False,
                    strategy="random", budget=3)
    assert len([r for r in result.trials if r.counted]) == 3
