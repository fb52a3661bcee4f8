"""Strategy names → Optuna samplers and pruners, run through tiny ``study.optimize`` calls with made-up objectives (no training)."""

from __future__ import annotations

import itertools
import logging
import pickle
import random
import statistics
import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from archforge.errors import SearchError
from archforge.search import limits
from archforge.search.evolution import EvolutionSampler
from archforge.search.records import LineageAttr
from archforge.search.settings import SearchSettings
from archforge.search.space import parse_space
from archforge.search.strategies import check_strategy, lineage, make_pruner, make_sampler

# Three decisions of two values each: 8 assignments.
SMALL = """
archforge: 1
name: small
input: {shape: [1, 8, 8]}
params: {width: {choice: [4, 8]}}
nodes:
  - {id: stem, block: conv, args: {channels: $width, kernel: {int: [1, 3], step: 2}, act: {choice: [relu, gelu]}}}
  - {id: head, block: classifier, args: {classes: 10}}
"""
SMALL_GRID = [dict(zip(("width", "stem.kernel", "stem.act"), values))
              for values in itertools.product([4, 8], [1, 3], ["relu", "gelu"])]

# 16 × 5 × 4 × 2 assignments; every decision has a best value: its largest.
LADDER = """
archforge: 1
name: ladder
input: {shape: [1, 8, 8]}
nodes:
  - {id: stem, block: conv, args: {channels: {int: [1, 16]}, kernel: {int: [1, 9], step: 2}, dilation: {int: [1, 4]},
                                  bias: {choice: [false, true]}}}
  - {id: head, block: classifier, args: {classes: 10}}
"""


def ladder_score(values: dict) -> float:
    """0 at every decision's lowest value, 4 at every highest; strictly better for each step up."""
    return ((values["stem.channels"] - 1) / 15 + (values["stem.kernel"] - 1) / 8 + (values["stem.dilation"] - 1) / 3
            + values["stem.bias"])


def suggest_all(trial: optuna.Trial, space) -> dict:
    """What the driver does: suggest every decision with its distribution, then decode."""
    for name, dist in space.distributions().items():
        if isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            assert isinstance(dist, FloatDistribution)
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return space.decode(trial.params)


def run(sampler, space, n_trials, score=lambda v: float(v.get("width", 0)), objectives=1, direction="maximize"):
    """A study driven by ``sampler``; the decoded decisions of each trial, in order."""
    study = optuna.create_study(sampler=sampler, directions=[direction] + ["minimize"] * (objectives - 1))
    seen: list[dict] = []

    def objective(trial):
        values = suggest_all(trial, space)
        seen.append(values)
        return score(values) if objectives == 1 else (score(values), float(len(seen)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=n_trials)
    return study, seen


@pytest.fixture(autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(level)


@pytest.fixture(scope="module")
def small():
    return parse_space(SMALL, "small.yaml")


@pytest.fixture(scope="module")
def ladder():
    return parse_space(LADDER, "ladder.yaml")


def settings(**kwargs) -> SearchSettings:
    return SearchSettings().merged(**kwargs)


# --------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("name, cls, objectives", [
    ("grid", optuna.samplers.GridSampler, ["accuracy"]),
    ("random", optuna.samplers.RandomSampler, ["accuracy"]),
    ("tpe", optuna.samplers.TPESampler, ["accuracy"]),
    ("tpe", optuna.samplers.TPESampler, ["accuracy", "params"]),
    ("nsga2", optuna.samplers.NSGAIISampler, ["accuracy", "params"]),
    ("evolution", EvolutionSampler, ["accuracy"]),
])
def test_each_name_makes_its_sampler_and_a_seed_fixes_its_sequence(ladder, name, cls, objectives):
    space = parse_space(SMALL, "small.yaml") if name == "grid" else ladder
    chosen = settings(strategy=name, objectives=objectives, budget=12)
    sampler = make_sampler(chosen, space, seed=5)
    assert type(sampler) is cls

    def sequence(seed: int, settings_seed: int = 0) -> list[dict]:
        sampler = make_sampler(chosen.merged(seed=settings_seed), space, seed=seed)
        return run(sampler, space, 12 if name != "grid" else None, score=ladder_score if name != "grid" else
                   (lambda v: float(v["width"])), objectives=len(objectives))[1]

    first = sequence(5)
    assert sequence(5) == first
    if name == "grid":
        # the grid's order is shared by every worker: it comes from settings.seed, never from the worker's seed
        assert sequence(6) == first
        assert sequence(5, settings_seed=1) != first
    else:
        assert sequence(6) != first


def test_a_sampler_object_is_used_as_it_is(small):
    own = optuna.samplers.RandomSampler(seed=3)
    chosen = settings(strategy=own)
    check_strategy(chosen, small)
    assert make_sampler(chosen, small, seed=9) is own
    assert lineage(own, 0) is None


def test_grid_covers_every_assignment_exactly_once_and_stops_by_itself(small):
    study, seen = run(make_sampler(settings(strategy="grid"), small, seed=0), small, n_trials=None)
    assert len(seen) == 8 == len(study.trials)
    assert sorted(map(repr, seen)) == sorted(map(repr, SMALL_GRID))


def test_grid_of_a_space_without_decisions_is_one_trial():
    space = parse_space("archforge: 1\nname: fixed\ninput: {shape: [1, 8, 8]}\n"
                        "nodes:\n  - {id: head, block: classifier, args: {classes: 10}}\n", "fixed.yaml")
    assert not space.decisions
    _, seen = run(make_sampler(settings(strategy="grid"), space, seed=0), space, n_trials=None)
    assert seen == [{}]


def test_grid_refuses_a_continuous_decision_before_any_study(small):
    space = parse_space(SMALL.replace("{classes: 10}", "{classes: 10, dropout: {float: [0.0, 0.5]}}"), "drop.yaml")
    for call in (lambda: check_strategy(settings(strategy="grid"), space),
                 lambda: make_sampler(settings(strategy="grid"), space, seed=0)):
        with pytest.raises(SearchError, match=r"grid search needs finite decisions, but 'head.dropout' \(drop.yaml:\d+:\d+\) "
                                              r"is a continuous range: give it a step"):
            call()
    check_strategy(settings(strategy="random"), space)  # sampling strategies take it
    stepped = parse_space(SMALL.replace("{classes: 10}", "{classes: 10, dropout: {float: [0.0, 0.5], step: 0.25}}"), "s.yaml")
    assert isinstance(make_sampler(settings(strategy="grid"), stepped, seed=0), optuna.samplers.GridSampler)


def test_grid_refuses_more_assignments_than_its_bound(small, monkeypatch):
    monkeypatch.setattr(limits, "MAX_GRID_SIZE", 7)
    with pytest.raises(SearchError) as info:
        check_strategy(settings(strategy="grid"), small)
    assert "8 decision assignments" in info.value.message and "limits.MAX_GRID_SIZE = 7 (from archforge.search import limits)" in info.value.message
    monkeypatch.setattr(limits, "MAX_GRID_SIZE", 8)
    check_strategy(settings(strategy="grid"), small)
    check_strategy(settings(strategy="evolution"), small)


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "nsga2"}, "nsga2 optimises several objectives"),
    ({"strategy": "evolution", "objectives": "accuracy,params"}, "evolution optimises one objective"),
])
def test_impossible_strategies_are_refused(small, kwargs, message):
    with pytest.raises(SearchError, match=message):
        check_strategy(settings(**kwargs), small)


def test_evolution_needs_a_decision_to_mutate():
    space = parse_space(SMALL.replace("{choice: [4, 8]}", "{choice: [4]}").replace("{int: [1, 3], step: 2}", "3")
                        .replace("{choice: [relu, gelu]}", "relu"), "one.yaml")
    assert space.size == 1
    with pytest.raises(SearchError, match="evolution mutates decisions, but one.yaml has no decision with two or more values"):
        check_strategy(settings(strategy="evolution"), space)


def test_creating_samplers_and_pruners_changes_no_global_state(small):
    level, filters = optuna.logging.get_verbosity(), list(warnings.filters)
    handlers = list(logging.getLogger("optuna").handlers)
    for name, objectives in (("grid", "accuracy"), ("random", "accuracy"), ("tpe", "accuracy"),
                             ("nsga2", "accuracy,params"), ("evolution", "accuracy")):
        make_sampler(settings(strategy=name, objectives=objectives), small, seed=0)
    for pruner in ("successive_halving", "hyperband", "median"):
        make_pruner(settings(pruner=pruner))
    assert optuna.logging.get_verbosity() == level and warnings.filters == filters
    assert logging.getLogger("optuna").handlers == handlers


# --------------------------------------------------------------------------- regularized evolution


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_evolution_starts_random_then_mutates_one_decision_of_a_tournament_winner(ladder, direction):
    population, sample, seed, trials = 6, 3, 11, 30
    sampler = make_sampler(settings(strategy="evolution", evolution={"population": population, "sample": sample}), ladder, seed=seed)
    study, seen = run(sampler, ladder, trials, score=ladder_score, direction=direction)
    values = [t.value for t in study.trials]

    # An independent replay of the rule with the same random stream: P random candidates, then
    # tournaments of S draws (with replacement) among the P most recent, best parent, one mutation.
    better = max if direction == "maximize" else min
    rng = random.Random(seed)
    mutable = list(ladder.decisions)
    expected: list[dict] = [ladder.sample(rng) for _ in range(population)]
    parents: list[LineageAttr] = []
    for number in range(population, trials):
        recent = range(number - population, number)
        parent = better((rng.choice(recent) for _ in range(sample)), key=lambda n: values[n])
        name = rng.choice(mutable)
        child = dict(expected[parent])
        child[name] = ladder.decisions[name].mutate(child[name], rng)
        expected.append(child)
        parents.append(LineageAttr(parent=parent, mutated=name))
    assert seen == expected

    assert [lineage(sampler, n) for n in range(trials)] == [None] * population + parents
    for number in range(population, trials):
        found = lineage(sampler, number)
        assert number - population <= found.parent < number  # one of the P most recent
        differing = {k for k in seen[number] if seen[number][k] != seen[found.parent][k]}
        assert differing == {found.mutated}


def test_evolution_only_breeds_from_trials_with_a_value(ladder):
    sampler = EvolutionSampler(ladder, population=3, sample=2, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")

    def objective(trial):
        values = suggest_all(trial, ladder)
        if trial.number % 2:
            raise optuna.TrialPruned()  # pruned trials are no members
        return ladder_score(values)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=14)
    # the third complete trial is number 4: until it finished, every trial was random
    assert [lineage(sampler, n) is None for n in range(6)] == [True] * 5 + [False]
    for number in range(5, 14):
        complete = [t.number for t in study.trials[:number] if t.state == optuna.trial.TrialState.COMPLETE]
        assert lineage(sampler, number).parent in complete[-3:]


def test_evolution_beats_random_on_a_ladder(ladder):
    def mean_score(name: str) -> float:
        scores = []
        for seed in range(4):
            sampler = make_sampler(settings(strategy=name), ladder, seed=seed)
            study, _ = run(sampler, ladder, 40, score=ladder_score)
            scores += [t.value for t in study.trials]
        return statistics.fmean(scores)

    evolution, uniform = mean_score("evolution"), mean_score("random")
    assert 1.6 < uniform < 2.4  # the uniform mean is 2
    assert evolution > uniform + 0.3


def test_evolution_sampler_pickles_for_worker_processes(ladder):
    sampler = EvolutionSampler(ladder, population=3, sample=2, seed=4)
    copy = pickle.loads(pickle.dumps(sampler))
    assert run(copy, ladder, 8, score=ladder_score)[1] == run(sampler, ladder, 8, score=ladder_score)[1]


def test_evolution_refuses_a_multi_objective_study(ladder):
    study = optuna.create_study(sampler=EvolutionSampler(ladder, seed=0), directions=["maximize", "minimize"])
    with pytest.raises(ValueError, match="optimises one objective"):
        study.optimize(lambda t: (ladder_score(suggest_all(t, ladder)), 1.0), n_trials=1, catch=())


# --------------------------------------------------------------------------- pruners


def first_pruned_step(pruner, good_trials: int, epochs: int = 9) -> int | None:
    """The first epoch at which a trial far behind ``good_trials`` finished ones is pruned, ``None`` if never."""
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(good_trials):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(0.9, epoch)
            trial.should_prune()  # as the driver asks: successive halving records rungs when asked
        study.tell(trial, 0.9)
    trial = study.ask()
    for epoch in range(1, epochs + 1):
        trial.report(0.1, epoch)
        if trial.should_prune():
            return epoch
    return None


def test_no_pruner_is_optunas_no_op_pruner():
    pruner = make_pruner(settings())
    assert isinstance(pruner, optuna.pruners.NopPruner)
    assert first_pruned_step(pruner, 6) is None


@pytest.mark.parametrize("min_resource", [1, 3])
def test_successive_halving_decides_first_after_min_resource_epochs(min_resource):
    pruner = make_pruner(settings(epochs=9, pruner={"kind": "successive_halving", "min_resource": min_resource}))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert first_pruned_step(pruner, 1) == min_resource


@pytest.mark.parametrize("reduction_factor, promoted_until", [(2, 1), (3, 2)])
def test_successive_halving_rungs_follow_the_reduction_factor(reduction_factor, promoted_until):
    # Rungs at epochs 1, rf, rf**2: a trial level with the best until epoch 2 and far behind after it
    # is pruned at the next rung: epoch 2 (rf 2) or epoch 3 (rf 3).
    pruner = make_pruner(settings(epochs=9, pruner={"kind": "successive_halving", "reduction_factor": reduction_factor}))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    best = study.ask()
    for epoch in range(1, 10):
        best.report(0.9, epoch)
        best.should_prune()
    study.tell(best, 0.9)
    trial = study.ask()
    pruned = None
    for epoch in range(1, 10):
        trial.report(0.9 if epoch <= promoted_until else 0.1, epoch)
        if trial.should_prune():
            pruned = epoch
            break
    assert pruned == reduction_factor


@pytest.mark.parametrize("min_resource", [1, 4])
def test_median_waits_for_min_resource_epochs_and_five_finished_trials(min_resource):
    pruner = make_pruner(settings(epochs=9, pruner={"kind": "median", "min_resource": min_resource}))
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert first_pruned_step(pruner, 5) == min_resource
    assert first_pruned_step(pruner, 4) is None


def test_hyperband_spans_min_resource_to_the_epochs_of_a_trial(monkeypatch):
    made: list[dict] = []

    class Recorded(optuna.pruners.HyperbandPruner):
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(optuna.pruners, "HyperbandPruner", Recorded)
    pruner = make_pruner(settings(epochs=7, pruner={"kind": "hyperband", "min_resource": 2, "reduction_factor": 4}))
    assert isinstance(pruner, Recorded)
    assert made == [{"min_resource": 2, "max_resource": 7, "reduction_factor": 4}]
    assert first_pruned_step(pruner, 12, epochs=7) is not None  # it does prune


def test_a_pruner_object_is_used_as_it_is():
    own = optuna.pruners.PercentilePruner(25.0)
    assert make_pruner(settings(pruner=own)) is own
