"""Strategy names → Optuna samplers, pruner settings → Optuna pruners, for a study run with ``study.optimize``.

=============  =================================================================================
``grid``       every decision assignment once (``GridSampler``); the study stops by itself when
               the grid is done. Finite spaces of at most ``limits.MAX_GRID_SIZE`` assignments
``random``     uniform sampling (``RandomSampler``)
``evolution``  regularized evolution (Real et al. 2019), :class:`~archforge.search.evolution.EvolutionSampler`;
               one objective
``tpe``        Tree-structured Parzen Estimator (``TPESampler``), one or several objectives
``nsga2``      NSGA-II (``NSGAIISampler``), several objectives
``oneshot``    one weight-sharing supernet ranks every candidate (:mod:`archforge.search.oneshot`);
               the trials are its best ``oneshot.retrain_top``, queued in order, trained stand-alone
=============  =================================================================================

From Python, ``strategy`` may be any Optuna sampler object and ``pruner`` any Optuna pruner
object: both are used as they are. :func:`check_strategy` raises, before any study exists,
everything :func:`make_sampler` would refuse. Nothing here changes Optuna's logging or the
warning filters: warnings Optuna gives while a sampler is made are silenced in that one place.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

from archforge.errors import SearchError
from archforge.search import limits
from archforge.search.records import LineageAttr
from archforge.search.settings import PrunerSettings, SearchSettings

if TYPE_CHECKING:
    import optuna

    from archforge.search.space import Space

STRATEGY_HELP = {
    "grid": "exhaustive: every candidate once",
    "random": "uniform random sampling",
    "evolution": "regularized evolution (Real et al. 2019)",
    "tpe": "Tree-structured Parzen Estimator",
    "nsga2": "NSGA-II, several objectives",
    "oneshot": "one weight-sharing supernet ranks every candidate",
}
#: TPE's random start: a third of the budget, at least this many trials ...
TPE_MIN_STARTUP = 3
#: ... and at most Optuna's own default.
TPE_MAX_STARTUP = 10
#: Finished trials the median pruner waits for: the median of fewer is one lucky or unlucky trial (Optuna's default).
MEDIAN_STARTUP_TRIALS = 5


def check_strategy(settings: SearchSettings, space: Space) -> None:
    """Raise :class:`~archforge.errors.SearchError` when ``settings.strategy`` cannot search ``space``.

    Everything :func:`make_sampler` refuses is refused here, without creating a sampler or a
    study; a sampler object passed from Python is not checked.
    """
    strategy = settings.strategy
    if not isinstance(strategy, str):
        return
    if strategy not in _SAMPLERS:
        from archforge.errors import did_you_mean

        raise SearchError(f"unknown strategy '{strategy}'{did_you_mean(strategy, _SAMPLERS)}: use {', '.join(_SAMPLERS)}")
    objectives = len(settings.objectives)
    if strategy == "grid":
        _check_grid(space)
    elif strategy == "nsga2" and objectives < 2:
        # Optuna would run it, as a plain genetic algorithm: on one objective NSGA-II's non-dominated
        # sorting and crowding distance say nothing. The single-objective evolutionary search is
        # `evolution`; an NSGAIISampler object passed from Python still runs on one objective.
        raise SearchError("nsga2 optimises several objectives: add one, e.g. --objectives accuracy,params "
                          "(or accuracy,latency_ms); for one objective use evolution or tpe")
    elif strategy == "evolution":
        if objectives != 1:
            raise SearchError("evolution optimises one objective; use nsga2 or tpe for several")
        if not any(d.size is None or d.size > 1 for d in space.decisions.values()):
            raise SearchError(f"evolution mutates decisions, but {space.file} has no decision with two or more "
                              "values: use grid")


def make_sampler(settings: SearchSettings, space: Space, *, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``settings.strategy`` over ``space``, seeded with ``seed``.

    ``seed`` is one worker's: give each worker its own, or parallel workers draw the same
    candidates. The exception is the grid, whose shuffled order is how workers share it: its
    order always comes from ``settings.seed``, whatever ``seed`` says. A sampler object given
    as the strategy is returned as it is; every worker process then runs a pickled copy of it,
    so all of them share its seed. Raises :class:`~archforge.errors.SearchError` as
    :func:`check_strategy` does.
    """
    strategy = settings.strategy
    if not isinstance(strategy, str):
        return strategy
    check_strategy(settings, space)
    import optuna

    with warnings.catch_warnings():
        # Some options are "experimental" in some Optuna releases; that is no news to a user.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _SAMPLERS[strategy](settings, space, seed)


def make_pruner(settings: SearchSettings) -> optuna.pruners.BasePruner:
    """The Optuna pruner of ``settings.pruner``; the driver reports validation accuracy after epoch 1, 2, ... as steps.

    ``min_resource`` is the number of epochs before the first pruning decision for every
    pruner: successive halving and Hyperband first compare at step ``min_resource``, and the
    median rule's warm-up is ``min_resource`` steps (Optuna prunes at ``step >= n_warmup_steps``);
    the median rule also waits for :data:`MEDIAN_STARTUP_TRIALS` finished trials. Hyperband's
    largest budget is ``settings.epochs``. No pruner: Optuna's ``NopPruner``; a pruner object: as it is.
    """
    import optuna

    pruner = settings.pruner
    if pruner is None:
        return optuna.pruners.NopPruner()
    if not isinstance(pruner, PrunerSettings):
        return pruner
    if pruner.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_resource, reduction_factor=pruner.reduction_factor)
    if pruner.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=pruner.min_resource, max_resource=settings.epochs,
                                              reduction_factor=pruner.reduction_factor)
    return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=pruner.min_resource)


def lineage(sampler: Any, trial_number: int) -> LineageAttr | None:
    """The parent trial and the mutated decision of a trial that evolution proposed; ``None`` for any other trial or sampler."""
    from archforge.search.evolution import EvolutionSampler

    return sampler.lineage(trial_number) if isinstance(sampler, EvolutionSampler) else None


# --------------------------------------------------------------------------- one maker per name


def _grid(settings: SearchSettings, space: Space, seed: int) -> Any:
    import optuna

    # A space without decisions is a grid of one point (the product of no value lists): one trial.
    grid = {name: decision.grid_values() for name, decision in space.decisions.items()}
    return optuna.samplers.GridSampler(grid, seed=settings.seed)


def _random(settings: SearchSettings, space: Space, seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(settings: SearchSettings, space: Space, seed: int) -> Any:
    import optuna

    budget = settings.trial_budget or 20
    return optuna.samplers.TPESampler(
        seed=seed,
        # Random trials before the model: a third of the budget, so that a short search still
        # spends most of its trials on the model, between TPE_MIN_STARTUP and Optuna's default.
        n_startup_trials=max(TPE_MIN_STARTUP, min(TPE_MAX_STARTUP, budget // 3)),
        # Decisions of an architecture interact (width with depth, a block with its kernel), which
        # only the joint (multivariate) density sees; with several objectives Optuna's independent
        # TPE is its tested default. Said explicitly, as releases before 4 defaulted to independent.
        multivariate=len(settings.objectives) == 1,
        # Workers share the study: a running trial counts as a bad one, so that parallel workers
        # do not all propose the same point (Optuna's default since 4; off before).
        constant_liar=True,
    )


def _nsga2(settings: SearchSettings, space: Space, seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=settings.evolution.population, seed=seed)


def _evolution(settings: SearchSettings, space: Space, seed: int) -> Any:
    from archforge.search.evolution import EvolutionSampler

    return EvolutionSampler(space, population=settings.evolution.population, sample=settings.evolution.sample, seed=seed)


def _oneshot(settings: SearchSettings, space: Space, seed: int) -> Any:
    import optuna

    # The one-shot phase queues every trial of the run; a sampler only serves a trial nobody queued.
    return optuna.samplers.RandomSampler(seed=seed)


_SAMPLERS: dict[str, Callable[[SearchSettings, Any, int], Any]] = {
    "grid": _grid, "random": _random, "evolution": _evolution, "tpe": _tpe, "nsga2": _nsga2, "oneshot": _oneshot,
}


def _check_grid(space: Space) -> None:
    for name, decision in space.decisions.items():
        if decision.size is None:
            where = f" ({decision.locations[0]})" if decision.locations else ""
            raise SearchError(f"grid search needs finite decisions, but '{name}'{where} is a continuous range: "
                              "give it a step, or use --strategy random, tpe or evolution")
    size = space.size or 1
    if size > limits.MAX_GRID_SIZE:  # GridSampler lists and shuffles every assignment up front
        raise SearchError(f"grid search lists every one of the {size:,} decision assignments of {space.file}, more than "
                          f"{limits.bound_text('MAX_GRID_SIZE')}: use --strategy random, tpe or evolution, or raise the bound")

